//! Scheduled backups: the tiers of `[[backup.schedule]]` (and the older
//! `[backup] interval_ms`, as one full schedule named `snapshot`) into the
//! backup directory. The plan ([`plan`]) says which backup is due and which
//! expire; this file takes the snapshot from the node, writes the file
//! whole (a `.partial` renamed once synced), reads it back and checks it
//! before it counts, and removes what retention says. [`drill`] restores
//! the newest chain into a scratch state and checks its root, by hand
//! (`meridian drill`) or every `[backup] drill_interval_ms`.
//! [`BackupHealth`] is what they tell health and metrics.

pub mod drill;
pub mod plan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::config::BackupConfig;
use crate::api::health::{Extra, HealthCheck, Reason};
use crate::api::metrics::Sample;
use crate::backup;
use crate::node::Node;
use plan::{Point, Schedule};

/// Shortest time between two looks at the schedules.
const TICK_MS_MIN: u64 = 1_000;
/// Longest time between two looks at the schedules.
const TICK_MS_MAX: u64 = 60_000;

/// What the scheduled backups and drills say of the node: the newest backup
/// of each schedule, failures, and the last drill. `/v1/health`, `/v1/status`
/// and `/metrics` read it (see [`Extra`]).
#[derive(Debug)]
pub struct BackupHealth {
    schedules: Vec<Schedule>,
    drill_interval_ms: u64,
    started_ms: u64,
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// The newest backup's time, per schedule.
    newest_ms: BTreeMap<String, u64>,
    /// Backups that failed to be taken, written or checked.
    failures: u64,
    last_error: Option<String>,
    /// The last drill, and how many ran.
    drill: Option<drill::DrillReport>,
    drills: u64,
}

impl BackupHealth {
    /// The state of `cfg`'s schedules, nothing known yet, at `now_ms`.
    pub fn new(cfg: &BackupConfig, now_ms: u64) -> Arc<BackupHealth> {
        Arc::new(BackupHealth {
            schedules: cfg.schedules(),
            drill_interval_ms: cfg.drill_interval_ms,
            started_ms: now_ms,
            state: Mutex::new(HealthState::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backups of `node` present now.
    fn saw(&self, points: &[Point], node: &str) {
        let mut st = self.state();
        for p in points.iter().filter(|p| p.node == node) {
            let newest = st.newest_ms.entry(p.schedule.clone()).or_insert(0);
            *newest = (*newest).max(p.taken_ms);
        }
    }

    fn failed(&self, error: String) {
        let mut st = self.state();
        st.failures += 1;
        st.last_error = Some(error);
    }

    fn drilled(&self, report: drill::DrillReport) {
        let mut st = self.state();
        st.drills += 1;
        st.drill = Some(report);
    }
}

impl Extra for BackupHealth {
    fn reasons(&self, now_ms: u64) -> Vec<Reason> {
        let st = self.state();
        let mut out = Vec::new();
        for s in &self.schedules {
            // Twice the interval, and a look's delay: one failed or late
            // backup is not yet a reason.
            let allowed_ms = s.interval_ms.saturating_mul(2).saturating_add(TICK_MS_MIN);
            let since = st
                .newest_ms
                .get(&s.name)
                .copied()
                .unwrap_or(self.started_ms);
            let age_ms = now_ms.saturating_sub(since);
            if age_ms > allowed_ms {
                let error = st
                    .last_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" (last error: {e})"));
                out.push(Reason {
                    check: HealthCheck::BackupStale,
                    subject: s.name.clone(),
                    for_ms: age_ms,
                    threshold_ms: allowed_ms,
                    message: format!(
                        "backup schedule {:?}: no backup for {} s, more than twice its interval{error}",
                        s.name,
                        age_ms / 1_000
                    ),
                });
            }
        }
        if let Some(d) = st.drill.as_ref().filter(|d| !d.ok) {
            out.push(Reason {
                check: HealthCheck::DrillFailed,
                subject: d.node.clone(),
                for_ms: 0,
                threshold_ms: self.drill_interval_ms,
                message: format!(
                    "the last restore drill failed: {}",
                    d.error.as_deref().unwrap_or("unknown")
                ),
            });
        }
        out
    }

    fn samples(&self, now_ms: u64) -> Vec<Sample> {
        let st = self.state();
        let mut out = Vec::new();
        for s in &self.schedules {
            if let Some(newest) = st.newest_ms.get(&s.name) {
                out.push(Sample {
                    name: "backup_age_ms",
                    kind: "gauge",
                    help: "Age of the newest backup of each schedule.",
                    labels: vec![("schedule", s.name.clone())],
                    value: now_ms.saturating_sub(*newest),
                });
            }
        }
        out.push(Sample {
            name: "backup_failures_total",
            kind: "counter",
            help: "Scheduled backups that failed to be taken, written or checked.",
            labels: Vec::new(),
            value: st.failures,
        });
        out.push(Sample {
            name: "drills_total",
            kind: "counter",
            help: "Restore drills run on schedule.",
            labels: Vec::new(),
            value: st.drills,
        });
        if let Some(d) = &st.drill {
            let gauges: [(&'static str, &'static str, u64); 4] = [
                (
                    "drill_ok",
                    "1 if the last restore drill restored the recorded root.",
                    u64::from(d.ok),
                ),
                (
                    "drill_rpo_ms",
                    "Recovery point of the last drill: the age of the state it restored.",
                    d.rpo_ms,
                ),
                (
                    "drill_rto_ms",
                    "Recovery time of the last drill: reading, checking and restoring.",
                    d.rto_ms,
                ),
                ("drill_keys", "Live keys the last drill restored.", d.keys),
            ];
            for (name, help, value) in gauges {
                out.push(Sample {
                    name,
                    kind: "gauge",
                    help,
                    labels: Vec::new(),
                    value,
                });
            }
        }
        out
    }
}

/// Takes each schedule's backups when due, applies retention, and runs a
/// drill every `drill_interval_ms`, until the node stops.
pub(super) async fn backup_loop(node: Arc<Node>, cfg: BackupConfig, health: Arc<BackupHealth>) {
    let schedules = cfg.schedules();
    let shortest_ms = schedules
        .iter()
        .map(|s| s.interval_ms)
        .chain((cfg.drill_interval_ms > 0).then_some(cfg.drill_interval_ms))
        .min()
        .unwrap_or(TICK_MS_MAX);
    let tick_ms = (shortest_ms / 10).clamp(TICK_MS_MIN, TICK_MS_MAX);
    let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drilled_ms = crate::node::time::now_ms();
    loop {
        tick.tick().await;
        let dir = cfg.dir.clone();
        let mut points = match tokio::task::spawn_blocking(move || list(&dir)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::error!("backups: {e}");
                health.failed(e);
                continue;
            }
            Err(_) => return,
        };
        let name = node.name().to_string();
        // At most one backup per schedule per look.
        for _ in 0..schedules.len() {
            let now = crate::node::time::now_ms();
            let Some(due) = plan::due(&schedules, &points, &name, now) else {
                break;
            };
            match take(&node, &cfg.dir, &schedules, due).await {
                Ok(p) => points.push(p),
                Err(Stop::Node) => return,
                Err(Stop::Failed(e)) => {
                    tracing::error!("scheduled backup failed: {e}");
                    health.failed(e);
                    break;
                }
            }
        }
        health.saw(&points, &name);
        let now = crate::node::time::now_ms();
        if cfg.drill_interval_ms > 0 && now.saturating_sub(drilled_ms) >= cfg.drill_interval_ms {
            drilled_ms = now;
            let (dir, found, me) = (cfg.dir.clone(), points.clone(), name.clone());
            let drilled =
                tokio::task::spawn_blocking(move || drill::drill(&dir, &found, &me, now)).await;
            let Ok(report) = drilled else { return };
            match &report.error {
                None => tracing::info!(
                    rpo_ms = report.rpo_ms,
                    rto_ms = report.rto_ms,
                    keys = report.keys,
                    "restore drill: the restored root is the recorded one"
                ),
                Some(e) => tracing::error!("restore drill failed: {e}"),
            }
            health.drilled(report);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_without_a_recent_backup_and_a_failed_drill_are_reasons() {
        let cfg = BackupConfig {
            schedule: vec![Schedule {
                name: "quarter".into(),
                kind: plan::Kind::Full,
                interval_ms: 900_000,
                keep_ms: 0,
                keep: 0,
                base: None,
            }],
            drill_interval_ms: 60_000,
            ..BackupConfig::default()
        };
        let t0 = 1_750_000_000_000;
        let h = BackupHealth::new(&cfg, t0);
        // Nothing yet: not a reason until twice the interval has passed.
        assert!(h.reasons(t0 + 1_000_000).is_empty());
        let r = h.reasons(t0 + 2_000_000);
        assert_eq!(r[0].check, HealthCheck::BackupStale);
        assert_eq!(r[0].subject, "quarter");
        let p = Point {
            taken_ms: t0 + 1_900_000,
            index: 5,
            since: 0,
            schedule: "quarter".into(),
            node: "n".into(),
        };
        h.saw(&[p], "n");
        assert!(h.reasons(t0 + 2_000_000).is_empty());
        h.failed("disk full".into());
        let r = h.reasons(t0 + 1_900_000 + 1_801_001);
        assert!(r[0].message.contains("disk full"), "{r:?}");
        // A failed drill, until one passes.
        let mut report = drill::DrillReport {
            node: "n".into(),
            files: Vec::new(),
            index: 5,
            root: String::new(),
            keys: 0,
            bytes: 0,
            taken_ms: 0,
            rpo_ms: 0,
            rto_ms: 1,
            ok: false,
            error: Some("checksum mismatch".into()),
        };
        h.drilled(report.clone());
        let r = h.reasons(t0 + 2_000_000);
        assert_eq!(r[0].check, HealthCheck::DrillFailed);
        let text = crate::api::metrics::render_samples(&h.samples(t0 + 2_000_000));
        assert!(text.contains("meridian_drill_ok 0"), "{text}");
        assert!(
            text.contains("meridian_backup_age_ms{schedule=\"quarter\"} 100000"),
            "{text}"
        );
        report.ok = true;
        report.error = None;
        h.drilled(report);
        assert!(h.reasons(t0 + 2_000_000).is_empty());
    }
}
