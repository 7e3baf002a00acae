//! `meridian backup create|inspect|list`, `meridian drill` and
//! `meridian restore` (files, or a destination's newest chain or a named
//! point: `s3://bucket/prefix@latest`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Subcommand;
use http_body_util::BodyExt;
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use meridian::backup::{self, Backup};
use meridian::client::Client;
use meridian::core::types::hex;
use meridian::daemon::backups::destination::{Destination, DestinationError};
use meridian::daemon::backups::{drill, plan};
use serde::Serialize;

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Take a backup of the node at --addr, while it keeps serving writes.
    Create {
        /// Where to write the backup file.
        #[arg(long)]
        out: PathBuf,
        /// Incremental: only the changes after this index (from an earlier backup's index).
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
    /// Check backup files (checksums, count, root) and print what they hold.
    Inspect {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The scheduled backups at a destination: every restorable point per
    /// node, with its schedule, index, root and age.
    List {
        /// A backup folder (`[backup] dir`) or `s3://bucket[/prefix]`
        /// (credentials, endpoint and region from the `AWS_*` variables).
        #[arg(long, visible_alias = "dir")]
        destination: String,
        #[arg(long)]
        json: bool,
    },
}

fn spinner(message: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec})") {
        pb.set_style(style);
    }
    pb.set_message(message.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

fn read(path: &Path) -> Result<Backup> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    backup::decode(&bytes).with_context(|| format!("{} is not a usable backup", path.display()))
}

pub async fn run(client: &Client, cmd: BackupCommand) -> Result<bool> {
    match cmd {
        BackupCommand::Create { out, since } => create(client, &out, since).await,
        BackupCommand::Inspect { files, json } => inspect(&files, json),
        BackupCommand::List { destination, json } => list(&destination, json).await,
    }
}

/// One scheduled backup as `backup list` shows it.
#[derive(Serialize)]
struct Listed {
    file: String,
    node: String,
    schedule: String,
    full: bool,
    /// For an incremental: the full backup's index it builds on.
    since: u64,
    index: u64,
    root: String,
    taken_ms: u64,
    age_ms: u64,
    bytes: u64,
    /// It can be restored: a full backup, or an incremental whose full
    /// backup is there.
    restorable: bool,
}

/// A destination's error as one message: object storage errors already
/// carry their causes in their text, so the chain is not printed again.
fn flat(e: DestinationError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `meridian backup list`.
async fn list(location: &str, as_json: bool) -> Result<bool> {
    let dest = Destination::at(location).map_err(flat)?;
    let mut stored = dest.list().await.map_err(flat)?;
    stored
        .sort_by(|a, b| (&a.point.node, a.point.taken_ms).cmp(&(&b.point.node, b.point.taken_ms)));
    let now = now_ms();
    let mut out = Vec::new();
    for s in &stored {
        let p = &s.point;
        let header = match dest.header(&p.file_name()).await {
            Ok(h) => h,
            // Removed by retention since the listing.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(flat(e)),
        };
        let restorable = p.is_full()
            || stored
                .iter()
                .any(|f| f.point.node == p.node && f.point.is_full() && f.point.index == p.since);
        out.push(Listed {
            file: p.file_name(),
            node: p.node.clone(),
            schedule: p.schedule.clone(),
            full: p.is_full(),
            since: p.since,
            index: p.index,
            root: hex(&header.root),
            taken_ms: p.taken_ms,
            age_ms: now.saturating_sub(p.taken_ms),
            bytes: s.bytes,
            restorable,
        });
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(true);
    }
    if out.is_empty() {
        println!("no scheduled backups at {}", dest.location());
        return Ok(true);
    }
    println!(
        "{:<16} {:<10} {:<12} {:>10} {:<16} {:>10} {:>10}",
        "node", "schedule", "kind", "index", "root", "age", "bytes"
    );
    for l in &out {
        let kind = if l.full {
            "full".to_string()
        } else if l.restorable {
            format!("inc>{}", l.since)
        } else {
            "inc (no full)".to_string()
        };
        println!(
            "{:<16} {:<10} {:<12} {:>10} {:<16} {:>10} {:>10}",
            l.node,
            l.schedule,
            kind,
            l.index,
            &l.root[..16],
            age(l.age_ms),
            l.bytes
        );
    }
    Ok(true)
}

/// An age as people read it: `45 s`, `12 min`, `5 h`, `3 d`.
pub fn age(ms: u64) -> String {
    let s = ms / 1_000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7_199 => format!("{} min", s / 60),
        7_200..=172_799 => format!("{} h", s / 3_600),
        _ => format!("{} d", s / 86_400),
    }
}

/// `meridian drill`: restores each node's newest chain of scheduled
/// backups at a destination into a scratch state, checks its root, and
/// reports the recovery point and time. False when a drill failed.
pub async fn drill(location: &str, node: Option<&str>, as_json: bool) -> Result<bool> {
    let dest = Destination::at(location).map_err(flat)?;
    let reports = drill::drill_destination(&dest, node, now_ms())
        .await
        .map_err(flat)?;
    if let (Some(n), true) = (node, reports.is_empty()) {
        bail!(
            "{} holds no scheduled backup of node {n:?}",
            dest.location()
        );
    }
    let ok = !reports.is_empty() && reports.iter().all(|r| r.ok);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(ok);
    }
    if reports.is_empty() {
        println!(
            "no scheduled backups at {}: nothing to restore",
            dest.location()
        );
        return Ok(false);
    }
    println!(
        "{:<16} {:>10} {:>10} {:<16} {:>12} {:>10} {:>10}  result",
        "node", "index", "keys", "root", "read", "RPO", "RTO"
    );
    for r in &reports {
        let result = match &r.error {
            None => format!(
                "ok: the restored root is the recorded one ({} files)",
                r.files.len()
            ),
            Some(e) => format!("FAILED: {e}"),
        };
        println!(
            "{:<16} {:>10} {:>10} {:<16} {:>12} {:>10} {:>8} ms  {result}",
            r.node,
            r.index,
            r.keys,
            &r.root[..r.root.len().min(16)],
            format!("{} KiB", r.bytes / 1024),
            age(r.rpo_ms),
            r.rto_ms
        );
    }
    Ok(ok)
}

async fn create(client: &Client, out: &Path, since: u64) -> Result<bool> {
    let path = format!("/v1/backup?since={since}");
    let resp = client.open(Method::GET, &path, Bytes::new()).await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!(
            "backup: {} {}",
            status.as_u16(),
            String::from_utf8_lossy(&body)
        );
    }
    let partial = out.with_extension("partial");
    let mut file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let pb = spinner("downloading");
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the backup stream broke off")?;
        if let Ok(data) = frame.into_data() {
            file.write_all(&data)
                .with_context(|| format!("writing {}", partial.display()))?;
            pb.inc(data.len() as u64);
        }
    }
    file.sync_all()
        .with_context(|| format!("syncing {}", partial.display()))?;
    drop(file);
    pb.finish_and_clear();
    // What was written must read back whole before it takes the final name.
    let b = read(&partial)?;
    std::fs::rename(&partial, out).with_context(|| format!("renaming to {}", out.display()))?;
    let h = &b.header;
    println!(
        "{} backup of {} ({}) at index {}{}: {} entries ({} tombstones), {} bytes, root {}",
        if h.is_full() { "full" } else { "incremental" },
        h.name,
        h.region,
        h.index,
        if h.is_full() {
            String::new()
        } else {
            format!(" (changes after {})", h.since)
        },
        b.entries.len(),
        b.tombstones(),
        b.bytes,
        hex(&h.root),
    );
    println!(
        "wrote {}; next incremental: --since {}",
        out.display(),
        h.index
    );
    Ok(true)
}

fn inspect(files: &[PathBuf], as_json: bool) -> Result<bool> {
    let mut ok = true;
    let mut docs = Vec::new();
    for f in files {
        match read(f) {
            Ok(b) => {
                let h = &b.header;
                let doc = serde_json::json!({
                    "file": f.display().to_string(),
                    "valid": true,
                    "kind": if h.is_full() { "full" } else { "incremental" },
                    "since": h.since,
                    "index": h.index,
                    "entries": b.entries.len(),
                    "tombstones": b.tombstones(),
                    "bytes": b.bytes,
                    "root": hex(&h.root),
                    "cluster": backup::cluster_hex(&h.cluster),
                    "node": h.node.to_string(),
                    "name": h.name,
                    "region": h.region,
                    "created_ms": h.created_ms,
                });
                if !as_json {
                    println!(
                        "{}: valid {} backup of {} ({}), index {}{}, {} entries ({} tombstones), {} bytes, root {}, cluster {}, taken at {} ms since the epoch",
                        f.display(),
                        doc["kind"].as_str().unwrap_or(""),
                        h.name,
                        h.region,
                        h.index,
                        if h.is_full() { String::new() } else { format!(" (changes after {})", h.since) },
                        b.entries.len(),
                        b.tombstones(),
                        b.bytes,
                        hex(&h.root),
                        backup::cluster_hex(&h.cluster),
                        h.created_ms,
                    );
                }
                docs.push(doc);
            }
            Err(e) => {
                ok = false;
                if !as_json {
                    println!("{}: INVALID: {e:#}", f.display());
                }
                docs.push(serde_json::json!({"file": f.display().to_string(), "valid": false, "error": format!("{e:#}")}));
            }
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&docs)?);
    }
    Ok(ok)
}

/// What `meridian restore` is given.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    /// A backup file.
    File(PathBuf),
    /// A destination (folder or bucket) and a point in it.
    Point {
        location: String,
        /// `None`: the newest restorable chain; else a backup's file name.
        point: Option<String>,
    },
}

impl Source {
    /// `s3://bucket/prefix[@latest|@FILE]`, `DIR[@latest|@FILE]`, or a file.
    fn parse(text: &str) -> Source {
        let point = |p: &str| (p != "latest").then(|| p.to_string());
        if text.starts_with("s3://") {
            return match text.rsplit_once('@') {
                Some((location, p)) => Source::Point {
                    location: location.to_string(),
                    point: point(p),
                },
                None => Source::Point {
                    location: text.to_string(),
                    point: None,
                },
            };
        }
        if let Some((dir, p)) = text.rsplit_once('@') {
            if Path::new(dir).is_dir() {
                return Source::Point {
                    location: dir.to_string(),
                    point: point(p),
                };
            }
        }
        if Path::new(text).is_dir() {
            return Source::Point {
                location: text.to_string(),
                point: None,
            };
        }
        Source::File(PathBuf::from(text))
    }
}

/// The backups `sources` name: files read, and each destination's chain
/// fetched.
async fn fetch(sources: &[String]) -> Result<Vec<Backup>> {
    let mut out = Vec::new();
    for text in sources {
        match Source::parse(text) {
            Source::File(path) => out.push(read(&path)?),
            Source::Point { location, point } => {
                let dest = Destination::at(&location).map_err(flat)?;
                let points: Vec<plan::Point> = dest
                    .list()
                    .await
                    .map_err(flat)?
                    .into_iter()
                    .map(|s| s.point)
                    .collect();
                let chain = match &point {
                    None => plan::newest_chain_of_any(&points).with_context(|| {
                        format!("{} holds no restorable backup", dest.location())
                    })?,
                    Some(file) => {
                        let named = points
                            .iter()
                            .find(|p| p.file_name() == *file)
                            .with_context(|| {
                                format!("{} holds no backup {file:?}", dest.location())
                            })?;
                        plan::chain_to(&points, named).with_context(|| {
                            format!(
                                "{file} is an incremental whose full backup (index {}) is not at {}",
                                named.since,
                                dest.location()
                            )
                        })?
                    }
                };
                for p in chain {
                    let file = p.file_name();
                    let pb = spinner(&format!("fetching {}", dest.path_of(&file)));
                    let bytes = dest.get(&file).await.map_err(flat)?;
                    pb.finish_and_clear();
                    println!("fetched {} ({} bytes)", dest.path_of(&file), bytes.len());
                    out.push(backup::decode(&bytes).with_context(|| {
                        format!("{} is not a usable backup", dest.path_of(&file))
                    })?);
                }
            }
        }
    }
    Ok(out)
}

/// `meridian restore SOURCE...`: a full backup and its incrementals (files,
/// or a destination's newest chain or named point), checked, combined, and
/// merged into every member of the cluster (or only the node at --addr).
pub async fn restore(client: &Client, sources: &[String], force: bool, only: bool) -> Result<bool> {
    let mut backups = fetch(sources).await?;
    let (header, entries) = if backups.len() == 1 && backups[0].header.is_full() {
        let b = backups.remove(0);
        (b.header, b.entries)
    } else {
        backup::combine(backups).context("the backups do not form a chain")?
    };
    let mut full = header.clone();
    full.since = 0;
    full.removed = Vec::new();
    let file = backup::encode(&full, &entries)?;
    println!(
        "restoring {} entries of {} ({}) at index {}, root {}",
        entries.len(),
        header.name,
        header.region,
        header.index,
        hex(&header.root)
    );
    // Every member, as `verify` finds them, unless --only.
    let mut targets = vec![client.addr().to_string()];
    if !only {
        let s = client.status().await.context("status")?;
        for p in s.peers {
            if p.api.is_empty() {
                bail!(
                    "member {} has no known API address: restore into it with --only --addr",
                    p.name
                );
            }
            targets.push(p.api);
        }
    }
    let body = Bytes::from(file);
    let mut ok = true;
    for t in &targets {
        let c = client.sibling(t)?.timeout_ms(3_600_000);
        let pb = spinner(&format!("restoring into {t}"));
        let r = c.restore(body.clone(), force).await;
        pb.finish_and_clear();
        match r {
            Ok(v) => {
                println!(
                    "  {t}: {} applied, {} already held (or newer), {} refused below the collection floor, {} refused for clock skew; root now {}",
                    v.applied, v.unchanged, v.refused_below_floor, v.refused_clock, v.root
                );
            }
            Err(e) => {
                ok = false;
                println!("  {t}: {e}");
            }
        }
    }
    Ok(ok)
}
