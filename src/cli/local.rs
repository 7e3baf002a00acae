//! A local cluster in one process, for `meridian dev` and `meridian bench`:
//! nodes named `<region>-<n>` under one folder, each on loopback behind a
//! fault socket (so a region can be cut off and healed, and links between
//! regions can be slowed), every node seeded with the first one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meridian::client::{Client, ClientTls};
use meridian::core::types::region_name;
use meridian::daemon::webhook::WebhookConfig;
use meridian::daemon::{AclConfig, ApiTlsConfig, Daemon, DaemonConfig};
use meridian::net::faults::{Faults, Link};
use meridian::net::tls::{Ca, NodeIdentity};

/// One node of a local cluster.
pub struct LocalNode {
    pub daemon: Daemon,
    /// Its socket's faults: blocks and slowed links.
    pub faults: Arc<Faults>,
    /// Its region's number (see [`region_name`]).
    pub region: usize,
}

/// How the nodes get their identities.
pub enum Identities {
    /// Issued afresh by a throwaway CA each run.
    Throwaway(Ca),
    /// Issued once by the CA kept in the cluster's folder, then kept in each
    /// node's folder (a restarted dev cluster keeps its node ids and data).
    Kept(Ca),
}

impl Identities {
    /// A throwaway CA named `name`.
    pub fn throwaway(name: &str) -> Result<Identities> {
        Ok(Identities::Throwaway(Ca::generate(name)?))
    }

    /// The CA kept in `dir` (generated and saved there the first time).
    pub fn kept(dir: &Path, name: &str) -> Result<Identities> {
        if dir.join("ca.key").exists() {
            let ca =
                Ca::load(dir).with_context(|| format!("loading the CA in {}", dir.display()))?;
            return Ok(Identities::Kept(ca));
        }
        let ca = Ca::generate(name)?;
        ca.save(dir)?;
        Ok(Identities::Kept(ca))
    }

    fn issue(&self, tls: &Path, name: &str, region: &str) -> Result<NodeIdentity> {
        // Under the id the node's data directory holds, if it ran: a node
        // restarted in its directory keeps its id.
        let held = tls
            .parent()
            .map(|d| d.join("data").join(meridian::node::data_dir::NODE_ID_FILE))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| u64::from_str_radix(t.trim(), 16).ok())
            .filter(|n| *n != 0)
            .map(meridian::core::types::NodeId);
        let fresh = |ca: &Ca| -> Result<NodeIdentity> {
            Ok(match held {
                Some(n) => ca.issue_node(name, region, n, &[])?,
                None => ca.issue(name, region)?,
            })
        };
        match self {
            Identities::Throwaway(ca) => fresh(ca),
            Identities::Kept(ca) => {
                if tls.join("node.key").exists() {
                    let id = NodeIdentity::load(tls)
                        .with_context(|| format!("loading {}", tls.display()))?;
                    // Certificates from before the API served HTTPS name no
                    // local host, and those from before ids were bound name
                    // no node id: issue them again.
                    if id.names_host("127.0.0.1") && id.node_id().is_some() {
                        return Ok(id);
                    }
                }
                let id = fresh(ca)?;
                id.save(tls)?;
                Ok(id)
            }
        }
    }
}

/// What every node of the cluster shares.
pub struct Options {
    /// Each node keeps its data and identity in `dir/<name>/`.
    pub dir: PathBuf,
    pub identities: Identities,
    /// The first node's API port; the others count up from it (0: any port).
    pub api_port: u16,
    /// Every node posts its events here.
    pub webhook: Option<String>,
    /// The link between nodes of different regions (`None`: plain loopback).
    pub wan: Option<Link>,
    /// The API serves HTTPS with each node's certificate.
    pub api_tls: bool,
    /// ACL tokens are enforced (default policy deny).
    pub acl: bool,
}

/// A running local cluster.
pub struct LocalCluster {
    pub nodes: Vec<LocalNode>,
    opts: Options,
}

impl LocalCluster {
    pub fn new(opts: Options) -> LocalCluster {
        LocalCluster {
            nodes: Vec::new(),
            opts,
        }
    }

    /// The name of node `i` of a cluster with `per_region` nodes in each
    /// region, and its region.
    pub fn name(i: usize, per_region: usize) -> (String, usize) {
        let region = i / per_region;
        (
            format!("{}-{}", region_name(region), i % per_region + 1),
            region,
        )
    }

    /// Starts node `name` in region `region`, seeded with the first node.
    pub async fn add(&mut self, name: &str, region: usize) -> Result<()> {
        let rname = region_name(region);
        let dir = self.opts.dir.join(name);
        let id = self.opts.identities.issue(&dir.join("tls"), name, &rname)?;
        if self.opts.api_tls {
            // The API reads its certificate from the node's TLS folder.
            id.save(&dir.join("tls"))?;
        }
        let api_port = match self.opts.api_port {
            0 => 0,
            base => base.saturating_add(self.nodes.len() as u16),
        };
        let cfg = DaemonConfig {
            name: name.to_string(),
            region: rname.clone(),
            data_dir: dir.join("data"),
            tls_dir: dir.join("tls"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            seeds: self
                .nodes
                .first()
                .map(|n| n.daemon.node().local_addr())
                .into_iter()
                .collect(),
            webhooks: self
                .opts
                .webhook
                .iter()
                .map(|url| WebhookConfig {
                    url: url.clone(),
                    ca_file: None,
                    secret: None,
                    events: Vec::new(),
                })
                .collect(),
            api_tls: ApiTlsConfig {
                enabled: self.opts.api_tls,
                ..ApiTlsConfig::default()
            },
            acl: AclConfig {
                enabled: self.opts.acl,
                ..AclConfig::default()
            },
            ..DaemonConfig::default()
        };
        let faults = Faults::new();
        let daemon = Daemon::start_with(&cfg, id, Some(faults.clone()))
            .await
            .with_context(|| format!("starting {name}"))?;
        if let Some(wan) = self.opts.wan {
            for other in self.nodes.iter().filter(|o| o.region != region) {
                faults.set_link(other.daemon.node().local_addr(), wan);
                other.faults.set_link(daemon.node().local_addr(), wan);
            }
        }
        self.nodes.push(LocalNode {
            daemon,
            faults,
            region,
        });
        Ok(())
    }

    /// A client of node `i`'s API: over HTTPS trusting the cluster CA when
    /// the APIs serve HTTPS.
    pub fn api_client(&self, i: usize) -> Result<Client> {
        let n = self.nodes.get(i).context("no such node")?;
        let tls = if self.opts.api_tls {
            let name = n.daemon.node().name().to_string();
            let ca = self.opts.dir.join(name).join("tls").join("ca.pem");
            Some(Arc::new(ClientTls::new(Some(&ca), None, None)?))
        } else {
            None
        };
        Ok(Client::with_tls(&n.daemon.api_url(), tls)?)
    }

    /// Waits until every node is connected to every other and none is
    /// rebuilding; an error after `limit`.
    pub async fn connected(&self, limit: Duration) -> Result<()> {
        let want = self.nodes.len().saturating_sub(1);
        let deadline = Instant::now() + limit;
        loop {
            let mut all = true;
            for n in &self.nodes {
                let s = n.daemon.node().status().await?;
                all &= s.replica.peers.iter().filter(|p| p.connected).count() >= want
                    && !s.replica.rebuilding;
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "not every node connected within {:.0} s",
                    limit.as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every node's root over all its keys.
    pub async fn roots(&self) -> Result<Vec<[u8; 32]>> {
        let mut out = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            out.push(n.daemon.node().digest("").await?);
        }
        Ok(out)
    }

    /// How long until every root is equal (polled every `poll`), or `None`
    /// after `limit`.
    pub async fn converged(&self, limit: Duration, poll: Duration) -> Result<Option<Duration>> {
        let start = Instant::now();
        loop {
            let roots = self.roots().await?;
            if roots.windows(2).all(|w| w[0] == w[1]) {
                return Ok(Some(start.elapsed()));
            }
            if start.elapsed() > limit {
                return Ok(None);
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Cuts region `region` off from the others (both ways).
    pub fn cut_off(&self, region: usize) {
        for a in &self.nodes {
            for b in &self.nodes {
                if (a.region == region) != (b.region == region) {
                    a.faults.block(b.daemon.node().local_addr());
                }
            }
        }
    }

    /// Lifts every cut (slowed links stay slow).
    pub fn heal(&self) {
        for n in &self.nodes {
            n.faults.heal();
        }
    }

    /// Stops every node; the first error, after trying them all.
    pub async fn shutdown(self) -> Result<()> {
        let mut first = Ok(());
        for n in self.nodes {
            let r = n.daemon.shutdown().await;
            if first.is_ok() {
                first = r.map_err(anyhow::Error::from);
            }
        }
        first
    }
}
