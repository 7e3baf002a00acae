//! Forwarded API requests (`?dc=REGION`, `?node=NODE`): a request for
//! another region (or one member) travels to a node of that region (or to
//! that member) over the authenticated peer
//! connection, on a bidirectional QUIC stream of its own (one per
//! request, so that a slow answer holds up neither replication nor other
//! requests), and the answer comes back on the same stream. The node that
//! receives it serves it with its own API (the handler the API installs),
//! as a local request.
//!
//! Each direction is one frame: a 4-byte little-endian length, then the
//! postcard encoding. Requests and answers are bounded; a stream that
//! breaks the bounds, or does not decode, is reset and counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::NetMetrics;

/// Forwarded requests one connection carries at once (QUIC's bidirectional
/// stream limit); more wait for a stream.
pub const FORWARDS_PER_CONNECTION_MAX: u32 = 64;
/// Largest forwarded request: a transaction's body or a largest value, with its path.
pub const FORWARD_REQUEST_BYTES_MAX: usize = 16 << 20;
/// Largest forwarded answer; a larger one is refused by the region that
/// would send it, with a message saying so.
pub const FORWARD_ANSWER_BYTES_MAX: usize = 32 << 20;

/// Where a forwarded request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardTo {
    /// A node of this region (`?dc=`).
    Region(String),
    /// This member, by node id or name (`?node=`).
    Node(String),
}

impl std::fmt::Display for ForwardTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardTo::Region(r) => write!(f, "region {r}"),
            ForwardTo::Node(n) => write!(f, "node {n}"),
        }
    }
}

/// A request for another region's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// The HTTP method.
    pub method: String,
    /// The path and query, without `dc`.
    pub path_and_query: String,
    /// The client's `X-Consul-Token`, if it sent one.
    pub token: Option<String>,
    /// The request body.
    pub body: Vec<u8>,
}

/// The answer of the region's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The headers a client reads (`Content-Type`, `X-Consul-*`).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Serves a forwarded request (the API installs one; see [`Forwarding`]).
pub type Handler = Arc<
    dyn Fn(ForwardRequest) -> Pin<Box<dyn Future<Output = ForwardAnswer> + Send>> + Send + Sync,
>;

/// Where this node's transport hands forwarded requests: set once, by the
/// API, after the node has started (requests before that are refused).
#[derive(Clone, Default)]
pub struct Forwarding(Arc<OnceLock<Handler>>);

impl Forwarding {
    /// Installs the handler; a second call is ignored (false).
    pub fn install(&self, h: Handler) -> bool {
        self.0.set(h).is_ok()
    }

    fn handler(&self) -> Option<Handler> {
        self.0.get().cloned()
    }
}

impl std::fmt::Debug for Forwarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarding")
            .field("installed", &self.0.get().is_some())
            .finish()
    }
}

/// Why a forwarded request got no answer.
#[derive(Debug, Error)]
pub enum ForwardError {
    /// No region of that name is known.
    #[error("No path to datacenter")]
    UnknownRegion,
    /// The region is known but none of its nodes is connected.
    #[error("Remote DC has no server currently reachable (region {0})")]
    Unreachable(String),
    /// The stream failed, or the answer did not come within the timeout.
    #[error("the request to {to} failed: {reason}")]
    Failed {
        /// Where it went (`region eu`, `node n1`).
        to: String,
        /// What went wrong.
        reason: String,
    },
    /// No member has that node id or name (`?node=`).
    #[error("no member of the cluster is node {0:?} (give its id or its name)")]
    UnknownNode(String),
    /// The member is known but this node has no connection to it.
    #[error("node {0:?} is not connected to this node")]
    NodeUnreachable(String),
    /// The request is larger than [`FORWARD_REQUEST_BYTES_MAX`].
    #[error("the request is {0} bytes, more than a forwarded request may be ({FORWARD_REQUEST_BYTES_MAX})")]
    TooLarge(usize),
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let body = postcard::to_allocvec(v).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

async fn read_frame<T: for<'de> Deserialize<'de>>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<T, String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| format!("reading the length: {e}"))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(format!("a frame of {len} bytes, more than {max}"));
    }
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf)
        .await
        .map_err(|e| format!("reading the frame: {e}"))?;
    postcard::from_bytes(&buf).map_err(|e| format!("a malformed frame: {e}"))
}

/// Sends `req` on `connection` (to `to`, as errors name it: `region eu`,
/// `node n1`) and waits for its answer, at most `timeout_ms`.
pub async fn send(
    connection: &quinn::Connection,
    to: &str,
    req: &ForwardRequest,
    timeout_ms: u64,
) -> Result<ForwardAnswer, ForwardError> {
    let frame = encode(req);
    if frame.len() > FORWARD_REQUEST_BYTES_MAX {
        return Err(ForwardError::TooLarge(frame.len()));
    }
    let failed = |reason: String| ForwardError::Failed {
        to: to.to_string(),
        reason,
    };
    let exchange = async {
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| format!("opening a stream: {e}"))?;
        send.write_all(&frame)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        let _ = send.finish();
        read_frame::<ForwardAnswer>(&mut recv, FORWARD_ANSWER_BYTES_MAX + 64 * 1024).await
    };
    match tokio::time::timeout(Duration::from_millis(timeout_ms), exchange).await {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(reason)) => Err(failed(reason)),
        Err(_) => Err(failed(format!("no answer within {timeout_ms} ms"))),
    }
}

/// Serves the forwarded requests that arrive on `connection` until it
/// closes: each stream in a task of its own.
pub async fn serve(
    connection: quinn::Connection,
    forwarding: Forwarding,
    metrics: Arc<NetMetrics>,
) {
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let forwarding = forwarding.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let req = match read_frame::<ForwardRequest>(&mut recv, FORWARD_REQUEST_BYTES_MAX).await
            {
                Ok(r) => r,
                Err(why) => {
                    metrics.malformed_frames.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("refused a forwarded request: {why}");
                    let _ = send.reset(super::CLOSE_MALFORMED.into());
                    return;
                }
            };
            let answer = match forwarding.handler() {
                Some(h) => h(req).await,
                None => ForwardAnswer {
                    status: 503,
                    headers: vec![("Content-Type".into(), "application/json".into())],
                    body: br#"{"error":"this node's API is not serving yet"}"#.to_vec(),
                },
            };
            let _ = send.write_all(&encode(&answer)).await;
            let _ = send.finish();
        });
    }
}
