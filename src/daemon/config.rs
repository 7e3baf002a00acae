//! The node configuration file ([`DaemonConfig`]): every field with a
//! documented default, unknown fields refused with their name, and its
//! translation into the node's and the API's settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::backups::destination::{
    Destination, DestinationConfig, DestinationError, DESTINATIONS_MAX,
};
use super::backups::plan::{self, Schedule, INTERVAL_MS_MIN};
use super::{DaemonError, HTTP_DRAIN_MS_MAX};
use crate::api::{self, ApiConfig, Thresholds};
use crate::core::codec::ClusterId;
use crate::core::types::{Limits, NodeId, KEY_BYTES_MAX, VALUE_BYTES_MAX_DEFAULT};
use crate::daemon::webhook::WebhookConfig;
use crate::sync::{self, PartitionPolicy};

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
    /// Keep accepting writes while regions are cut off (default).
    #[default]
    Available,
    /// Refuse client writes unless a majority of the known regions is reachable.
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

/// `edge_writes` in the config file: what an edge does with a write while
/// no server is connected (see the README, "Servers and edges").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EdgeWritesConfig {
    /// Refused with 503 (default).
    #[default]
    Server,
    /// Puts and deletes of one key are taken here, durable in the edge's
    /// store, and handed over to a server once one is connected.
    Local,
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
    /// An edge agent: attaches to one server of its region (one of its
    /// seeds, the first to answer; another when that one is lost), takes
    /// every change from it, serves reads locally and forwards its writes
    /// to it. It is not a member: it counts for no quorum, no region's
    /// reachability and no tombstone collection (see the README, "Servers
    /// and edges").
    Edge,
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
    /// Operations in one `PUT /v1/txn`. Default 64 (Consul's limit).
    pub txn_ops_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            key_bytes_max: KEY_BYTES_MAX,
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            recursive_delete_keys_max: 1_000,
            txn_ops_max: api::TXN_OPS_MAX_DEFAULT,
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
    /// A `?consistent` read whose peers have not all answered this long is
    /// refused. Default 5000.
    pub read_barrier_timeout_ms: u64,
    /// A server serves at most this many edges; more are refused (they
    /// attach to another server of their region). Default 2000.
    pub edges_max: usize,
    /// An edge's write its server has not answered this long fails (503;
    /// it may or may not have been made). Default 15000.
    pub forward_timeout_ms: u64,
}

impl Default for SyncConfig {
    /// The replica's own defaults ([`sync::Config::new`]): one place for each.
    fn default() -> Self {
        let c = sync::Config::new(NodeId(0), "", "", ClusterId::default());
        SyncConfig {
            ae_interval_ms: c.ae_interval_ms,
            ae_jitter_ms: c.ae_jitter_ms,
            peer_timeout_ms: c.peer_timeout_ms,
            clock_offset_ms_max: c.clock_offset_ms_max,
            tombstone_horizon_ms: c.tombstone_horizon_ms,
            push_delay_ms: c.push_delay_ms,
            conflicts_max: c.conflicts_max,
            contact_timeout_ms: c.contact_timeout_ms,
            quorum_ack_timeout_ms: c.quorum_ack_timeout_ms,
            read_barrier_timeout_ms: c.read_barrier_timeout_ms,
            edges_max: c.edges_max,
            forward_timeout_ms: c.forward_timeout_ms,
        }
    }
}

/// `[backup]`: scheduled backups, tier by tier (`[[backup.schedule]]`; none
/// by default). See `daemon::backups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Where backups go when no `[[backup.destination]]` is given. Default
    /// `backups` (relative to the working directory).
    pub dir: PathBuf,
    /// Where backups go: local folders and S3-compatible buckets, each
    /// taking every schedule's backups. None: `dir` alone.
    pub destination: Vec<DestinationConfig>,
    /// The tiers: each a kind (full or incremental), an interval and a
    /// retention by age and count.
    pub schedule: Vec<Schedule>,
    /// Older form of one tier: a full backup this often (0, the default:
    /// none), taken as a full schedule named `snapshot`.
    pub interval_ms: u64,
    /// With `interval_ms`: backups kept. Default 96.
    pub keep: usize,
    /// A restore drill of this node's newest backups this often (0, the
    /// default: none); a failed drill makes the node unhealthy.
    pub drill_interval_ms: u64,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            dir: PathBuf::from("backups"),
            destination: Vec::new(),
            schedule: Vec::new(),
            interval_ms: 0,
            keep: 96,
            drill_interval_ms: 0,
        }
    }
}

impl BackupConfig {
    /// The destinations, opened (no request is made): each of
    /// `[[backup.destination]]`, or `dir` as one named `local`.
    pub fn destinations(&self) -> Result<Vec<Destination>, DestinationError> {
        if self.destination.is_empty() {
            return Ok(vec![Destination::folder("local", &self.dir)]);
        }
        if self.destination.len() > DESTINATIONS_MAX {
            return Err(DestinationError::Config {
                destination: self.destination[DESTINATIONS_MAX].name.clone(),
                why: format!("at most {DESTINATIONS_MAX} destinations"),
            });
        }
        let mut out: Vec<Destination> = Vec::with_capacity(self.destination.len());
        for d in &self.destination {
            if out.iter().any(|o| o.name() == d.name) {
                return Err(DestinationError::Config {
                    destination: d.name.clone(),
                    why: "two destinations have this name".to_string(),
                });
            }
            out.push(Destination::open(d)?);
        }
        Ok(out)
    }

    /// Every tier, the older `interval_ms` form included.
    pub fn schedules(&self) -> Vec<Schedule> {
        let mut all = self.schedule.clone();
        if self.interval_ms > 0 {
            all.push(Schedule {
                name: "snapshot".to_string(),
                kind: plan::Kind::Full,
                interval_ms: self.interval_ms,
                keep_ms: 0,
                keep: self.keep,
                base: None,
            });
        }
        all
    }
}

/// `[failover]`: a standby region takes over when the regions before it in
/// `priority` fail (see `sync::failover`). Off unless `priority` is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverSection {
    /// Regions in the order they should be active. Default none (off).
    pub priority: Vec<String>,
    /// How long the regions before this one must be out of reach (from
    /// here, and from every standby region in contact) before it takes
    /// over. Default 60 s; at least 5 s and twice the contact timeout.
    pub after_ms: u64,
    /// Take over only while a majority of the regions is reachable, so a
    /// region cut off alone never does. Default true; false for two regions.
    pub majority: bool,
}

impl Default for FailoverSection {
    fn default() -> Self {
        FailoverSection {
            priority: Vec::new(),
            after_ms: 60_000,
            majority: true,
        }
    }
}

impl FailoverSection {
    /// The replica's settings.
    pub fn config(&self) -> crate::sync::failover::FailoverConfig {
        crate::sync::failover::FailoverConfig {
            priority: self.priority.clone(),
            after_ms: self.after_ms,
            majority: self.majority,
        }
    }
}

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
    pub(super) fn validate(&self) -> Result<(), DaemonError> {
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

/// `[api_tls]`: HTTPS on the API (`api::tls`). (A section of its own: `api`
/// is the API's address.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ApiTlsConfig {
    /// Serve HTTPS instead of HTTP. Default false.
    pub enabled: bool,
    /// The server certificate chain (PEM). Default: the node's `node.pem`
    /// in `tls_dir` (issued for localhost, 127.0.0.1, ::1 and `meridian ca
    /// issue --host`).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM). Default: `node.key` in `tls_dir`.
    pub key_file: Option<PathBuf>,
    /// Require a client certificate from every client. Default false.
    pub verify_incoming: bool,
    /// The CA client certificates must chain to. Default: the cluster CA
    /// (`ca.pem` in `tls_dir`).
    pub client_ca_file: Option<PathBuf>,
}

impl ApiTlsConfig {
    fn validate(&self) -> Result<(), DaemonError> {
        let invalid = |m: &str| Err(DaemonError::Invalid(format!("[api_tls] {m}")));
        if self.cert_file.is_some() != self.key_file.is_some() {
            return invalid("cert_file and key_file go together");
        }
        if self.client_ca_file.is_some() && !self.verify_incoming {
            return invalid("client_ca_file needs verify_incoming = true");
        }
        if !self.enabled && (self.verify_incoming || self.cert_file.is_some()) {
            return invalid("certificates are set but enabled is false");
        }
        Ok(())
    }

    /// The files the API's TLS is built from, `None` when HTTPS is off.
    pub fn files(&self, tls_dir: &Path) -> Option<api::tls::ApiTls> {
        if !self.enabled {
            return None;
        }
        let mut t = api::tls::ApiTls::node_files(tls_dir, self.verify_incoming);
        if let (Some(c), Some(k)) = (&self.cert_file, &self.key_file) {
            t.cert_file = c.clone();
            t.key_file = k.clone();
        }
        if let Some(ca) = &self.client_ca_file {
            t.client_ca_file = Some(ca.clone());
        }
        Some(t)
    }
}

/// `[audit]`: the audit log of accepted changes (`api::audit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Log accepted changes. Default true.
    pub enabled: bool,
    /// Where. Default: `audit` in `data_dir`.
    pub dir: Option<PathBuf>,
    /// A file grows to about this size before the next starts. Default 16 MiB.
    pub file_bytes_max: u64,
    /// Files kept (the oldest deleted). Default 8.
    pub files_max: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            dir: None,
            file_bytes_max: 16 << 20,
            files_max: 8,
        }
    }
}

impl AuditConfig {
    fn validate(&self) -> Result<(), DaemonError> {
        if self.file_bytes_max < 4_096 || self.files_max == 0 || self.files_max > 100_000 {
            return Err(DaemonError::Invalid(
                "[audit] file_bytes_max must be at least 4096 and files_max between 1 and 100000"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The log's settings, `None` when off.
    pub fn settings(&self, data_dir: &Path) -> Option<api::audit::AuditConfig> {
        self.enabled.then(|| api::audit::AuditConfig {
            dir: self.dir.clone().unwrap_or_else(|| data_dir.join("audit")),
            file_bytes_max: self.file_bytes_max,
            files_max: self.files_max,
        })
    }
}

/// `[acl]`: ACL tokens (`api::acl`, `core::acl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclConfig {
    /// Enforce tokens. Default false.
    pub enabled: bool,
    /// Where no rule of a token applies: `deny` (default) or `allow`.
    pub default_policy: DefaultPolicy,
}

/// `[acl] default_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPolicy {
    /// Nothing a rule does not grant (default).
    #[default]
    Deny,
    /// Everything a rule does not deny.
    Allow,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig {
            enabled: false,
            default_policy: DefaultPolicy::Deny,
        }
    }
}

impl AclConfig {
    /// How the API enforces ACLs.
    pub fn mode(&self) -> api::AclMode {
        if !self.enabled {
            return api::AclMode::Off;
        }
        api::AclMode::On {
            default: match self.default_policy {
                DefaultPolicy::Deny => crate::core::acl::Access::Deny,
                DefaultPolicy::Allow => crate::core::acl::Access::Write,
            },
        }
    }
}

/// `[history]`: versions of each key kept for `kv history` and `kv rollback`.
/// Unset, a server keeps [`HISTORY_VERSIONS_MAX_DEFAULT`] versions in at
/// most [`HISTORY_BYTES_MAX_DEFAULT`] bytes and an edge keeps none (edges
/// run on small machines and hold the whole key space already); set, it
/// applies to either role.
///
/// [`HISTORY_VERSIONS_MAX_DEFAULT`]: crate::node::history::HISTORY_VERSIONS_MAX_DEFAULT
/// [`HISTORY_BYTES_MAX_DEFAULT`]: crate::node::history::HISTORY_BYTES_MAX_DEFAULT
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Versions kept per key; 0 keeps none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions_max: Option<usize>,
    /// Bytes the history holds in memory in all: versions with their keys
    /// and values, and its indexes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_max: Option<usize>,
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
    /// Certificates refused in the handshake whatever their chain (revoked
    /// node keys; `meridian ca revoke` writes it). Default none.
    pub tls_deny_file: Option<PathBuf>,
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
    /// On an edge: `server` (default) or `local`.
    pub edge_writes: EdgeWritesConfig,
    /// `[limits]`: sizes of keys and values, and the mass-delete guard.
    pub limits: LimitsConfig,
    /// `[health]`: when the node reports itself unhealthy.
    pub health: Thresholds,
    /// `[sync]`: replication timers and bounds.
    pub sync: SyncConfig,
    /// `[swim]`: failure detection's timing (a LAN or WAN profile).
    pub swim: crate::sync::membership::SwimTiming,
    /// `[backup]`: scheduled backups.
    pub backup: BackupConfig,
    /// `[failover]`: prioritized failover of standby regions.
    pub failover: FailoverSection,
    /// `[history]`: versions of each key kept.
    pub history: HistoryConfig,
    /// `[http]`: timeouts and connection bounds of the API server.
    pub http: HttpConfig,
    /// `[api_tls]`: HTTPS on the API, and client certificates.
    pub api_tls: ApiTlsConfig,
    /// `[acl]`: ACL tokens.
    pub acl: AclConfig,
    /// `[audit]`: the audit log.
    pub audit: AuditConfig,
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
            tls_deny_file: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 7400)),
            advertise: None,
            api: SocketAddr::from(([127, 0, 0, 1], 8500)),
            api_advertise: None,
            seeds: Vec::new(),
            durability: DurabilityConfig::default(),
            partition_policy: PolicyConfig::default(),
            write_ack: WriteAckConfig::default(),
            role: Role::default(),
            edge_writes: EdgeWritesConfig::default(),
            limits: LimitsConfig::default(),
            health: Thresholds::default(),
            sync: SyncConfig::default(),
            swim: crate::sync::membership::SwimTiming::default(),
            backup: BackupConfig::default(),
            failover: FailoverSection::default(),
            history: HistoryConfig::default(),
            http: HttpConfig::default(),
            api_tls: ApiTlsConfig::default(),
            acl: AclConfig::default(),
            audit: AuditConfig::default(),
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

    /// Reads and parses the config file at `path`; errors name the file (and the field).
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
        if self.edge_writes == EdgeWritesConfig::Local && self.role != Role::Edge {
            return Err(DaemonError::Invalid(
                "edge_writes = \"local\" is for role = \"edge\": a server takes writes itself"
                    .into(),
            ));
        }
        if self.role == Role::Edge {
            if self.seeds.is_empty() {
                return Err(DaemonError::Invalid(
                    "role = \"edge\" needs seeds: the servers of its region it may attach to"
                        .into(),
                ));
            }
            if !self.failover.priority.is_empty() {
                return Err(DaemonError::Invalid(
                    "an edge takes no part in failover: remove [failover] from its config".into(),
                ));
            }
        }
        self.http.validate()?;
        self.api_tls.validate()?;
        self.swim
            .validate()
            .map_err(|e| DaemonError::Invalid(format!("[swim] {e}")))?;
        self.audit.validate()?;
        let b = &self.backup;
        if b.interval_ms > 0 && (b.interval_ms < INTERVAL_MS_MIN || b.keep == 0) {
            return Err(DaemonError::Invalid(format!(
                "[backup] interval_ms must be 0 (off) or at least {INTERVAL_MS_MIN}, and keep at least 1"
            )));
        }
        plan::check(&b.schedules()).map_err(|e| DaemonError::Invalid(e.to_string()))?;
        b.destinations()
            .map_err(|e| DaemonError::Invalid(e.to_string()))?;
        if b.drill_interval_ms > 0 && b.drill_interval_ms < INTERVAL_MS_MIN {
            return Err(DaemonError::Invalid(format!(
                "[backup] drill_interval_ms must be 0 (off) or at least {INTERVAL_MS_MIN}"
            )));
        }
        Ok(())
    }

    /// The API's settings from this config.
    pub fn api_config(&self) -> ApiConfig {
        ApiConfig {
            limits: self.node_limits(),
            policy: self.policy(),
            health: self.health,
            restore_bytes_max: api::RESTORE_BYTES_MAX_DEFAULT,
            promoted_file: Some(self.data_dir.join(PROMOTED_FILE)),
            recursive_delete_keys_max: self.limits.recursive_delete_keys_max,
            txn_ops_max: self.limits.txn_ops_max,
            acl: self.acl.mode(),
            audit: None,
            extra: None,
        }
    }

    /// The API address peers are told, given the one bound.
    pub(super) fn api_told(&self, bound: SocketAddr) -> SocketAddr {
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

    pub(super) fn node_limits(&self) -> Limits {
        Limits {
            key_bytes_max: self.limits.key_bytes_max,
            value_bytes_max: self.limits.value_bytes_max,
        }
    }

    pub(super) fn policy(&self) -> PartitionPolicy {
        match self.partition_policy {
            PolicyConfig::Available => PartitionPolicy::Available,
            PolicyConfig::Quorum => PartitionPolicy::Quorum,
        }
    }
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
    fn backup_schedules_read_and_are_checked() {
        let text = "name = \"a\"\nregion = \"r\"\n[backup]\ndir = \"/b\"\n\
            [[backup.schedule]]\nname = \"daily\"\nkind = \"full\"\ninterval_ms = 86400000\nkeep_ms = 2592000000\n\
            [[backup.schedule]]\nname = \"hourly\"\nkind = \"incremental\"\ninterval_ms = 3600000\nkeep = 168\n";
        let c = DaemonConfig::parse(text, Path::new("n")).unwrap();
        c.validate().unwrap();
        let s = c.backup.schedules();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[1].kind, s[1].keep, s[1].base.as_deref()),
            (plan::Kind::Incremental, 168, None)
        );
        // The older form is one more full schedule.
        let legacy = "name = \"a\"\nregion = \"r\"\n[backup]\ninterval_ms = 60000\nkeep = 5\n";
        let c = DaemonConfig::parse(legacy, Path::new("n")).unwrap();
        assert_eq!(c.backup.schedules()[0].name, "snapshot");
        // Mistakes name what is wrong.
        for (schedule, word) in [
            (
                "name = \"Daily\"\nkind = \"full\"\ninterval_ms = 60000",
                "Daily",
            ),
            (
                "name = \"inc\"\nkind = \"incremental\"\ninterval_ms = 60000",
                "no full schedule",
            ),
            (
                "name = \"d\"\nkind = \"full\"\ninterval_ms = 10",
                "interval_ms",
            ),
        ] {
            let text = format!("name = \"a\"\nregion = \"r\"\n[[backup.schedule]]\n{schedule}\n");
            let c = DaemonConfig::parse(&text, Path::new("n")).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(word), "{schedule}: {e}");
        }
        let e = DaemonConfig::parse(
            "[[backup.schedule]]\nname = \"d\"\nkind = \"weekly\"\ninterval_ms = 1000\n",
            Path::new("n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("weekly"), "{e}");
    }

    #[test]
    fn webhook_filters_name_known_event_types() {
        let text =
            "[[webhooks]]\nurl = \"http://h:1/\"\nevents = [\"peer_down\", \"health_changed\"]";
        let c = DaemonConfig::parse(text, Path::new("n")).unwrap();
        use crate::api::wire::EventType;
        assert_eq!(
            c.webhooks[0].events,
            [EventType::PeerDown, EventType::HealthChanged]
        );
        // A misspelt type is refused, and the answer lists the known ones.
        let text = "[[webhooks]]\nurl = \"http://h:1/\"\nevents = [\"peer_dwn\"]";
        let e = DaemonConfig::parse(text, Path::new("n")).unwrap_err();
        assert!(e.to_string().contains("peer_dwn"), "{e}");
        // HTTPS receivers; a CA only for https; no empty secret.
        let https = "[[webhooks]]\nurl = \"https://h:1/x\"\nca_file = \"/ca.pem\"\nsecret = \"s\"";
        let c = DaemonConfig::parse(https, Path::new("n")).unwrap();
        assert_eq!(
            c.webhooks[0].target().unwrap(),
            ("https://h:1".to_string(), "/x".to_string())
        );
        for (text, word) in [
            ("url = \"http://h:1/\"\nca_file = \"/ca.pem\"", "https"),
            ("url = \"https://h:1/\"\nsecret = \"\"", "secret"),
            ("url = \"ftp://h:1/\"", "https://"),
        ] {
            let named = format!("name = \"a\"\nregion = \"r\"\n[[webhooks]]\n{text}");
            let c = DaemonConfig::parse(&named, Path::new("n")).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(word), "{text}: {e}");
        }
        assert!(e.to_string().contains("partition_healed"), "{e}");
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
    fn api_tls_settings_are_checked_and_default_to_the_node_files() {
        let base = "name = \"a\"\nregion = \"r\"\ntls_dir = \"/t\"\n";
        let c = DaemonConfig::parse(
            &format!("{base}[api_tls]\nenabled = true\nverify_incoming = true\n"),
            Path::new("n"),
        )
        .unwrap();
        c.validate().unwrap();
        let f = c.api_tls.files(&c.tls_dir).unwrap();
        assert_eq!(f.cert_file, PathBuf::from("/t/node.pem"));
        assert_eq!(f.client_ca_file, Some(PathBuf::from("/t/ca.pem")));
        assert_eq!(DaemonConfig::default().api_tls.files(Path::new("/t")), None);
        for (extra, word) in [
            ("enabled = true\ncert_file = \"/c.pem\"", "together"),
            (
                "enabled = true\nclient_ca_file = \"/ca.pem\"",
                "verify_incoming",
            ),
            ("verify_incoming = true", "enabled"),
        ] {
            let c = DaemonConfig::parse(&format!("{base}[api_tls]\n{extra}\n"), Path::new("n"))
                .unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(word), "{extra}: {e}");
        }
    }

    #[test]
    fn name_and_region_are_required() {
        let c = DaemonConfig::default();
        assert!(c.validate().unwrap_err().to_string().contains("name"));
    }
}
