//! The HTTP server in front of the router: connections, their limits and
//! their timeouts.
//!
//! Owns the accept loop (at most `connections_max` open connections; at the
//! limit it stops accepting and new clients wait in the kernel's backlog),
//! and per connection: a header read timeout counted from a request's first
//! byte (from the accept for a connection's first request), an idle timeout
//! between requests of a keep-alive connection, a body read timeout for the
//! next frame of a request body a handler reads, and limits on the request
//! line, the head and the number of header fields. A client that exceeds
//! one hears why in a JSON `{"error": ...}` (408, 414, 431) where the HTTP
//! library would answer with an empty body or not at all; an idle
//! connection is closed quietly. Shutdown gives open connections `drain` to
//! finish, then closes them.
//!
//! Over TLS, each connection's handshake runs in its own task within the
//! header read timeout (then the first head has its own); a client that speaks plain HTTP to the TLS port is
//! answered (in plain HTTP) with a 400 that says to use https, and a failed
//! handshake (no client certificate when one is required, one from another
//! CA) closes the connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

/// How the API server treats connections (all configurable; see `[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeConfig {
    /// From a request's first byte (or from accept, for a connection's first
    /// request) to the end of its head. Expiry: 408 JSON if any byte came, else a quiet close.
    pub header_read_timeout: Duration,
    /// Longest wait for the next frame of a request body the handler is reading: 408 JSON.
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed (quietly).
    pub idle_timeout: Duration,
    /// Open connections at most; at the limit the server stops accepting.
    pub max_connections: usize,
    /// After shutdown starts, open connections get this long to finish.
    pub drain: Duration,
    /// Longest request line (method, target, version): 414 JSON beyond.
    pub request_line_bytes_max: usize,
    /// Longest request head: 431 JSON beyond.
    pub head_bytes_max: usize,
    /// Most header fields (keep <= 100, hyper's own limit): 431 JSON beyond.
    pub headers_max: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            // Above the 4,096 blocking queries and watches a node holds open.
            max_connections: 8_192,
            drain: Duration::from_secs(2),
            request_line_bytes_max: 8_192,
            head_bytes_max: 65_536,
            headers_max: 100,
        }
    }
}

/// How long a rejected connection may take to receive our answer.
const REJECT_LINGER: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` completes, then gives open
/// connections `cfg.drain` to finish and closes the rest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: ServeConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // Backstop only: hyper's timer runs from the end of one response to the
        // end of the next head, so it must be longer than idle + header.
        .header_read_timeout(cfg.idle_timeout + cfg.header_read_timeout + Duration::from_secs(1))
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the limit, wait here: new clients queue in the kernel backlog.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let (http, router, acceptor, stop) = (
            http.clone(),
            router.clone(),
            acceptor.clone(),
            stop_rx.clone(),
        );
        conns.spawn(async move {
            let stream = match acceptor {
                None => Stream::Plain(tcp),
                Some(acceptor) => match handshake(acceptor, tcp, cfg.header_read_timeout).await {
                    Some(s) => s,
                    None => return,
                },
            };
            let clock = Arc::new(Clock::new(cfg));
            let io = TokioIo::new(ConnIo::new(stream, clock.clone(), cfg.header_read_timeout));
            let svc = Svc {
                router: TowerToHyperService::new(router),
                clock,
                body_read_timeout: cfg.body_read_timeout,
                peer,
            };
            run_conn(http.serve_connection(io, svc), stop, permit).await
        });
    }
    drop(listener); // new connections are refused from here on
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(cfg.drain, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "HTTP drain period over: closing open connections"
        );
        conns.shutdown().await;
    }
    Ok(())
}

async fn run_conn(
    conn: http1::Connection<TokioIo<ConnIo>, Svc>,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let mut conn = std::pin::pin!(conn);
    let done = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = stopped(&mut stop) => None,
    };
    let r = match done {
        Some(r) => r,
        None => {
            // Idle: closes now. Busy: finishes this response, then closes.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, timeout = e.is_timeout(), "HTTP connection ended");
    }
}

/// The first byte of a TLS handshake record; a plain HTTP request starts
/// with a method's letter.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Runs the TLS handshake of a new connection within `limit`. A client
/// that sent plain HTTP instead is told (in plain HTTP) to use https; a
/// failed handshake or one over time ends the connection (`None`).
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    limit: Duration,
) -> Option<Stream> {
    let peer = tcp.peer_addr().ok();
    let run = async {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await.ok()? == 0 {
            return None;
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            plain_http_refused(tcp).await;
            return None;
        }
        match acceptor.accept(tcp).await {
            Ok(s) => Some(Stream::Tls(Box::new(s))),
            Err(e) => {
                tracing::debug!(peer = ?peer, error = %e, "API TLS handshake failed");
                None
            }
        }
    };
    match tokio::time::timeout(limit, run).await {
        Ok(s) => s,
        Err(_) => {
            tracing::debug!(peer = ?peer, "API TLS handshake timed out");
            None
        }
    }
}

/// Answers a plain HTTP request on the TLS port with a 400 naming the
/// scheme to use, then closes.
async fn plain_http_refused(mut tcp: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let answer = json_answer(
        "400 Bad Request",
        "this API serves HTTPS: the client sent plain HTTP (use an https:// address)",
    );
    let _ = tokio::time::timeout(REJECT_LINGER, async {
        let _ = tcp.write_all(&answer).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // (`let _ =` drops the `watch::Ref` at once: it is not `Send`.)
    let _ = stop.wait_for(|s| *s).await;
}

/// Like axum's `handle_accept_error`: per-connection errors are skipped, others
/// (EMFILE, ENFILE, ENOMEM) back off so the loop does not spin.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

// ------------------------------------------------------- per-connection phase

/// Where a connection is, shared by its IO (which sees bytes) and its service
/// (which sees requests and the end of their responses).
struct Clock {
    cfg: ServeConfig,
    phase: Mutex<Phase>,
}

#[derive(Clone, Copy)]
enum Phase {
    /// Between requests: no byte of the next one yet.
    Idle { until: Instant },
    /// Reading a request head (also a new connection before its first byte).
    Head { until: Instant, scan: Scan },
    /// The router has the request; until its response body is done.
    Busy,
}

#[derive(Clone, Copy)]
enum Expiry {
    Quiet,
    Answer408,
}

impl Clock {
    fn new(cfg: ServeConfig) -> Self {
        let until = Instant::now() + cfg.header_read_timeout;
        Clock {
            cfg,
            phase: Mutex::new(Phase::Head {
                until,
                scan: Scan::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes came in; `Err` if the head is over a limit.
    fn on_bytes(&self, chunk: &[u8]) -> Result<(), Vec<u8>> {
        let mut p = self.lock();
        if let Phase::Idle { .. } = *p {
            let until = Instant::now() + self.cfg.header_read_timeout;
            *p = Phase::Head {
                until,
                scan: Scan::default(),
            };
        }
        if let Phase::Head { scan, .. } = &mut *p {
            scan.feed(chunk);
            return scan.check(&self.cfg);
        }
        Ok(())
    }

    fn busy(self: &Arc<Self>) -> BusyGuard {
        *self.lock() = Phase::Busy;
        BusyGuard(self.clone())
    }

    fn deadline(&self) -> Option<(Instant, Expiry)> {
        match *self.lock() {
            Phase::Idle { until } => Some((until, Expiry::Quiet)),
            Phase::Head { until, scan } if scan.bytes == 0 => Some((until, Expiry::Quiet)),
            Phase::Head { until, .. } => Some((until, Expiry::Answer408)),
            Phase::Busy => None,
        }
    }
}

/// Held by a request's response body: dropping it (hyper took the last frame,
/// or the connection went away) starts the idle timer.
struct BusyGuard(Arc<Clock>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let until = Instant::now() + self.0.cfg.idle_timeout;
        *self.0.lock() = Phase::Idle { until };
    }
}

/// Counts a request head as it arrives (end = an empty line).
#[derive(Clone, Copy, Default)]
struct Scan {
    bytes: usize,
    line: Option<usize>,
    lines: usize,
    blank: u8,
    done: bool,
}

impl Scan {
    fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.done {
                return;
            }
            self.bytes += 1;
            match b {
                b'\n' => {
                    self.line.get_or_insert(self.bytes);
                    self.lines += 1;
                    self.blank += 1;
                    self.done = self.blank == 2;
                }
                b'\r' => {}
                _ => self.blank = 0,
            }
        }
    }

    fn check(&self, cfg: &ServeConfig) -> Result<(), Vec<u8>> {
        let line = self.line.unwrap_or(self.bytes);
        if line > cfg.request_line_bytes_max {
            let m = format!(
                "request line is more than {} bytes",
                cfg.request_line_bytes_max
            );
            return Err(json_answer("414 URI Too Long", &m));
        }
        if self.bytes > cfg.head_bytes_max {
            let m = format!("request head is more than {} bytes", cfg.head_bytes_max);
            return Err(json_answer("431 Request Header Fields Too Large", &m));
        }
        if self.lines > cfg.headers_max + 2 {
            let m = format!("more than {} header fields", cfg.headers_max);
            return Err(json_answer("431 Request Header Fields Too Large", &m));
        }
        Ok(())
    }
}

fn json_answer(status: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": message }).to_string();
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    format!(
        "HTTP/1.1 {status}\r\ndate: {date}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ------------------------------------------------------------------ the IO

/// A connection's byte stream: plain TCP or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, b),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connection's stream as hyper sees it: enforces the idle and header
/// deadlines and answers over-limit heads itself (hyper would answer them
/// with an empty body).
struct ConnIo {
    tcp: Stream,
    clock: Arc<Clock>,
    sleep: Pin<Box<Sleep>>,
    reject: Option<Reject>,
}

struct Reject {
    answer: Vec<u8>,
    written: usize,
    shut: bool,
    until: Instant,
}

impl ConnIo {
    fn new(tcp: Stream, clock: Arc<Clock>, first: Duration) -> Self {
        let sleep = Box::pin(tokio::time::sleep(first));
        ConnIo {
            tcp,
            clock,
            sleep,
            reject: None,
        }
    }

    fn start_reject(&mut self, answer: Vec<u8>) {
        let until = Instant::now() + REJECT_LINGER;
        self.reject = Some(Reject {
            answer,
            written: 0,
            shut: false,
            until,
        });
    }

    /// Writes the answer, shuts the write side, reads and drops what the
    /// client still sends (so closing does not reset the connection before it
    /// reads the answer), then tells hyper "end of stream".
    fn poll_reject(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = self.reject.as_mut().expect("rejecting");
        if self.sleep.deadline() != r.until {
            self.sleep.as_mut().reset(r.until);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        while r.written < r.answer.len() {
            match Pin::new(&mut self.tcp).poll_write(cx, &r.answer[r.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(n)) => r.written += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        if !r.shut {
            match Pin::new(&mut self.tcp).poll_shutdown(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(_) => r.shut = true,
            }
        }
        let mut scratch = [0u8; 4096];
        loop {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.tcp).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => continue,
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.reject.is_some() {
            return this.poll_reject(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    if let Err(answer) = this.clock.on_bytes(&buf.filled()[before..]) {
                        buf.set_filled(before); // hyper never sees the over-limit head
                        this.start_reject(answer);
                        return this.poll_reject(cx);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let Some((until, expiry)) = this.clock.deadline() else {
                    return Poll::Pending;
                };
                if this.sleep.deadline() != until {
                    this.sleep.as_mut().reset(until);
                }
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                match expiry {
                    // End of stream: hyper closes the connection quietly.
                    Expiry::Quiet => Poll::Ready(Ok(())),
                    Expiry::Answer408 => {
                        let m = "the request head was not received in time";
                        this.start_reject(json_answer("408 Request Timeout", m));
                        this.poll_reject(cx)
                    }
                }
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, b)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

// ------------------------------------------------------------- the service

#[derive(Clone)]
struct Svc {
    router: TowerToHyperService<Router>,
    clock: Arc<Clock>,
    body_read_timeout: Duration,
    /// The client's address, given to handlers (the audit log).
    peer: std::net::SocketAddr,
}

type SvcFuture = Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Svc {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = SvcFuture;

    fn call(&self, req: Request<Incoming>) -> SvcFuture {
        let busy = self.clock.busy();
        let timeout = self.body_read_timeout;
        let mut req = req.map(|b| {
            Body::new(ReadTimeoutBody {
                inner: b,
                timeout,
                sleep: None,
            })
        });
        req.extensions_mut()
            .insert(super::audit::RemoteAddr(self.peer));
        let fut = hyper::service::Service::call(&self.router, req);
        Box::pin(async move {
            let res = fut.await?;
            Ok(res.map(|body| TrackedBody { body, _busy: busy }))
        })
    }
}

/// A response body that marks the connection idle when hyper is done with it.
struct TrackedBody {
    body: Body,
    _busy: BusyGuard,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The error a request body gives when the client sent nothing for the body
/// read timeout; handlers answer it with 408.
#[derive(Debug)]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no request body data for {} ms", self.0.as_millis())
    }
}

impl std::error::Error for BodyTimeout {}

/// Fails when the next frame of the request body takes longer than `timeout`
/// (the timer restarts with each frame, like tower-http's `TimeoutBody`).
struct ReadTimeoutBody {
    inner: Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl HttpBody for ReadTimeoutBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
