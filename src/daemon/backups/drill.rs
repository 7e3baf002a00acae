//! Restore drills: a node's newest restorable chain of scheduled backups at
//! a destination (its newest full backup, or an incremental and the full it
//! builds on) fetched, checked and restored into a scratch state, whose root
//! must be the one the newest backup recorded. The report says how old that
//! state is (the recovery point) and how long fetching and restoring took
//! (the recovery time).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::destination::Destination;
use super::plan::{self, Point};
use crate::backup;
use crate::core::types::hex;

/// What one drill found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillReport {
    /// The node whose backups were restored (its name).
    pub node: String,
    /// The destination they were fetched from (its name).
    pub destination: String,
    /// The files restored, full backup first.
    pub files: Vec<String>,
    /// The node's index in the newest backup.
    pub index: u64,
    /// The root the restored state has (hex); the newest backup recorded
    /// the same, or the drill failed.
    pub root: String,
    /// Live keys in the restored state.
    pub keys: u64,
    /// Bytes fetched.
    pub bytes: u64,
    /// When the newest backup was taken (ms since the epoch).
    pub taken_ms: u64,
    /// Recovery point: how old the restored state was when the drill ran.
    pub rpo_ms: u64,
    /// Recovery time: fetching, checking and restoring, in ms.
    pub rto_ms: u64,
    /// The restored root is the recorded one.
    pub ok: bool,
    /// Why the drill failed, if it did.
    pub error: Option<String>,
}

/// Drills every node with scheduled backups at `dest` (or only `only`).
pub async fn drill_destination(
    dest: &Destination,
    only: Option<&str>,
    now_ms: u64,
) -> Result<Vec<DrillReport>, super::destination::DestinationError> {
    let points: Vec<Point> = dest.list().await?.into_iter().map(|s| s.point).collect();
    let mut nodes: Vec<String> = points.iter().map(|p| p.node.clone()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    if let Some(n) = only {
        nodes.retain(|m| m == n);
    }
    let mut out = Vec::with_capacity(nodes.len());
    for n in nodes {
        let mut report = drill(dest, &points, &n, now_ms).await;
        // A chain removed by retention while it was fetched is not a failed
        // drill: the newer chain that replaced it is drilled instead.
        for _ in 0..RETRIES_ON_RETENTION_MAX {
            if report.ok {
                break;
            }
            let now: Vec<Point> = dest.list().await?.into_iter().map(|s| s.point).collect();
            let gone = report
                .files
                .iter()
                .any(|f| !now.iter().any(|p| p.file_name() == *f));
            if !gone {
                break;
            }
            report = drill(dest, &now, &n, now_ms).await;
        }
        out.push(report);
    }
    Ok(out)
}

/// Drills of one node tried again when its chain was removed meanwhile.
const RETRIES_ON_RETENTION_MAX: usize = 3;

/// Restores `node`'s newest chain among `points` (held at `dest`).
pub async fn drill(dest: &Destination, points: &[Point], node: &str, now_ms: u64) -> DrillReport {
    let started = Instant::now();
    let mut report = DrillReport {
        node: node.to_string(),
        destination: dest.name().to_string(),
        files: Vec::new(),
        index: 0,
        root: String::new(),
        keys: 0,
        bytes: 0,
        taken_ms: 0,
        rpo_ms: 0,
        rto_ms: 0,
        ok: false,
        error: None,
    };
    let Some(chain) = plan::newest_chain(points, node) else {
        report.error = Some("no restorable chain (no full backup)".to_string());
        return report;
    };
    report.files = chain.iter().map(Point::file_name).collect();
    let mut fetched = Vec::with_capacity(chain.len());
    for file in &report.files {
        match dest.get(file).await {
            Ok(b) => {
                report.bytes += b.len() as u64;
                fetched.push((dest.path_of(file), b));
            }
            Err(e) => {
                report.error = Some(e.to_string());
                report.rto_ms = started.elapsed().as_millis() as u64;
                return report;
            }
        }
    }
    // Decoding and combining are work for a blocking thread.
    let restored = tokio::task::spawn_blocking(move || {
        let mut backups = Vec::with_capacity(fetched.len());
        for (path, bytes) in &fetched {
            backups.push(backup::decode(bytes).map_err(|e| format!("{path}: {e}"))?);
        }
        // Combining checks the chain and the restored root against the
        // newest backup's.
        backup::combine(backups).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match restored {
        Ok((header, entries)) => {
            report.index = header.index;
            report.root = hex(&header.root);
            report.keys = entries.iter().filter(|(_, e)| !e.is_tombstone()).count() as u64;
            report.taken_ms = header.created_ms;
            report.rpo_ms = now_ms.saturating_sub(header.created_ms);
            report.ok = true;
        }
        Err(e) => report.error = Some(e),
    }
    report.rto_ms = started.elapsed().as_millis() as u64;
    report
}
