//! `client`: a small HTTP/1.1 client for a node's API, used by the CLI
//! (`meridian kv|status|verify|health`) and by tests. Answers are read into
//! the API's own types ([`crate::api::wire`]).
//!
//! One connection per request, over HTTP or HTTPS (`https://` addresses,
//! with the settings of [`ClientTls`]). Responses are read up to
//! [`RESPONSE_BYTES_MAX`]; streams (`/v1/watch`) are read frame by frame.

mod load;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::api::wire;

pub use load::{load, Load, LoadResult};
pub use tls::ClientTls;

/// Largest response body read into memory.
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;

/// How long connecting may take.
pub const CONNECT_MS_MAX: u64 = 5_000;

/// Why a request to a node failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The address given is not `http://host:port`, `https://host:port` or `host:port`.
    #[error("address {0:?} is not of the form http://host:port or https://host:port")]
    Address(String),
    /// The TLS settings could not be built (a CA, certificate or key file),
    /// or the TLS handshake with the node failed (its certificate is not
    /// trusted, or it refused ours).
    #[error("TLS: {0}")]
    Tls(String),
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The `host:port` dialed.
        addr: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Connecting to this `host:port` took longer than [`CONNECT_MS_MAX`].
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    /// The HTTP exchange failed: the handshake, the request, or reading the
    /// body (also one over [`RESPONSE_BYTES_MAX`]).
    #[error("request to {addr} failed: {message}")]
    Http {
        /// The node's `host:port`.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// The whole response took longer than the client's timeout.
    #[error("{addr} did not answer within {ms} ms")]
    Timeout {
        /// The node's `host:port`.
        addr: String,
        /// The timeout, in ms.
        ms: u64,
    },
    /// The node answered with an error status (its message, from the
    /// JSON error body when there is one).
    #[error("{} {message}", status.as_u16())]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The node's message.
        message: String,
    },
    /// A success answer's body is not the JSON document expected.
    #[error("{addr} answered {path} with a document this client cannot read: {source}")]
    Decode {
        /// The node's `host:port`.
        addr: String,
        /// The request's path.
        path: String,
        /// Why it could not be read.
        #[source]
        source: serde_json::Error,
    },
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response's headers.
    pub headers: HeaderMap,
    /// The whole body, at most [`RESPONSE_BYTES_MAX`] bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` field of a JSON error body, or the body itself.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<wire::ErrorBody>(&self.body)
            .map(|b| b.error)
            .unwrap_or_else(|_| self.text())
    }

    /// `Ok(self)` for a success status, else the node's error.
    pub fn ok(self) -> Result<Reply, ClientError> {
        if self.status.is_success() {
            return Ok(self);
        }
        Err(ClientError::Status {
            status: self.status,
            message: self.error_message(),
        })
    }

    /// The value of header `name`; `None` when it is absent or not visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A node's API address.
#[derive(Debug, Clone)]
pub struct Client {
    /// `host:port`.
    authority: String,
    /// HTTPS settings; `None`: plain HTTP.
    tls: Option<Arc<ClientTls>>,
    /// The ACL token sent with every request (`X-Consul-Token`).
    token: Option<Arc<str>>,
    /// Longest wait for a whole response.
    timeout_ms: u64,
    /// Body bytes received by this client and its siblings.
    received: Arc<std::sync::atomic::AtomicU64>,
}

/// An open connection to a node: its request sender, and the error it
/// ended with (if it ends in one).
pub(crate) struct Connection {
    pub(crate) sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    pub(crate) ended: tokio::sync::oneshot::Receiver<hyper::Error>,
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

/// `&node=N` for a request about another member, else nothing.
fn at(node: Option<&str>) -> String {
    node.map_or(String::new(), |n| format!("&node={}", encode_path(n)))
}

fn comma_list(list: &[u32]) -> String {
    list.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// An address's scheme, when it has one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
    Unsaid,
}

fn split_address(addr: &str) -> Result<(Scheme, String), ClientError> {
    let (scheme, rest) = if let Some(r) = addr.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = addr.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        (Scheme::Unsaid, addr)
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains("://") {
        return Err(ClientError::Address(addr.to_string()));
    }
    Ok((scheme, authority.to_string()))
}

impl Client {
    /// `addr` is `http://host:port`, `host:port` (both plain HTTP) or
    /// `https://host:port` (trusting the system's roots; see
    /// [`Client::with_tls`] for a CA file or a client certificate).
    pub fn new(addr: &str) -> Result<Client, ClientError> {
        Client::with_tls(addr, None)
    }

    /// Like [`Client::new`], with HTTPS settings: they serve an `https://`
    /// address and one without a scheme; `http://` stays plain.
    pub fn with_tls(addr: &str, tls: Option<Arc<ClientTls>>) -> Result<Client, ClientError> {
        let (scheme, authority) = split_address(addr)?;
        let tls = match (scheme, tls) {
            (Scheme::Http, _) | (Scheme::Unsaid, None) => None,
            (_, Some(t)) => Some(t),
            (Scheme::Https, None) => Some(Arc::new(ClientTls::new(None, None, None)?)),
        };
        Ok(Client {
            authority,
            tls,
            token: None,
            timeout_ms: 60_000,
            received: Arc::default(),
        })
    }

    /// A client for another node (`host:port`, as members list their API)
    /// with this one's scheme, TLS settings and timeout.
    pub fn sibling(&self, addr: &str) -> Result<Client, ClientError> {
        let (scheme, authority) = split_address(addr)?;
        let mut c = self.clone();
        c.authority = authority;
        match scheme {
            Scheme::Unsaid => {}
            Scheme::Http => c.tls = None,
            Scheme::Https if c.tls.is_none() => {
                c.tls = Some(Arc::new(ClientTls::new(None, None, None)?));
            }
            Scheme::Https => {}
        }
        Ok(c)
    }

    /// Response body bytes this client and its siblings have received.
    pub fn bytes_received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `https://host:port` or `http://host:port`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }

    /// Sends `token` (an ACL token's secret) with every request; an empty
    /// one sends none.
    pub fn token(mut self, token: Option<&str>) -> Client {
        self.token = token.filter(|t| !t.is_empty()).map(Arc::from);
        self
    }

    /// Sets the longest wait for a whole response (default 60 s).
    pub fn timeout_ms(mut self, ms: u64) -> Client {
        self.timeout_ms = ms;
        self
    }

    /// The node's `host:port`.
    pub fn addr(&self) -> &str {
        &self.authority
    }

    fn http_err(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Http {
            addr: self.authority.clone(),
            message: e.to_string(),
        }
    }

    /// Opens a connection (TCP, then TLS for https) and its HTTP/1.1
    /// handshake. The receiver gets the error the connection ends with, if
    /// it ends in one.
    pub(crate) async fn connect(&self) -> Result<Connection, ClientError> {
        let connect = tokio::net::TcpStream::connect(&self.authority);
        let stream = tokio::time::timeout(Duration::from_millis(CONNECT_MS_MAX), connect)
            .await
            .map_err(|_| ClientError::ConnectTimeout(self.authority.clone()))?
            .map_err(|source| ClientError::Connect {
                addr: self.authority.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return self.handshake(stream).await;
        };
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(h, _)| h);
        let name = tls.name_for(host)?;
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let stream = tokio::time::timeout(
            Duration::from_millis(CONNECT_MS_MAX),
            connector.connect(name, stream),
        )
        .await
        .map_err(|_| ClientError::ConnectTimeout(self.authority.clone()))?
        .map_err(|e| ClientError::Tls(format!("handshake with {} failed: {e}", self.authority)))?;
        self.handshake(stream).await
    }

    async fn handshake<S>(&self, stream: S) -> Result<Connection, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http_err(e))?;
        // Over TLS, a node refusing our certificate says so only here.
        let (ended_tx, ended) = tokio::sync::oneshot::channel::<hyper::Error>();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                let _ = ended_tx.send(e);
            }
        });
        Ok(Connection { sender, ended })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let Connection { mut sender, ended } = self.connect().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        if let Some(t) = &self.token {
            req = req.header("x-consul-token", t.as_ref());
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req.body(Full::new(body)).map_err(|e| self.http_err(e))?;
        match sender.send_request(req).await {
            Ok(r) => Ok(r),
            Err(e) => Err(self.failed(e, ended).await),
        }
    }

    /// The error of a failed request: the connection's own cause when it
    /// ended in one.
    pub(crate) async fn failed(
        &self,
        e: hyper::Error,
        ended: tokio::sync::oneshot::Receiver<hyper::Error>,
    ) -> ClientError {
        match ended.await {
            Ok(cause) => self.connection_err(cause),
            // Closed without an error of its own: over TLS 1.3 a node that
            // refuses our certificate may just close after the handshake.
            Err(_) => match &self.tls {
                Some(tls) if e.is_canceled() || e.is_incomplete_message() => {
                    ClientError::Tls(format!(
                        "{} closed the connection before answering: {}",
                        self.authority,
                        if tls.presents_cert {
                            "it may have refused the client certificate: is it issued by the CA the node trusts?"
                        } else {
                            "it may require a client certificate of its CA (--client-cert, --client-key)"
                        }
                    ))
                }
                _ => self.http_err(e),
            },
        }
    }

    /// Names the cause of a connection that ended in error (a TLS alert:
    /// say which certificate the node refused or wants).
    fn connection_err(&self, e: hyper::Error) -> ClientError {
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let text = cause.to_string();
        if self.tls.is_some() && text.contains("alert") {
            let hint = if text.contains("CertificateRequired") {
                "it requires a client certificate of its CA (--client-cert, --client-key)"
            } else {
                "it refused the client certificate: is it issued by the CA the node trusts?"
            };
            return ClientError::Tls(format!(
                "{} refused the connection ({text}): {hint}",
                self.authority
            ));
        }
        self.http_err(text)
    }

    /// One request; the whole response.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Reply, ClientError> {
        self.request_with(method, path, body, &[]).await
    }

    /// [`Client::request`] with more headers.
    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
    ) -> Result<Reply, ClientError> {
        let whole = async {
            let resp = self.send(method, path, body, headers).await?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, RESPONSE_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| self.http_err(e))?
                .to_bytes();
            self.received
                .fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
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

    /// `GET path`: the whole response, whatever its status.
    pub async fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.request(Method::GET, path, Bytes::new()).await
    }

    /// GETs `path` and reads a success answer as `T`.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let r = self.get(path).await?.ok()?;
        self.decode(path, &r)
    }

    /// Sends `body` (JSON when given) and reads a success answer as `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T, ClientError> {
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| self.http_err(e))?),
            None => Bytes::new(),
        };
        let r = self.request(method, path, bytes).await?.ok()?;
        self.decode(path, &r)
    }

    /// Reads a body as `T`.
    fn decode<T: DeserializeOwned>(&self, path: &str, r: &Reply) -> Result<T, ClientError> {
        serde_json::from_slice(&r.body).map_err(|source| ClientError::Decode {
            addr: self.authority.clone(),
            path: path.to_string(),
            source,
        })
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<wire::Status, ClientError> {
        self.get_json("/v1/status").await
    }

    /// `GET /v1/digest`: the root over the live keys under `prefix`,
    /// every record checked first when `deep`.
    pub async fn digest(&self, prefix: &str, deep: bool) -> Result<wire::Digest, ClientError> {
        self.digest_of(None, prefix, deep).await
    }

    /// [`Client::digest`] of the member `node` (its id or name; `None`:
    /// this node), asked through this node over the peer connection.
    pub async fn digest_of(
        &self,
        node: Option<&str>,
        prefix: &str,
        deep: bool,
    ) -> Result<wire::Digest, ClientError> {
        let deep = if deep { "&deep" } else { "" };
        self.get_json(&format!(
            "/v1/digest?prefix={}{deep}{}",
            encode_path(prefix),
            at(node)
        ))
        .await
    }

    /// `GET /v1/hashes`: every key under `prefix` with its entry hash.
    pub async fn hashes(&self, prefix: &str) -> Result<Vec<wire::KeyHash>, ClientError> {
        self.hashes_of(None, prefix).await
    }

    /// [`Client::hashes`] of the member `node` (see [`Client::digest_of`]).
    pub async fn hashes_of(
        &self,
        node: Option<&str>,
        prefix: &str,
    ) -> Result<Vec<wire::KeyHash>, ClientError> {
        self.get_json(&format!(
            "/v1/hashes?prefix={}{}",
            encode_path(prefix),
            at(node)
        ))
        .await
    }

    /// `GET /v1/digest/tree`: the fingerprints of the children (at `level`)
    /// of `parents` in the Merkle digest of `node` (see [`Client::digest_of`]).
    pub async fn digest_tree(
        &self,
        node: Option<&str>,
        level: u8,
        parents: &[u32],
    ) -> Result<wire::DigestChildren, ClientError> {
        self.get_json(&format!(
            "/v1/digest/tree?level={level}&parents={}{}",
            comma_list(parents),
            at(node)
        ))
        .await
    }

    /// `GET /v1/digest/leaves`: every key in `leaves` of the Merkle digest
    /// of `node` (see [`Client::digest_of`]).
    pub async fn digest_leaves(
        &self,
        node: Option<&str>,
        leaves: &[u32],
    ) -> Result<wire::DigestLeaves, ClientError> {
        self.get_json(&format!(
            "/v1/digest/leaves?leaves={}{}",
            comma_list(leaves),
            at(node)
        ))
        .await
    }

    /// `GET /v1/health`: the judgement, healthy (200) or not (503).
    pub async fn health(&self) -> Result<wire::Health, ClientError> {
        let path = "/v1/health";
        let r = self.get(path).await?;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            return self.decode(path, &r);
        }
        self.decode(path, &r.ok()?)
    }

    /// `GET /v1/conflicts`.
    pub async fn conflicts(&self) -> Result<wire::Conflicts, ClientError> {
        self.get_json("/v1/conflicts").await
    }

    /// `GET /v1/history/<key>`.
    pub async fn history(&self, key: &str) -> Result<Vec<wire::Version>, ClientError> {
        self.get_json(&format!("/v1/history/{}", encode_path(key)))
            .await
    }

    /// `GET /v1/kv/<key>`: the entry, or `None` when the key is absent.
    pub async fn kv_get(&self, key: &str) -> Result<Option<wire::KvEntry>, ClientError> {
        let path = format!("/v1/kv/{}", encode_path(key));
        let r = self.get(&path).await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let list: Vec<wire::KvEntry> = self.decode(&path, &r.ok()?)?;
        Ok(list.into_iter().next())
    }

    /// `GET /v1/kv/<prefix>?recurse`: every live entry under `prefix`.
    pub async fn kv_list(&self, prefix: &str) -> Result<Vec<wire::KvEntry>, ClientError> {
        let path = format!("/v1/kv/{}?recurse", encode_path(prefix));
        let r = self.get(&path).await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        self.decode(&path, &r.ok()?)
    }

    /// `POST /v1/promote`.
    pub async fn promote(&self) -> Result<wire::Promoted, ClientError> {
        let path = "/v1/promote";
        let r = self.request(Method::POST, path, Bytes::new()).await?.ok()?;
        self.decode(path, &r)
    }

    /// `GET /v1/members`: who the node knows, with roles and states.
    pub async fn members(&self) -> Result<wire::Members, ClientError> {
        let path = "/v1/members";
        let r = self.request(Method::GET, path, Bytes::new()).await?.ok()?;
        self.decode(path, &r)
    }

    /// `PUT /v1/agent/leave`: the node leaves the cluster and shuts down.
    pub async fn leave(&self) -> Result<wire::LeftDoc, ClientError> {
        let path = "/v1/agent/leave";
        let r = self.request(Method::PUT, path, Bytes::new()).await?.ok()?;
        self.decode(path, &r)
    }

    /// `PUT /v1/agent/force-leave/NODE`: forgets a member gone for good
    /// (by name or node id).
    pub async fn forget(&self, who: &str) -> Result<wire::ForgotDoc, ClientError> {
        let path = format!("/v1/agent/force-leave/{}", encode_path(who));
        let r = self.request(Method::PUT, &path, Bytes::new()).await?.ok()?;
        self.decode(&path, &r)
    }

    /// `POST /v1/restore` with a backup file; `force` restores a backup of
    /// another cluster.
    pub async fn restore(&self, file: Bytes, force: bool) -> Result<wire::Restored, ClientError> {
        let path = if force {
            "/v1/restore?force"
        } else {
            "/v1/restore"
        };
        let r = self.request(Method::POST, path, file).await?.ok()?;
        self.decode(path, &r)
    }

    /// Sends a request and returns the response with its body unread (for downloads).
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        self.send(method, path, body, &[]).await
    }

    /// Opens a streaming response (server-sent events).
    pub async fn stream(&self, path: &str) -> Result<Stream, ClientError> {
        let resp = self.send(Method::GET, path, Bytes::new(), &[]).await?;
        Ok(Stream {
            status: resp.status(),
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }
}

/// A streaming response read as server-sent events.
pub struct Stream {
    /// The response's HTTP status.
    pub status: StatusCode,
    body: Incoming,
    /// Raw bytes: a character may be split between frames.
    buf: Vec<u8>,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `id` field, empty if none (a watch sends the change's index).
    pub id: String,
    /// The `event` field (the event's name), empty if none.
    pub event: String,
    /// The `data` lines, joined by newlines.
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
