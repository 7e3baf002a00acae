//! `api`: the HTTP server (axum) in front of a [`Node`].
//!
//! Owns the Consul-compatible KV endpoints (`/v1/kv/<key>`: GET with
//! `recurse`, `keys`, `separator`, `raw` and blocking `index` + `wait`; PUT
//! with `cas` and `flags`; DELETE with `recurse` and `cas`), Meridian's own
//! endpoints (`/v1/watch/<prefix>` as server-sent events, `/v1/status`,
//! `/v1/digest`, `/v1/hashes`, `/v1/health`, `/v1/conflicts`) and
//! `/metrics`. It decides nothing about data: every read and write goes
//! through the node. Bad input gets a 4xx with a JSON `{"error": ...}` that
//! names what was wrong, and nothing is written.
//!
//! Differences from Consul, on purpose: `X-Consul-Index` is the node's
//! durable change index (one sequence for all keys, local to the node);
//! compare-and-set is checked against the local node's state; a delete
//! writes a tombstone also for a key absent here (a write from another
//! region may be on its way, and the later delete must win); a recursive
//! delete deletes every key the node knows under the prefix in one durable
//! step; sessions and locks (`acquire`, `release`) are refused with a 400.

mod backup;
pub mod events;
pub mod health;
pub mod metrics;
pub mod server;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::core::types::{hex, Key, KeyError, Limits};
use crate::node::{Change, KvEntry, Node, NodeError, NodeStatus, WriteOptions};
use crate::sync::{PartitionPolicy, WriteAck, WriteError};

pub use health::Thresholds;

/// Longest blocking query (Consul's limit too).
pub const WAIT_MS_MAX: u64 = 600_000;
/// Blocking query wait when `wait` is not given (Consul's default).
pub const WAIT_MS_DEFAULT: u64 = 300_000;
/// Blocking queries and watch streams open at once; more get a 429.
pub const WAITERS_MAX: usize = 4_096;
/// Keys one recursive delete may touch in one request.
pub const DELETE_KEYS_MAX: usize = 100_000;
/// How long a blocking query with an index ahead of the durable one waits
/// for the commit in flight before it answers at once.
const INDEX_AHEAD_WAIT_MS: u64 = 1_000;
/// The cached status behind the consistency headers is refreshed this often.
const STATUS_REFRESH_MS: u64 = 500;

/// Largest backup a restore request may upload, by default.
pub const RESTORE_BYTES_MAX_DEFAULT: usize = 1 << 30;
/// Entries merged per durable step of a restore.
const RESTORE_STEP_ENTRIES: usize = 4_096;

/// What the API needs besides the node.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub limits: Limits,
    pub policy: PartitionPolicy,
    pub health: Thresholds,
    /// Largest backup file `POST /v1/restore` accepts.
    pub restore_bytes_max: usize,
    /// Where `POST /v1/promote` records the promotion (so it outlives a restart).
    pub promoted_file: Option<std::path::PathBuf>,
    /// A recursive delete of more keys than this needs `?force`.
    pub recursive_delete_keys_max: usize,
}

struct Api {
    node: Arc<Node>,
    cfg: ApiConfig,
    waiters: Arc<Semaphore>,
    /// The last status, for the consistency headers (refreshed in the background).
    cached: RwLock<Option<Arc<NodeStatus>>>,
    /// Held by the restore in progress: one at a time.
    restoring: tokio::sync::Mutex<()>,
}

/// Builds the router for `node`. Spawns a task that refreshes the cached
/// status; it ends when the node is dropped.
pub fn router(node: Arc<Node>, cfg: ApiConfig) -> Router {
    let api = Arc::new(Api {
        node,
        cfg,
        waiters: Arc::new(Semaphore::new(WAITERS_MAX)),
        cached: RwLock::new(None),
        restoring: tokio::sync::Mutex::new(()),
    });
    tokio::spawn(refresh(Arc::downgrade(&api)));
    Router::new()
        .route("/v1/kv", any(kv))
        .route("/v1/kv/", any(kv))
        .route("/v1/kv/{*key}", any(kv))
        .route("/v1/watch", get(watch))
        .route("/v1/watch/", get(watch))
        .route("/v1/watch/{*prefix}", get(watch))
        .route("/v1/status", get(status))
        .route("/v1/digest", get(digest))
        .route("/v1/hashes", get(hashes))
        .route("/v1/health", get(health_check))
        .route("/v1/conflicts", get(conflicts))
        .route("/v1/promote", axum::routing::post(promote))
        .route("/v1/events", get(events_stream))
        .route("/v1/history/{*key}", get(history))
        .route("/v1/backup", get(backup::backup))
        .route("/v1/restore", axum::routing::post(backup::restore))
        .route("/metrics", get(prometheus))
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {}", uri.path()),
            )
        })
        .fallback(|uri: Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {}", uri.path()),
            )
        })
        .with_state(api)
}

/// Serves `router` on `listener` with the connection limits and timeouts
/// of `cfg` until `shutdown` completes (see [`server`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    cfg: server::ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router, cfg, shutdown).await
}

async fn refresh(api: Weak<Api>) {
    loop {
        let Some(a) = api.upgrade() else { return };
        match a.node.status().await {
            Ok(s) => {
                if let Ok(mut c) = a.cached.write() {
                    *c = Some(Arc::new(s));
                }
            }
            Err(_) => return,
        }
        drop(a);
        tokio::time::sleep(Duration::from_millis(STATUS_REFRESH_MS)).await;
    }
}

// ------------------------------------------------------------------ helpers

/// A request that failed: its status and a message naming what was wrong,
/// sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message });
        (self.code, axum::Json(body)).into_response()
    }
}

fn error(code: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
    }
}

fn node_error(e: NodeError) -> ApiError {
    match e {
        NodeError::Write(w) => write_error(w),
        NodeError::Stopped => error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down"),
        NodeError::StoreUnavailable {
            disk_full: true, ..
        }
        | NodeError::NotDurable {
            disk_full: true, ..
        } => error(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
        e @ (NodeError::StoreUnavailable { .. }
        | NodeError::NotDurable { .. }
        | NodeError::Quarantined { .. }) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        NodeError::Snapshot(m) => error(StatusCode::CONFLICT, m),
        e @ NodeError::NotReplicated(_) => error(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

fn write_error(e: WriteError) -> ApiError {
    let code = match &e {
        WriteError::Key(KeyError::TooLong { .. })
        | WriteError::Value(_)
        | WriteError::TooManyKeys { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        WriteError::Key(_) | WriteError::CasMismatch { .. } => StatusCode::BAD_REQUEST,
        WriteError::TooManyPending { .. } => StatusCode::TOO_MANY_REQUESTS,
        WriteError::NoQuorum { .. }
        | WriteError::Standby
        | WriteError::Rebuilding
        | WriteError::ClockOffset { .. } => StatusCode::SERVICE_UNAVAILABLE,
        WriteError::Clock(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, e.to_string())
}

/// The answer to a request body that could not be read: too long (413),
/// too slow (408), or broken (400).
fn body_error(e: &axum::Error, max: usize, what: &str) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{what} is more than the limit of {max} bytes"),
            );
        }
        if let Some(t) = c.downcast_ref::<server::BodyTimeout>() {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body stalled: {t}"),
            );
        }
        cause = c.source();
    }
    error(
        StatusCode::BAD_REQUEST,
        format!("cannot read the request body: {e}"),
    )
}

fn key_error(e: KeyError) -> ApiError {
    let code = match e {
        KeyError::TooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    error(code, e.to_string())
}

/// Decodes `%XX` escapes; `None` on a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The query string as a map (later repeats win; `+` is a space).
fn query(uri: &Uri) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode(&s.replace('+', " "))
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    error(
                        StatusCode::BAD_REQUEST,
                        format!("query parameter {k:?} is not valid percent-encoded UTF-8"),
                    )
                })
        };
        out.insert(decode(k)?, decode(v)?);
    }
    Ok(out)
}

/// A flag parameter: present means on, whatever its value (as in Consul).
fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.contains_key(name)
}

fn number(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("{name} must be an unsigned integer, got {v:?}"),
            )
        }),
    }
}

/// `?ack=quorum|local`: when the write is acknowledged (default: the
/// node's `write_ack`).
fn write_ack(q: &HashMap<String, String>) -> Result<Option<WriteAck>, ApiError> {
    match q.get("ack").map(String::as_str) {
        None => Ok(None),
        Some("quorum") => Ok(Some(WriteAck::Quorum)),
        Some("local") => Ok(Some(WriteAck::Local)),
        Some(other) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("ack must be quorum or local, got {other:?}"),
        )),
    }
}

/// Parses a Go duration as Consul takes it (`10s`, `5m`, `1m30s`, `1.5s`,
/// `250ms`; a bare number is seconds) into milliseconds, rounded down.
fn duration_ms(s: &str) -> Option<u64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().ok()?.checked_mul(1_000);
    }
    let mut rest = s;
    let mut total_ns: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (n, tail) = rest.split_at(split);
        let n: f64 = n.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let ns = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3_600e9,
            _ => return None,
        };
        total_ns += n * ns;
        rest = tail;
    }
    let ms = total_ns / 1e6;
    (ms.is_finite() && ms < u64::MAX as f64).then_some(ms as u64)
}

/// The path after `prefix`, percent-decoded and checked as UTF-8.
fn path_rest(uri: &Uri, prefix: &str) -> Result<String, ApiError> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or("");
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    let bytes = percent_decode(raw).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the path {:?} has a malformed %-escape", uri.path()),
        )
    })?;
    String::from_utf8(bytes).map_err(|_| key_error(KeyError::NotUtf8))
}

fn b64(v: &[u8]) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        Value::String(base64::engine::general_purpose::STANDARD.encode(v))
    }
}

fn entry_json(e: &KvEntry) -> Value {
    json!({
        "LockIndex": 0,
        "Key": e.key,
        "Flags": e.flags,
        "Value": b64(&e.value),
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
    })
}

impl Api {
    fn status_cached(&self) -> Option<Arc<NodeStatus>> {
        self.cached.read().ok().and_then(|c| c.clone())
    }

    /// `X-Consul-Index`, `X-Consul-KnownLeader` and `X-Consul-LastContact`.
    ///
    /// Meridian has no leader: `KnownLeader` says whether this node accepts
    /// writes now (always with `partition_policy = "available"`, only with
    /// a quorum of regions otherwise); `LastContact` is how many ms old the
    /// data may be: since this node last held every write of its least
    /// recently synced peer (0 when it has no peers).
    fn headers(&self, index: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        // Consul clients treat 0 as "no index": indexes start at 1.
        h.insert("X-Consul-Index", HeaderValue::from(index.max(1)));
        let (leader, contact) = match self.status_cached() {
            Some(s) => {
                let leader = !s.replica.standby
                    && (self.cfg.policy == PartitionPolicy::Available || s.replica.quorum);
                let contact = s
                    .replica
                    .peers
                    .iter()
                    // Never synced since our start: counted from our start.
                    .map(|p| s.now_ms.saturating_sub(p.in_sync_at_ms.max(s.started_ms)))
                    .max()
                    .unwrap_or(0);
                (leader, contact)
            }
            None => (self.cfg.policy == PartitionPolicy::Available, 0),
        };
        h.insert(
            "X-Consul-KnownLeader",
            HeaderValue::from_static(if leader { "true" } else { "false" }),
        );
        h.insert("X-Consul-LastContact", HeaderValue::from(contact));
        h
    }

    fn permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.waiters.clone().try_acquire_owned().map_err(|_| {
            error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("more than {WAITERS_MAX} blocking queries and watches are open"),
            )
        })
    }

    /// Where a client holding `index` resumes: `index`, or 0 when it is
    /// ahead of this node. Reads may show a change a moment before it is
    /// durable, so a client may hold an index a little ahead of the durable
    /// one: the commit in flight gets a moment. Further ahead, the client
    /// came from another node (or from before a restore) and starts over.
    async fn resume_index(&self, index: u64) -> u64 {
        if index <= self.node.index() {
            return index;
        }
        let caught_up = self.node.wait_durable(index);
        let waited = Duration::from_millis(INDEX_AHEAD_WAIT_MS);
        match tokio::time::timeout(waited, caught_up).await {
            Ok(true) => index,
            _ => 0,
        }
    }

    /// Blocks until a change under `scope` (exactly `scope` when `exact`)
    /// lands after `index`, or `wait_ms` passes. Returns at once when
    /// `index` is 0 or ahead of this node (a client that moved between
    /// nodes starts over, as Consul clients do when the index goes back).
    async fn block(
        &self,
        scope: &str,
        exact: bool,
        index: u64,
        wait_ms: u64,
    ) -> Result<(), ApiError> {
        if self.resume_index(index).await == 0 {
            return Ok(());
        }
        let _permit = self.permit()?;
        let mut w = self.node.watch(scope, index);
        let changed = async {
            while let Some(c) = w.next().await {
                if !exact || c.key == scope {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(wait_ms), changed).await;
        Ok(())
    }
}

// -------------------------------------------------------------------- KV

async fn kv(State(api): State<Arc<Api>>, method: Method, uri: Uri, body: Body) -> Response {
    let result = match method {
        Method::GET | Method::HEAD => kv_get(&api, &uri).await,
        Method::PUT | Method::POST => kv_put(&api, &uri, body).await,
        Method::DELETE => kv_delete(&api, &uri).await,
        other => Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{other} is not supported on /v1/kv (GET, PUT, DELETE)"),
        )),
    };
    result.unwrap_or_else(|e| {
        // Every KV answer carries the index, errors included (as Consul's do).
        let mut r = e.into_response();
        r.headers_mut().extend(api.headers(api.node.index()));
        r
    })
}

async fn kv_get(api: &Api, uri: &Uri) -> Result<Response, ApiError> {
    let key = path_rest(uri, "/v1/kv")?;
    let q = query(uri)?;
    let recurse = flag(&q, "recurse");
    let keys = q.contains_key("keys");
    if !recurse && !keys {
        Key::check(&key, api.cfg.limits.key_bytes_max).map_err(key_error)?;
    }
    if let Some(index) = number(&q, "index")? {
        let wait_ms = match q.get("wait") {
            None => WAIT_MS_DEFAULT,
            Some(w) => duration_ms(w).ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("wait must be a duration such as 30s, 5m or 250ms, got {w:?}"),
                )
            })?,
        }
        .min(WAIT_MS_MAX);
        api.block(&key, !recurse && !keys, index, wait_ms).await?;
    }
    // The index covers what the answer shows: a read may include a change a
    // moment before it is durable.
    let durable = api.node.index();
    let not_found = || (StatusCode::NOT_FOUND, api.headers(durable)).into_response();
    if keys || recurse {
        let list = api.node.list(&key).await.map_err(node_error)?;
        if list.is_empty() {
            return Ok(not_found());
        }
        let index = list.iter().map(|e| e.modify_index).fold(durable, u64::max);
        let headers = api.headers(index);
        if recurse && !keys {
            let body: Vec<Value> = list.iter().map(entry_json).collect();
            return Ok((headers, axum::Json(body)).into_response());
        }
        let separator = q.get("separator").filter(|s| !s.is_empty());
        let mut names: Vec<String> = Vec::new();
        for e in &list {
            let name = match separator {
                Some(sep) => match e.key[key.len()..].find(sep.as_str()) {
                    Some(at) => e.key[..key.len() + at + sep.len()].to_string(),
                    None => e.key.clone(),
                },
                None => e.key.clone(),
            };
            if names.last() != Some(&name) {
                names.push(name);
            }
        }
        return Ok((headers, axum::Json(names)).into_response());
    }
    match api.node.get(&key).await.map_err(node_error)? {
        None => Ok(not_found()),
        Some(e) => {
            let mut headers = api.headers(durable.max(e.modify_index));
            if q.contains_key("raw") {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                return Ok((headers, e.value).into_response());
            }
            Ok((headers, axum::Json(vec![entry_json(&e)])).into_response())
        }
    }
}

async fn kv_put(api: &Api, uri: &Uri, body: Body) -> Result<Response, ApiError> {
    let key = path_rest(uri, "/v1/kv")?;
    let q = query(uri)?;
    for unsupported in ["acquire", "release"] {
        if q.contains_key(unsupported) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("{unsupported}: sessions and locks are not supported by Meridian"),
            ));
        }
    }
    Key::check(&key, api.cfg.limits.key_bytes_max).map_err(key_error)?;
    let cas = number(&q, "cas")?;
    let flags = number(&q, "flags")?.unwrap_or(0);
    let ack = write_ack(&q)?;
    let max = api.cfg.limits.value_bytes_max;
    let value: Bytes = axum::body::to_bytes(body, max)
        .await
        .map_err(|e| body_error(&e, max, "value"))?;
    let opts = WriteOptions { flags, cas, ack };
    let done = match api.node.put_opts(&key, value, opts).await {
        Ok(_) => true,
        Err(NodeError::Write(WriteError::CasMismatch { .. })) => false,
        Err(e) => return Err(node_error(e)),
    };
    Ok((api.headers(api.node.index()), axum::Json(done)).into_response())
}

async fn kv_delete(api: &Api, uri: &Uri) -> Result<Response, ApiError> {
    let key = path_rest(uri, "/v1/kv")?;
    let q = query(uri)?;
    let cas = number(&q, "cas")?;
    if flag(&q, "recurse") {
        if cas.is_some() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "cas applies to one key, not to a recursive delete",
            ));
        }
        let list = api.node.list(&key).await.map_err(node_error)?;
        let guard = api.cfg.recursive_delete_keys_max;
        if list.len() > guard && !flag(&q, "force") {
            return Err(error(
                StatusCode::CONFLICT,
                format!(
                    "refusing to delete {} keys under {key:?}: more than recursive_delete_keys_max ({guard}); \
                     add ?force (meridian kv delete --recurse --force) if you mean it",
                    list.len()
                ),
            ));
        }
        // One durable step: every key this node knows under the prefix,
        // deleted ones included (so the delete also wins over writes to
        // them not seen here yet).
        api.node
            .delete_prefix_acked(&key, DELETE_KEYS_MAX, write_ack(&q)?)
            .await
            .map_err(node_error)?;
        return Ok((api.headers(api.node.index()), axum::Json(true)).into_response());
    }
    Key::check(&key, api.cfg.limits.key_bytes_max).map_err(key_error)?;
    // Without cas a delete always writes a tombstone, also for a key absent
    // here: a write from another region may be on its way, and the later
    // delete must win. With cas, as in Consul: a key that is not live here
    // answers true (nothing left to delete), another version false.
    let opts = WriteOptions {
        flags: 0,
        cas,
        ack: write_ack(&q)?,
    };
    let done = match api.node.delete_opts(&key, opts).await {
        Ok(_) => true,
        Err(NodeError::Write(WriteError::CasMismatch { actual, .. })) => actual == 0,
        Err(e) => return Err(node_error(e)),
    };
    Ok((api.headers(api.node.index()), axum::Json(done)).into_response())
}

// ---------------------------------------------------------------- watch

fn change_json(c: &Change) -> Value {
    json!({
        "Index": c.index,
        "Key": c.key,
        "Op": if c.value.is_some() { "put" } else { "delete" },
        "Flags": c.flags,
        "Value": c.value.as_deref().map_or(Value::Null, b64),
        "Stamp": format!("{:016x}-{}", c.stamp.hlc.0, c.stamp.node),
    })
}

/// `GET /v1/watch/<prefix>?index=N`: every change under the prefix after
/// index N (or after the `Last-Event-ID` header), then each change as it
/// becomes durable, as server-sent events whose id is the change's index.
async fn watch(State(api): State<Arc<Api>>, uri: Uri, headers: HeaderMap) -> Response {
    let go = async {
        let prefix = path_rest(&uri, "/v1/watch")?;
        let q = query(&uri)?;
        // A reconnecting EventSource repeats the URL and adds Last-Event-ID:
        // the header is the later position, so it wins.
        let from = match headers.get("last-event-id") {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| error(StatusCode::BAD_REQUEST, "Last-Event-ID must be an index"))?,
            None => number(&q, "index")?.unwrap_or(0),
        };
        // An index ahead of this node (another node's, or from before a
        // restore) would skip changes: after a moment for a commit in
        // flight, the watch starts over from the beginning.
        let from = api.resume_index(from).await;
        let permit = api.permit()?;
        let w = api.node.watch(&prefix, from);
        let stream = futures_util::stream::unfold((w, permit), |(mut w, permit)| async move {
            let c = w.next().await?;
            let ev = SseEvent::default()
                .id(c.index.to_string())
                .event(if c.value.is_some() { "put" } else { "delete" })
                .data(change_json(&c).to_string());
            Some((Ok::<_, Infallible>(ev), (w, permit)))
        });
        let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
        Ok::<_, ApiError>(sse.into_response())
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

// --------------------------------------------------------------- status

/// The status document of `GET /v1/status` (also what `meridian status` prints).
pub fn status_json(s: &NodeStatus, name: &str, api_addr: &str, t: &Thresholds) -> Value {
    let r = &s.replica;
    let now = s.now_ms;
    let peers: Vec<Value> = r
        .peers
        .iter()
        .map(|p| {
            json!({
                "node": p.node.to_string(),
                "name": p.name,
                "region": p.region,
                "api": p.api,
                "connected": p.connected,
                "lag_index": p.lag_index,
                "lag_ms": (p.in_sync_at_ms > 0).then(|| now.saturating_sub(p.in_sync_at_ms)),
                "last_heard_ms_ago": (p.last_heard_ms > 0).then(|| now.saturating_sub(p.last_heard_ms)),
                "applied": p.applied,
                "acked": p.acked,
                "clock_offset_ms": p.clock_offset_ms,
                "rtt_ms": p.rtt_ms,
                "refused_ms_ago": (p.refused_at_ms > 0).then(|| now.saturating_sub(p.refused_at_ms)),
            })
        })
        .collect();
    let members: Vec<Value> = s
        .members
        .iter()
        .map(|m| {
            json!({
                "node": m.member.node.to_string(),
                "name": m.member.name,
                "region": m.member.region,
                "addr": m.member.addr,
                "state": m.state,
            })
        })
        .collect();
    let regions: Vec<Value> = r
        .regions
        .iter()
        .map(|g| {
            json!({
                "region": g.region,
                "reachable": g.reachable,
                "for_ms": now.saturating_sub(g.since_ms),
            })
        })
        .collect();
    let reasons = health::assess(s, t);
    // A rebuild's progress: how much of its source's feed it holds.
    let rebuild = r.rebuild_from.and_then(|from| {
        let p = r.peers.iter().find(|p| p.node == from)?;
        Some(json!({
            "from": p.name,
            "applied": p.applied,
            "of": p.applied + p.lag_index,
            "keys": r.keys,
        }))
    });
    json!({
        "node": r.node.to_string(),
        "name": name,
        "region": r.region,
        "api": api_addr,
        "state": if r.rebuilding { "syncing" } else { "active" },
        "role": if r.standby { "standby" } else { "active" },
        "rebuild": rebuild,
        "index": r.index,
        "root": hex(&r.root),
        "keys": r.keys,
        "tombstones": r.tombstones,
        "quorum": r.quorum,
        "reachable_regions": r.reachable_regions,
        "total_regions": r.total_regions,
        "regions": regions,
        "members": members,
        "peers": peers,
        "conflicts": r.conflicts,
        "clock": {
            "offset_ms": r.clock.judgement.offset_ms,
            "measured": r.clock.judgement.measured,
            "disagreeing": r.clock.judgement.disagreeing,
            "members": r.clock.judgement.members,
            "off": r.clock.judgement.off,
            "ahead_of_time_ms": r.clock.ahead_of_time_ms,
        },
        "quarantined": r.quarantined,
        "recovery": r.recovery.as_ref().map(|c| json!({
            "cause": c.cause.as_str(),
            "peers_done": c.peers_done,
            "peers": c.peers,
            "for_ms": now.saturating_sub(c.since_ms),
        })),
        "quorum_writes_waiting": r.quorum_writes_waiting,
        "store": s.store_trouble.as_ref().map(|t| json!({
            "refusing_commits_ms": now.saturating_sub(t.since_ms),
            "disk_full": t.disk_full,
            "error": t.error,
        })),
        "healthy": reasons.is_empty(),
        "uptime_ms": now.saturating_sub(s.started_ms),
    })
}

async fn status(State(api): State<Arc<Api>>) -> Response {
    match api.node.status().await {
        Ok(s) => {
            let name = api.node.name().to_string();
            let addr = api.node.api_addr();
            axum::Json(status_json(&s, &name, &addr, &api.cfg.health)).into_response()
        }
        Err(e) => node_error(e).into_response(),
    }
}

async fn digest(State(api): State<Arc<Api>>, uri: Uri) -> Response {
    let go = async {
        let q = query(&uri)?;
        let prefix = q.get("prefix").cloned().unwrap_or_default();
        let deep = flag(&q, "deep");
        let report = if deep {
            api.node.deep_digest(&prefix).await.map_err(node_error)?
        } else {
            crate::node::DigestReport {
                root: api.node.digest(&prefix).await.map_err(node_error)?,
                deep: false,
                damaged_found: 0,
                digest_repaired: false,
                quarantined: api.status_cached().map_or(0, |s| s.replica.quarantined),
            }
        };
        let index = api.node.index();
        Ok::<_, ApiError>(
            (
                api.headers(index),
                axum::Json(json!({
                    "node": api.node.id().to_string(),
                    "name": api.node.name(),
                    "region": api.node.region(),
                    "prefix": prefix,
                    "root": hex(&report.root),
                    "index": index,
                    "deep": report.deep,
                    "damaged_found": report.damaged_found,
                    "digest_repaired": report.digest_repaired,
                    "quarantined": report.quarantined,
                })),
            )
                .into_response(),
        )
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/hashes?prefix=`: every key under the prefix (tombstones
/// included) with its stamp and entry hash, for `meridian verify --diff`.
async fn hashes(State(api): State<Arc<Api>>, uri: Uri) -> Response {
    let go = async {
        let q = query(&uri)?;
        let prefix = q.get("prefix").cloned().unwrap_or_default();
        let list = api.node.hashes(&prefix).await.map_err(node_error)?;
        let body: Vec<Value> = list
            .iter()
            .map(|k| {
                json!({
                    "key": k.key,
                    "deleted": k.deleted,
                    "stamp": format!("{:016x}-{}", k.stamp.hlc.0, k.stamp.node),
                    "hash": hex(&k.hash),
                })
            })
            .collect();
        Ok::<_, ApiError>(axum::Json(body).into_response())
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

async fn health_check(State(api): State<Arc<Api>>) -> Response {
    match api.node.status().await {
        Ok(s) => {
            let reasons = health::assess(&s, &api.cfg.health);
            let code = if reasons.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = json!({
                "healthy": reasons.is_empty(),
                "reasons": reasons,
                "thresholds": api.cfg.health,
            });
            (code, axum::Json(body)).into_response()
        }
        Err(e) => node_error(e).into_response(),
    }
}

async fn conflicts(State(api): State<Arc<Api>>) -> Response {
    match api.node.conflicts().await {
        Ok((list, total)) => {
            let kept: Vec<Value> = list
                .iter()
                .map(|c| {
                    json!({
                        "key": c.key.as_str(),
                        "index": c.index,
                        "winner": format!("{:016x}-{}", c.winner.hlc.0, c.winner.node),
                        "loser": format!("{:016x}-{}", c.loser.hlc.0, c.loser.node),
                        "loser_deleted": c.loser_was_tombstone,
                        "loser_value": c.loser_value.as_deref().map_or(Value::Null, b64),
                    })
                })
                .collect();
            axum::Json(json!({ "total": total, "kept": kept })).into_response()
        }
        Err(e) => node_error(e).into_response(),
    }
}

/// `GET /v1/history/<key>`: the versions of a key this node kept, oldest
/// first, with who wrote each (node id, and its name and region when known).
async fn history(State(api): State<Arc<Api>>, uri: Uri) -> Response {
    let go = async {
        let key = path_rest(&uri, "/v1/history")?;
        Key::check(&key, api.cfg.limits.key_bytes_max).map_err(key_error)?;
        let versions = api.node.history(&key).await.map_err(node_error)?;
        let status = api.node.status().await.ok();
        let who = |node: crate::core::types::NodeId| -> (String, String) {
            if node == api.node.id() {
                return (api.node.name().to_string(), api.node.region().to_string());
            }
            status
                .as_ref()
                .and_then(|s| s.replica.peers.iter().find(|p| p.node == node))
                .map(|p| (p.name.clone(), p.region.clone()))
                .unwrap_or_default()
        };
        let list: Vec<Value> = versions
            .iter()
            .map(|v| {
                let (name, region) = who(v.entry.stamp.node);
                json!({
                    "Index": v.index,
                    "Stamp": format!("{:016x}-{}", v.entry.stamp.hlc.0, v.entry.stamp.node),
                    "Time": v.entry.stamp.hlc.physical_ms(),
                    "Node": v.entry.stamp.node.to_string(),
                    "NodeName": name,
                    "Region": region,
                    "Deleted": v.entry.is_tombstone(),
                    "Flags": v.entry.flags,
                    "Value": v.entry.value.as_deref().map_or(Value::Null, b64),
                })
            })
            .collect();
        Ok::<_, ApiError>((api.headers(api.node.index()), axum::Json(list)).into_response())
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/events`: operators' events (see [`events`]) as server-sent
/// events, from now on. A stream that falls behind gets a `missed` event
/// saying how many it lost.
async fn events_stream(State(api): State<Arc<Api>>) -> Response {
    let permit = match api.permit() {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let rx = api.node.subscribe();
    let who = (
        api.node.id().to_string(),
        api.node.name().to_string(),
        api.node.region().to_string(),
    );
    let stream =
        futures_util::stream::unfold((rx, permit, who), |(mut rx, permit, who)| async move {
            use tokio::sync::broadcast::error::RecvError;
            let ev = match rx.recv().await {
                Ok(e) => {
                    let doc = events::event_json(&e, &who.0, &who.1, &who.2);
                    let kind = doc["type"].as_str().unwrap_or("event").to_string();
                    SseEvent::default().event(kind).data(doc.to_string())
                }
                Err(RecvError::Lagged(n)) => SseEvent::default()
                    .event("missed")
                    .data(json!({ "missed": n }).to_string()),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok::<_, Infallible>(ev), (rx, permit, who)))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// `POST /v1/promote`: a standby starts accepting client writes, and stays
/// active across restarts.
async fn promote(State(api): State<Arc<Api>>) -> Response {
    let go = async {
        let was = api.node.status().await.map_err(node_error)?.replica.standby;
        if let Some(path) = api.cfg.promoted_file.clone() {
            let write = tokio::task::spawn_blocking(move || {
                // Durable before the node takes writes: a crash must not bring it back a standby.
                let write = || -> std::io::Result<()> {
                    use std::io::Write;
                    let mut f = std::fs::File::create(&path)?;
                    f.write_all(b"promoted: this node ignores role = \"standby\"\n")?;
                    f.sync_all()?;
                    if let Some(dir) = path.parent() {
                        std::fs::File::open(dir)?.sync_all()?;
                    }
                    Ok(())
                };
                write()
                    .map_err(|e| format!("cannot record the promotion in {}: {e}", path.display()))
            });
            match write.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
                Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
            }
        }
        api.node.promote().await.map_err(node_error)?;
        tracing::warn!(was_standby = was, "promoted: accepting client writes");
        Ok::<_, ApiError>(
            axum::Json(json!({ "role": "active", "was": if was { "standby" } else { "active" } }))
                .into_response(),
        )
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

async fn prometheus(State(api): State<Arc<Api>>) -> Response {
    match api.node.status().await {
        Ok(s) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            metrics::render(&s),
        )
            .into_response(),
        Err(e) => node_error(e).into_response(),
    }
}

/// Binds `addr` for the API.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_consul() {
        assert_eq!(duration_ms("30s"), Some(30_000));
        assert_eq!(duration_ms("5m"), Some(300_000));
        assert_eq!(duration_ms("250ms"), Some(250));
        assert_eq!(duration_ms("2"), Some(2_000));
        assert_eq!(duration_ms("1h"), Some(3_600_000));
        assert_eq!(duration_ms("1m30s"), Some(90_000));
        assert_eq!(duration_ms("1.5s"), Some(1_500));
        assert_eq!(duration_ms("s"), None);
        assert_eq!(duration_ms(""), None);
        assert_eq!(duration_ms("10x"), None);
        assert_eq!(duration_ms("5"), Some(5_000));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some(&b"a/b c"[..]));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%ff").as_deref(), Some(&[0xff][..]));
    }
}
