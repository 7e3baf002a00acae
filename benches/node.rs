//! Measurements of real nodes on loopback (QUIC, mutual TLS, redb with fsync).
//! Run with `cargo bench --bench node`; prints a table of figures.
//!
//! - durable write throughput of one node with group commit, and ack latency,
//!   at several concurrencies;
//! - time for a wiped node to rebuild 100k keys from a peer;
//! - time for 3 nodes to converge after a 10 s partition with 1k
//!   conflicting writes on each side, and the bytes that crossed the wire.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian::net::faults::Faults;
use meridian::net::tls::Ca;
use meridian::node::Node;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn converge(nodes: &[&Node], limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        let mut roots = Vec::new();
        for n in nodes {
            roots.push(n.digest("").await.ok()?);
        }
        if roots.windows(2).all(|w| w[0] == w[1]) {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn throughput(ca: &Ca, writers: usize, total: usize) {
    let dir = scratch(&format!("tput-{writers}"));
    let node = Arc::new(
        Node::builder("t", "us-east", ca.issue("t", "us-east").unwrap())
            .data_dir(&dir)
            .start()
            .await
            .unwrap(),
    );
    let value = vec![b'x'; 100];
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (node, value) = (node.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total / writers);
            for i in 0..total / writers {
                let t = Instant::now();
                node.put(&format!("w{w}/k{i}"), value.clone())
                    .await
                    .unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let took = start.elapsed();
    lat.sort();
    let commits = node.status().await.unwrap().commits;
    println!(
        "durable puts, 1 node, {writers:>3} writers: {:>7.0} writes/s, ack p50 {:.2} ms, p99 {:.2} ms ({} writes, {} commits: {:.1} writes per fsync)",
        lat.len() as f64 / took.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len(),
        commits,
        lat.len() as f64 / commits.max(1) as f64
    );
    Arc::try_unwrap(node)
        .ok()
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

async fn load(node: &Arc<Node>, keys: usize, prefix: &str, value: &str) {
    let mut tasks = Vec::new();
    for w in 0..64 {
        let (node, prefix, value) = (node.clone(), prefix.to_string(), value.to_string());
        tasks.push(tokio::spawn(async move {
            for i in (w..keys).step_by(64) {
                node.put(&format!("{prefix}{i:07}"), value.clone())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn rebuild(ca: &Ca, keys: usize) {
    let dir = scratch("rebuild");
    let id_a = ca.issue("a", "us-east").unwrap();
    let a = Arc::new(
        Node::builder("a", "us-east", id_a.clone())
            .data_dir(dir.join("a"))
            .start()
            .await
            .unwrap(),
    );
    load(&a, keys, "cfg/", &"v".repeat(100)).await;
    let start = Instant::now();
    let b = Node::builder("b", "eu-west", ca.issue("b", "eu-west").unwrap())
        .data_dir(dir.join("b"))
        .seeds([a.local_addr()])
        .start()
        .await
        .unwrap();
    let t = converge(&[&a, &b], Duration::from_secs(120)).await;
    let st = b.status().await.unwrap();
    match t {
        Some(_) => println!(
            "rebuild of an empty node from a peer, {keys} keys of 100 B: {:.2} s ({} MB received, {} entries by feed, {} by anti-entropy)",
            start.elapsed().as_secs_f64(),
            st.bytes_in / 1_000_000,
            st.metrics.feed_entries_applied,
            st.metrics.ae_entries_applied
        ),
        None => println!("rebuild of {keys} keys did not finish in 120 s"),
    }
    b.shutdown().await.unwrap();
    Arc::try_unwrap(a).ok().unwrap().shutdown().await.unwrap();
    // Restart from disk: open the store, load every record, rebuild the digest.
    let start = Instant::now();
    let a = Node::builder("a", "us-east", id_a)
        .data_dir(dir.join("a"))
        .start()
        .await
        .unwrap();
    let took = start.elapsed();
    let n = a.list("cfg/").await.unwrap().len();
    println!(
        "restart from disk, {n} keys: {:.2} s until the node serves",
        took.as_secs_f64()
    );
    a.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

async fn partition(ca: &Ca, conflicting: usize, cut: Duration) {
    let dir = scratch("partition");
    let regions = ["us-east", "eu-west", "ap-southeast"];
    let faults: Vec<_> = (0..3).map(|_| Faults::new()).collect();
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..3 {
        let name = format!("p{i}");
        let n = Node::builder(&name, regions[i], ca.issue(&name, regions[i]).unwrap())
            .data_dir(dir.join(&name))
            .seeds(addrs.clone())
            .faults(faults[i].clone())
            .start()
            .await
            .unwrap();
        addrs.push(n.local_addr());
        nodes.push(Arc::new(n));
    }
    for i in 0..2 {
        faults[i].block(addrs[2]);
        faults[2].block(addrs[i]);
    }
    let started = Instant::now();
    load(&nodes[0], conflicting, "conflict/", "majority side").await;
    load(&nodes[2], conflicting, "conflict/", "minority side").await;
    let bytes_before: u64 = {
        let mut b = 0;
        for n in &nodes {
            b += n.status().await.unwrap().bytes_out;
        }
        b
    };
    tokio::time::sleep(cut.saturating_sub(started.elapsed())).await;
    for f in &faults {
        f.heal();
    }
    let refs: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
    let t = converge(&refs, Duration::from_secs(60)).await;
    let mut bytes_after = 0;
    for n in &nodes {
        bytes_after += n.status().await.unwrap().bytes_out;
    }
    match t {
        Some(t) => println!(
            "3 nodes, {:.0} s partition, {conflicting} conflicting writes on each side: equal roots {:.2} s after the heal ({} KB sent after the heal, reconnection included)",
            cut.as_secs_f64(),
            t.as_secs_f64(),
            (bytes_after - bytes_before) / 1000
        ),
        None => println!("no convergence within 60 s after the partition"),
    }
    for n in nodes {
        Arc::try_unwrap(n).ok().unwrap().shutdown().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ca = Ca::generate("bench").unwrap();
        println!(
            "machine: {} cores; stores in {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::env::temp_dir().display()
        );
        for writers in [1, 16, 64, 256] {
            throughput(&ca, writers, if writers == 1 { 2_000 } else { 20_000 }).await;
        }
        rebuild(&ca, 100_000).await;
        partition(&ca, 1_000, Duration::from_secs(10)).await;
    });
}
