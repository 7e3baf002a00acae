//! A load generator for the KV API (`meridian bench` and the API
//! benchmark): keep-alive connections sending PUTs or GETs back to back,
//! and the throughput and latencies they saw.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};

use super::{Client, ClientError};

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Requests completed per second, over the whole run.
    pub ops_per_s: f64,
    /// Every request's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl LoadResult {
    /// The `p`-quantile latency in ms (0 when there were no requests).
    pub fn quantile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1e3
    }
}

/// What each request of a load run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// `PUT /v1/kv/<key>` of one value.
    Put,
    /// `GET /v1/kv/<key>`.
    Get,
    /// `PUT /v1/txn` setting `ops` keys in one transaction.
    Txn {
        /// Keys set per transaction.
        ops: usize,
    },
}

/// The method, path and body of request `i` of client `c`.
fn request(kind: Load, c: usize, i: usize, keys: usize, value: &Bytes) -> (Method, String, Bytes) {
    let key = |n: usize| format!("bench/{c}/{}", n % keys.max(1));
    match kind {
        Load::Put => (Method::PUT, format!("/v1/kv/{}", key(i)), value.clone()),
        Load::Get => (Method::GET, format!("/v1/kv/{}", key(i)), Bytes::new()),
        Load::Txn { ops } => {
            use base64::Engine;
            let v = base64::engine::general_purpose::STANDARD.encode(value);
            let body: Vec<serde_json::Value> = (0..ops)
                .map(|j| serde_json::json!({"KV": {"Verb": "set", "Key": key(i * ops + j), "Value": v}}))
                .collect();
            let body = serde_json::to_vec(&body).unwrap_or_default();
            (Method::PUT, "/v1/txn".to_string(), Bytes::from(body))
        }
    }
}

/// A load generator for the KV API: `clients` keep-alive connections, each
/// sending requests back to back for `duration` (PUTs of `value_bytes`
/// bytes, GETs, or transactions: `kind`) over its own `keys` keys under
/// `bench/`. A failed request ends the run with an error.
pub async fn load(
    target: &Client,
    clients: usize,
    duration: Duration,
    keys: usize,
    value_bytes: usize,
    kind: Load,
) -> Result<LoadResult, ClientError> {
    let start = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let err = |e: &dyn std::fmt::Display| ClientError::Http {
                addr: target.addr().to_string(),
                message: e.to_string(),
            };
            let mut tx = target.connect().await?.sender;
            let value = Bytes::from(vec![b'x'; value_bytes]);
            let mut lat = Vec::new();
            let mut i = 0usize;
            while tokio::time::Instant::now() < deadline {
                let (method, path, body) = request(kind, c, i, keys, &value);
                i += 1;
                let mut req = Request::builder()
                    .method(method)
                    .uri(path)
                    .header(hyper::header::HOST, "bench");
                if let Some(t) = &target.token {
                    req = req.header("x-consul-token", t.as_ref());
                }
                let req = req.body(Full::new(body)).map_err(|e| err(&e))?;
                let t = std::time::Instant::now();
                tx.ready().await.map_err(|e| err(&e))?;
                let resp = tx.send_request(req).await.map_err(|e| err(&e))?;
                let status = resp.status();
                resp.into_body().collect().await.map_err(|e| err(&e))?;
                if !status.is_success() {
                    return Err(err(&format!("HTTP {status}")));
                }
                lat.push(t.elapsed());
            }
            Ok::<_, ClientError>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => all.extend(r?),
            Err(e) => {
                return Err(ClientError::Http {
                    addr: target.addr().to_string(),
                    message: e.to_string(),
                })
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    Ok(LoadResult {
        ops_per_s: all.len() as f64 / secs,
        latencies: all,
    })
}
