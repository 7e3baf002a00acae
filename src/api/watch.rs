//! `api::watch`: `GET /v1/watch/<prefix>`, every change under a prefix as
//! server-sent events, resumable by index.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::error::{error, ApiError};
use super::query::{path_rest, Params};
use super::{wire, Api, KEEP_ALIVE_MS};
use crate::node::Change;

/// The answer's form for a change.
fn change(c: &Change) -> wire::KvChange {
    wire::KvChange {
        index: c.index,
        key: c.key.clone(),
        op: if c.value.is_some() {
            wire::Op::Put
        } else {
            wire::Op::Delete
        },
        flags: c.flags,
        value: c.value.clone().unwrap_or_default(),
        stamp: c.stamp.to_string(),
    }
}

/// Where a watch starts: after this index.
#[derive(Debug)]
struct WatchQuery {
    from: u64,
}

impl WatchQuery {
    /// A reconnecting EventSource repeats the URL and adds `Last-Event-ID`:
    /// the header is the later position, so it wins over `?index=`.
    fn parse(q: &Params, headers: &HeaderMap) -> Result<WatchQuery, ApiError> {
        let from = match headers.get("last-event-id") {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| error(StatusCode::BAD_REQUEST, "Last-Event-ID must be an index"))?,
            None => q.number("index")?.unwrap_or(0),
        };
        Ok(WatchQuery { from })
    }
}

/// `GET /v1/watch/<prefix>?index=N`: every change under the prefix after
/// index N (or after the `Last-Event-ID` header), then each change as it
/// becomes durable, as server-sent events whose id is the change's index.
pub(super) async fn watch(State(api): State<Arc<Api>>, uri: Uri, headers: HeaderMap) -> Response {
    let go = async {
        let prefix = path_rest(&uri, "/v1/watch")?;
        let q = WatchQuery::parse(&Params::parse(&uri)?, &headers)?;
        // An index ahead of this node (another node's, or from before a
        // restore) would skip changes: after a moment for a commit in
        // flight, the watch starts over from the beginning.
        let from = api.resume_index(q.from).await;
        let permit = api.permit()?;
        let w = api.node.watch(&prefix, from);
        // Only the changes of keys the caller may read.
        let authz = api.caller(&headers, &uri).authz;
        let stream = futures_util::stream::unfold((w, permit), move |(mut w, permit)| {
            let authz = authz.clone();
            async move {
                let c = loop {
                    let c = w.next().await?;
                    if authz.key_read(&c.key) {
                        break change(&c);
                    }
                };
                let ev = SseEvent::default()
                    .id(c.index.to_string())
                    .event(c.op.as_str())
                    .json_data(&c)
                    .unwrap_or_else(|e| SseEvent::default().comment(e.to_string()));
                Some((Ok::<_, Infallible>(ev), (w, permit)))
            }
        });
        let sse = Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(Duration::from_millis(KEEP_ALIVE_MS)));
        Ok::<_, ApiError>(sse.into_response())
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}
