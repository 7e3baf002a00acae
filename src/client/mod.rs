//! `client`: a small HTTP/1.1 client for a node's API, used by the CLI
//! (`meridian kv|status|verify|health`) and by tests.
//!
//! One connection per request over plain HTTP (the API listens on loopback
//! by default; put a TLS proxy in front to expose it). Responses are read
//! up to [`RESPONSE_BYTES_MAX`]; streams (`/v1/watch`) are read frame by
//! frame.

mod load;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use thiserror::Error;

pub use load::{load, LoadResult};

/// Largest response body read into memory.
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;

/// How long connecting may take.
pub const CONNECT_MS_MAX: u64 = 5_000;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("address {0:?} is not of the form http://host:port")]
    Address(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    #[error("request to {addr} failed: {message}")]
    Http { addr: String, message: String },
    #[error("{addr} did not answer within {ms} ms")]
    Timeout { addr: String, ms: u64 },
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` field of a JSON error body, or the body itself.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str().map(str::to_string)))
            .unwrap_or_else(|| self.text())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A node's API address.
#[derive(Debug, Clone)]
pub struct Client {
    /// `host:port`.
    authority: String,
    /// Longest wait for a whole response.
    timeout_ms: u64,
}

/// Percent-encodes a key for a URL path (keeps `/` and unreserved characters).
pub fn encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Client {
    /// `addr` is `http://host:port` or `host:port`.
    pub fn new(addr: &str) -> Result<Client, ClientError> {
        let rest = addr.strip_prefix("http://").unwrap_or(addr);
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || addr.starts_with("https://") {
            return Err(ClientError::Address(addr.to_string()));
        }
        Ok(Client {
            authority: authority.to_string(),
            timeout_ms: 60_000,
        })
    }

    /// Sets the longest wait for a whole response (default 60 s).
    pub fn timeout_ms(mut self, ms: u64) -> Client {
        self.timeout_ms = ms;
        self
    }

    pub fn addr(&self) -> &str {
        &self.authority
    }

    fn http_err(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Http {
            addr: self.authority.clone(),
            message: e.to_string(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let connect = tokio::net::TcpStream::connect(&self.authority);
        let stream = tokio::time::timeout(Duration::from_millis(CONNECT_MS_MAX), connect)
            .await
            .map_err(|_| ClientError::ConnectTimeout(self.authority.clone()))?
            .map_err(|source| ClientError::Connect {
                addr: self.authority.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http_err(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .body(Full::new(body))
            .map_err(|e| self.http_err(e))?;
        sender.send_request(req).await.map_err(|e| self.http_err(e))
    }

    /// One request; the whole response.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Reply, ClientError> {
        let whole = async {
            let resp = self.send(method, path, body).await?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, RESPONSE_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| self.http_err(e))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(Duration::from_millis(self.timeout_ms), whole)
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.authority.clone(),
                ms: self.timeout_ms,
            })?
    }

    pub async fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.request(Method::GET, path, Bytes::new()).await
    }

    /// Sends a request and returns the response with its body unread (for downloads).
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        self.send(method, path, body).await
    }

    /// Opens a streaming response (server-sent events).
    pub async fn stream(&self, path: &str) -> Result<Stream, ClientError> {
        let resp = self.send(Method::GET, path, Bytes::new()).await?;
        Ok(Stream {
            status: resp.status(),
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }
}

/// A streaming response read as server-sent events.
pub struct Stream {
    pub status: StatusCode,
    body: Incoming,
    /// Raw bytes: a character may be split between frames.
    buf: Vec<u8>,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: String,
}

/// Longest event accepted from a stream.
const EVENT_BYTES_MAX: usize = 16 << 20;

impl Stream {
    /// The next event; `Ok(None)` when the stream ends. Comments (keep-alives) are skipped.
    pub async fn next_event(&mut self) -> Result<Option<SseEvent>, String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&raw);
                let mut ev = SseEvent::default();
                for line in block.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => ev.id = value.to_string(),
                        "event" => ev.event = value.to_string(),
                        "data" => {
                            if !ev.data.is_empty() {
                                ev.data.push('\n');
                            }
                            ev.data.push_str(value);
                        }
                        _ => {}
                    }
                }
                if ev.data.is_empty() && ev.event.is_empty() {
                    continue;
                }
                return Ok(Some(ev));
            }
            if self.buf.len() > EVENT_BYTES_MAX {
                return Err(format!("an event is longer than {EVENT_BYTES_MAX} bytes"));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
