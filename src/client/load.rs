//! A load generator for the KV API (`meridian bench` and the API
//! benchmark): keep-alive connections sending PUTs or GETs back to back,
//! and the throughput and latencies they saw.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use super::ClientError;

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

/// A load generator for the KV API: `clients` keep-alive connections, each
/// sending requests back to back for `duration`, PUTs of `value_bytes`
/// bytes (or GETs) over its own `keys` keys under `bench/`. A failed
/// request ends the run with an error.
pub async fn load(
    addr: std::net::SocketAddr,
    clients: usize,
    duration: Duration,
    keys: usize,
    value_bytes: usize,
    write: bool,
) -> Result<LoadResult, ClientError> {
    let start = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let authority = addr.to_string();
            let err = |e: &dyn std::fmt::Display| ClientError::Http {
                addr: authority.clone(),
                message: e.to_string(),
            };
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: addr.to_string(),
                    source,
                })?;
            let _ = stream.set_nodelay(true);
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| err(&e))?;
            tokio::spawn(conn);
            let value = Bytes::from(vec![b'x'; value_bytes]);
            let mut lat = Vec::new();
            let mut i = 0usize;
            while tokio::time::Instant::now() < deadline {
                let key = format!("/v1/kv/bench/{c}/{}", i % keys.max(1));
                i += 1;
                let (method, body) = if write {
                    (Method::PUT, value.clone())
                } else {
                    (Method::GET, Bytes::new())
                };
                let req = Request::builder()
                    .method(method)
                    .uri(key)
                    .header(hyper::header::HOST, "bench")
                    .body(Full::new(body))
                    .map_err(|e| err(&e))?;
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
                    addr: addr.to_string(),
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
