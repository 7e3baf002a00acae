//! `api::cors`: cross-origin requests from the consoles of the cluster's
//! own members, and no one else's.
//!
//! The console (`/ui/`, see `ui`) served by one node reads the others
//! directly at their API addresses: during a partition the node serving the
//! page cannot reach the cut-off region over the mesh, but the operator's
//! browser often can, and only then can one page show both sides' roots.
//! A browser allows those reads only when the other node answers with
//! `Access-Control-Allow-Origin`. This layer gives it to an origin whose
//! host and port are this node's API address or a known peer's (from the
//! status the API refreshes every 500 ms), and to nobody else: a page from
//! any other site gets no such header, so the browser keeps the answers
//! from it. The ACL token still travels in `X-Consul-Token` and is checked
//! by the endpoint as for any client.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Api;

/// How long a browser may cache a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE_S: u32 = 600;
/// Longest `Origin` header considered.
const ORIGIN_BYTES_MAX: usize = 256;

/// The `host:port` of an `Origin` header (`http://h:p` or `https://h:p`),
/// when it has that shape.
fn origin_host(origin: &str) -> Option<&str> {
    if origin.len() > ORIGIN_BYTES_MAX {
        return None;
    }
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// Whether `host` (`ip:port`) is this node's API address or a peer's.
fn is_member(api: &Api, host: &str) -> bool {
    if host == api.node.api_addr() {
        return true;
    }
    api.status_cached()
        .is_some_and(|s| s.replica.peers.iter().any(|p| p.api == host))
}

/// The origin to allow for this request, if it comes from a member's console.
fn allowed(api: &Api, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let host = origin_host(origin.to_str().ok()?)?;
    is_member(api, host).then(|| origin.clone())
}

/// The middleware: answers members' preflights, marks members' answers as
/// readable by their consoles; leaves every other request as it is.
pub(super) async fn cors(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let Some(origin) = allowed(&api, req.headers()) else {
        return next.run(req).await;
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut res = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, PUT, DELETE, PATCH, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("X-Consul-Token, Authorization, Content-Type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(PREFLIGHT_MAX_AGE_S),
        );
        r
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("X-Consul-Index, X-Consul-KnownLeader, X-Consul-LastContact"),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_origins_name_a_host() {
        assert_eq!(origin_host("http://127.0.0.1:8501"), Some("127.0.0.1:8501"));
        assert_eq!(origin_host("https://10.0.0.5:8500"), Some("10.0.0.5:8500"));
        assert_eq!(origin_host("null"), None);
        assert_eq!(origin_host("http://"), None);
        assert_eq!(origin_host("http://a:1/x"), None);
        assert_eq!(origin_host("file://a"), None);
        assert_eq!(origin_host(&format!("http://{}", "a".repeat(300))), None);
    }
}
