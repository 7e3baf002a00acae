//! `webhook`: delivers a node's events to HTTP endpoints.
//!
//! Owns one delivery task per configured endpoint: events (filtered by
//! type) enter a bounded queue of [`WEBHOOK_QUEUE_MAX`]; when it is full new
//! events are dropped and counted. Each event is POSTed as JSON (the shape
//! of [`crate::api::wire::EventDoc`]) and retried with doubling delays,
//! [`WEBHOOK_ATTEMPTS_MAX`] attempts in all; then it is dropped, counted and
//! logged. `https://` receivers are checked against the system's roots or
//! a configured CA. With a `secret`, every delivery is signed: the
//! `X-Meridian-Signature` header is `sha256=` and the hex HMAC-SHA256,
//! under the secret, of the `X-Meridian-Timestamp` header's value (ms
//! since the epoch), a `.`, and the body; a receiver recomputes it and
//! refuses stale timestamps to refuse replays.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::api::events::event_doc;
use crate::api::wire::EventType;
use crate::client::{Client, ClientTls};
use crate::node::Node;

/// Events waiting for one endpoint.
pub const WEBHOOK_QUEUE_MAX: usize = 1_024;
/// Delivery attempts per event.
pub const WEBHOOK_ATTEMPTS_MAX: u32 = 5;
/// First retry delay; it doubles each time.
pub const WEBHOOK_RETRY_MS_MIN: u64 = 200;
/// Longest wait for an endpoint's answer.
pub const WEBHOOK_TIMEOUT_MS: u64 = 5_000;

/// The header with a delivery's signature.
pub const SIGNATURE_HEADER: &str = "x-meridian-signature";
/// The header with the time the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-meridian-timestamp";

/// `[[webhooks]]` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path` or `https://host:port/path`.
    pub url: String,
    /// For `https://`: the CA the receiver's certificate must chain to
    /// (PEM); default: the system's trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Signs every delivery with HMAC-SHA256 under this secret (see the
    /// module documentation). Default: unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Event types to send (see the README); empty: every type. An
    /// unknown name is refused when the config is read, with the list of
    /// known ones.
    #[serde(default)]
    pub events: Vec<EventType>,
}

impl WebhookConfig {
    /// The endpoint's address (with its scheme) and path, or why the
    /// config is wrong.
    pub fn target(&self) -> Result<(String, String), String> {
        let (scheme, rest) = if let Some(r) = self.url.strip_prefix("http://") {
            ("http://", r)
        } else if let Some(r) = self.url.strip_prefix("https://") {
            ("https://", r)
        } else {
            return Err(format!(
                "webhook url {:?} must start with http:// or https://",
                self.url
            ));
        };
        if self.ca_file.is_some() && scheme == "http://" {
            return Err(format!(
                "webhook url {:?}: ca_file needs https://",
                self.url
            ));
        }
        if self.secret.as_deref() == Some("") {
            return Err(format!("webhook url {:?}: an empty secret", self.url));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("webhook url {:?} has no host", self.url));
        }
        Ok((format!("{scheme}{authority}"), path.to_string()))
    }
}

/// The signature of a delivery of `body` at `timestamp_ms` under `secret`:
/// `sha256=` and the hex HMAC-SHA256 of `<timestamp_ms>.<body>`.
pub fn signature(secret: &str, timestamp_ms: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp_ms.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Counters of one endpoint.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Events the endpoint accepted with a success status.
    pub delivered: AtomicU64,
    /// Dropped on a full queue, or by a subscriber that fell behind.
    pub dropped_queue: AtomicU64,
    /// Dropped after every attempt failed.
    pub dropped_failed: AtomicU64,
}

/// Starts delivering `node`'s events to `cfg`'s endpoint. The tasks end
/// when the node stops or the handles are aborted.
pub fn spawn(
    node: &Arc<Node>,
    cfg: &WebhookConfig,
) -> Result<(Vec<JoinHandle<()>>, Arc<WebhookStats>), String> {
    let (address, path) = cfg.target()?;
    let tls = match &cfg.ca_file {
        Some(ca) => Some(Arc::new(
            ClientTls::new(Some(ca), None, None)
                .map_err(|e| format!("webhook {}: {e}", cfg.url))?,
        )),
        None => None,
    };
    let client = Client::with_tls(&address, tls)
        .map_err(|e| e.to_string())?
        .timeout_ms(WEBHOOK_TIMEOUT_MS);
    let secret = cfg.secret.clone();
    let stats = Arc::new(WebhookStats::default());
    let (tx, rx) = mpsc::channel::<Bytes>(WEBHOOK_QUEUE_MAX);
    let mut events = node.subscribe();
    let filter = cfg.events.clone();
    let who = (
        node.id().to_string(),
        node.name().to_string(),
        node.region().to_string(),
    );
    let s = stats.clone();
    let collect = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => {
                    let doc = event_doc(&e, &who.0, &who.1, &who.2);
                    if !filter.is_empty() && !filter.contains(&EventType::from(&doc.event)) {
                        continue;
                    }
                    let Ok(body) = serde_json::to_vec(&doc) else {
                        continue;
                    };
                    if tx.try_send(Bytes::from(body)).is_err() {
                        s.dropped_queue.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    s.dropped_queue.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let deliver = tokio::spawn(deliver(client, path, secret, rx, stats.clone()));
    Ok((vec![collect, deliver], stats))
}

async fn deliver(
    client: Client,
    path: String,
    secret: Option<String>,
    mut rx: mpsc::Receiver<Bytes>,
    stats: Arc<WebhookStats>,
) {
    while let Some(body) = rx.recv().await {
        let mut delay = WEBHOOK_RETRY_MS_MIN;
        let mut last = String::new();
        let mut sent = false;
        for attempt in 1..=WEBHOOK_ATTEMPTS_MAX {
            let mut headers = Vec::new();
            if let Some(secret) = &secret {
                let now = crate::node::time::now_ms();
                headers.push((TIMESTAMP_HEADER, now.to_string()));
                headers.push((SIGNATURE_HEADER, signature(secret, now, &body)));
            }
            match client
                .request_with(Method::POST, &path, body.clone(), &headers)
                .await
            {
                Ok(r) if r.status.is_success() => {
                    sent = true;
                    break;
                }
                Ok(r) => last = format!("HTTP {}", r.status.as_u16()),
                Err(e) => last = e.to_string(),
            }
            if attempt < WEBHOOK_ATTEMPTS_MAX {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                delay *= 2;
            }
        }
        if sent {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.dropped_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                webhook = %client.addr(),
                "dropping an event after {WEBHOOK_ATTEMPTS_MAX} failed attempts: {last}"
            );
        }
    }
}
