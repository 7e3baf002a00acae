//! `daemon`: a [`Node`] with its HTTP API, configured from a TOML file.
//!
//! Owns the node configuration file format ([`DaemonConfig`], every field
//! with a documented default, unknown fields refused with their name) and
//! [`Daemon`], which starts a node and serves its API and stops both in
//! order: stop accepting HTTP, finish pending commits, close peers.
//! `meridian node` runs one daemon; `meridian dev` runs several in one
//! process.

pub mod backups;
mod config;
mod health;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api;
use crate::net::deny::DenyList;
use crate::net::faults::Faults;
use crate::net::tls::{NodeIdentity, TlsError};
use crate::node::{Node, NodeError};
use crate::store::Durability;

use backups::backup_loop;
pub use config::{
    AclConfig, ApiTlsConfig, AuditConfig, BackupConfig, DaemonConfig, DefaultPolicy,
    DurabilityConfig, EdgeWritesConfig, HistoryConfig, HttpConfig, LimitsConfig, PolicyConfig,
    Role, SyncConfig, WriteAckConfig, PROMOTED_FILE,
};
use health::health_loop;
pub use health::HEALTH_CHECK_MS;

/// How long open HTTP connections (watch streams, blocking queries) may
/// keep a stopping daemon waiting before they are cut.
pub const HTTP_DRAIN_MS_MAX: u64 = 2_000;

/// Why a daemon could not start.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// The config file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    ReadConfig {
        /// The config file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for a [`DaemonConfig`] (unknown field, wrong type).
    #[error("config file {path}: {message}")]
    ParseConfig {
        /// The config file.
        path: PathBuf,
        /// The parser's message, naming the offending field.
        message: String,
    },
    /// A setting is invalid in a way the parser cannot see (a missing name, a
    /// bad webhook URL); the text says which.
    #[error("config: {0}")]
    Invalid(String),
    /// The node's TLS identity (certificate, key, cluster CA) could not be loaded.
    #[error("cannot load the TLS files from {dir} (made by `meridian ca issue`): {source}")]
    Tls {
        /// The TLS directory (`tls_dir`).
        dir: PathBuf,
        /// What was wrong with its files.
        #[source]
        source: TlsError,
    },
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(api::audit::AuditError),
    /// The API's TLS certificate, key or client CA could not be loaded.
    #[error("cannot set up HTTPS for the API ([api_tls]): {0}")]
    ApiTls(#[source] TlsError),
    /// The node could not start: its data directory, store, settings or peer listener.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The API's listener could not be bound.
    #[error("cannot listen for the API on {addr}: {source}")]
    Api {
        /// The address it was to listen on.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}

/// A running node and its HTTP API.
pub struct Daemon {
    node: Arc<Node>,
    api_addr: SocketAddr,
    /// `https` or `http`.
    api_scheme: &'static str,
    stop_http: Option<oneshot::Sender<()>>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    backups: Option<JoinHandle<()>>,
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
        let Some(file) = std::env::var_os(crate::net::faults::BLOCK_FILE_ENV) else {
            return Daemon::start_with(cfg, identity, None).await;
        };
        let faults = Faults::new();
        let mut d = Daemon::start_with(cfg, identity, Some(faults.clone())).await?;
        d.tasks
            .push(tokio::spawn(crate::net::faults::follow_block_file(
                faults,
                std::path::PathBuf::from(file),
            )));
        Ok(d)
    }

    /// Starts with an identity in hand, and optionally a fault switchboard
    /// under the node's socket (`meridian dev --partition-demo`).
    pub async fn start_with(
        cfg: &DaemonConfig,
        identity: NodeIdentity,
        faults: Option<Arc<Faults>>,
    ) -> Result<Daemon, DaemonError> {
        cfg.validate()?;
        let mut identity = identity;
        if let Some(path) = &cfg.tls_deny_file {
            let deny = DenyList::load(path).map_err(|source| DaemonError::Tls {
                dir: path.clone(),
                source,
            })?;
            tracing::info!(file = %path.display(), certificates = deny.len(), "refusing revoked certificates");
            identity = identity.with_deny_list(deny);
        }
        let api_tls = match cfg.api_tls.files(&cfg.tls_dir) {
            Some(mut files) => {
                files.denied = identity.denied.clone();
                Some(files.server_config().map_err(DaemonError::ApiTls)?)
            }
            None => None,
        };
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
        let failover = cfg.failover.config();
        if !failover.priority.is_empty() && !failover.priority.contains(&cfg.region) {
            return Err(DaemonError::Invalid(format!(
                "[failover] priority does not list this node's region {:?}",
                cfg.region
            )));
        }
        let write_ack = match cfg.write_ack {
            WriteAckConfig::Local => crate::sync::WriteAck::Local,
            WriteAckConfig::Quorum => crate::sync::WriteAck::Quorum,
        };
        let edge_writes = match cfg.edge_writes {
            EdgeWritesConfig::Server => crate::sync::EdgeWrites::Server,
            EdgeWritesConfig::Local => crate::sync::EdgeWrites::Local,
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
                c.read_barrier_timeout_ms = sync.read_barrier_timeout_ms;
                c.edges_max = sync.edges_max;
                c.forward_timeout_ms = sync.forward_timeout_ms;
                c.write_ack = write_ack;
                c.edge_writes = edge_writes;
                c.failover = failover;
            });
        if let Some(a) = cfg.advertise {
            b = b.advertise(a);
        }
        if cfg.role == Role::Edge {
            b = b.edge();
        }
        // Unset, the role's default (see HistoryConfig).
        if cfg.history.versions_max.is_some() || cfg.history.bytes_max.is_some() {
            b = b.history(
                cfg.history
                    .versions_max
                    .unwrap_or(crate::node::history::HISTORY_VERSIONS_MAX_DEFAULT),
                cfg.history
                    .bytes_max
                    .unwrap_or(crate::node::history::HISTORY_BYTES_MAX_DEFAULT),
            );
        }
        b = b.swim(cfg.swim);
        if let Some(f) = faults {
            b = b.faults(f);
        }
        let node = Arc::new(b.start().await?);
        let mut api_cfg = cfg.api_config();
        if let Some(a) = cfg.audit.settings(&cfg.data_dir) {
            api_cfg.audit = Some(api::audit::AuditLog::open(&a).map_err(DaemonError::Audit)?);
        }
        let destinations = cfg
            .backup
            .destinations()
            .map_err(|e| DaemonError::Invalid(e.to_string()))?;
        let names: Vec<String> = destinations.iter().map(|d| d.name().to_string()).collect();
        let backup_health = (!cfg.backup.schedules().is_empty()
            || cfg.backup.drill_interval_ms > 0)
            .then(|| backups::BackupHealth::new(&cfg.backup, &names, crate::node::time::now_ms()));
        api_cfg.extra = backup_health
            .clone()
            .map(|b| b as Arc<dyn api::health::Extra>);
        let router = api::router(node.clone(), api_cfg);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        if !api_addr.ip().is_loopback() && api_tls.is_none() {
            tracing::warn!(
                api = %api_addr,
                "the HTTP API listens beyond loopback without TLS: set [api_tls] enabled = true, or keep it behind a firewall"
            );
        }
        let scheme = if api_tls.is_some() { "https" } else { "http" };
        let http = tokio::spawn(api::serve(
            listener,
            router,
            cfg.http.serve_config(),
            api_tls,
            async move {
                let _ = stop_rx.await;
            },
        ));
        tracing::info!(
            name = %cfg.name,
            region = %cfg.region,
            node = %node.id(),
            peers = %node.local_addr(),
            api = %format!("{scheme}://{api_addr}"),
            "node started"
        );
        let backups = backup_health.as_ref().map(|h| {
            tokio::spawn(backup_loop(
                node.clone(),
                cfg.backup.clone(),
                destinations,
                h.clone(),
            ))
        });
        let mut tasks = vec![tokio::spawn(health_loop(
            node.clone(),
            cfg.health,
            backup_health
                .clone()
                .map(|b| b as Arc<dyn api::health::Extra>),
        ))];
        if !cfg.failover.priority.is_empty() {
            tasks.push(tokio::spawn(record_failover(
                node.clone(),
                cfg.data_dir.join(PROMOTED_FILE),
            )));
        }
        for w in &cfg.webhooks {
            let (handles, _stats) = webhook::spawn(&node, w).map_err(DaemonError::Invalid)?;
            tasks.extend(handles);
        }
        Ok(Daemon {
            node,
            api_addr,
            api_scheme: scheme,
            stop_http: Some(stop_tx),
            http: Some(http),
            backups,
            tasks,
        })
    }

    /// The running node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Where the HTTP API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The API's URL: `https://` when `[api_tls]` is on, else `http://`.
    pub fn api_url(&self) -> String {
        format!("{}://{}", self.api_scheme, self.api_addr)
    }

    /// Stops accepting HTTP requests (open ones get [`HTTP_DRAIN_MS_MAX`]
    /// to finish), then finishes pending commits and closes every peer.
    pub async fn shutdown(mut self) -> Result<(), DaemonError> {
        if let Some(s) = self.backups.take() {
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

/// Resolves once `node` left the cluster (`PUT /v1/agent/leave`): the
/// daemon's owner then shuts it down, as Consul's agent does.
pub async fn left(node: &Arc<Node>) {
    let mut events = node.subscribe();
    loop {
        match events.recv().await {
            Ok(e) => {
                if matches!(
                    e.kind,
                    crate::node::EventKind::Replica(crate::sync::Event::Left { .. })
                ) {
                    return;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                std::future::pending::<()>().await
            }
        }
    }
}

/// Records a failover's promotion in the data directory (as `meridian
/// promote` does), so that the node stays active across restarts.
async fn record_failover(node: Arc<Node>, path: std::path::PathBuf) {
    let mut events = node.subscribe();
    loop {
        match events.recv().await {
            Ok(e) => {
                let crate::node::EventKind::Replica(crate::sync::Event::FailedOver {
                    failed, ..
                }) = &e.kind
                else {
                    continue;
                };
                tracing::warn!(failed = ?failed, "failover: this standby takes client writes from now on");
                let p = path.clone();
                match tokio::task::spawn_blocking(move || api::record_promotion(&p)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(
                        "cannot record the failover's promotion in {}: {e}",
                        path.display()
                    ),
                    Err(_) => return,
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
