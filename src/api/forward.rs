//! `api::forward`: `?dc=REGION` on the KV endpoint and on `/v1/txn`, and
//! `?node=ID|NAME` on those and on what `meridian verify` reads
//! ([`super::digest`]). A request for another region or member goes to a
//! node of that region, or to that member, over the authenticated peer
//! connection ([`crate::net::forward`]), never over the public API, and
//! that node's answer (status, Consul's headers, body) is returned as it
//! is. That node serves it as a local request with its own API, after its
//! own ACL checks: this file installs the handler that does so.
//!
//! An unknown region answers 500 "No path to datacenter", as Consul does; a
//! known region without a connected node answers 503; an unknown member
//! 404, a member not connected to this node 503.

use std::sync::{Arc, Weak};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::error::{body_error, error, ApiError};
use super::query::Params;
use super::{digest, kv, txn, Api};
use crate::net::forward::{
    ForwardAnswer, ForwardError, ForwardRequest, ForwardTo, Handler, FORWARD_ANSWER_BYTES_MAX,
    FORWARD_REQUEST_BYTES_MAX,
};

/// A forwarded request that is not a blocking query gets an answer within this.
const FORWARD_TIMEOUT_MS: u64 = 30_000;
/// A forwarded deep digest (every record checked) gets an answer within this.
const FORWARD_DEEP_TIMEOUT_MS: u64 = 120_000;
/// A forwarded blocking query: its wait, plus this.
const FORWARD_BLOCKING_EXTRA_MS: u64 = 15_000;
/// What `meridian verify` reads of another member, through this node.
const VERIFY_PATHS: &[&str] = &[
    "/v1/digest",
    "/v1/digest/tree",
    "/v1/digest/leaves",
    "/v1/hashes",
];
/// The answer headers that travel back.
const ANSWER_HEADERS: &[&str] = &[
    "content-type",
    "x-consul-index",
    "x-consul-knownleader",
    "x-consul-lastcontact",
];

/// The answer of another region's node, or of another member, when the
/// request names one with `?dc=` or `?node=`; else the body back, for this
/// node to serve the request.
pub(super) async fn elsewhere(
    api: &Api,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Body> {
    match target(api, uri) {
        Ok(Some(to)) => Ok(send(api, &to, method.clone(), uri, headers, body)
            .await
            .unwrap_or_else(IntoResponse::into_response)),
        Ok(None) => Err(body),
        Err(e) => Ok(e.into_response()),
    }
}

/// The region (`?dc=`) or member (`?node=`) a request names, when it is
/// not this node's region or this node.
fn target(api: &Api, uri: &Uri) -> Result<Option<ForwardTo>, ApiError> {
    // Most requests name neither: no second parse of their query for them.
    if !uri
        .query()
        .is_some_and(|q| q.contains("dc") || q.contains("node"))
    {
        return Ok(None);
    }
    let q = Params::parse(uri)?;
    let region = q
        .text("dc")
        .filter(|dc| !dc.is_empty() && *dc != api.node.region());
    let me = api.node.id().to_string();
    let node = q
        .text("node")
        .filter(|n| !n.is_empty() && *n != me && *n != api.node.name());
    match (region, node) {
        (Some(_), Some(_)) => Err(error(
            StatusCode::BAD_REQUEST,
            "?dc= and ?node= name two places: give one",
        )),
        (Some(r), None) => Ok(Some(ForwardTo::Region(r.to_string()))),
        (None, Some(n)) => Ok(Some(ForwardTo::Node(n.to_string()))),
        (None, None) => Ok(None),
    }
}

/// The path and query without `dc` and `node`: the node they name serves
/// it as its own.
fn without_dc(uri: &Uri) -> String {
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !matches!(p.split('=').next(), Some("dc" | "node")))
        .collect();
    if rest.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), rest.join("&"))
    }
}

/// Sends the request to `to` and returns its answer.
async fn send(
    api: &Api,
    to: &ForwardTo,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let q = Params::parse(uri)?;
    let timeout_ms = if q.text("index").is_some() {
        q.wait_ms()? + FORWARD_BLOCKING_EXTRA_MS
    } else if q.flag("deep") {
        FORWARD_DEEP_TIMEOUT_MS
    } else {
        FORWARD_TIMEOUT_MS
    };
    let max = FORWARD_REQUEST_BYTES_MAX - 64 * 1024;
    let body = axum::body::to_bytes(body, max)
        .await
        .map_err(|e| body_error(&e, max, "request"))?;
    let req = ForwardRequest {
        method: method.to_string(),
        path_and_query: without_dc(uri),
        // From any of the places a client may put it (?token= also travels
        // in the query).
        token: super::acl::token_of(headers, uri),
        body: body.to_vec(),
    };
    let answer = api.node.forward(to, &req, timeout_ms).await.map_err(|e| {
        let code = match e {
            ForwardError::UnknownRegion => StatusCode::INTERNAL_SERVER_ERROR,
            ForwardError::UnknownNode(_) => StatusCode::NOT_FOUND,
            ForwardError::Unreachable(_) | ForwardError::NodeUnreachable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ForwardError::Failed { .. } => StatusCode::BAD_GATEWAY,
            ForwardError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        };
        error(code, e.to_string())
    })?;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = HeaderMap::new();
    for (name, value) in answer.headers {
        let name = name.to_ascii_lowercase();
        if let (Some(n), Ok(v)) = (
            ANSWER_HEADERS.iter().find(|h| **h == name),
            HeaderValue::from_str(&value),
        ) {
            out.insert(*n, v);
        }
    }
    Ok((status, out, answer.body).into_response())
}

/// Installs on the node the handler that serves requests other regions
/// forward to it. It holds the API weakly: once the API is gone, forwarded
/// requests get a 503.
pub(super) fn install(api: &Arc<Api>) {
    let weak: Weak<Api> = Arc::downgrade(api);
    let handler: Handler = Arc::new(move |req: ForwardRequest| {
        let weak = weak.clone();
        Box::pin(async move {
            let response = match weak.upgrade() {
                Some(api) => serve(api, req).await,
                None => {
                    error(StatusCode::SERVICE_UNAVAILABLE, "the API is stopping").into_response()
                }
            };
            answer(response).await
        })
    });
    api.node.serve_forwarded(handler);
}

/// Serves a forwarded request as a local one.
async fn serve(api: Arc<Api>, req: ForwardRequest) -> Response {
    let (Ok(method), Ok(uri)) = (
        Method::from_bytes(req.method.as_bytes()),
        req.path_and_query.parse::<Uri>(),
    ) else {
        return error(StatusCode::BAD_REQUEST, "a malformed forwarded request").into_response();
    };
    let mut headers = HeaderMap::new();
    if let Some(v) = req.token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.insert("x-consul-token", v);
    }
    let body = Body::from(req.body);
    let path = uri.path().to_string();
    let response = if path == "/v1/kv" || path.starts_with("/v1/kv/") {
        kv::kv(
            State(api.clone()),
            method,
            uri.clone(),
            headers.clone(),
            body,
        )
        .await
    } else if path == "/v1/txn" && method == Method::PUT {
        txn::txn(State(api.clone()), uri.clone(), headers.clone(), body).await
    } else if method == Method::GET && VERIFY_PATHS.contains(&path.as_str()) {
        // Not through the router: the operator gate is checked here.
        if let Err(refused) = super::acl::operator_check(&api, &method, &uri, &headers) {
            return refused.into_response();
        }
        let (state, uri, headers) = (State(api.clone()), uri.clone(), headers.clone());
        return match path.as_str() {
            "/v1/digest" => digest::digest(state, uri, headers).await,
            "/v1/digest/tree" => digest::tree(state, uri, headers).await,
            "/v1/digest/leaves" => digest::leaves(state, uri, headers).await,
            _ => digest::hashes(state, uri, headers).await,
        };
    } else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "{method} {path} is not served for other nodes (only /v1/kv, /v1/txn and \
                 GET {})",
                VERIFY_PATHS.join(", ")
            ),
        )
        .into_response();
    };
    // Not through the router: the audit log is written here.
    let accepted = super::audit::accepted(&response);
    api.audit(accepted, &headers, &uri, "forwarded by a peer".to_string())
        .await;
    response
}

/// A response as it travels back: its status, the headers clients read,
/// and its body, within [`FORWARD_ANSWER_BYTES_MAX`].
async fn answer(response: Response) -> ForwardAnswer {
    let (parts, body) = response.into_parts();
    let headers = ANSWER_HEADERS
        .iter()
        .filter_map(|h| {
            let v = parts.headers.get(*h)?.to_str().ok()?;
            Some((h.to_string(), v.to_string()))
        })
        .collect();
    match axum::body::to_bytes(body, FORWARD_ANSWER_BYTES_MAX).await {
        Ok(b) => ForwardAnswer {
            status: parts.status.as_u16(),
            headers,
            body: b.to_vec(),
        },
        Err(_) => ForwardAnswer {
            status: StatusCode::BAD_GATEWAY.as_u16(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&super::wire::ErrorBody {
                error: format!(
                    "the answer is larger than {FORWARD_ANSWER_BYTES_MAX} bytes, the most a \
                     forwarded request returns: ask a node of that region directly"
                ),
            })
            .unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dc_is_taken_out_and_the_rest_kept() {
        let uri: Uri = "/v1/kv/a?dc=eu&recurse&index=5".parse().unwrap();
        assert_eq!(without_dc(&uri), "/v1/kv/a?recurse&index=5");
        let uri: Uri = "/v1/kv/a?dc=eu".parse().unwrap();
        assert_eq!(without_dc(&uri), "/v1/kv/a");
        let uri: Uri = "/v1/digest?node=n2&prefix=a".parse().unwrap();
        assert_eq!(without_dc(&uri), "/v1/digest?prefix=a");
    }
}
