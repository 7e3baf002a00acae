//! `daemon`: a [`Node`] with its HTTP API, configured from a TOML file.
//!
//! Owns the node configuration file format ([`DaemonConfig`], every field
//! with a documented default, unknown fields refused with their name) and
//! [`Daemon`], which starts a node and serves its API and stops both in
//! order: stop accepting HTTP, finish pending commits, close peers.
//! `meridian node` runs one daemon; `meridian dev` runs several in one
//! process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, ApiConfig, Thresholds};
use crate::core::types::{Limits, KEY_BYTES_MAX, VALUE_BYTES_MAX_DEFAULT};
use crate::net::faults::Faults;
use crate::net::tls::{NodeIdentity, TlsError};
use crate::node::{Node, NodeError};
use crate::store::Durability;
use crate::sync::PartitionPolicy;
use crate::webhook::{self, WebhookConfig};

/// How often the daemon judges health (and publishes changes as events).
pub const HEALTH_CHECK_MS: u64 = 1_000;

/// How long open HTTP connections (watch streams, blocking queries) may
/// keep a stopping daemon waiting before they are cut.
pub const HTTP_DRAIN_MS_MAX: u64 = 2_000;

/// Why a daemon could not start.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("cannot read the config file {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    ParseConfig { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
    #[error("cannot load the TLS files from {dir} (made by `meridian ca issue`): {source}")]
    Tls {
        dir: PathBuf,
        #[source]
        source: TlsError,
    },
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("cannot listen for the API on {addr}: {source}")]
    Api {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// `durability` in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityConfig {
    /// fsync before a write is acknowledged (default).
    #[default]
    Immediate,
    /// No fsync: a crash loses recent writes. For ephemeral edge nodes only.
    None,
}

/// `partition_policy` in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PolicyConfig {
    #[default]
    Available,
    Quorum,
}

/// `write_ack` in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WriteAckConfig {
    /// A write is acknowledged once durable here (default).
    #[default]
    Local,
    /// Once durable on a node in a majority of regions.
    Quorum,
}

/// `role` in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts client writes (default).
    #[default]
    Active,
    /// Replicates everything, refuses client writes until promoted.
    Standby,
}

/// The file in the data directory that records a promotion, so that a
/// promoted standby stays active across restarts whatever its config says.
pub const PROMOTED_FILE: &str = "promoted";

/// `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Default 1024 (also the hard maximum).
    pub key_bytes_max: usize,
    /// Default 1 MiB (hard maximum 8 MiB).
    pub value_bytes_max: usize,
    /// A recursive delete of more keys than this needs `force`. Default 1000.
    pub recursive_delete_keys_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            key_bytes_max: KEY_BYTES_MAX,
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            recursive_delete_keys_max: 1_000,
        }
    }
}

/// `[sync]`: replication timers and bounds (defaults from the design, §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Anti-entropy with a random peer this often. Default 5000.
    pub ae_interval_ms: u64,
    /// Plus up to this much random delay. Default 1000.
    pub ae_jitter_ms: u64,
    /// Unacknowledged changes are sent again after this long. Default 5000.
    pub peer_timeout_ms: u64,
    /// Remote stamps further ahead of our clock are refused. Default 500.
    pub clock_offset_ms_max: u64,
    /// Tombstones are dropped after this long even if not known stable. Default 7 days.
    pub tombstone_horizon_ms: u64,
    /// Local writes are batched this long before being pushed. Default 2.
    pub push_delay_ms: u64,
    /// Conflicts kept for `/v1/conflicts`. Default 1024.
    pub conflicts_max: usize,
    /// A peer not heard from this long no longer makes its region
    /// reachable (quorum, partitions). Default 2500.
    pub contact_timeout_ms: u64,
    /// A quorum write not durable in a majority of regions this long is
    /// answered 504. Default 10000.
    pub quorum_ack_timeout_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            ae_interval_ms: 5_000,
            ae_jitter_ms: 1_000,
            peer_timeout_ms: 5_000,
            clock_offset_ms_max: 500,
            tombstone_horizon_ms: 7 * 24 * 3_600 * 1_000,
            push_delay_ms: 2,
            conflicts_max: 1_024,
            contact_timeout_ms: 2_500,
            quorum_ack_timeout_ms: 10_000,
        }
    }
}

/// `[backup]`: scheduled full snapshots (off unless `interval_ms` > 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Where snapshots go. Default `backups` (relative to the working directory).
    pub dir: PathBuf,
    /// A full snapshot this often; 0 (default): none. A typical choice: 900000 (15 min).
    pub interval_ms: u64,
    /// Snapshots kept; older ones are deleted. Default 96.
    pub keep: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            dir: PathBuf::from("backups"),
            interval_ms: 0,
            keep: 96,
        }
    }
}

/// Shortest interval between scheduled snapshots.
pub const SNAPSHOT_INTERVAL_MS_MIN: u64 = 1_000;

/// `[http]`: the API's connections (design §6: slow or idle clients time
/// out, and the listener bounds its connections). See `api::server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// From a request's first byte to the end of its head; else 408. Default 10 s.
    pub header_read_timeout_ms: u64,
    /// Longest wait for the next part of a request body; else 408. Default 30 s.
    pub body_read_timeout_ms: u64,
    /// A keep-alive connection idle this long is closed. Default 60 s.
    pub idle_timeout_ms: u64,
    /// Open connections at most (blocking queries and watches hold one
    /// each); at the limit new ones wait to be accepted. Default 8192.
    pub connections_max: usize,
    /// Longest request line (method, path with the key, query); else 414. Default 8192.
    pub request_line_bytes_max: usize,
    /// Longest request head; else 431. Default 65536.
    pub head_bytes_max: usize,
    /// Most header fields; else 431. Default 100.
    pub headers_max: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let d = api::server::ServeConfig::default();
        HttpConfig {
            header_read_timeout_ms: d.header_read_timeout.as_millis() as u64,
            body_read_timeout_ms: d.body_read_timeout.as_millis() as u64,
            idle_timeout_ms: d.idle_timeout.as_millis() as u64,
            connections_max: d.max_connections,
            request_line_bytes_max: d.request_line_bytes_max,
            head_bytes_max: d.head_bytes_max,
            headers_max: d.headers_max,
        }
    }
}

impl HttpConfig {
    fn validate(&self) -> Result<(), DaemonError> {
        let range = |field: &str, v: u64, min: u64, max: u64| {
            if v < min || v > max {
                return Err(DaemonError::Invalid(format!(
                    "[http] {field} is {v}, must be between {min} and {max}"
                )));
            }
            Ok(())
        };
        range(
            "header_read_timeout_ms",
            self.header_read_timeout_ms,
            100,
            3_600_000,
        )?;
        range(
            "body_read_timeout_ms",
            self.body_read_timeout_ms,
            100,
            3_600_000,
        )?;
        range("idle_timeout_ms", self.idle_timeout_ms, 100, 86_400_000)?;
        range(
            "connections_max",
            self.connections_max as u64,
            16,
            1_000_000,
        )?;
        // Below the HTTP library's own limits, so that the answer is ours (JSON).
        range(
            "request_line_bytes_max",
            self.request_line_bytes_max as u64,
            256,
            65_000,
        )?;
        range(
            "head_bytes_max",
            self.head_bytes_max as u64,
            self.request_line_bytes_max as u64,
            400_000,
        )?;
        range("headers_max", self.headers_max as u64, 8, 100)
    }

    /// The server's settings.
    pub fn serve_config(&self) -> api::server::ServeConfig {
        api::server::ServeConfig {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.connections_max,
            drain: Duration::from_millis(HTTP_DRAIN_MS_MAX),
            request_line_bytes_max: self.request_line_bytes_max,
            head_bytes_max: self.head_bytes_max,
            headers_max: self.headers_max,
        }
    }
}

/// `[history]`: versions of each key kept for `kv history` and `kv rollback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Versions kept per key. Default 10; 0 keeps none.
    pub versions_max: usize,
    /// Bytes kept in all (keys, values, 64 bytes per version). Default 64 MiB.
    pub bytes_max: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            versions_max: crate::node::history::HISTORY_VERSIONS_MAX_DEFAULT,
            bytes_max: crate::node::history::HISTORY_BYTES_MAX_DEFAULT,
        }
    }
}

/// A node's configuration file (see the README's config reference).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// The node's name, unique in the cluster (required).
    pub name: String,
    /// The node's region (required).
    pub region: String,
    /// Where the node keeps its state. Default `data`.
    pub data_dir: PathBuf,
    /// The directory with `node.pem`, `node.key` and `ca.pem` (from `meridian ca issue`). Default `tls`.
    pub tls_dir: PathBuf,
    /// UDP address for peers (QUIC). Default `0.0.0.0:7400`.
    pub listen: SocketAddr,
    /// The address peers should dial, when `listen` is not it (NAT, `0.0.0.0`).
    pub advertise: Option<SocketAddr>,
    /// TCP address of the HTTP API. Default `127.0.0.1:8500` (loopback only).
    pub api: SocketAddr,
    /// The API address told to peers (what `meridian verify` run on another
    /// node dials). Default: `api`, with an unspecified IP replaced by
    /// `advertise`'s IP (or 127.0.0.1).
    pub api_advertise: Option<SocketAddr>,
    /// Peers to join through (`ip:port` of their `listen`). Default none.
    pub seeds: Vec<SocketAddr>,
    /// Default `immediate`.
    pub durability: DurabilityConfig,
    /// Default `available`.
    pub partition_policy: PolicyConfig,
    /// Default `local`.
    pub write_ack: WriteAckConfig,
    /// `active` (default) or `standby`; a promoted standby stays active.
    pub role: Role,
    pub limits: LimitsConfig,
    pub health: Thresholds,
    pub sync: SyncConfig,
    pub backup: BackupConfig,
    pub history: HistoryConfig,
    pub http: HttpConfig,
    /// `[[webhooks]]`: endpoints that receive events. Default none.
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            name: String::new(),
            region: String::new(),
            data_dir: PathBuf::from("data"),
            tls_dir: PathBuf::from("tls"),
            listen: SocketAddr::from(([0, 0, 0, 0], 7400)),
            advertise: None,
            api: SocketAddr::from(([127, 0, 0, 1], 8500)),
            api_advertise: None,
            seeds: Vec::new(),
            durability: DurabilityConfig::default(),
            partition_policy: PolicyConfig::default(),
            write_ack: WriteAckConfig::default(),
            role: Role::default(),
            limits: LimitsConfig::default(),
            health: Thresholds::default(),
            sync: SyncConfig::default(),
            backup: BackupConfig::default(),
            history: HistoryConfig::default(),
            http: HttpConfig::default(),
            webhooks: Vec::new(),
        }
    }
}

impl DaemonConfig {
    /// Parses a config file's text; errors name the offending field.
    pub fn parse(text: &str, path: &Path) -> Result<DaemonConfig, DaemonError> {
        toml::from_str(text).map_err(|e| DaemonError::ParseConfig {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<DaemonConfig, DaemonError> {
        let text = std::fs::read_to_string(path).map_err(|source| DaemonError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        DaemonConfig::parse(&text, path)
    }

    /// The file's text for this config (what `meridian dev` writes).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks what serde cannot; the node checks the rest when it starts.
    pub fn validate(&self) -> Result<(), DaemonError> {
        if self.name.is_empty() {
            return Err(DaemonError::Invalid("name is required".into()));
        }
        if self.region.is_empty() {
            return Err(DaemonError::Invalid("region is required".into()));
        }
        for w in &self.webhooks {
            w.target().map_err(DaemonError::Invalid)?;
        }
        self.http.validate()?;
        let b = &self.backup;
        if b.interval_ms > 0 && (b.interval_ms < SNAPSHOT_INTERVAL_MS_MIN || b.keep == 0) {
            return Err(DaemonError::Invalid(format!(
                "[backup] interval_ms must be 0 (off) or at least {SNAPSHOT_INTERVAL_MS_MIN}, and keep at least 1"
            )));
        }
        Ok(())
    }

    pub fn api_config(&self) -> ApiConfig {
        ApiConfig {
            limits: self.node_limits(),
            policy: self.policy(),
            health: self.health,
            restore_bytes_max: api::RESTORE_BYTES_MAX_DEFAULT,
            promoted_file: Some(self.data_dir.join(PROMOTED_FILE)),
            recursive_delete_keys_max: self.limits.recursive_delete_keys_max,
        }
    }

    /// The API address peers are told, given the one bound.
    fn api_told(&self, bound: SocketAddr) -> SocketAddr {
        if let Some(a) = self.api_advertise {
            return a;
        }
        let mut a = bound;
        if a.ip().is_unspecified() {
            let ip = self
                .advertise
                .map_or(std::net::Ipv4Addr::LOCALHOST.into(), |adv| adv.ip());
            a.set_ip(ip);
        }
        a
    }

    fn node_limits(&self) -> Limits {
        Limits {
            key_bytes_max: self.limits.key_bytes_max,
            value_bytes_max: self.limits.value_bytes_max,
        }
    }

    fn policy(&self) -> PartitionPolicy {
        match self.partition_policy {
            PolicyConfig::Available => PartitionPolicy::Available,
            PolicyConfig::Quorum => PartitionPolicy::Quorum,
        }
    }
}

/// A running node and its HTTP API.
pub struct Daemon {
    node: Arc<Node>,
    api_addr: SocketAddr,
    stop_http: Option<oneshot::Sender<()>>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    snapshots: Option<JoinHandle<()>>,
    /// Health monitor and webhook deliveries.
    tasks: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Starts the node (loading its TLS identity from `tls_dir`) and its API.
    pub async fn start(cfg: &DaemonConfig) -> Result<Daemon, DaemonError> {
        let identity = NodeIdentity::load(&cfg.tls_dir).map_err(|source| DaemonError::Tls {
            dir: cfg.tls_dir.clone(),
            source,
        })?;
        Daemon::start_with(cfg, identity, None).await
    }

    /// Starts with an identity in hand, and optionally a fault switchboard
    /// under the node's socket (`meridian dev --partition-demo`).
    pub async fn start_with(
        cfg: &DaemonConfig,
        identity: NodeIdentity,
        faults: Option<Arc<Faults>>,
    ) -> Result<Daemon, DaemonError> {
        cfg.validate()?;
        // Bind the API first: its address is told to peers, and a taken
        // port should fail before the node starts.
        let listener = api::bind(cfg.api)
            .await
            .map_err(|source| DaemonError::Api {
                addr: cfg.api,
                source,
            })?;
        let api_addr = listener.local_addr().map_err(|source| DaemonError::Api {
            addr: cfg.api,
            source,
        })?;
        let sync = cfg.sync;
        let write_ack = match cfg.write_ack {
            WriteAckConfig::Local => crate::sync::WriteAck::Local,
            WriteAckConfig::Quorum => crate::sync::WriteAck::Quorum,
        };
        let mut b = Node::builder(&cfg.name, &cfg.region, identity)
            .data_dir(&cfg.data_dir)
            .listen(cfg.listen)
            .seeds(cfg.seeds.iter().copied())
            .durability(match cfg.durability {
                DurabilityConfig::Immediate => Durability::Immediate,
                DurabilityConfig::None => Durability::None,
            })
            .limits(cfg.node_limits())
            .partition_policy(cfg.policy())
            .history(cfg.history.versions_max, cfg.history.bytes_max)
            .api_addr(cfg.api_told(api_addr))
            .standby(cfg.role == Role::Standby && !cfg.data_dir.join(PROMOTED_FILE).exists())
            .tune(move |c| {
                c.ae_interval_ms = sync.ae_interval_ms;
                c.ae_jitter_ms = sync.ae_jitter_ms;
                c.peer_timeout_ms = sync.peer_timeout_ms;
                c.clock_offset_ms_max = sync.clock_offset_ms_max;
                c.tombstone_horizon_ms = sync.tombstone_horizon_ms;
                c.push_delay_ms = sync.push_delay_ms;
                c.conflicts_max = sync.conflicts_max;
                c.contact_timeout_ms = sync.contact_timeout_ms;
                c.quorum_ack_timeout_ms = sync.quorum_ack_timeout_ms;
                c.write_ack = write_ack;
            });
        if let Some(a) = cfg.advertise {
            b = b.advertise(a);
        }
        if let Some(f) = faults {
            b = b.faults(f);
        }
        let node = Arc::new(b.start().await?);
        let router = api::router(node.clone(), cfg.api_config());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        if !api_addr.ip().is_loopback() {
            tracing::warn!(
                api = %api_addr,
                "the HTTP API listens beyond loopback without TLS or authentication: keep it behind a firewall"
            );
        }
        let http = tokio::spawn(api::serve(
            listener,
            router,
            cfg.http.serve_config(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        tracing::info!(
            name = %cfg.name,
            region = %cfg.region,
            node = %node.id(),
            peers = %node.local_addr(),
            api = %api_addr,
            "node started"
        );
        let snapshots = (cfg.backup.interval_ms > 0)
            .then(|| tokio::spawn(snapshot_loop(node.clone(), cfg.backup.clone())));
        let mut tasks = vec![tokio::spawn(health_loop(node.clone(), cfg.health))];
        for w in &cfg.webhooks {
            let (handles, _stats) = webhook::spawn(&node, w).map_err(DaemonError::Invalid)?;
            tasks.extend(handles);
        }
        Ok(Daemon {
            node,
            api_addr,
            stop_http: Some(stop_tx),
            http: Some(http),
            snapshots,
            tasks,
        })
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Where the HTTP API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Stops accepting HTTP requests (open ones get [`HTTP_DRAIN_MS_MAX`]
    /// to finish), then finishes pending commits and closes every peer.
    pub async fn shutdown(mut self) -> Result<(), DaemonError> {
        if let Some(s) = self.snapshots.take() {
            s.abort();
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        if let Some(mut http) = self.http.take() {
            // The server gives open connections HTTP_DRAIN_MS_MAX itself.
            let drain = Duration::from_millis(HTTP_DRAIN_MS_MAX + 1_000);
            if tokio::time::timeout(drain, &mut http).await.is_err() {
                http.abort();
            }
        }
        self.node.stop().await?;
        Ok(())
    }
}

/// Judges health every [`HEALTH_CHECK_MS`]; publishes each change as an event.
async fn health_loop(node: Arc<Node>, thresholds: Thresholds) {
    let mut healthy = true;
    loop {
        tokio::time::sleep(Duration::from_millis(HEALTH_CHECK_MS)).await;
        let Ok(status) = node.status().await else {
            return;
        };
        let reasons: Vec<String> = api::health::assess(&status, &thresholds)
            .into_iter()
            .map(|r| r.message)
            .collect();
        let now = reasons.is_empty();
        if now != healthy {
            healthy = now;
            tracing::warn!(healthy, ?reasons, "health changed");
            node.publish(crate::node::EventKind::Health { healthy, reasons });
        }
    }
}

/// Takes a full snapshot every `interval_ms` into `dir`, keeping the newest `keep`.
async fn snapshot_loop(node: Arc<Node>, cfg: BackupConfig) {
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: wait one interval
    loop {
        tick.tick().await;
        let snap = match node.snapshot(0).await {
            Ok(s) => s,
            Err(_) => return,
        };
        let (dir, keep) = (cfg.dir.clone(), cfg.keep);
        let cluster = node.cluster();
        let written =
            tokio::task::spawn_blocking(move || write_snapshot(&dir, keep, cluster, snap)).await;
        match written {
            Ok(Ok(path)) => tracing::info!(path = %path.display(), "scheduled snapshot written"),
            Ok(Err(e)) => tracing::error!("scheduled snapshot failed: {e}"),
            Err(e) => tracing::error!("scheduled snapshot task failed: {e}"),
        }
    }
}

/// `{prefix}{13 digits}-{digits}.mbak` exactly: what `write_snapshot` names
/// its files (so retention never touches another node's or a hand-made backup).
fn is_snapshot_name(name: &str, prefix: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(prefix)
        .and_then(|r| r.strip_suffix(".mbak"))
    else {
        return false;
    };
    let Some((ms, index)) = rest.split_once('-') else {
        return false;
    };
    ms.len() == 13
        && ms.bytes().all(|b| b.is_ascii_digit())
        && !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
}

/// The file name prefix of a node's scheduled snapshots.
fn snapshot_prefix(name: &str) -> String {
    format!("meridian-{name}-")
}

fn write_snapshot(
    dir: &Path,
    keep: usize,
    cluster: crate::core::codec::ClusterId,
    snap: crate::node::Snapshot,
) -> Result<PathBuf, String> {
    use crate::backup;
    let header = backup::Header::for_snapshot(cluster, &snap);
    let bytes = backup::encode(&header, &snap.entries).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let prefix = snapshot_prefix(&snap.name);
    let name = format!("{prefix}{:013}-{}.mbak", snap.taken_ms, snap.index);
    let path = dir.join(&name);
    let partial = dir.join(format!("{name}.partial"));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&partial)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&partial, &path)
    };
    write().map_err(|e| format!("writing {}: {e}", path.display()))?;
    // Retention: the newest `keep` by name (which sorts by time).
    let mut ours: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("listing {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| is_snapshot_name(n, &prefix))
        })
        .collect();
    ours.sort();
    let excess = ours.len().saturating_sub(keep);
    for old in &ours[..excess] {
        if let Err(e) = std::fs::remove_file(old) {
            tracing::warn!("cannot remove old snapshot {}: {e}", old.display());
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_a_full_file() {
        let text = r#"
            name = "us-east-1"
            region = "us-east"
            data_dir = "/var/lib/meridian"
            listen = "0.0.0.0:7400"
            api = "127.0.0.1:8500"
            seeds = ["10.0.0.2:7400"]
            partition_policy = "quorum"
            [health]
            sync_lag_ms_max = 5000
            [sync]
            ae_interval_ms = 2000
        "#;
        let c = DaemonConfig::parse(text, Path::new("node.toml")).unwrap();
        assert_eq!(c.partition_policy, PolicyConfig::Quorum);
        assert_eq!(c.health.sync_lag_ms_max, 5_000);
        assert_eq!(c.health.partition_ms_max, 60_000);
        assert_eq!(c.sync.ae_interval_ms, 2_000);
        assert_eq!(c.sync.clock_offset_ms_max, 500);
        assert_eq!(c.tls_dir, PathBuf::from("tls"));
        // What `meridian dev` writes reads back the same.
        let again = DaemonConfig::parse(&c.to_toml(), Path::new("x")).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        for (text, field) in [
            ("name = \"a\"\nregoin = \"b\"", "regoin"),
            ("[health]\nsync_lag = 1", "sync_lag"),
            ("[sync]\nae_interval = 1", "ae_interval"),
        ] {
            let e = DaemonConfig::parse(text, Path::new("node.toml")).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
        let e = DaemonConfig::parse("partition_policy = \"cp\"", Path::new("n")).unwrap_err();
        assert!(e.to_string().contains("partition_policy"), "{e}");
    }

    #[test]
    fn the_api_address_told_to_peers() {
        let mut c = DaemonConfig::default();
        let bound: SocketAddr = "0.0.0.0:8500".parse().unwrap();
        assert_eq!(c.api_told(bound).to_string(), "127.0.0.1:8500");
        c.advertise = Some("10.0.0.5:7400".parse().unwrap());
        assert_eq!(c.api_told(bound).to_string(), "10.0.0.5:8500");
        c.api_advertise = Some("10.0.0.9:80".parse().unwrap());
        assert_eq!(c.api_told(bound).to_string(), "10.0.0.9:80");
    }

    #[test]
    fn retention_only_touches_its_own_snapshots() {
        let p = snapshot_prefix("us");
        assert!(is_snapshot_name("meridian-us-1795567459522-42.mbak", &p));
        assert!(!is_snapshot_name(
            "meridian-us-east-1795567459522-42.mbak",
            &p
        ));
        assert!(!is_snapshot_name(
            "meridian-us-1795567459522-42.mbak.partial",
            &p
        ));
        assert!(!is_snapshot_name("meridian-us-manual.mbak", &p));
    }

    #[test]
    fn name_and_region_are_required() {
        let c = DaemonConfig::default();
        assert!(c.validate().unwrap_err().to_string().contains("name"));
    }
}
