//! `api::kv`: Consul's KV endpoint, `/v1/kv/<key>`: GET (one key, `recurse`,
//! `keys` with `separator`, `raw`, blocking `index` + `wait`), PUT (`cas`,
//! `flags`, `ack`) and DELETE (`recurse` with the mass-delete guard, `cas`).
//! With ACLs on, each key is held to the caller's token: a read of one key
//! or a write it may not make is a 403, a recursive read is filtered.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::acl::{denied, FILTERED_HEADER};
use super::audit::Audited;
use super::error::{body_error, error, key_error, node_error, ApiError};
use super::query::{path_rest, Params};
use super::{forward, wire, Api, DELETE_KEYS_MAX};
use crate::core::acl::Resolved;
use crate::core::types::Key;
use crate::node::{KvEntry, NodeError, WriteOptions};
use crate::sync::{WriteAck, WriteError};

/// The answer's form for an entry.
pub(super) fn entry(e: &KvEntry) -> wire::KvEntry {
    wire::KvEntry {
        lock_index: 0,
        key: e.key.clone(),
        flags: e.flags,
        value: e.value.clone(),
        create_index: e.create_index,
        modify_index: e.modify_index,
    }
}

/// A blocking query: answer once something changed after `index`, or
/// after `wait_ms`.
#[derive(Debug, Clone, Copy)]
struct Blocking {
    index: u64,
    wait_ms: u64,
}

/// The parameters of a GET.
#[derive(Debug)]
struct ReadQuery {
    /// Every entry under the key as a prefix.
    recurse: bool,
    /// Only the key names under the prefix.
    keys: bool,
    /// With `keys`: names cut after the first separator past the prefix.
    separator: Option<String>,
    /// One key's value as the body, not JSON.
    raw: bool,
    /// Behind a read barrier across regions (`?consistent`).
    consistent: bool,
    blocking: Option<Blocking>,
}

impl ReadQuery {
    fn parse(q: &Params) -> Result<ReadQuery, ApiError> {
        let blocking = match q.number("index")? {
            None => None,
            Some(index) => Some(Blocking {
                index,
                wait_ms: q.wait_ms()?,
            }),
        };
        Ok(ReadQuery {
            recurse: q.flag("recurse"),
            keys: q.flag("keys"),
            separator: q
                .text("separator")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            raw: q.flag("raw"),
            consistent: q.consistent()?,
            blocking,
        })
    }

    /// One key, not a prefix.
    fn single(&self) -> bool {
        !self.recurse && !self.keys
    }
}

/// The parameters of a PUT.
#[derive(Debug)]
struct PutQuery {
    cas: Option<u64>,
    flags: u64,
    ack: Option<WriteAck>,
}

impl PutQuery {
    fn parse(q: &Params) -> Result<PutQuery, ApiError> {
        for unsupported in ["acquire", "release"] {
            if q.flag(unsupported) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("{unsupported}: sessions and locks are not supported by Meridian"),
                ));
            }
        }
        Ok(PutQuery {
            cas: q.number("cas")?,
            flags: q.number("flags")?.unwrap_or(0),
            ack: q.ack()?,
        })
    }
}

/// The parameters of a DELETE.
#[derive(Debug)]
enum DeleteQuery {
    One {
        cas: Option<u64>,
        ack: Option<WriteAck>,
    },
    Recurse {
        /// Past the mass-delete guard.
        force: bool,
        ack: Option<WriteAck>,
    },
}

impl DeleteQuery {
    fn parse(q: &Params) -> Result<DeleteQuery, ApiError> {
        let cas = q.number("cas")?;
        if !q.flag("recurse") {
            return Ok(DeleteQuery::One { cas, ack: q.ack()? });
        }
        if cas.is_some() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "cas applies to one key, not to a recursive delete",
            ));
        }
        Ok(DeleteQuery::Recurse {
            force: q.flag("force"),
            ack: q.ack()?,
        })
    }
}

pub(super) async fn kv(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match forward::elsewhere(&api, &method, &uri, &headers, body).await {
        Ok(answer) => return answer,
        Err(body) => body,
    };
    let caller = api.caller(&headers, &uri);
    let result = match method {
        Method::GET | Method::HEAD => get(&api, &uri, &caller).await,
        Method::PUT | Method::POST => put(&api, &uri, body, &caller).await,
        Method::DELETE => delete(&api, &uri, &caller).await,
        other => Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{other} is not supported on /v1/kv (GET, PUT, DELETE)"),
        )),
    };
    result.unwrap_or_else(|e| {
        // Every KV answer carries the index, errors included (as Consul's do).
        let mut r = e.into_response();
        r.headers_mut().extend(api.headers(api.node.index()));
        r
    })
}

/// What a GET read: one key, or the live entries under a prefix.
enum Read {
    One(Option<KvEntry>),
    Many(Vec<KvEntry>),
}

/// Reads what `q` asks for under `key`, with the index that covers it:
/// the key's own modify index, or the greatest under the prefix
/// (deleted keys' tombstones included).
async fn read(api: &Api, key: &str, q: &ReadQuery) -> Result<(Read, u64), ApiError> {
    if q.single() {
        let r = api.node.get_indexed(key).await.map_err(node_error)?;
        Ok((Read::One(r.value), r.index))
    } else {
        let r = api.node.list_indexed(key).await.map_err(node_error)?;
        Ok((Read::Many(r.value), r.index))
    }
}

async fn get(api: &Api, uri: &Uri, caller: &Resolved) -> Result<Response, ApiError> {
    let key = path_rest(uri, "/v1/kv")?;
    let q = ReadQuery::parse(&Params::parse(uri)?)?;
    if q.single() {
        Key::check(&key, api.cfg.limits.key_bytes_max).map_err(key_error)?;
        if !caller.authz.key_read(&key) {
            return Ok(denied(caller, "key:read", &key).into_response());
        }
    }
    if q.consistent {
        // Every write a reachable region acknowledged before this request
        // is held here before the read (or the request fails).
        api.node
            .read_barrier(&key, !q.single())
            .await
            .map_err(node_error)?;
    }
    let Some(b) = q.blocking else {
        let (r, index) = read(api, &key, &q).await?;
        return Ok(answer(api, &key, &q, r, index, caller));
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(b.wait_ms);
    // An index of 0, or one ahead of this node (the client came from
    // another node): the answer at once, and the client starts over.
    if api.resume_index(b.index).await == 0 {
        let (r, index) = read(api, &key, &q).await?;
        return Ok(answer(api, &key, &q, r, index, caller));
    }
    let _permit = api.permit()?;
    loop {
        // Changes after this index wake the wait below: none is missed
        // between the read and the wait.
        let from = api.node.index();
        let (r, index) = read(api, &key, &q).await?;
        if index > b.index {
            return Ok(answer(api, &key, &q, r, index, caller));
        }
        // Nothing under the query changed since the client's index (a write
        // to another key, or a change that left the query's index where it
        // was, wakes nothing): wait on.
        if !api.changed(&key, q.single(), from, deadline).await {
            // The deadline: the same index back means "no change".
            return Ok(answer(api, &key, &q, r, b.index, caller));
        }
    }
}

/// The answer to a GET: the entries (or names, or the raw value), or a 404,
/// with `index` as `X-Consul-Index`. A recursive read shows only what the
/// caller may read (key names: list), and says when it left some out.
fn answer(api: &Api, key: &str, q: &ReadQuery, r: Read, index: u64, caller: &Resolved) -> Response {
    let mut headers = api.headers(index);
    let r = match r {
        Read::Many(mut list) => {
            let before = list.len();
            list.retain(|e| {
                if q.keys {
                    caller.authz.key_list(&e.key)
                } else {
                    caller.authz.key_read(&e.key)
                }
            });
            if list.len() < before {
                headers.insert(FILTERED_HEADER, HeaderValue::from_static("true"));
            }
            Read::Many(list)
        }
        one => one,
    };
    match r {
        Read::One(None) => (StatusCode::NOT_FOUND, headers).into_response(),
        // As Consul: the root's key list is `[]` when empty, other empty reads 404.
        Read::Many(list) if list.is_empty() && q.keys && key.is_empty() => {
            (headers, axum::Json(Vec::<String>::new())).into_response()
        }
        Read::Many(list) if list.is_empty() => (StatusCode::NOT_FOUND, headers).into_response(),
        Read::One(Some(e)) => {
            if q.raw {
                let mut headers = headers;
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                return (headers, e.value).into_response();
            }
            (headers, axum::Json([entry(&e)])).into_response()
        }
        Read::Many(list) if !q.keys => {
            let body: Vec<wire::KvEntry> = list.iter().map(entry).collect();
            (headers, axum::Json(body)).into_response()
        }
        Read::Many(list) => {
            let mut names: Vec<String> = Vec::new();
            for e in &list {
                let name = match &q.separator {
                    Some(sep) => match e.key[key.len()..].find(sep.as_str()) {
                        Some(at) => e.key[..key.len() + at + sep.len()].to_string(),
                        None => e.key.clone(),
                    },
                    None => e.key.clone(),
                };
                if names.last() != Some(&name) {
                    names.push(name);
                }
            }
            (headers, axum::Json(names)).into_response()
        }
    }
}

async fn put(api: &Api, uri: &Uri, body: Body, caller: &Resolved) -> Result<Response, ApiError> {
    let key = path_rest(uri, "/v1/kv")?;
    let q = PutQuery::parse(&Params::parse(uri)?)?;
    // Validated once, here: the node and the replica take the key as it is.
    let key = Key::new_within(&key, api.cfg.limits.key_bytes_max).map_err(key_error)?;
    let max = api.cfg.limits.value_bytes_max;
    let value: Bytes = axum::body::to_bytes(body, max)
        .await
        .map_err(|e| body_error(&e, max, "value"))?;
    // After the body is read: a refused request leaves the connection
    // usable for the client's next one.
    if !caller.authz.key_write(key.as_str()) {
        return Ok(denied(caller, "key:write", key.as_str()).into_response());
    }
    let opts = WriteOptions {
        flags: q.flags,
        cas: q.cas,
        ack: q.ack,
    };
    let name = key.to_string();
    let done = match api.node.put_opts(key, value, opts).await {
        Ok(_) => true,
        Err(NodeError::Write(WriteError::CasMismatch { .. })) => false,
        Err(e) => return Err(node_error(e)),
    };
    let r = (api.headers(api.node.index()), axum::Json(done)).into_response();
    Ok(if done {
        Audited::new("put", vec![name]).on(r)
    } else {
        r
    })
}

async fn delete(api: &Api, uri: &Uri, caller: &Resolved) -> Result<Response, ApiError> {
    let key = path_rest(uri, "/v1/kv")?;
    match DeleteQuery::parse(&Params::parse(uri)?)? {
        DeleteQuery::Recurse { force, ack } => {
            // Every key under the prefix, also those not written yet.
            if !caller.authz.key_write_prefix(&key) {
                return Ok(denied(caller, "key:write", &key).into_response());
            }
            let list = api.node.list(&key).await.map_err(node_error)?;
            let guard = api.cfg.recursive_delete_keys_max;
            if list.len() > guard && !force {
                return Err(error(
                    StatusCode::CONFLICT,
                    format!(
                        "refusing to delete {} keys under {key:?}: more than recursive_delete_keys_max ({guard}); \
                         add ?force (meridian kv delete --recurse --force) if you mean it",
                        list.len()
                    ),
                ));
            }
            // One durable step: every key this node knows under the prefix,
            // deleted ones included (so the delete also wins over writes to
            // them not seen here yet).
            api.node
                .delete_prefix_acked(&key, DELETE_KEYS_MAX, ack)
                .await
                .map_err(node_error)?;
            let r = (api.headers(api.node.index()), axum::Json(true)).into_response();
            Ok(Audited::new("delete-tree", vec![key]).on(r))
        }
        DeleteQuery::One { cas, ack } => {
            let key = Key::new_within(&key, api.cfg.limits.key_bytes_max).map_err(key_error)?;
            if !caller.authz.key_write(key.as_str()) {
                return Ok(denied(caller, "key:write", key.as_str()).into_response());
            }
            // Without cas a delete always writes a tombstone, also for a key
            // absent here: a write from another region may be on its way, and
            // the later delete must win. With cas, as in Consul: a key that is
            // not live here answers true (nothing left to delete), another
            // version false.
            let opts = WriteOptions { flags: 0, cas, ack };
            let name = key.to_string();
            let (done, wrote) = match api.node.delete_opts(key, opts).await {
                Ok(_) => (true, true),
                Err(NodeError::Write(WriteError::CasMismatch { actual, .. })) => {
                    (actual == 0, false)
                }
                Err(e) => return Err(node_error(e)),
            };
            let r = (api.headers(api.node.index()), axum::Json(done)).into_response();
            Ok(if wrote {
                Audited::new("delete", vec![name]).on(r)
            } else {
                r
            })
        }
    }
}
