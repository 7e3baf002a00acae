//! `meridian bench edges`: servers in several regions in this process and
//! many embedded edges in a few child processes (`meridian bench-edges-child`,
//! [`EDGE_PROCESSES`] of them, as edges run apart from their servers: in one
//! address space a thousand replicas' page faults interrupt every thread,
//! the servers' included), every link real QUIC over loopback behind the
//! fault socket (a one-way delay between regions, a smaller one between an
//! edge and its servers). The servers run on a runtime of their own, so
//! that their CPU is read from their threads (`/proc/self/task`). Writes go
//! at a steady rate to a server of another region than the edges'; the run
//! reports when each write is visible on every edge (the children print
//! each arrival with the wall clock), the servers' CPU per write and while
//! idle, the bytes each edge receives per write, the memory per edge on the
//! servers' side and in the edges' processes, and how long the edges take to
//! reconnect and catch up after their server restarts.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meridian::core::types::region_name;
use meridian::net::faults::{Faults, Link};
use meridian::net::tls::Ca;
use meridian::node::{Node, NodeBuilder};
use serde_json::{json, Value};

/// Most edges one run starts.
pub const EDGES_MAX: usize = 5_000;
/// Processes the edges are spread over.
pub const EDGE_PROCESSES: usize = 4;
/// How long a run waits for the edges to attach, for a write to reach every
/// edge, or for the edges to catch up after the restart.
const WAIT_MS_MAX: u64 = 120_000;

/// What `meridian bench edges` runs.
pub struct EdgeBench {
    pub regions: usize,
    pub servers_per_region: usize,
    pub edges: usize,
    pub delay_ms: u64,
    pub edge_delay_ms: u64,
    pub writes: usize,
    pub rate: u64,
    pub value_bytes: usize,
    pub dir: PathBuf,
}

/// CPU ticks (user + system) the threads `tids` used so far.
fn cpu_ticks(tids: &BTreeSet<u32>) -> u64 {
    tids.iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/self/task/{t}/stat")).ok())
        .filter_map(|s| {
            // Fields after the command (which may hold spaces), from field 3 on.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// The process's threads now.
fn threads() -> BTreeSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The process's resident memory, in bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn ticks_per_second() -> f64 {
    // The kernel's USER_HZ, which /proc reports in; 100 on Linux.
    100.0
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A runtime that may be dropped in an async context (on an early
/// return): it shuts down in the background.
struct Rt(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for Rt {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("taken only on drop")
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Where a server listens and keeps its data, and its socket's faults.
struct Spec {
    addr: SocketAddr,
    region: usize,
    faults: Arc<Faults>,
    dir: PathBuf,
    name: String,
}

struct Server {
    spec: Spec,
    node: Node,
}

fn server_builder(ca: &Ca, s: &Spec, seeds: &[SocketAddr]) -> Result<NodeBuilder> {
    let held = std::fs::read_to_string(s.dir.join("node.id"))
        .ok()
        .and_then(|t| u64::from_str_radix(t.trim(), 16).ok());
    let region = region_name(s.region);
    let id = match held {
        Some(n) => ca.issue_node(&s.name, &region, meridian::core::types::NodeId(n), &[])?,
        None => ca.issue(&s.name, &region)?,
    };
    Ok(Node::builder(&s.name, &region, id)
        .listen(s.addr)
        .data_dir(&s.dir)
        .seeds(seeds.iter().copied())
        .faults(s.faults.clone()))
}

/// Applies the injected delays of `s`'s socket: `delay_ms` to the servers
/// of other regions, `edge_delay_ms` to the edges.
fn links(s: &Spec, servers: &[(SocketAddr, usize)], edges: &[SocketAddr], b: &EdgeBench) {
    for (addr, region) in servers {
        if *region != s.region {
            s.faults.set_link(
                *addr,
                Link {
                    delay_ms: b.delay_ms,
                    jitter_ms: 0,
                    loss: 0.0,
                },
            );
        }
    }
    for e in edges {
        s.faults.set_link(
            *e,
            Link {
                delay_ms: b.edge_delay_ms,
                jitter_ms: 0,
                loss: 0.0,
            },
        );
    }
}

/// The wall clock in µs: the children stamp arrivals with it.
fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A child process running some of the edges (`meridian bench-edges-child`).
struct Child {
    proc: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: Option<std::io::Lines<std::io::BufReader<std::process::ChildStdout>>>,
    replies: Option<std::sync::mpsc::Receiver<String>>,
}

impl Child {
    fn spawn(
        ca: &std::path::Path,
        seeds: &[SocketAddr],
        first: usize,
        count: usize,
        edge_delay_ms: u64,
    ) -> Result<Child> {
        use std::io::BufRead;
        let seeds: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
        let mut proc = std::process::Command::new(std::env::current_exe()?)
            .arg("bench-edges-child")
            .arg("--ca")
            .arg(ca)
            .arg("--seeds")
            .arg(seeds.join(","))
            .arg("--first")
            .arg(first.to_string())
            .arg("--count")
            .arg(count.to_string())
            .arg("--edge-delay-ms")
            .arg(edge_delay_ms.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting an edges process")?;
        let stdin = proc.stdin.take().context("its stdin")?;
        let stdout = proc.stdout.take().context("its stdout")?;
        Ok(Child {
            proc,
            stdin,
            lines: Some(std::io::BufReader::new(stdout).lines()),
            replies: None,
        })
    }

    /// The addresses of its edges, once every one has started.
    fn started(&mut self) -> Result<Vec<SocketAddr>> {
        let lines = self.lines.as_mut().context("read once")?;
        let mut addrs = Vec::new();
        for line in lines {
            let line = line?;
            if line == "started" {
                return Ok(addrs);
            }
            if let Some(a) = line.strip_prefix("edge ") {
                addrs.push(a.parse()?);
            }
        }
        bail!("an edges process ended before its edges started")
    }

    /// From now on its arrivals go to `arrivals` (key → edges seen, last
    /// arrival in µs), its other lines to [`Child::ask`].
    fn read_arrivals(
        &mut self,
        arrivals: Arc<Mutex<HashMap<String, (usize, u64)>>>,
    ) -> Result<std::thread::JoinHandle<()>> {
        let lines = self.lines.take().context("read once")?;
        let (tx, rx) = std::sync::mpsc::channel();
        self.replies = Some(rx);
        Ok(std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("seen ") {
                    let mut f = rest.split(' ');
                    let (Some(k), Some(us)) = (f.next(), f.next().and_then(|u| u.parse().ok()))
                    else {
                        continue;
                    };
                    let mut a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
                    let slot = a.entry(k.to_string()).or_insert((0, 0));
                    slot.0 += 1;
                    slot.1 = slot.1.max(us);
                } else if tx.send(line).is_err() {
                    return;
                }
            }
        }))
    }

    /// Sends a command and waits for its one-line answer (a number).
    fn ask(&mut self, command: &str) -> Result<u64> {
        use std::io::Write;
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        let rx = self.replies.as_ref().context("reading its answers")?;
        let line = rx
            .recv_timeout(Duration::from_millis(WAIT_MS_MAX))
            .with_context(|| format!("no answer to {command:?}"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    fn quit(mut self) {
        use std::io::Write;
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.proc.wait();
    }
}

/// `meridian bench-edges-child`: runs `count` edges of a bench (see
/// [`Child`]): prints `edge ADDR` for each, `started`, then `seen KEY US`
/// for every change under `bench/` each edge sees; answers `bytes` (the
/// bytes its edges received), `rss` (its resident memory) and `during N`
/// (once every edge holds N keys under `during/`) on stdin, until `quit`.
pub async fn child(
    ca: PathBuf,
    seeds: Vec<SocketAddr>,
    first: usize,
    count: usize,
    edge_delay_ms: u64,
) -> Result<()> {
    let ca = Ca::load(&ca)?;
    let region = region_name(0);
    let mut edges = Vec::with_capacity(count);
    for chunk in (first..first + count).collect::<Vec<_>>().chunks(50) {
        let mut starting = Vec::new();
        for e in chunk {
            let name = format!("edge-{e}");
            let faults = Faults::new();
            for s in &seeds {
                faults.set_link(
                    *s,
                    Link {
                        delay_ms: edge_delay_ms,
                        jitter_ms: 0,
                        loss: 0.0,
                    },
                );
            }
            let builder = Node::builder(&name, &region, ca.issue(&name, &region)?)
                .seeds(seeds.iter().copied())
                .faults(faults)
                .edge();
            starting.push(tokio::spawn(builder.start()));
        }
        for s in starting {
            let e = s.await??;
            println!("edge {}", e.local_addr());
            edges.push(Arc::new(e));
        }
    }
    println!("started");
    for e in &edges {
        let e = e.clone();
        let from = e.index();
        tokio::spawn(async move {
            let mut w = e.watch("bench/", from);
            while let Some(c) = w.next().await {
                println!("seen {} {}", c.key, wall_us());
            }
        });
    }
    let (tx, mut commands) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    while let Some(line) = commands.recv().await {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("bytes") => {
                let mut sum = 0;
                for e in &edges {
                    sum += e.status().await?.bytes_in;
                }
                println!("bytes {sum}");
            }
            Some("rss") => println!("rss {}", rss_bytes()),
            Some("during") => {
                let n: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                until(
                    "every edge holds the writes made while its server was down",
                    async || {
                        for e in &edges {
                            if e.list("during/").await?.len() < n {
                                return Ok(false);
                            }
                        }
                        Ok(true)
                    },
                )
                .await?;
                println!("during ok");
            }
            _ => break,
        }
    }
    Ok(())
}

fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> Result<bool>) -> Result<Duration> {
    let start = Instant::now();
    while !f().await? {
        if start.elapsed() > Duration::from_millis(WAIT_MS_MAX) {
            bail!("{what}: not within {WAIT_MS_MAX} ms");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

/// Runs the bench; the report as JSON.
pub async fn run(b: EdgeBench) -> Result<Value> {
    if b.regions < 2 || b.servers_per_region == 0 || b.edges == 0 || b.edges > EDGES_MAX {
        bail!(
            "bench edges needs 2 or more regions, a server per region and 1 to {EDGES_MAX} edges"
        );
    }
    let ca = Ca::generate("meridian-bench-edges")?;
    let before_servers = threads();
    let srv_rt = Rt(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mrd-servers")
            .enable_all()
            .build()?,
    ));
    // The servers: region 0 holds the edges; writes come from region 1.
    let mut servers: Vec<Server> = Vec::new();
    for r in 0..b.regions {
        for i in 0..b.servers_per_region {
            let name = format!("{}-{}", region_name(r), i + 1);
            let dir = b.dir.join(&name);
            std::fs::create_dir_all(&dir)?;
            let spec = Spec {
                addr: free_addr()?,
                region: r,
                faults: Faults::new(),
                dir,
                name,
            };
            let seeds: Vec<SocketAddr> = servers.first().map(|f| f.spec.addr).into_iter().collect();
            let builder = server_builder(&ca, &spec, &seeds)?;
            let node = srv_rt.spawn(builder.start()).await??;
            servers.push(Server { spec, node });
        }
    }
    let server_addrs: Vec<(SocketAddr, usize)> = servers
        .iter()
        .map(|s| (s.spec.addr, s.spec.region))
        .collect();
    for s in &servers {
        links(&s.spec, &server_addrs, &[], &b);
    }
    let server_threads: BTreeSet<u32> = threads().difference(&before_servers).copied().collect();
    until("the servers connect", async || {
        for s in &servers {
            if s.node
                .status()
                .await?
                .replica
                .peers
                .iter()
                .filter(|p| p.connected)
                .count()
                < servers.len() - 1
            {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    // The edges, in region 0, seeded with its servers, in child processes.
    let home: Vec<SocketAddr> = servers
        .iter()
        .filter(|s| s.spec.region == 0)
        .map(|s| s.spec.addr)
        .collect();
    let ca_dir = b.dir.join("ca");
    ca.save(&ca_dir)?;
    let rss_before = rss_bytes();
    let per = b.edges.div_ceil(EDGE_PROCESSES);
    let mut children = Vec::new();
    for first in (0..b.edges).step_by(per) {
        let count = per.min(b.edges - first);
        children.push(Child::spawn(&ca_dir, &home, first, count, b.edge_delay_ms)?);
    }
    let arrivals: Arc<Mutex<HashMap<String, (usize, u64)>>> = Arc::default();
    let mut edge_addrs = Vec::with_capacity(b.edges);
    for c in &mut children {
        edge_addrs.extend(c.started()?);
    }
    for s in &servers {
        links(&s.spec, &server_addrs, &edge_addrs, &b);
    }
    let attach = until("every edge attaches", async || {
        let mut n = 0;
        for s in servers.iter().filter(|s| s.spec.region == 0) {
            n += s.node.status().await?.replica.edges;
        }
        Ok(n == b.edges)
    })
    .await?;
    let readers: Vec<_> = children
        .iter_mut()
        .map(|c| c.read_arrivals(arrivals.clone()))
        .collect::<Result<_>>()?;
    // Idle: the servers' CPU with every edge attached and nothing written.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_servers = rss_bytes();
    let idle_secs = 5.0;
    let t0 = cpu_ticks(&server_threads);
    tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
    let idle_core = (cpu_ticks(&server_threads) - t0) as f64 / ticks_per_second() / idle_secs;

    // Writes at a steady rate in region 1; every edge watches (the children
    // print each arrival).
    let writer = &servers
        .iter()
        .find(|s| s.spec.region == 1)
        .context("a server in region 1")?
        .node;
    let bytes_before: u64 = children
        .iter_mut()
        .map(|c| c.ask("bytes"))
        .sum::<Result<u64>>()?;
    let cpu_before = cpu_ticks(&server_threads);
    let value = "v".repeat(b.value_bytes);
    let mut written: Vec<(String, u64)> = Vec::with_capacity(b.writes);
    let gap = Duration::from_secs_f64(1.0 / b.rate.max(1) as f64);
    let start = Instant::now();
    for i in 0..b.writes {
        let due = start + gap * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let key = format!("bench/{i:06}");
        let at = wall_us();
        writer.put(key.as_str(), value.clone()).await?;
        written.push((key, at));
    }
    let keys: Vec<String> = written.iter().map(|(k, _)| k.clone()).collect();
    until("every write is visible on every edge", async || {
        let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys
            .iter()
            .all(|k| a.get(k).is_some_and(|s| s.0 >= b.edges)))
    })
    .await?;
    let cpu_ms_per_write = (cpu_ticks(&server_threads) - cpu_before) as f64 / ticks_per_second()
        * 1_000.0
        / b.writes as f64;
    // Heartbeats during the phase count too.
    let bytes_after: u64 = children
        .iter_mut()
        .map(|c| c.ask("bytes"))
        .sum::<Result<u64>>()?;
    let per_edge_per_write = (bytes_after - bytes_before) as f64 / (b.writes * b.edges) as f64;
    let edge_rss: u64 = children
        .iter_mut()
        .map(|c| c.ask("rss"))
        .sum::<Result<u64>>()?;
    let mut visible: Vec<f64> = {
        let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
        written
            .iter()
            .filter_map(|(k, at)| a.get(k).map(|s| s.1.saturating_sub(*at) as f64 / 1e3))
            .collect()
    };
    visible.sort_by(f64::total_cmp);
    // The entry as encoded: key, value, stamps and flags (see `Entry`).
    let entry_bytes = (written[0].0.len() + b.value_bytes + 16 + 16 + 8 + 4) as f64;

    // The edges' server restarts (from its data directory): until every
    // edge is attached again and holds what was written meanwhile.
    let restarted = servers
        .iter()
        .position(|s| s.spec.region == 0)
        .context("a server in region 0")?;
    let Server { spec, node } = servers.remove(restarted);
    srv_rt.spawn(node.shutdown()).await??;
    let writer = &servers
        .iter()
        .find(|s| s.spec.region == 1)
        .context("a server in region 1")?
        .node;
    for i in 0..20 {
        writer
            .put(format!("during/{i}").as_str(), value.clone())
            .await?;
    }
    let seeds: Vec<SocketAddr> = servers.iter().map(|s| s.spec.addr).collect();
    // Its endpoint lets go of the port once its connections have drained.
    let addr = spec.addr;
    until("the server's port is free again", async || {
        Ok(std::net::UdpSocket::bind(addr).is_ok())
    })
    .await?;
    let restart_at = Instant::now();
    let builder = server_builder(&ca, &spec, &seeds)?;
    let node = srv_rt.spawn(builder.start()).await??;
    links(&spec, &server_addrs, &edge_addrs, &b);
    servers.push(Server { spec, node });
    for c in &mut children {
        c.ask("during 20")?;
    }
    let caught_up = restart_at.elapsed();
    for c in children {
        c.quit();
    }
    drop(readers);
    let report = json!({
        "scenario": "edges",
        "regions": b.regions,
        "servers_per_region": b.servers_per_region,
        "edges": b.edges,
        "injected_delay_ms": b.delay_ms,
        "edge_delay_ms": b.edge_delay_ms,
        "writes": b.writes,
        "rate": b.rate,
        "attach_ms": attach.as_millis() as u64,
        "visible_on_every_edge_ms": {
            "p50": quantile(&visible, 0.5),
            "p99": quantile(&visible, 0.99),
            "max": visible.last().copied().unwrap_or(0.0),
        },
        "target_visible_p99_ms": b.delay_ms + 50,
        "server_cpu_ms_per_write": cpu_ms_per_write,
        "server_idle_cpu_of_one_core": idle_core,
        "edge_bytes_in_per_write": per_edge_per_write,
        "entry_bytes": entry_bytes,
        "server_rss_per_edge_bytes": rss_servers.saturating_sub(rss_before) / b.edges as u64,
        "edge_process_rss_per_edge_bytes": edge_rss / b.edges as u64,
        "restart_caught_up_ms": caught_up.as_millis() as u64,
        "met": {
            "visible": quantile(&visible, 0.99) <= (b.delay_ms + 50) as f64,
            "bytes": per_edge_per_write <= 1.2 * entry_bytes,
            "idle": idle_core < 0.05,
            "restart": caught_up <= Duration::from_secs(5),
        },
    });
    for s in servers {
        let _ = srv_rt.spawn(s.node.shutdown()).await;
    }
    Ok(report)
}
