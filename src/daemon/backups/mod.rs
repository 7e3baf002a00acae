//! Scheduled backups: the tiers of `[[backup.schedule]]` (and the older
//! `[backup] interval_ms`, as one full schedule named `snapshot`) into the
//! backup directory. The plan ([`plan`]) says which backup is due and which
//! expire; this file takes the snapshot from the node, writes the file
//! whole (a `.partial` renamed once synced), reads it back and checks it
//! before it counts, and removes what retention says. [`drill`] restores
//! the newest chain into a scratch state and checks its root.

pub mod drill;
pub mod plan;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::config::BackupConfig;
use crate::backup;
use crate::node::Node;
use plan::{Point, Schedule};

/// Shortest time between two looks at the schedules.
const TICK_MS_MIN: u64 = 1_000;
/// Longest time between two looks at the schedules.
const TICK_MS_MAX: u64 = 60_000;

/// Takes each schedule's backups when due and applies retention, until the
/// node stops.
pub(super) async fn backup_loop(node: Arc<Node>, cfg: BackupConfig) {
    let schedules = cfg.schedules();
    let Some(shortest_ms) = schedules.iter().map(|s| s.interval_ms).min() else {
        return;
    };
    let tick_ms = (shortest_ms / 10).clamp(TICK_MS_MIN, TICK_MS_MAX);
    let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let dir = cfg.dir.clone();
        let mut points = match tokio::task::spawn_blocking(move || list(&dir)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::error!("backups: {e}");
                continue;
            }
            Err(_) => return,
        };
        let name = node.name().to_string();
        // At most one backup per schedule per look.
        for _ in 0..schedules.len() {
            let Some(due) = plan::due(&schedules, &points, &name, crate::node::time::now_ms())
            else {
                break;
            };
            match take(&node, &cfg.dir, &schedules, due).await {
                Ok(p) => points.push(p),
                Err(Stop::Node) => return,
                Err(Stop::Failed(e)) => {
                    tracing::error!("scheduled backup failed: {e}");
                    break;
                }
            }
        }
        let gone = plan::expired(&schedules, &points, &name, crate::node::time::now_ms());
        for p in gone {
            let path = cfg.dir.join(p.file_name());
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "backup expired, removed"),
                Err(e) => tracing::warn!("cannot remove expired backup {}: {e}", path.display()),
            }
        }
    }
}

/// Why a scheduled backup was not taken.
enum Stop {
    /// The node stopped.
    Node,
    /// Taking, writing or checking it failed (it is tried at the next look).
    Failed(String),
}

/// Takes the backup `due` asks for and writes it into `dir`. An
/// incremental the node cannot make (it restarted since the base, or
/// forgot the keys it removed since) is taken as a full backup of the base
/// schedule instead: the next incremental builds on it.
async fn take(
    node: &Node,
    dir: &Path,
    schedules: &[Schedule],
    mut due: plan::Due,
) -> Result<Point, Stop> {
    let snap = match node.snapshot(due.since).await {
        Ok(s) => s,
        Err(crate::node::NodeError::Stopped) => return Err(Stop::Node),
        Err(e) if due.since > 0 => {
            let base = schedules
                .iter()
                .find(|s| s.name == due.schedule)
                .and_then(|s| s.base.clone())
                .or_else(|| {
                    schedules
                        .iter()
                        .find(|s| s.kind == plan::Kind::Full)
                        .map(|s| s.name.clone())
                })
                .unwrap_or_default();
            tracing::warn!(
                schedule = %due.schedule,
                "an incremental backup cannot be made ({e}): taking a full backup of {base:?} instead"
            );
            due = plan::Due {
                schedule: base,
                since: 0,
            };
            match node.snapshot(0).await {
                Ok(s) => s,
                Err(crate::node::NodeError::Stopped) => return Err(Stop::Node),
                Err(e) => return Err(Stop::Failed(e.to_string())),
            }
        }
        Err(e) => return Err(Stop::Failed(e.to_string())),
    };
    let point = Point {
        taken_ms: snap.taken_ms,
        index: snap.index,
        since: due.since,
        schedule: due.schedule,
        node: snap.name.clone(),
    };
    let header = snap.backup_header(node.cluster());
    let dir = dir.to_path_buf();
    let p = point.clone();
    let written = tokio::task::spawn_blocking(move || {
        let bytes = backup::encode(&header, &snap.entries).map_err(|e| e.to_string())?;
        write_checked(&dir, &p.file_name(), &bytes, &header)
    })
    .await
    .map_err(|e| Stop::Failed(e.to_string()))?
    .map_err(Stop::Failed)?;
    tracing::info!(
        path = %written.display(),
        schedule = %point.schedule,
        index = point.index,
        full = point.is_full(),
        "scheduled backup written and checked"
    );
    Ok(point)
}

/// Writes `bytes` as `dir/name` whole (a `.partial` file, synced, renamed),
/// then reads it back and checks it: checksums, entry count, and that it is
/// the backup `header` describes (for a full one, its root).
pub fn write_checked(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    header: &backup::Header,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(name);
    let partial = dir.join(format!("{name}.partial"));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&partial)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&partial, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("writing {}: {e}", path.display()))?;
    let back = std::fs::read(&path).map_err(|e| format!("reading {} back: {e}", path.display()))?;
    match backup::decode(&back) {
        Ok(b) if &b.header == header => Ok(path),
        Ok(_) => Err(format!("{} reads back as another backup", path.display())),
        Err(e) => Err(format!("{} does not read back: {e}", path.display())),
    }
}

/// The scheduled backups in `dir` (none when it does not exist yet).
pub fn list(dir: &Path) -> Result<Vec<Point>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("listing {}: {e}", dir.display())),
    };
    Ok(entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(Point::parse))
        .collect())
}
