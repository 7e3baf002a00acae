//! `api::doc`: documents at `/v1/doc/<key>` (issue 16). `GET` answers the
//! document's JSON (`?heads` wraps it with its heads and indexes, `?at=`
//! renders it as it was at earlier heads), `PUT` writes a whole JSON
//! object (changed field by field against the current document), `PATCH`
//! applies an RFC 7386 merge patch, `DELETE` deletes the key as KV's does.
//! `cas`, `flags` and `ack` as for KV. With ACLs on, the key rules of KV
//! apply. A document is also an ordinary value to `/v1/kv` (its JSON).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::acl::denied;
use super::audit::Audited;
use super::error::{body_error, doc_status, error, key_error, node_error, ApiError};
use super::query::{path_rest, Params};
use super::{forward, wire, Api};
use crate::core::doc::{parse_heads, parse_json, DocError};
use crate::core::types::Key;
use crate::node::{NodeError, WriteOptions};
use crate::sync::{DocWrite, WriteError};

/// `/v1/doc/<key>`.
pub(super) async fn doc(
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
    let go = async {
        let key = path_rest(&uri, "/v1/doc")?;
        let key = Key::new_within(&key, api.cfg.limits.key_bytes_max).map_err(key_error)?;
        let q = Params::parse(&uri)?;
        let (permission, allowed) = if method == Method::GET || method == Method::HEAD {
            ("key:read", caller.authz.key_read(key.as_str()))
        } else {
            ("key:write", caller.authz.key_write(key.as_str()))
        };
        match method {
            Method::GET | Method::HEAD => {
                if !allowed {
                    return Ok(denied(&caller, permission, key.as_str()).into_response());
                }
                get(&api, &key, &q).await
            }
            Method::PUT | Method::POST | Method::PATCH => {
                let max = api.cfg.limits.value_bytes_max;
                let body: Bytes = axum::body::to_bytes(body, max)
                    .await
                    .map_err(|e| body_error(&e, max, "document"))?;
                if !allowed {
                    return Ok(denied(&caller, permission, key.as_str()).into_response());
                }
                let json = parse_json(&body).map_err(doc_error)?;
                let write = if method == Method::PATCH {
                    DocWrite::Patch(json)
                } else {
                    DocWrite::Whole(json)
                };
                put(&api, key, write, &q).await
            }
            Method::DELETE => {
                if !allowed {
                    return Ok(denied(&caller, permission, key.as_str()).into_response());
                }
                let opts = WriteOptions {
                    flags: 0,
                    cas: q.number("cas")?,
                    ack: q.ack()?,
                };
                let name = key.to_string();
                let done = match api.node.delete_opts(key, opts).await {
                    Ok(_) => true,
                    Err(NodeError::Write(WriteError::CasMismatch { .. })) => false,
                    Err(e) => return Err(node_error(e)),
                };
                let r = (api.headers(api.node.index()), axum::Json(done)).into_response();
                Ok(if done {
                    Audited::new("delete", vec![name]).on(r)
                } else {
                    r
                })
            }
            other => Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{other} is not supported on /v1/doc (GET, PUT, PATCH, DELETE)"),
            )),
        }
    };
    go.await.unwrap_or_else(|e: ApiError| {
        let mut r = e.into_response();
        r.headers_mut().extend(api.headers(api.node.index()));
        r
    })
}

fn doc_error(e: DocError) -> ApiError {
    error(doc_status(&e), e.to_string())
}

async fn get(api: &Api, key: &Key, q: &Params) -> Result<Response, ApiError> {
    let at = match q.text("at") {
        None => None,
        Some(text) => Some(parse_heads(text).map_err(doc_error)?),
    };
    let read = api
        .node
        .get_doc(key.as_str(), at)
        .await
        .map_err(node_error)?;
    let headers = api.headers(read.index);
    let Some(d) = read.value else {
        return Ok((StatusCode::NOT_FOUND, headers).into_response());
    };
    if q.flag("heads") {
        let answer = wire::DocAnswer {
            doc: d.json,
            heads: d.heads,
            flags: d.flags,
            create_index: d.create_index,
            modify_index: d.modify_index,
            stamp: d.stamp.to_string(),
        };
        return Ok((headers, axum::Json(answer)).into_response());
    }
    Ok((headers, axum::Json(d.json)).into_response())
}

async fn put(api: &Api, key: Key, write: DocWrite, q: &Params) -> Result<Response, ApiError> {
    let opts = WriteOptions {
        flags: q.number("flags")?.unwrap_or(0),
        cas: q.number("cas")?,
        ack: q.ack()?,
    };
    let name = key.to_string();
    let receipt = match api.node.doc_opts(key, write, opts).await {
        Ok(r) => r,
        Err(NodeError::Write(e @ WriteError::CasMismatch { .. })) => {
            return Err(error(StatusCode::CONFLICT, e.to_string()))
        }
        Err(e) => return Err(node_error(e)),
    };
    let answer = wire::DocWritten {
        modify_index: receipt.index,
        stamp: receipt.stamp.to_string(),
    };
    let r = (api.headers(api.node.index()), axum::Json(answer)).into_response();
    Ok(Audited::new("put", vec![name]).on(r))
}
