//! Scheduled snapshots: a backup file every interval into the backup
//! directory, written whole then renamed, and retention that removes only
//! this node's own snapshots beyond the count kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::config::BackupConfig;
use crate::node::Node;

/// Shortest interval between scheduled snapshots.
pub const SNAPSHOT_INTERVAL_MS_MIN: u64 = 1_000;

/// Takes a full snapshot every `interval_ms` into `dir`, keeping the newest `keep`.
pub(super) async fn snapshot_loop(node: Arc<Node>, cfg: BackupConfig) {
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: wait one interval
    loop {
        tick.tick().await;
        let snap = match node.snapshot(0).await {
            Ok(s) => s,
            Err(_) => return,
        };
        let (dir, keep) = (cfg.dir.clone(), cfg.keep);
        let cluster = node.cluster();
        let written =
            tokio::task::spawn_blocking(move || write_snapshot(&dir, keep, cluster, snap)).await;
        match written {
            Ok(Ok(path)) => tracing::info!(path = %path.display(), "scheduled snapshot written"),
            Ok(Err(e)) => tracing::error!("scheduled snapshot failed: {e}"),
            Err(e) => tracing::error!("scheduled snapshot task failed: {e}"),
        }
    }
}

/// `{prefix}{13 digits}-{digits}.mbak` exactly: what `write_snapshot` names
/// its files (so retention never touches another node's or a hand-made backup).
pub(super) fn is_snapshot_name(name: &str, prefix: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(prefix)
        .and_then(|r| r.strip_suffix(".mbak"))
    else {
        return false;
    };
    let Some((ms, index)) = rest.split_once('-') else {
        return false;
    };
    ms.len() == 13
        && ms.bytes().all(|b| b.is_ascii_digit())
        && !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
}

/// The file name prefix of a node's scheduled snapshots.
pub(super) fn snapshot_prefix(name: &str) -> String {
    format!("meridian-{name}-")
}

pub(super) fn write_snapshot(
    dir: &Path,
    keep: usize,
    cluster: crate::core::codec::ClusterId,
    snap: crate::node::Snapshot,
) -> Result<PathBuf, String> {
    use crate::backup;
    let header = snap.backup_header(cluster);
    let bytes = backup::encode(&header, &snap.entries).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let prefix = snapshot_prefix(&snap.name);
    let name = format!("{prefix}{:013}-{}.mbak", snap.taken_ms, snap.index);
    let path = dir.join(&name);
    let partial = dir.join(format!("{name}.partial"));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&partial)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&partial, &path)
    };
    write().map_err(|e| format!("writing {}: {e}", path.display()))?;
    // Retention: the newest `keep` by name (which sorts by time).
    let mut ours: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("listing {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| is_snapshot_name(n, &prefix))
        })
        .collect();
    ours.sort();
    let excess = ours.len().saturating_sub(keep);
    for old in &ours[..excess] {
        if let Err(e) = std::fs::remove_file(old) {
            tracing::warn!("cannot remove old snapshot {}: {e}", old.display());
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_only_touches_its_own_snapshots() {
        let p = snapshot_prefix("us");
        assert!(is_snapshot_name("meridian-us-1795567459522-42.mbak", &p));
        assert!(!is_snapshot_name(
            "meridian-us-east-1795567459522-42.mbak",
            &p
        ));
        assert!(!is_snapshot_name(
            "meridian-us-1795567459522-42.mbak.partial",
            &p
        ));
        assert!(!is_snapshot_name("meridian-us-manual.mbak", &p));
    }
}
