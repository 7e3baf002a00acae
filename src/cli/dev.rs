//! `meridian dev`: a local multi-region cluster in one process
//! ([`super::local`]), with its CA, identities and redb storage kept under
//! a directory of its own, an optional scripted partition and heal, and a
//! partition held for as long as a file names the cut region
//! ([`CUT_OFF_FILE`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meridian::core::types::region_name;

use super::local::{Identities, LocalCluster, Options};

/// Most nodes one dev cluster runs.
pub const DEV_NODES_MAX: usize = 32;

pub struct DevArgs {
    pub regions: usize,
    pub nodes_per_region: usize,
    pub dir: PathBuf,
    pub api_port: u16,
    pub partition_demo: bool,
    /// Every node posts its events here.
    pub webhook: Option<String>,
    /// The API serves HTTPS (each node's certificate, the dev CA).
    pub tls: bool,
    /// ACLs on (default deny); the management token is printed.
    pub acl: bool,
}

/// Where a dev cluster keeps its management token (bootstrap happens once).
const MANAGEMENT_TOKEN_FILE: &str = "management-token";

/// Bootstraps the ACLs of a fresh cluster, or reads the token kept from
/// the first run.
async fn management_token(c: &LocalCluster, dir: &std::path::Path) -> Result<String> {
    let file = dir.join(MANAGEMENT_TOKEN_FILE);
    if let Ok(t) = std::fs::read_to_string(&file) {
        return Ok(t.trim().to_string());
    }
    let t: meridian::api::wire::AclToken = c
        .api_client(0)?
        .call(hyper::Method::PUT, "/v1/acl/bootstrap", None::<&()>)
        .await
        .context("ACL bootstrap")?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&file)
        .with_context(|| format!("writing {}", file.display()))?;
    std::io::Write::write_all(&mut f, format!("{}\n", t.secret_id).as_bytes())?;
    Ok(t.secret_id)
}

pub async fn run(a: DevArgs) -> Result<bool> {
    let total = a.regions * a.nodes_per_region;
    if a.regions == 0 || a.nodes_per_region == 0 || total > DEV_NODES_MAX {
        bail!(
            "a dev cluster has 1..={DEV_NODES_MAX} nodes; asked for {} regions × {}",
            a.regions,
            a.nodes_per_region
        );
    }
    // Ctrl-C or SIGTERM at any point from here stops the cluster cleanly.
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let mut c = LocalCluster::new(Options {
        dir: a.dir.clone(),
        identities: Identities::kept(&a.dir.join("ca"), "meridian-dev")?,
        api_port: a.api_port,
        webhook: a.webhook.clone(),
        wan: None,
        api_tls: a.tls,
        acl: a.acl,
    });
    for i in 0..total {
        if *stop.borrow() {
            break;
        }
        let (name, region) = LocalCluster::name(i, a.nodes_per_region);
        if let Err(e) = c.add(&name, region).await {
            let _ = c.shutdown().await;
            return Err(e);
        }
    }
    if c.nodes.is_empty() {
        return Ok(true);
    }
    let token = if a.acl {
        match management_token(&c, &a.dir).await {
            Ok(t) => Some(t),
            Err(e) => {
                let _ = c.shutdown().await;
                return Err(e);
            }
        }
    } else {
        None
    };
    println!(
        "meridian dev: {} regions × {} node(s) per region, data under {}",
        a.regions,
        a.nodes_per_region,
        a.dir.display()
    );
    println!();
    println!(
        "  {:<18} {:<14} {:<26} PEERS (QUIC)",
        "NODE", "REGION", "API"
    );
    for n in &c.nodes {
        println!(
            "  {:<18} {:<14} {:<26} {}",
            n.daemon.node().name(),
            region_name(n.region),
            n.daemon.api_url(),
            n.daemon.node().local_addr()
        );
    }
    let first = c.nodes[0].daemon.api_url();
    let other = c.nodes[c.nodes.len() - 1].daemon.api_url();
    let ca = a.dir.join("ca").join("ca.pem");
    println!();
    println!("Try, in another terminal:");
    let mut curl = "curl -s".to_string();
    if a.tls {
        println!("  export MERIDIAN_CACERT={}", ca.display());
        curl = format!("curl -s --cacert {}", ca.display());
    }
    if let Some(t) = &token {
        println!("  export MERIDIAN_TOKEN={t}");
        curl = format!("{curl} -H 'X-Consul-Token: {t}'");
    }
    println!("  meridian --addr {first} kv put config/greeting hello");
    println!("  meridian --addr {other} kv get config/greeting");
    println!("  meridian --addr {first} status");
    println!("  meridian --addr {first} verify");
    println!("  {curl} {other}/v1/kv/config/greeting?raw");
    println!();
    println!(
        "The console: {first}/ui/ (each node serves its own; {other}/ui/ is another region's)"
    );
    println!(
        "Cut a region off until you heal it: echo {} > {}   (rm it to heal)",
        region_name(c.nodes[c.nodes.len() - 1].region),
        a.dir.join(CUT_OFF_FILE).display()
    );
    println!();
    if let Some(t) = &token {
        // A line of its own, for scripts.
        println!("management token: {t}");
        println!();
    }
    println!(
        "Ctrl-C stops the cluster; its data stays in {} for the next run.",
        a.dir.display()
    );
    if c.nodes.len() == total {
        tokio::select! {
            r = c.connected(Duration::from_secs(30)) => match r {
                Ok(()) => println!("ready: every node is connected to every other"),
                Err(e) => println!("warning: {e:#}; see `meridian status`"),
            },
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    if a.partition_demo && a.regions >= 2 && !*stop.borrow() {
        tokio::select! {
            r = partition_demo(&c) => {
                if let Err(e) = r {
                    eprintln!("partition demo failed: {e:#}");
                }
            }
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    let cut_file = a.dir.join(CUT_OFF_FILE);
    tokio::select! {
        _ = follow_cut_file(&c, &cut_file) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    println!("stopping…");
    c.shutdown().await?;
    println!("stopped");
    Ok(true)
}

/// A region's name written to this file (in the dev directory) cuts that
/// region off from the others; removing the file, or emptying it, heals.
/// How a browser test or an operator trying the console makes a partition
/// that lasts as long as they like.
pub const CUT_OFF_FILE: &str = "cut-off";
/// How often the cut-off file is read.
const CUT_FILE_POLL_MS: u64 = 200;
/// Longest cut-off file read (a region name).
const CUT_FILE_BYTES_MAX: u64 = 1_024;

/// Applies the cut-off file to the cluster until the task is dropped.
async fn follow_cut_file(c: &LocalCluster, path: &std::path::Path) {
    let mut applied: Option<String> = None;
    loop {
        let wanted = std::fs::metadata(path)
            .ok()
            .filter(|m| m.len() <= CUT_FILE_BYTES_MAX)
            .and_then(|_| std::fs::read_to_string(path).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        if wanted != applied {
            match &wanted {
                Some(name) => match c.nodes.iter().find(|n| region_name(n.region) == *name) {
                    Some(n) => {
                        c.heal();
                        c.cut_off(n.region);
                        println!(
                            "cut {name} off from the other regions ({} says so)",
                            path.display()
                        );
                    }
                    None => eprintln!("{}: no region {name:?} in this cluster", path.display()),
                },
                None if applied.is_some() => {
                    c.heal();
                    println!("healed: {} is gone", path.display());
                }
                None => {}
            }
            applied = wanted;
        }
        tokio::time::sleep(Duration::from_millis(CUT_FILE_POLL_MS)).await;
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn short(h: &[u8; 32]) -> String {
    h[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Cuts the last region off, writes on both sides, shows the divergence,
/// heals and times the convergence.
async fn partition_demo(c: &LocalCluster) -> Result<()> {
    let nodes = &c.nodes;
    let cut = nodes.iter().map(|n| n.region).max().unwrap_or(0);
    let cut_name = region_name(cut);
    let inside = &nodes[0];
    let outside = nodes
        .iter()
        .find(|n| n.region == cut)
        .context("a node in the cut region")?;
    // A document both sides will change, held everywhere before the cut.
    inside
        .daemon
        .node()
        .put_doc(
            "demo/service",
            serde_json::json!({"rps": 100, "timeout_ms": 500}),
        )
        .await?;
    let t = Instant::now();
    while outside.daemon.node().get("demo/service").await?.is_none() {
        if t.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("demo/service did not reach {cut_name} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!();
    println!("partition demo: cutting {cut_name} off from the other regions");
    c.cut_off(cut);
    let t = Instant::now();
    loop {
        let s = inside.daemon.node().status().await?;
        if s.replica
            .regions
            .iter()
            .any(|g| g.region == cut_name && !g.reachable)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "  {} sees {cut_name} unreachable after {:.1} s (no heartbeat within the contact timeout)",
        inside.daemon.node().name(),
        t.elapsed().as_secs_f64()
    );
    inside.daemon.node().put("demo/color", "blue").await?;
    inside
        .daemon
        .node()
        .put("demo/written-in", region_name(inside.region))
        .await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    outside.daemon.node().put("demo/color", "green").await?;
    outside
        .daemon
        .node()
        .put("demo/only-in-cut-region", "yes")
        .await?;
    println!(
        "  wrote demo/color = blue in {} and demo/color = green in {} (later: it will win)",
        region_name(inside.region),
        cut_name
    );
    // The document: a different field on each side; both will survive.
    inside
        .daemon
        .node()
        .patch_doc("demo/service", serde_json::json!({"rps": 200}))
        .await?;
    outside
        .daemon
        .node()
        .patch_doc("demo/service", serde_json::json!({"timeout_ms": 900}))
        .await?;
    println!(
        "  document demo/service: rps = 200 set in {}, timeout_ms = 900 in {cut_name}",
        region_name(inside.region)
    );
    let r = c.roots().await?;
    for (n, root) in nodes.iter().zip(&r) {
        println!("    {:<18} root {}", n.daemon.node().name(), short(root));
    }
    println!("  roots differ while cut off; healing now");
    c.heal();
    let t = Instant::now();
    loop {
        let r = c.roots().await?;
        if r.iter().all(|x| *x == r[0]) {
            let v = inside
                .daemon
                .node()
                .get("demo/color")
                .await?
                .map(|e| e.value);
            println!(
                "  healed: all {} nodes agree on root {} after {:.2} s; demo/color = {:?} everywhere",
                nodes.len(),
                short(&r[0]),
                t.elapsed().as_secs_f64(),
                v.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
            );
            for n in [inside, outside] {
                let d = n.daemon.node().get_doc("demo/service", None).await?;
                println!(
                    "  document demo/service in {}: {}",
                    n.daemon.node().name(),
                    d.value.map(|d| d.json.to_string()).unwrap_or_default()
                );
            }
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            println!("  not converged 60 s after the heal: see `meridian verify --diff`");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("  conflicts are listed at /v1/conflicts; Ctrl-C stops the cluster");
    Ok(())
}
