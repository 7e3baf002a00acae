//! `api`: the HTTP server (axum) in front of a [`Node`].
//!
//! Owns the Consul-compatible endpoints (`/v1/kv/<key>` in `kv`,
//! `/v1/txn` in `txn`, the start-up probes and the 501 for the rest of
//! Consul's API in `consul`, `?dc=` in `forward`), Meridian's own
//! endpoints (documents at `/v1/doc/<key>` in `doc`, `/v1/watch/<prefix>`
//! as server-sent events, `/v1/status`,
//! `/v1/digest`, `/v1/hashes`, `/v1/health`, `/v1/conflicts`, backups) and
//! `/metrics`, and the operators' console at `/ui/` (`ui`, read from
//! other members' pages by `cors`). It decides nothing about data: every read and write goes
//! through the node. Bad input gets a 4xx with a JSON `{"error": ...}` that
//! names what was wrong, and nothing is written.
//!
//! Differences from Consul, on purpose: `X-Consul-Index` is per node (a
//! key's or a prefix's own ModifyIndex, numbered by this node);
//! compare-and-set and transactions are checked against the local node's
//! state; a delete writes a tombstone also for a key absent here (a write
//! from another region may be on its way, and the later delete must win); a
//! recursive delete deletes every key the node knows under the prefix in
//! one durable step; `?consistent` is a read barrier across regions;
//! sessions and locks are refused (501, and 400 for `acquire`/`release`).

mod acl;
pub mod audit;
mod backup;
mod consul;
mod cors;
mod digest;
mod doc;
mod error;
pub mod events;
mod forward;
pub mod health;
mod history;
mod kv;
mod members;
pub mod metrics;
mod query;
pub mod server;
mod status;
pub use status::record_promotion;
pub mod tls;
mod txn;
mod ui;
mod watch;
pub mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::routing::{any, get, post, put};
use axum::Router;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::core::types::Limits;
use crate::node::{Node, NodeStatus};
use crate::sync::PartitionPolicy;

pub use acl::AclMode;
use error::error;
pub use error::ApiError;
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
/// A comment line keeps idle event streams open through proxies this often.
const KEEP_ALIVE_MS: u64 = 15_000;

/// Operations in one transaction, by default (Consul's limit).
pub const TXN_OPS_MAX_DEFAULT: usize = 64;
/// Smallest bound on a transaction's body (Consul's default, 512 KiB); it
/// grows with the value limit so that one largest value fits, base64-encoded.
const TXN_BYTES_MIN: usize = 512 * 1024;

/// Largest backup a restore request may upload, by default.
pub const RESTORE_BYTES_MAX_DEFAULT: usize = 1 << 30;
/// Entries merged per durable step of a restore.
const RESTORE_STEP_ENTRIES: usize = 4_096;

/// What the API needs besides the node.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest key and value a request may write; a longer key is refused
    /// before it reaches the node.
    pub limits: Limits,
    /// The node's partition policy: decides what `X-Consul-KnownLeader` says.
    pub policy: PartitionPolicy,
    /// When `/v1/health` and `/v1/status` report the node unhealthy.
    pub health: Thresholds,
    /// Largest backup file `POST /v1/restore` accepts.
    pub restore_bytes_max: usize,
    /// Where `POST /v1/promote` records the promotion (so it outlives a restart).
    pub promoted_file: Option<std::path::PathBuf>,
    /// A recursive delete of more keys than this needs `?force`.
    pub recursive_delete_keys_max: usize,
    /// Operations one `PUT /v1/txn` may hold.
    pub txn_ops_max: usize,
    /// Whether ACL tokens are enforced (`[acl]`).
    pub acl: AclMode,
    /// Where accepted changes are logged (`[audit]`); `None`: not logged.
    pub audit: Option<Arc<audit::AuditLog>>,
    /// What scheduled backups and drills say of the node's health and in
    /// its metrics; `None`: nothing.
    pub extra: Option<Arc<dyn health::Extra>>,
}

struct Api {
    node: Arc<Node>,
    cfg: ApiConfig,
    waiters: Arc<Semaphore>,
    /// The last status, for the consistency headers (refreshed in the background).
    cached: RwLock<Option<Arc<NodeStatus>>>,
    /// Held by the restore in progress: one at a time.
    restoring: tokio::sync::Mutex<()>,
    /// The ACL state and how it is enforced.
    acl: acl::Acl,
    /// The audit log, when on.
    audit: Option<Arc<audit::AuditLog>>,
}

/// Builds the router for `node`. Spawns a task that refreshes the cached
/// status; it ends when the node is dropped.
pub fn router(node: Arc<Node>, cfg: ApiConfig) -> Router {
    let api = Arc::new(Api {
        node,
        cfg: cfg.clone(),
        waiters: Arc::new(Semaphore::new(WAITERS_MAX)),
        cached: RwLock::new(None),
        restoring: tokio::sync::Mutex::new(()),
        acl: acl::Acl::new(cfg.acl),
        audit: cfg.audit.clone(),
    });
    tokio::spawn(refresh(Arc::downgrade(&api)));
    tokio::spawn(acl::follow(Arc::downgrade(&api)));
    forward::install(&api);
    Router::new()
        .route("/v1/kv", any(kv::kv))
        .route("/v1/kv/", any(kv::kv))
        .route("/v1/kv/{*key}", any(kv::kv))
        .route("/v1/doc/{*key}", any(doc::doc))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/watch/", get(watch::watch))
        .route("/v1/watch/{*prefix}", get(watch::watch))
        .route("/v1/history/{*key}", get(history::history))
        .route("/v1/status", get(status::status))
        .route("/v1/digest", get(digest::digest))
        .route("/v1/digest/tree", get(digest::tree))
        .route("/v1/digest/leaves", get(digest::leaves))
        .route("/v1/hashes", get(digest::hashes))
        .route("/v1/health", get(status::health_check))
        .route("/v1/conflicts", get(status::conflicts))
        .route("/v1/promote", post(status::promote))
        .route("/v1/events", get(events::events))
        .route("/v1/backup", get(backup::backup))
        .route("/v1/restore", post(backup::restore))
        .route("/metrics", get(status::prometheus))
        .route("/v1/txn", put(txn::txn))
        .route("/v1/status/leader", get(consul::leader))
        .route("/v1/status/peers", get(consul::peers))
        .route("/v1/agent/self", get(consul::agent_self))
        .route("/v1/agent/members", get(consul::members))
        .route("/v1/agent/leave", put(members::leave))
        .route("/v1/agent/force-leave/{node}", put(members::force_leave))
        .route("/v1/members", get(members::members))
        .route("/v1/catalog/datacenters", get(consul::datacenters))
        .route("/v1/acl/bootstrap", put(acl::endpoints::bootstrap))
        .route("/v1/acl/policy", put(acl::endpoints::policy_create))
        .route(
            "/v1/acl/policy/name/{name}",
            get(acl::endpoints::policy_named),
        )
        .route("/v1/acl/policy/{id}", any(acl::endpoints::policy))
        .route("/v1/acl/policies", get(acl::endpoints::policies))
        .route("/v1/acl/token", put(acl::endpoints::token_create))
        .route("/v1/acl/token/self", get(acl::endpoints::token_self))
        .route("/v1/acl/token/{accessor}", any(acl::endpoints::token))
        .route("/v1/acl/tokens", get(acl::endpoints::tokens))
        .route("/v1/audit", get(audit::audit))
        .route("/", get(ui::to_console))
        .route("/ui", get(ui::to_console))
        .route("/ui/", get(ui::index))
        .route("/ui/{file}", get(ui::file))
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {}", uri.path()),
            )
        })
        .fallback(consul::fallback)
        // Accepted changes go to the audit log.
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            audit::record,
        ))
        // Meridian's operator endpoints need an operator rule (ACLs on).
        .layer(axum::middleware::from_fn_with_state(api.clone(), acl::gate))
        // gzip when the client accepts it, as Consul does (not for event
        // streams, small answers or images: tower-http's default predicate).
        .layer(tower_http::compression::CompressionLayer::new())
        // Outermost: members' consoles may read this node (preflights are
        // answered before the ACL gate, which checks the real request).
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            cors::cors,
        ))
        .with_state(api)
}

/// Serves `router` on `listener` with the connection limits and timeouts
/// of `cfg` until `shutdown` completes (see [`server`]); over TLS when
/// `tls` is given (see [`tls::ApiTls`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    cfg: server::ServeConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router, cfg, tls, shutdown).await
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
                let leader = consul::accepts_writes(&s, self.cfg.policy);
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

    /// Waits until a change under `scope` (exactly `scope` when `exact`)
    /// lands after `from`, or `deadline` passes; true for a change.
    async fn changed(
        &self,
        scope: &str,
        exact: bool,
        from: u64,
        deadline: tokio::time::Instant,
    ) -> bool {
        let mut w = self.node.watch(scope, from);
        let changed = async {
            while let Some(c) = w.next().await {
                if !exact || c.key == scope {
                    return true;
                }
            }
            // The node stopped: answer now.
            true
        };
        tokio::time::timeout_at(deadline, changed)
            .await
            .unwrap_or(false)
    }
}

/// Binds `addr` for the API.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
