//! `api::acl::endpoints`: Consul's ACL API: `PUT /v1/acl/bootstrap`
//! (once), policies (`/v1/acl/policy[/<id>]`, `/v1/acl/policy/name/<name>`,
//! `/v1/acl/policies`) and tokens (`/v1/acl/token[/<accessor>]`,
//! `/v1/acl/token/self`, `/v1/acl/tokens`). Every change is a write of an
//! entry under the ACL prefix, so it replicates to every region; the
//! state is rebuilt here before the answer, so the next request sees it.
//!
//! Reading needs `acl = "read"`, changing `acl = "write"` (or a management
//! token). A token's secret is shown once, in the answer that creates it.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use super::{denied, token_of, AclError};
use crate::api::audit::Audited;
use crate::api::error::{body_error, error, node_error, ApiError};
use crate::api::{wire, Api};
use crate::core::acl::records::{
    self, policy_key, secret_hash, token_key, BootstrapRecord, ANONYMOUS_ACCESSOR, BOOTSTRAP_KEY,
    MANAGEMENT_POLICY_ID, MANAGEMENT_POLICY_NAME, POLICIES_MAX, TEXT_BYTES_MAX, TOKENS_MAX,
    TOKEN_POLICIES_MAX,
};
use crate::core::acl::{rules, Access, AclState, PolicyRecord, Resolved, TokenRecord};
use crate::core::types::utc_text;

/// Largest body of an ACL request (a policy's rules and some).
const ACL_BODY_BYTES_MAX: usize = rules::RULES_BYTES_MAX + 16 * 1024;
/// Longest AccessorID or SecretID a client may choose.
const ID_BYTES_MAX: usize = 128;

type Answer = Result<Response, AclError>;

fn refuse(code: StatusCode, message: impl Into<String>) -> AclError {
    AclError::Api(error(code, message))
}

fn failed(e: ApiError) -> AclError {
    AclError::Api(e)
}

/// The caller, if ACLs are on and it has `wanted` on the ACL endpoints.
fn allowed(
    api: &Api,
    headers: &HeaderMap,
    uri: &Uri,
    wanted: Access,
) -> Result<Resolved, AclError> {
    if !api.acl.enabled() {
        return Err(refuse(StatusCode::UNAUTHORIZED, "ACL support disabled"));
    }
    let caller = api.caller(headers, uri);
    if caller.authz.acl() < wanted {
        return Err(denied(&caller, &format!("acl:{wanted}"), ""));
    }
    Ok(caller)
}

async fn body<T: DeserializeOwned + Default>(body: Body) -> Result<T, AclError> {
    let bytes: Bytes = axum::body::to_bytes(body, ACL_BODY_BYTES_MAX)
        .await
        .map_err(|e| failed(body_error(&e, ACL_BODY_BYTES_MAX, "ACL request")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("Failed to parse body: {e}"),
        )
    })
}

/// A random UUID (version 4), for IDs and secrets.
fn uuid() -> Result<String, AclError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "no randomness for an ID"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn put_record<T: serde::Serialize>(api: &Api, key: String, v: &T) -> Result<(), AclError> {
    let bytes = serde_json::to_vec(v)
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    api.node
        .put(key, bytes)
        .await
        .map_err(|e| failed(node_error(e)))?;
    Ok(())
}

/// Deletes the entry `key` if `exists` says the state holds it (`true`
/// either way, as Consul answers), and logs the change.
async fn delete_record(
    api: &Api,
    key: String,
    exists: impl Fn(&AclState) -> bool,
    op: &'static str,
    id: &str,
) -> Answer {
    let _one = api.acl.writing.lock().await;
    let s = reload(api).await?;
    if !exists(&s) {
        return Ok(Json(true).into_response());
    }
    api.node
        .delete(key)
        .await
        .map_err(|e| failed(node_error(e)))?;
    reload(api).await?;
    Ok(Audited::new(op, vec![id.to_string()]).on(Json(true).into_response()))
}

async fn reload(api: &Api) -> Result<Arc<AclState>, AclError> {
    api.reload_acl().await.map_err(|e| failed(node_error(e)))?;
    Ok(api.acl.state())
}

// ------------------------------------------------------------------ documents

fn management_policy() -> PolicyRecord {
    PolicyRecord {
        id: MANAGEMENT_POLICY_ID.to_string(),
        name: MANAGEMENT_POLICY_NAME.to_string(),
        description: "Builtin Policy that grants unlimited access".to_string(),
        rules: String::new(),
        create_ms: 0,
    }
}

fn policy_doc(p: &PolicyRecord) -> wire::AclPolicy {
    wire::AclPolicy {
        id: p.id.clone(),
        name: p.name.clone(),
        description: p.description.clone(),
        rules: p.rules.clone(),
        create_time: utc_text(p.create_ms, 'T'),
    }
}

fn find_policy<'a>(
    s: &'a AclState,
    id: &str,
    builtin: &'a PolicyRecord,
) -> Option<&'a PolicyRecord> {
    if id == MANAGEMENT_POLICY_ID {
        return Some(builtin);
    }
    s.policy(id)
}

fn anonymous() -> TokenRecord {
    TokenRecord {
        accessor_id: ANONYMOUS_ACCESSOR.to_string(),
        secret_hash: secret_hash(records::ANONYMOUS_SECRET),
        description: "Anonymous Token".to_string(),
        policies: Vec::new(),
        create_ms: 0,
    }
}

fn token_doc(s: &AclState, t: &TokenRecord, secret: Option<&str>) -> wire::AclToken {
    let builtin = management_policy();
    wire::AclToken {
        accessor_id: t.accessor_id.clone(),
        secret_id: secret.unwrap_or(wire::SECRET_HIDDEN).to_string(),
        description: t.description.clone(),
        policies: t
            .policies
            .iter()
            .filter_map(|id| find_policy(s, id, &builtin))
            .map(|p| wire::AclPolicyLink {
                id: p.id.clone(),
                name: p.name.clone(),
            })
            .collect(),
        local: false,
        create_time: utc_text(t.create_ms, 'T'),
    }
}

fn token_of_state(s: &AclState, accessor: &str) -> Option<TokenRecord> {
    s.token(accessor)
        .cloned()
        .or_else(|| (accessor == ANONYMOUS_ACCESSOR).then(anonymous))
}

// ------------------------------------------------------------------ bootstrap

/// `PUT /v1/acl/bootstrap`: the first management token, once per cluster
/// (once the marker has reached a node, it refuses).
pub(in crate::api) async fn bootstrap(State(api): State<Arc<Api>>) -> Response {
    go_bootstrap(&api)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn go_bootstrap(api: &Api) -> Answer {
    if !api.acl.enabled() {
        return Err(refuse(StatusCode::UNAUTHORIZED, "ACL support disabled"));
    }
    let _one = api.acl.writing.lock().await;
    let s = reload(api).await?;
    if s.bootstrap().is_some() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "Permission denied: ACL bootstrap no longer allowed (reset index: 0)",
        ));
    }
    let (accessor, secret) = (uuid()?, uuid()?);
    let now = now_ms();
    let t = TokenRecord {
        accessor_id: accessor.clone(),
        secret_hash: secret_hash(&secret),
        description: "Bootstrap Token (Global Management)".to_string(),
        policies: vec![MANAGEMENT_POLICY_ID.to_string()],
        create_ms: now,
    };
    put_record(api, token_key(&accessor), &t).await?;
    let marker = BootstrapRecord {
        accessor_id: accessor,
        create_ms: now,
    };
    put_record(api, BOOTSTRAP_KEY.to_string(), &marker).await?;
    let s = reload(api).await?;
    let r = Json(token_doc(&s, &t, Some(&secret))).into_response();
    Ok(Audited::new("acl-bootstrap", vec![t.accessor_id.clone()]).on(r))
}

// ------------------------------------------------------------------ policies

fn check_policy(s: &AclState, req: &wire::AclPolicyRequest, id: &str) -> Result<(), AclError> {
    let name_ok = !req.name.is_empty()
        && req.name.len() <= 128
        && req
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "Invalid Policy: invalid Name: 1-128 characters of A-Z, a-z, 0-9, '-' and '_'",
        ));
    }
    if req.name == MANAGEMENT_POLICY_NAME || s.policy_named(&req.name).is_some_and(|p| p.id != id) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "Invalid Policy: A Policy with Name {:?} already exists",
                req.name
            ),
        ));
    }
    if req.description.len() > TEXT_BYTES_MAX {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("Invalid Policy: the description is longer than {TEXT_BYTES_MAX} bytes"),
        ));
    }
    rules::parse(&req.rules)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("Invalid Policy: {e}")))?;
    Ok(())
}

/// `PUT /v1/acl/policy`: creates a policy.
pub(in crate::api) async fn policy_create(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
    b: Body,
) -> Response {
    let go = async {
        allowed(&api, &headers, &uri, Access::Write)?;
        let req: wire::AclPolicyRequest = body(b).await?;
        let _one = api.acl.writing.lock().await;
        let s = reload(&api).await?;
        if s.policies().count() >= POLICIES_MAX {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("the cluster holds {POLICIES_MAX} policies, the most it may"),
            ));
        }
        let id = if req.id.is_empty() {
            uuid()?
        } else {
            req.id.clone()
        };
        if s.policy(&id).is_some() || id == MANAGEMENT_POLICY_ID || id.len() > ID_BYTES_MAX {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Invalid Policy: the ID is taken or too long (leave it out on a create)",
            ));
        }
        check_policy(&s, &req, &id)?;
        let p = PolicyRecord {
            id: id.clone(),
            name: req.name,
            description: req.description,
            rules: req.rules,
            create_ms: now_ms(),
        };
        put_record(&api, policy_key(&id), &p).await?;
        reload(&api).await?;
        let r = Json(policy_doc(&p)).into_response();
        Ok(Audited::new("acl-policy-create", vec![id]).on(r))
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET|PUT|DELETE /v1/acl/policy/<id>`.
pub(in crate::api) async fn policy(
    State(api): State<Arc<Api>>,
    method: Method,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    b: Body,
) -> Response {
    let go = async {
        let builtin = management_policy();
        match method {
            Method::GET => {
                allowed(&api, &headers, &uri, Access::Read)?;
                let s = api.acl.state();
                let p = find_policy(&s, &id, &builtin).ok_or_else(|| {
                    refuse(StatusCode::NOT_FOUND, "Requested policy does not exist")
                })?;
                Ok(Json(policy_doc(p)).into_response())
            }
            Method::PUT => {
                allowed(&api, &headers, &uri, Access::Write)?;
                let req: wire::AclPolicyRequest = body(b).await?;
                if id == MANAGEMENT_POLICY_ID {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "Changing the global-management policy is not permitted",
                    ));
                }
                if !req.id.is_empty() && req.id != id {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "the body's ID is not the path's",
                    ));
                }
                let _one = api.acl.writing.lock().await;
                let s = reload(&api).await?;
                let old = s.policy(&id).ok_or_else(|| {
                    refuse(StatusCode::NOT_FOUND, "Requested policy does not exist")
                })?;
                check_policy(&s, &req, &id)?;
                let p = PolicyRecord {
                    id: id.clone(),
                    name: req.name,
                    description: req.description,
                    rules: req.rules,
                    create_ms: old.create_ms,
                };
                put_record(&api, policy_key(&id), &p).await?;
                reload(&api).await?;
                let r = Json(policy_doc(&p)).into_response();
                Ok(Audited::new("acl-policy-update", vec![id.clone()]).on(r))
            }
            Method::DELETE => {
                allowed(&api, &headers, &uri, Access::Write)?;
                if id == MANAGEMENT_POLICY_ID {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "Deletion of the global-management policy is not permitted",
                    ));
                }
                let exists = |s: &AclState| s.policy(&id).is_some();
                delete_record(&api, policy_key(&id), exists, "acl-policy-delete", &id).await
            }
            other => Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{other} is not allowed on /v1/acl/policy/<id> (GET, PUT, DELETE)"),
            )),
        }
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/acl/policy/name/<name>`.
pub(in crate::api) async fn policy_named(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let go = async {
        allowed(&api, &headers, &uri, Access::Read)?;
        let s = api.acl.state();
        let builtin = management_policy();
        let p = if name == MANAGEMENT_POLICY_NAME {
            Some(&builtin)
        } else {
            s.policy_named(&name)
        };
        let p =
            p.ok_or_else(|| refuse(StatusCode::NOT_FOUND, "Requested policy does not exist"))?;
        Ok(Json(policy_doc(p)).into_response())
    };
    go.await.unwrap_or_else(|e: AclError| e.into_response())
}

/// `GET /v1/acl/policies`.
pub(in crate::api) async fn policies(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let go = async {
        allowed(&api, &headers, &uri, Access::Read)?;
        let s = api.acl.state();
        let builtin = management_policy();
        let list: Vec<wire::AclPolicyStub> = std::iter::once(&builtin)
            .chain(s.policies())
            .map(|p| wire::AclPolicyStub {
                id: p.id.clone(),
                name: p.name.clone(),
                description: p.description.clone(),
            })
            .collect();
        Ok(Json(list).into_response())
    };
    go.await.unwrap_or_else(|e: AclError| e.into_response())
}

// ------------------------------------------------------------------ tokens

/// The policy IDs a request's links name (by ID or by name), all existing.
fn linked(s: &AclState, links: &[wire::AclPolicyLink]) -> Result<Vec<String>, AclError> {
    if links.len() > TOKEN_POLICIES_MAX {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("a token links at most {TOKEN_POLICIES_MAX} policies"),
        ));
    }
    let mut ids = Vec::with_capacity(links.len());
    for l in links {
        let id = if !l.id.is_empty() {
            (l.id == MANAGEMENT_POLICY_ID || s.policy(&l.id).is_some()).then(|| l.id.clone())
        } else if l.name == MANAGEMENT_POLICY_NAME {
            Some(MANAGEMENT_POLICY_ID.to_string())
        } else {
            s.policy_named(&l.name).map(|p| p.id.clone())
        };
        let id = id.ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "Invalid Policy: no policy with ID {:?} or Name {:?}",
                    l.id, l.name
                ),
            )
        })?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

fn check_id(what: &str, v: &str) -> Result<(), AclError> {
    let ok = v.len() >= 8 && v.len() <= ID_BYTES_MAX && v.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("Invalid Token: {what} must be 8-{ID_BYTES_MAX} printable characters"),
        ))
    }
}

/// `PUT /v1/acl/token`: creates a token; the answer is the only place
/// its secret is shown.
pub(in crate::api) async fn token_create(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
    b: Body,
) -> Response {
    let go = async {
        allowed(&api, &headers, &uri, Access::Write)?;
        let req: wire::AclTokenRequest = body(b).await?;
        if req.local {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Meridian has no region-local tokens: every token is valid in every region",
            ));
        }
        if req.description.len() > TEXT_BYTES_MAX {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("Invalid Token: the description is longer than {TEXT_BYTES_MAX} bytes"),
            ));
        }
        let _one = api.acl.writing.lock().await;
        let s = reload(&api).await?;
        if s.tokens().count() >= TOKENS_MAX {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("the cluster holds {TOKENS_MAX} tokens, the most it may"),
            ));
        }
        let accessor = if req.accessor_id.is_empty() {
            uuid()?
        } else {
            req.accessor_id.clone()
        };
        let secret = if req.secret_id.is_empty() {
            uuid()?
        } else {
            req.secret_id.clone()
        };
        check_id("AccessorID", &accessor)?;
        check_id("SecretID", &secret)?;
        if s.token(&accessor).is_some() || accessor == ANONYMOUS_ACCESSOR {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Invalid Token: AccessorID is already in use",
            ));
        }
        if s.knows_secret(&secret) || secret == records::ANONYMOUS_SECRET {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Invalid Token: SecretID is already in use",
            ));
        }
        let t = TokenRecord {
            accessor_id: accessor.clone(),
            secret_hash: secret_hash(&secret),
            description: req.description,
            policies: linked(&s, &req.policies)?,
            create_ms: now_ms(),
        };
        put_record(&api, token_key(&accessor), &t).await?;
        let s = reload(&api).await?;
        let r = Json(token_doc(&s, &t, Some(&secret))).into_response();
        Ok(Audited::new("acl-token-create", vec![accessor]).on(r))
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET|PUT|DELETE /v1/acl/token/<accessor>`.
pub(in crate::api) async fn token(
    State(api): State<Arc<Api>>,
    method: Method,
    Path(accessor): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    b: Body,
) -> Response {
    let go = async {
        let missing = || refuse(StatusCode::NOT_FOUND, "ACL not found");
        match method {
            Method::GET => {
                allowed(&api, &headers, &uri, Access::Read)?;
                let s = api.acl.state();
                let t = token_of_state(&s, &accessor).ok_or_else(missing)?;
                Ok(Json(token_doc(&s, &t, None)).into_response())
            }
            Method::PUT => {
                allowed(&api, &headers, &uri, Access::Write)?;
                let req: wire::AclTokenRequest = body(b).await?;
                if !req.accessor_id.is_empty() && req.accessor_id != accessor {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "the body's AccessorID is not the path's",
                    ));
                }
                if req.local {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "Meridian has no region-local tokens",
                    ));
                }
                let _one = api.acl.writing.lock().await;
                let s = reload(&api).await?;
                let old = token_of_state(&s, &accessor).ok_or_else(missing)?;
                if !req.secret_id.is_empty() && secret_hash(&req.secret_id) != old.secret_hash {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "Invalid Token: a token's SecretID cannot change",
                    ));
                }
                let t = TokenRecord {
                    description: req.description,
                    policies: linked(&s, &req.policies)?,
                    ..old
                };
                put_record(&api, token_key(&accessor), &t).await?;
                let s = reload(&api).await?;
                let r = Json(token_doc(&s, &t, None)).into_response();
                Ok(Audited::new("acl-token-update", vec![accessor.clone()]).on(r))
            }
            Method::DELETE => {
                allowed(&api, &headers, &uri, Access::Write)?;
                if accessor == ANONYMOUS_ACCESSOR {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "Deletion of the anonymous token is not permitted",
                    ));
                }
                let exists = |s: &AclState| s.token(&accessor).is_some();
                delete_record(
                    &api,
                    token_key(&accessor),
                    exists,
                    "acl-token-delete",
                    &accessor,
                )
                .await
            }
            other => Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{other} is not allowed on /v1/acl/token/<accessor> (GET, PUT, DELETE)"),
            )),
        }
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/acl/token/self`: the token the request presents.
pub(in crate::api) async fn token_self(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if !api.acl.enabled() {
        return refuse(StatusCode::UNAUTHORIZED, "ACL support disabled").into_response();
    }
    let secret = token_of(&headers, &uri);
    let s = api.acl.state();
    let caller = s.resolve(secret.as_deref());
    match (secret, s.token(&caller.accessor_id)) {
        (Some(secret), Some(t)) => Json(token_doc(&s, t, Some(&secret))).into_response(),
        _ => refuse(StatusCode::FORBIDDEN, "ACL not found").into_response(),
    }
}

/// `GET /v1/acl/tokens`: every token, secrets hidden, the anonymous one included.
pub(in crate::api) async fn tokens(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let go = async {
        allowed(&api, &headers, &uri, Access::Read)?;
        let s = api.acl.state();
        let mut list: Vec<wire::AclToken> = s.tokens().map(|t| token_doc(&s, t, None)).collect();
        if s.token(ANONYMOUS_ACCESSOR).is_none() {
            list.push(token_doc(&s, &anonymous(), None));
        }
        Ok(Json(list).into_response())
    };
    go.await.unwrap_or_else(|e: AclError| e.into_response())
}
