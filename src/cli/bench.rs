//! `meridian bench`: measures a local cluster whose regions talk through an
//! injected WAN link (one-way delay, jitter, loss on the UDP socket under
//! quinn: real QUIC runs over it). Scenarios: propagate, ack (write
//! latency acknowledged locally and by a quorum of regions), partition,
//! throughput, rebuild, consistent (the cost of `?consistent` reads across
//! the link), txn (transactions beside single PUTs); each prints a table
//! (or JSON with `--json`). `edges` (not part of `all`) runs servers and
//! many embedded edges instead (see [`super::bench_edges`]), `docs` what
//! documents cost, in process (see [`super::bench_docs`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use meridian::client;
use meridian::core::types::region_name;
use meridian::net::faults::Link;

use super::local::{Identities, LocalCluster, Options};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    All,
    Propagate,
    Ack,
    Partition,
    Throughput,
    Rebuild,
    Consistent,
    Txn,
    /// Servers and `--edges` embedded edges (not part of `all`).
    Edges,
    /// What documents cost, in process (not part of `all`; see `bench_docs`).
    Docs,
}

/// The knobs of a run (see `meridian bench --help`).
#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,
    #[arg(long, default_value_t = 3)]
    pub regions: usize,
    #[arg(long, default_value_t = 1)]
    pub nodes_per_region: usize,
    /// One-way delay between regions.
    #[arg(long, default_value_t = 40)]
    pub delay_ms: u64,
    /// Plus a uniform random delay up to this.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Probability of losing a datagram between regions (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// propagate: writes, and their rate per second.
    #[arg(long, default_value_t = 200)]
    pub writes: usize,
    #[arg(long, default_value_t = 50)]
    pub rate: u64,
    /// partition and rebuild: keys loaded.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// partition: conflicting writes on each side.
    #[arg(long, default_value_t = 1_000)]
    pub diverged: usize,
    /// partition: how long the region stays cut off after its conflicting
    /// writes (a longer cut lets the redial backoff grow).
    #[arg(long, default_value_t = 0)]
    pub cut_ms: u64,
    /// throughput: HTTP clients, and seconds for PUT then GET.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// The APIs serve HTTPS and the load runs over it (the cost of TLS).
    #[arg(long)]
    pub api_tls: bool,
    /// Tiny sizes, for a smoke test: seconds, not figures.
    #[arg(long)]
    pub tiny: bool,
    /// edges: embedded edges, all in the first region.
    #[arg(long, default_value_t = 1_000)]
    pub edges: usize,
    /// edges: one-way delay between an edge and its servers.
    #[arg(long, default_value_t = 5)]
    pub edge_delay_ms: u64,
    #[arg(long)]
    pub json: bool,
    /// Where the nodes keep their data (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Most nodes a bench cluster runs.
const BENCH_NODES_MAX: usize = 16;

/// Starts the cluster of `a` under `dir`, regions linked by the injected WAN.
async fn start(a: &BenchArgs, dir: PathBuf) -> Result<LocalCluster> {
    let total = a.regions * a.nodes_per_region;
    if a.regions < 2 || a.nodes_per_region == 0 || total > BENCH_NODES_MAX {
        bail!("a bench cluster has 2 or more regions and at most {BENCH_NODES_MAX} nodes");
    }
    let mut c = LocalCluster::new(Options {
        dir,
        identities: Identities::throwaway("meridian-bench")?,
        api_port: 0,
        webhook: None,
        wan: Some(Link {
            delay_ms: a.delay_ms,
            jitter_ms: a.jitter_ms,
            loss: a.loss,
        }),
        api_tls: a.api_tls,
        acl: false,
    });
    for i in 0..total {
        let (name, region) = LocalCluster::name(i, a.nodes_per_region);
        c.add(&name, region).await?;
    }
    Ok(c)
}

/// Bytes every node has sent to its peers.
async fn bytes_out(c: &LocalCluster) -> Result<u64> {
    let mut sum = 0;
    for n in &c.nodes {
        sum += n.daemon.node().status().await?.bytes_out;
    }
    Ok(sum)
}

/// Until every root is equal, polled often (the times are measured).
async fn converged(c: &LocalCluster, limit: Duration) -> Result<Option<Duration>> {
    c.converged(limit, Duration::from_millis(2)).await
}

fn quantile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn progress(a: &BenchArgs, len: u64) -> ProgressBar {
    if a.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(s) = ProgressStyle::with_template("{msg:28} [{bar:30}] {pos}/{len}") {
        pb.set_style(s.progress_chars("=> "));
    }
    pb
}

/// Writes `count` keys of `value_bytes` through node 0, 64 at a time.
async fn load_keys(c: &LocalCluster, prefix: &str, count: usize, value_bytes: usize) -> Result<()> {
    let mut tasks = Vec::new();
    for w in 0..64usize {
        let node = c.nodes[0].daemon.node().clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in (w..count).step_by(64) {
                node.put(&format!("{prefix}{i:08}"), vec![b'x'; value_bytes])
                    .await?;
            }
            Ok::<_, meridian::NodeError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn propagate(c: &LocalCluster, a: &BenchArgs, pb: &ProgressBar) -> Result<Value> {
    pb.set_message("propagate");
    let writer = c.nodes[0].daemon.node().clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String, Instant)>();
    let mut watchers = Vec::new();
    for (i, n) in c.nodes.iter().enumerate().skip(1) {
        let node = n.daemon.node();
        let mut w = node.watch("bench/prop/", node.index());
        let tx = tx.clone();
        watchers.push(tokio::spawn(async move {
            while let Some(ch) = w.next().await {
                let _ = tx.send((i, ch.key, Instant::now()));
            }
        }));
    }
    let others = c.nodes.len() - 1;
    let gap = Duration::from_secs_f64(1.0 / a.rate.max(1) as f64);
    let mut started = Vec::with_capacity(a.writes);
    let t0 = Instant::now();
    for i in 0..a.writes {
        let due = t0 + gap * i as u32;
        tokio::time::sleep_until(due.into()).await;
        started.push(Instant::now());
        writer
            .put(&format!("bench/prop/{i:08}"), vec![b'p'; a.value_bytes])
            .await?;
        pb.inc(1);
    }
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lat.len() < a.writes * others {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some((_, key, at))) = tokio::time::timeout(left, rx.recv()).await else {
            bail!(
                "propagate: {} of {} arrivals within 30 s",
                lat.len(),
                a.writes * others
            );
        };
        let i: usize = key
            .rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if let Some(s) = started.get(i) {
            lat.push(at.saturating_duration_since(*s));
        }
    }
    for w in watchers {
        w.abort();
    }
    lat.sort();
    let (p50, p99, max) = (
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        quantile(&lat, 1.0),
    );
    let limit = a.delay_ms as f64 + 10.0;
    Ok(json!({
        "scenario": "propagate",
        "writes": a.writes,
        "rate_per_s": a.rate,
        "arrivals": lat.len(),
        "injected_delay_ms": a.delay_ms,
        "p50_ms": p50, "p99_ms": p99, "max_ms": max,
        "target": format!("p99 <= delay + 10 ms = {limit} ms"),
        "met": p99 <= limit,
        "anchor": "a 1 s polling loop: >= 1000 ms",
    }))
}

/// Sequential writes from one client to one node, acknowledged locally
/// (durable there) and then by a quorum of regions (durable on a node in a
/// majority): the latency of each, side by side.
async fn ack(c: &LocalCluster, a: &BenchArgs, pb: &ProgressBar) -> Result<Value> {
    use meridian::node::WriteOptions;
    use meridian::sync::WriteAck;
    pb.set_message("ack");
    let writer = c.nodes[0].daemon.node().clone();
    let mut per = Vec::new();
    for (name, ack) in [("local", WriteAck::Local), ("quorum", WriteAck::Quorum)] {
        let mut lat = Vec::with_capacity(a.writes);
        for i in 0..a.writes {
            let t = Instant::now();
            let opts = WriteOptions {
                ack: Some(ack),
                ..WriteOptions::default()
            };
            writer
                .put_opts(
                    &format!("bench/ack/{name}/{i:08}"),
                    vec![b'q'; a.value_bytes],
                    opts,
                )
                .await?;
            lat.push(t.elapsed());
            pb.inc(1);
        }
        lat.sort();
        per.push(json!({
            "ack": name,
            "p50_ms": quantile(&lat, 0.5),
            "p99_ms": quantile(&lat, 0.99),
            "max_ms": quantile(&lat, 1.0),
        }));
    }
    let limit = 2.0 * a.delay_ms as f64 + 10.0;
    let quorum_p99 = per[1]["p99_ms"].as_f64().unwrap_or(f64::MAX);
    Ok(json!({
        "scenario": "ack",
        "writes": a.writes,
        "injected_delay_ms": a.delay_ms,
        "local": per[0],
        "quorum": per[1],
        "target": format!("quorum p99 <= 2 x delay + 10 ms = {limit} ms"),
        "met": quorum_p99 <= limit,
        "anchor": "etcd 3.4 stretched over a 40 ms one-way delay: about 84 ms at the leader, 168 ms at a follower (bench/etcd)",
    }))
}

async fn partition(c: &LocalCluster, a: &BenchArgs, pb: &ProgressBar) -> Result<Value> {
    pb.set_message("partition: load");
    load_keys(c, "bench/part/", a.keys, a.value_bytes).await?;
    if converged(c, Duration::from_secs(60)).await?.is_none() {
        bail!("partition: the cluster did not converge after loading");
    }
    pb.set_message("partition: cut");
    let cut = c.nodes.iter().map(|n| n.region).max().unwrap_or(0);
    c.cut_off(cut);
    // Until the cut is seen (QUIC idle timeout), writes would still be delivered.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c.nodes[0].daemon.node().status().await?;
        if s.replica
            .regions
            .iter()
            .any(|g| g.region == region_name(cut) && !g.reachable)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("partition: the cut was not detected within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pb.set_message("partition: diverge");
    let inside = c.nodes[0].daemon.node().clone();
    let outside = c
        .nodes
        .iter()
        .find(|n| n.region == cut)
        .context("a node in the cut region")?
        .daemon
        .node()
        .clone();
    let mut diverged_bytes = 0u64;
    for i in 0..a.diverged {
        let key = format!("bench/part/{i:08}");
        inside.put(&key, vec![b'a'; a.value_bytes]).await?;
        outside.put(&key, vec![b'b'; a.value_bytes]).await?;
        // Two entries per key: key, value, stamp (16 bytes), flags.
        diverged_bytes += 2 * (key.len() + a.value_bytes + 24) as u64;
    }
    let full_state_bytes = (a.keys as u64) * (20 + a.value_bytes as u64 + 24);
    tokio::time::sleep(Duration::from_millis(a.cut_ms)).await;
    pb.set_message("partition: heal");
    tracing::info!("bench: healing the cut");
    let before = bytes_out(c).await?;
    c.heal();
    let Some(t) = converged(c, Duration::from_secs(60)).await? else {
        bail!("partition: no convergence within 60 s of the heal");
    };
    let sent = bytes_out(c).await? - before;
    Ok(json!({
        "scenario": "partition",
        "keys": a.keys,
        "diverged_keys_per_side": a.diverged,
        "cut_ms": a.cut_ms,
        "converge_ms": t.as_secs_f64() * 1e3,
        "bytes_sent_after_heal": sent,
        "diverged_entries_bytes": diverged_bytes,
        "ratio_to_diverged": sent as f64 / diverged_bytes.max(1) as f64,
        "full_state_bytes": full_state_bytes,
        "target": "bytes <= 3 x diverged; <= 1 s on loopback (time judged only without injected delay)",
        "met": (sent as f64) <= 3.0 * diverged_bytes as f64
            && (a.delay_ms > 0 || t <= Duration::from_secs(1)),
    }))
}

async fn throughput(c: &LocalCluster, a: &BenchArgs, pb: &ProgressBar) -> Result<Value> {
    pb.set_message("throughput");
    let addr = &c.api_client(0)?;
    let d = Duration::from_secs_f64(a.seconds);
    let keys = 100;
    // Every key the GETs read exists, however few PUTs the run managed.
    let node = c.nodes[0].daemon.node().clone();
    let mut tasks = Vec::new();
    for cl in 0..a.clients {
        let node = node.clone();
        let value = vec![b'x'; a.value_bytes];
        tasks.push(tokio::spawn(async move {
            for k in 0..keys {
                node.put(&format!("bench/{cl}/{k}"), value.clone()).await?;
            }
            Ok::<_, meridian::NodeError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let put = client::load(addr, a.clients, d, keys, a.value_bytes, client::Load::Put).await?;
    let get = client::load(addr, a.clients, d, keys, a.value_bytes, client::Load::Get).await?;
    Ok(json!({
        "scenario": "throughput",
        "api_tls": a.api_tls,
        "clients": a.clients,
        "seconds": a.seconds,
        "put_per_s": put.ops_per_s, "put_p50_ms": put.quantile_ms(0.5), "put_p99_ms": put.quantile_ms(0.99),
        "get_per_s": get.ops_per_s, "get_p50_ms": get.quantile_ms(0.5), "get_p99_ms": get.quantile_ms(0.99),
    }))
}

/// `?consistent` across the link: after each write in another region, a
/// stale read (the default) and a consistent one on the first node; how
/// long each took and how many saw the write.
async fn consistent(c: &LocalCluster, a: &BenchArgs, pb: &ProgressBar) -> Result<Value> {
    pb.set_message("consistent");
    let reader = c.api_client(0)?;
    let writer = c
        .nodes
        .last()
        .context("the cluster has no node")?
        .daemon
        .node()
        .clone();
    let (mut stale, mut cons) = (Vec::new(), Vec::new());
    let (mut stale_saw, mut cons_saw) = (0, 0);
    for i in 0..a.writes {
        let value = i.to_string();
        writer.put("bench/consistent", value.clone()).await?;
        let t = Instant::now();
        let r = reader.get("/v1/kv/bench/consistent?raw").await?;
        stale.push(t.elapsed());
        stale_saw += usize::from(r.text() == value);
        let t = Instant::now();
        let r = reader
            .get("/v1/kv/bench/consistent?raw&consistent")
            .await?
            .ok()?;
        cons.push(t.elapsed());
        cons_saw += usize::from(r.text() == value);
        pb.inc(1);
    }
    stale.sort();
    cons.sort();
    Ok(json!({
        "scenario": "consistent",
        "reads": a.writes,
        "injected_delay_ms": a.delay_ms,
        "stale_p50_ms": quantile(&stale, 0.5), "stale_p99_ms": quantile(&stale, 0.99),
        "stale_saw_the_write": stale_saw,
        "consistent_p50_ms": quantile(&cons, 0.5), "consistent_p99_ms": quantile(&cons, 0.99),
        "consistent_max_ms": quantile(&cons, 1.0),
        "consistent_saw_the_write": cons_saw,
        "met": cons_saw == a.writes,
        "anchor": "Consul's ?consistent is a leader check within one datacenter; it offers no read across datacenters",
    }))
}

/// Transactions beside single PUTs, in the same run: one-key and 8-key
/// transactions, and PUTs, from the same clients for the same time.
async fn txn(c: &LocalCluster, a: &BenchArgs, pb: &ProgressBar) -> Result<Value> {
    pb.set_message("txn");
    let addr = &c.api_client(0)?;
    let d = Duration::from_secs_f64(a.seconds);
    let keys = 100;
    let put = client::load(addr, a.clients, d, keys, a.value_bytes, client::Load::Put).await?;
    let one = client::load(
        addr,
        a.clients,
        d,
        keys,
        a.value_bytes,
        client::Load::Txn { ops: 1 },
    )
    .await?;
    let eight = client::load(
        addr,
        a.clients,
        d,
        keys,
        a.value_bytes,
        client::Load::Txn { ops: 8 },
    )
    .await?;
    Ok(json!({
        "scenario": "txn",
        "clients": a.clients,
        "seconds": a.seconds,
        "put_per_s": put.ops_per_s, "put_p50_ms": put.quantile_ms(0.5), "put_p99_ms": put.quantile_ms(0.99),
        "txn1_per_s": one.ops_per_s, "txn1_p50_ms": one.quantile_ms(0.5), "txn1_p99_ms": one.quantile_ms(0.99),
        "txn8_per_s": eight.ops_per_s, "txn8_p50_ms": eight.quantile_ms(0.5), "txn8_p99_ms": eight.quantile_ms(0.99),
        "txn8_keys_per_s": eight.ops_per_s * 8.0,
    }))
}

async fn rebuild(c: &mut LocalCluster, a: &BenchArgs, pb: &ProgressBar) -> Result<Value> {
    pb.set_message("rebuild");
    let have = c.nodes[0].daemon.node().status().await?.replica.keys;
    if have < a.keys {
        load_keys(c, "bench/rebuild/", a.keys - have, a.value_bytes).await?;
    }
    let keys = c.nodes[0].daemon.node().status().await?.replica.keys;
    let start = Instant::now();
    c.add("rebuilt-1", 0).await?;
    let n = c
        .nodes
        .last()
        .context("the new node")?
        .daemon
        .node()
        .clone();
    let src = c.nodes[0].daemon.node().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = n.status().await?;
        if !s.replica.rebuilding && n.digest("").await? == src.digest("").await? {
            break;
        }
        if Instant::now() > deadline {
            bail!("rebuild: not done within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = start.elapsed();
    // The same node again, restarted from its own disk.
    pb.set_message("restart");
    let rebuilt = c.nodes.pop().context("the rebuilt node")?;
    rebuilt.daemon.shutdown().await?;
    let start = Instant::now();
    c.add("rebuilt-1", 0).await?;
    let n = c
        .nodes
        .last()
        .context("the restarted node")?
        .daemon
        .node()
        .clone();
    let loaded = n.status().await?.replica.keys;
    let restart = start.elapsed();
    if loaded != keys || n.digest("").await? != src.digest("").await? {
        bail!("restart: {loaded} of {keys} keys after the restart, or a different root");
    }
    Ok(json!({
        "scenario": "rebuild",
        "keys": keys,
        "rebuild_ms": t.as_secs_f64() * 1e3,
        "keys_per_s": keys as f64 / t.as_secs_f64(),
        "restart_ms": restart.as_secs_f64() * 1e3,
        "target": "1M keys: rebuild <= 2 s, restart from disk <= 0.5 s",
        "met": keys < 1_000_000 || (t <= Duration::from_secs(2) && restart <= Duration::from_millis(500)),
    }))
}

fn print(v: &Value) {
    match v["scenario"].as_str() {
        Some("propagate") => println!(
            "propagate   {} writes at {}/s, {} arrivals: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (injected one-way delay {} ms; target p99 <= {} ms: {})",
            v["writes"], v["rate_per_s"], v["arrivals"], v["p50_ms"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0), v["max_ms"].as_f64().unwrap_or(0.0), v["injected_delay_ms"],
            v["injected_delay_ms"].as_u64().unwrap_or(0) + 10, if v["met"] == true { "met" } else { "NOT met" }
        ),
        Some("ack") => println!(
            "ack         {} sequential writes each way: acknowledged locally p50 {:.1} ms p99 {:.1} ms; by a quorum of regions p50 {:.1} ms p99 {:.1} ms max {:.1} ms  (injected one-way delay {} ms; target quorum p99 <= {} ms: {})",
            v["writes"], v["local"]["p50_ms"].as_f64().unwrap_or(0.0), v["local"]["p99_ms"].as_f64().unwrap_or(0.0),
            v["quorum"]["p50_ms"].as_f64().unwrap_or(0.0), v["quorum"]["p99_ms"].as_f64().unwrap_or(0.0),
            v["quorum"]["max_ms"].as_f64().unwrap_or(0.0), v["injected_delay_ms"],
            2 * v["injected_delay_ms"].as_u64().unwrap_or(0) + 10, if v["met"] == true { "met" } else { "NOT met" }
        ),
        Some("partition") => println!(
            "partition   {} keys, {} conflicting writes per side: equal roots {:.0} ms after the heal; {} bytes sent = {:.2} x the {} bytes of diverged entries (full state: {} bytes; target <= 3 x, and <= 1 s on loopback: {})",
            v["keys"], v["diverged_keys_per_side"], v["converge_ms"].as_f64().unwrap_or(0.0), v["bytes_sent_after_heal"],
            v["ratio_to_diverged"].as_f64().unwrap_or(0.0), v["diverged_entries_bytes"], v["full_state_bytes"],
            if v["met"] == true { "met" } else { "NOT met" }
        ),
        Some("throughput") => println!(
            "throughput  {} clients, {} s each: PUT {:.0}/s p50 {:.2} ms p99 {:.2} ms; GET {:.0}/s p50 {:.2} ms p99 {:.2} ms",
            v["clients"], v["seconds"], v["put_per_s"].as_f64().unwrap_or(0.0), v["put_p50_ms"].as_f64().unwrap_or(0.0),
            v["put_p99_ms"].as_f64().unwrap_or(0.0), v["get_per_s"].as_f64().unwrap_or(0.0),
            v["get_p50_ms"].as_f64().unwrap_or(0.0), v["get_p99_ms"].as_f64().unwrap_or(0.0)
        ),
        Some("rebuild") => println!(
            "rebuild     a wiped node rebuilt {} keys from a peer in {:.0} ms ({:.0} keys/s); restarted from its disk in {:.0} ms{}",
            v["keys"], v["rebuild_ms"].as_f64().unwrap_or(0.0), v["keys_per_s"].as_f64().unwrap_or(0.0),
            v["restart_ms"].as_f64().unwrap_or(0.0),
            match (v["keys"].as_u64().unwrap_or(0) >= 1_000_000, v["met"] == true) {
                (false, _) => "",
                (true, true) => " (target for 1M keys: rebuild <= 2 s, restart <= 0.5 s: met)",
                (true, false) => " (target for 1M keys: rebuild <= 2 s, restart <= 0.5 s: NOT met)",
            }
        ),
        Some("consistent") => println!(
            "consistent  {} reads, each right after a write in another region: stale (default) p50 {:.1} ms p99 {:.1} ms, saw the write {}; ?consistent p50 {:.1} ms p99 {:.1} ms max {:.1} ms, saw the write {}  (injected one-way delay {} ms; every consistent read sees the write: {})",
            v["reads"], v["stale_p50_ms"].as_f64().unwrap_or(0.0), v["stale_p99_ms"].as_f64().unwrap_or(0.0),
            v["stale_saw_the_write"], v["consistent_p50_ms"].as_f64().unwrap_or(0.0),
            v["consistent_p99_ms"].as_f64().unwrap_or(0.0), v["consistent_max_ms"].as_f64().unwrap_or(0.0),
            v["consistent_saw_the_write"], v["injected_delay_ms"], if v["met"] == true { "met" } else { "NOT met" }
        ),
        Some("txn") => println!(
            "txn         {} clients, {} s each: PUT {:.0}/s p50 {:.2} ms p99 {:.2} ms; 1-key txn {:.0}/s p50 {:.2} ms p99 {:.2} ms; 8-key txn {:.0}/s ({:.0} keys/s) p50 {:.2} ms p99 {:.2} ms",
            v["clients"], v["seconds"], v["put_per_s"].as_f64().unwrap_or(0.0), v["put_p50_ms"].as_f64().unwrap_or(0.0),
            v["put_p99_ms"].as_f64().unwrap_or(0.0), v["txn1_per_s"].as_f64().unwrap_or(0.0),
            v["txn1_p50_ms"].as_f64().unwrap_or(0.0), v["txn1_p99_ms"].as_f64().unwrap_or(0.0),
            v["txn8_per_s"].as_f64().unwrap_or(0.0), v["txn8_keys_per_s"].as_f64().unwrap_or(0.0),
            v["txn8_p50_ms"].as_f64().unwrap_or(0.0), v["txn8_p99_ms"].as_f64().unwrap_or(0.0)
        ),
        _ => println!("{v}"),
    }
}

/// `meridian bench edges`.
async fn edges(a: &BenchArgs, dir: PathBuf) -> Result<bool> {
    if !a.json {
        println!(
            "meridian bench edges: {} regions x {} server(s), {} edges in {}, one-way delay {} ms between regions and {} ms to the edges; {} writes at {}/s in {}",
            a.regions, a.nodes_per_region, a.edges, region_name(0), a.delay_ms, a.edge_delay_ms, a.writes, a.rate, region_name(1)
        );
    }
    let report = super::bench_edges::run(super::bench_edges::EdgeBench {
        regions: a.regions,
        servers_per_region: a.nodes_per_region,
        edges: a.edges,
        delay_ms: a.delay_ms,
        edge_delay_ms: a.edge_delay_ms,
        writes: a.writes,
        rate: a.rate,
        value_bytes: a.value_bytes,
        dir: dir.clone(),
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let v = report?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(true);
    }
    let f = |p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
    let met = |p: &str| {
        if v.pointer(p) == Some(&Value::Bool(true)) {
            "met"
        } else {
            "NOT met"
        }
    };
    println!(
        "visible on every edge: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (target p99 <= {} ms: {})",
        f("/visible_on_every_edge_ms/p50"), f("/visible_on_every_edge_ms/p99"), f("/visible_on_every_edge_ms/max"),
        a.delay_ms + 50, met("/met/visible")
    );
    println!(
        "server CPU per write {:.2} ms (sending it to every edge); server idle CPU with {} edges attached {:.1}% of a core (target < 5%: {})",
        f("/server_cpu_ms_per_write"), a.edges, 100.0 * f("/server_idle_cpu_of_one_core"), met("/met/idle")
    );
    println!(
        "bytes an edge receives per write {:.0} (heartbeats included), the entry {:.0} bytes (target <= 1.2 x: {})",
        f("/edge_bytes_in_per_write"), f("/entry_bytes"), met("/met/bytes")
    );
    println!(
        "memory per edge: {:.1} KiB on the servers' side, {:.0} KiB in the edges' processes; {} edges attached in {} ms",
        f("/server_rss_per_edge_bytes") / 1024.0, f("/edge_process_rss_per_edge_bytes") / 1024.0, a.edges, f("/attach_ms")
    );
    println!(
        "their server restarted: every edge attached again and caught up in {} ms (target <= 5000 ms: {})",
        f("/restart_caught_up_ms"), met("/met/restart")
    );
    Ok(true)
}

pub async fn run(a: BenchArgs) -> Result<bool> {
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("meridian-bench-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if a.scenario == Scenario::Edges {
        return edges(&a, dir).await;
    }
    if a.scenario == Scenario::Docs {
        let _ = std::fs::remove_dir_all(&dir);
        return super::bench_docs::run(a.tiny, a.json);
    }
    if !a.json {
        println!(
            "meridian bench: {} regions x {} node(s), one-way delay {} ms (jitter {} ms, loss {:.1}%) between regions, {}-byte values, data under {}",
            a.regions, a.nodes_per_region, a.delay_ms, a.jitter_ms, a.loss * 100.0, a.value_bytes, dir.display()
        );
    }
    let mut c = start(&a, dir.clone()).await?;
    c.connected(Duration::from_secs(30)).await?;
    let all = a.scenario == Scenario::All;
    let pb = progress(&a, a.writes as u64);
    let mut results = Vec::new();
    let outcome = async {
        if all || a.scenario == Scenario::Propagate {
            results.push(propagate(&c, &a, &pb).await?);
        }
        if all || a.scenario == Scenario::Ack {
            results.push(ack(&c, &a, &pb).await?);
        }
        if all || a.scenario == Scenario::Throughput {
            results.push(throughput(&c, &a, &pb).await?);
        }
        if all || a.scenario == Scenario::Partition {
            results.push(partition(&c, &a, &pb).await?);
        }
        if all || a.scenario == Scenario::Consistent {
            results.push(consistent(&c, &a, &pb).await?);
        }
        if all || a.scenario == Scenario::Txn {
            results.push(txn(&c, &a, &pb).await?);
        }
        if all || a.scenario == Scenario::Rebuild {
            results.push(rebuild(&mut c, &a, &pb).await?);
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    pb.finish_and_clear();
    let _ = c.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "regions": a.regions, "nodes_per_region": a.nodes_per_region,
                "delay_ms": a.delay_ms, "jitter_ms": a.jitter_ms, "loss": a.loss,
                "value_bytes": a.value_bytes, "results": results,
            }))?
        );
    } else {
        for r in &results {
            print(r);
        }
    }
    Ok(true)
}
