//! Restore drills: a node's newest restorable chain of scheduled backups
//! (its newest full backup, or an incremental and the full it builds on)
//! read, checked and restored into a scratch state, whose root must be the
//! one the newest backup recorded. The report says how old that state is
//! (the recovery point) and how long the restore took (the recovery time).

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::plan::{self, Point};
use crate::backup;
use crate::core::types::hex;

/// What one drill found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillReport {
    /// The node whose backups were restored (its name).
    pub node: String,
    /// The files restored, full backup first.
    pub files: Vec<String>,
    /// The node's index in the newest backup.
    pub index: u64,
    /// The root the restored state has (hex); the newest backup recorded
    /// the same, or the drill failed.
    pub root: String,
    /// Live keys in the restored state.
    pub keys: u64,
    /// Bytes read.
    pub bytes: u64,
    /// When the newest backup was taken (ms since the epoch).
    pub taken_ms: u64,
    /// Recovery point: how old the restored state was when the drill ran.
    pub rpo_ms: u64,
    /// Recovery time: reading, checking and restoring, in ms.
    pub rto_ms: u64,
    /// The restored root is the recorded one.
    pub ok: bool,
    /// Why the drill failed, if it did.
    pub error: Option<String>,
}

/// Drills every node with scheduled backups in `dir` (or only `only`).
pub fn drill_dir(dir: &Path, only: Option<&str>, now_ms: u64) -> Result<Vec<DrillReport>, String> {
    let points = super::list(dir)?;
    let mut nodes: Vec<&str> = points.iter().map(|p| p.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    if let Some(n) = only {
        if !nodes.contains(&n) {
            return Err(format!(
                "{} holds no scheduled backup of node {n:?}",
                dir.display()
            ));
        }
        nodes = vec![n];
    }
    Ok(nodes
        .into_iter()
        .map(|n| drill(dir, &points, n, now_ms))
        .collect())
}

/// Restores `node`'s newest chain among `points` (files in `dir`).
pub fn drill(dir: &Path, points: &[Point], node: &str, now_ms: u64) -> DrillReport {
    let started = Instant::now();
    let mut report = DrillReport {
        node: node.to_string(),
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
    let mut backups = Vec::with_capacity(chain.len());
    for p in &chain {
        let path = dir.join(p.file_name());
        let read = std::fs::read(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))
            .and_then(|b| {
                report.bytes += b.len() as u64;
                backup::decode(&b).map_err(|e| format!("{}: {e}", path.display()))
            });
        match read {
            Ok(b) => backups.push(b),
            Err(e) => {
                report.error = Some(e);
                report.rto_ms = started.elapsed().as_millis() as u64;
                return report;
            }
        }
    }
    // Combining checks the chain and the restored root against the
    // newest backup's.
    match backup::combine(backups) {
        Ok((header, entries)) => {
            report.index = header.index;
            report.root = hex(&header.root);
            report.keys = entries.iter().filter(|(_, e)| !e.is_tombstone()).count() as u64;
            report.taken_ms = header.created_ms;
            report.rpo_ms = now_ms.saturating_sub(header.created_ms);
            report.ok = true;
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    report.rto_ms = started.elapsed().as_millis() as u64;
    report
}
