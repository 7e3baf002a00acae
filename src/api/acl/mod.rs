//! `api::acl`: ACL enforcement at the API. Finds a request's token
//! (`?token=`, then `X-Consul-Token`, then `Authorization: Bearer`, as
//! Consul does), resolves it against the node's ACL state and answers 403
//! when the core's authorizer says no. The state is rebuilt from the
//! replicated entries under the ACL prefix whenever they change, here or
//! in another region. The endpoints that change it are in [`endpoints`].
//!
//! The operator endpoints are gated here in one place ([`gate`]); the KV,
//! transaction and watch endpoints ask per key (recursive reads are
//! filtered, not refused).

pub(super) mod endpoints;

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::query::Params;
use super::Api;
use crate::core::acl::records::ACL_PREFIX;
use crate::core::acl::{Access, AclState, Authorizer, Resolved};

/// Whether ACLs are enforced, and the default where no rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclMode {
    /// Every request may do everything (tokens are ignored).
    Off,
    /// Tokens decide; `default` where no rule of the token applies
    /// (`deny`, or `write` for `default_policy = "allow"`).
    On {
        /// The cluster's default policy.
        default: Access,
    },
}

/// The header Consul sets on a recursive read that ACLs filtered.
pub(super) const FILTERED_HEADER: &str = "x-consul-results-filtered-by-acls";
/// How often the follower checks that the API still exists while no
/// ACL change comes.
const FOLLOW_POLL_MS: u64 = 1_000;

/// The API's ACL state.
pub(super) struct Acl {
    pub(super) mode: AclMode,
    state: RwLock<Arc<AclState>>,
    /// One change to the ACL state at a time (names stay unique, the
    /// bootstrap happens once per node).
    pub(super) writing: tokio::sync::Mutex<()>,
}

impl Acl {
    pub(super) fn new(mode: AclMode) -> Acl {
        let default = match mode {
            AclMode::Off => Access::Write,
            AclMode::On { default } => default,
        };
        Acl {
            mode,
            state: RwLock::new(Arc::new(AclState::empty(default))),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    pub(super) fn enabled(&self) -> bool {
        matches!(self.mode, AclMode::On { .. })
    }

    fn default(&self) -> Access {
        match self.mode {
            AclMode::Off => Access::Write,
            AclMode::On { default } => default,
        }
    }

    /// The current state.
    pub(super) fn state(&self) -> Arc<AclState> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, s: AclState) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
    }
}

/// The token a request presents, by Consul's precedence.
pub(super) fn token_of(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    if let Ok(q) = Params::parse(uri) {
        if let Some(t) = q.text("token").filter(|t| !t.is_empty()) {
            return Some(t.to_string());
        }
    }
    if let Some(t) = headers
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
    {
        return Some(t.trim().to_string());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

impl Api {
    /// Who is asking, and what they may do (everything with ACLs off).
    pub(super) fn caller(&self, headers: &HeaderMap, uri: &Uri) -> Resolved {
        if !self.acl.enabled() {
            return Resolved {
                accessor_id: String::new(),
                authz: management(),
            };
        }
        self.acl.state().resolve(token_of(headers, uri).as_deref())
    }

    /// Rebuilds the ACL state from the node's entries now (after a change
    /// made here, so that the next request sees it).
    pub(super) async fn reload_acl(&self) -> Result<u64, crate::node::NodeError> {
        let r = self.node.list_indexed(ACL_PREFIX).await?;
        let state = AclState::build(
            r.value.iter().map(|e| (e.key.as_str(), e.value.as_ref())),
            self.acl.default(),
        );
        if state.unreadable > 0 {
            tracing::warn!(
                unreadable = state.unreadable,
                "ACL entries that do not decode or rules that do not parse: they grant nothing"
            );
        }
        self.acl.set(state);
        Ok(r.index)
    }
}

fn management() -> Arc<Authorizer> {
    static ALL: std::sync::OnceLock<Arc<Authorizer>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| Arc::new(Authorizer::management()))
        .clone()
}

/// Keeps the ACL state equal to the replicated entries: rebuilt at start
/// and after every change under the ACL prefix (from any region). Ends
/// when the API is dropped.
pub(super) async fn follow(api: Weak<Api>) {
    let mut from = 0;
    loop {
        let Some(a) = api.upgrade() else { return };
        if !a.acl.enabled() {
            return;
        }
        match a.reload_acl().await {
            Ok(index) => from = index.max(from),
            Err(e) => tracing::warn!(error = %e, "reading the ACL state failed; retrying"),
        }
        let mut w = a.node.watch(ACL_PREFIX, from);
        drop(a);
        loop {
            match tokio::time::timeout(Duration::from_millis(FOLLOW_POLL_MS), w.next()).await {
                Ok(Some(c)) => {
                    from = from.max(c.index);
                    break;
                }
                Ok(None) => return,
                Err(_) if api.strong_count() == 0 => return,
                Err(_) => {}
            }
        }
    }
}

/// A refused ACL request: a 403 in Consul's words (plain text, as
/// Consul's), or another error of the API.
#[derive(Debug)]
pub(super) enum AclError {
    /// 403, `Permission denied: ...`.
    Denied(String),
    /// Any other refusal, as the API answers it.
    Api(ApiError),
}

impl From<ApiError> for AclError {
    fn from(e: ApiError) -> Self {
        AclError::Api(e)
    }
}

impl IntoResponse for AclError {
    fn into_response(self) -> Response {
        match self {
            AclError::Denied(text) => (
                StatusCode::FORBIDDEN,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                )],
                text,
            )
                .into_response(),
            AclError::Api(e) => e.into_response(),
        }
    }
}

/// A 403 in Consul's words.
pub(super) fn denied(caller: &Resolved, permission: &str, resource: &str) -> AclError {
    AclError::Denied(format!(
        "Permission denied: token with AccessorID '{}' lacks permission '{permission}' on {resource:?}",
        caller.accessor_id
    ))
}

/// What a path needs besides what its handler checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Open to all: health, Consul's probes, unknown paths.
    Open,
    /// The handler checks per key or per ACL object.
    Handler,
    /// Meridian's operator endpoints.
    Operator(Access),
}

fn need(method: &Method, path: &str) -> Need {
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    if under("/v1/kv")
        || under("/v1/doc")
        || under("/v1/txn")
        || under("/v1/watch")
        || under("/v1/acl")
        || path == "/v1/audit"
    {
        return Need::Handler;
    }
    match path {
        "/v1/health"
        | "/v1/status/leader"
        | "/v1/status/peers"
        | "/v1/agent/self"
        | "/v1/agent/members"
        | "/v1/catalog/datacenters" => Need::Open,
        // A backup holds every value; restore and promote change the node.
        "/v1/backup" | "/v1/restore" | "/v1/promote" | "/v1/agent/leave" => {
            Need::Operator(Access::Write)
        }
        p if p.starts_with("/v1/agent/force-leave/") => Need::Operator(Access::Write),
        "/v1/members" => Need::Operator(Access::Read),
        "/v1/status" | "/v1/digest" | "/v1/hashes" | "/v1/conflicts" | "/v1/events"
        | "/metrics" => Need::Operator(if method == Method::GET || method == Method::HEAD {
            Access::Read
        } else {
            Access::Write
        }),
        p if p.starts_with("/v1/history/") || p.starts_with("/v1/digest/") => {
            Need::Operator(Access::Read)
        }
        _ => Need::Open,
    }
}

/// The middleware that holds Meridian's operator endpoints to an
/// `operator` rule (or a management token).
pub(super) async fn gate(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    if let Err(refused) = operator_check(&api, req.method(), req.uri(), req.headers()) {
        return refused.into_response();
    }
    next.run(req).await
}

/// Whether the caller may use an operator endpoint (always, for the others
/// and with ACLs off): the gate's check, also made for requests that peers
/// forward (they do not pass through the router).
pub(super) fn operator_check(
    api: &Api,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), AclError> {
    if !api.acl.enabled() {
        return Ok(());
    }
    if let Need::Operator(wanted) = need(method, uri.path()) {
        let caller = api.caller(headers, uri);
        if caller.authz.operator() < wanted {
            return Err(denied(&caller, &format!("operator:{wanted}"), ""));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_by_consuls_precedence() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(token_of(&h, &uri("/v1/kv/a")), None);
        h.insert(header::AUTHORIZATION, "Bearer b".parse().unwrap());
        assert_eq!(token_of(&h, &uri("/v1/kv/a")).as_deref(), Some("b"));
        h.insert("x-consul-token", "x".parse().unwrap());
        assert_eq!(token_of(&h, &uri("/v1/kv/a")).as_deref(), Some("x"));
        assert_eq!(token_of(&h, &uri("/v1/kv/a?token=q")).as_deref(), Some("q"));
    }

    #[test]
    fn operator_endpoints_need_operator_rights_and_probes_stay_open() {
        assert_eq!(need(&Method::GET, "/v1/health"), Need::Open);
        assert_eq!(need(&Method::GET, "/v1/agent/self"), Need::Open);
        assert_eq!(need(&Method::GET, "/v1/kv/a"), Need::Handler);
        assert_eq!(need(&Method::GET, "/v1/kv"), Need::Handler);
        assert_eq!(need(&Method::PATCH, "/v1/doc/a"), Need::Handler);
        assert_eq!(
            need(&Method::GET, "/v1/status"),
            Need::Operator(Access::Read)
        );
        assert_eq!(
            need(&Method::GET, "/v1/backup"),
            Need::Operator(Access::Write)
        );
        assert_eq!(
            need(&Method::POST, "/v1/promote"),
            Need::Operator(Access::Write)
        );
        assert_eq!(
            need(&Method::GET, "/v1/history/a"),
            Need::Operator(Access::Read)
        );
        assert_eq!(need(&Method::GET, "/metrics"), Need::Operator(Access::Read));
        assert_eq!(
            need(&Method::GET, "/v1/digest/tree"),
            Need::Operator(Access::Read)
        );
        assert_eq!(
            need(&Method::GET, "/v1/digest/leaves"),
            Need::Operator(Access::Read)
        );
        // Not a prefix match by accident.
        assert_eq!(need(&Method::GET, "/v1/kvx"), Need::Open);
    }
}
