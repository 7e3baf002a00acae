//! Scheduled backups: the tiers of `[[backup.schedule]]` (and the older
//! `[backup] interval_ms`, as one full schedule named `snapshot`) into every
//! destination (`[[backup.destination]]`: local folders and S3-compatible
//! buckets, or `[backup] dir` alone). The plan ([`plan`]) says, for each
//! destination, which backup is due and which expire; this file takes the
//! snapshot from the node once for the destinations it is due at, has each
//! [`destination`] write and check it, and removes what retention says.
//! [`drill`] restores a destination's newest chain into a scratch state and
//! checks its root, by hand (`meridian drill`) or every
//! `[backup] drill_interval_ms`. [`BackupHealth`] is what they tell health
//! and metrics.

pub mod destination;
pub mod drill;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;

use super::config::BackupConfig;
use crate::api::health::{Extra, HealthCheck, Reason};
use crate::api::metrics::Sample;
use crate::backup;
use crate::node::Node;
use destination::Destination;
use plan::{Point, Schedule};

/// Shortest time between two looks at the schedules.
const TICK_MS_MIN: u64 = 1_000;
/// Longest time between two looks at the schedules.
const TICK_MS_MAX: u64 = 60_000;

/// What the scheduled backups and drills say of the node: the newest backup
/// of each schedule at each destination, failures, and the last drill of
/// each destination. `/v1/health`, `/v1/status` and `/metrics` read it (see
/// [`Extra`]).
#[derive(Debug)]
pub struct BackupHealth {
    schedules: Vec<Schedule>,
    destinations: Vec<String>,
    drill_interval_ms: u64,
    started_ms: u64,
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// The newest backup's time, per (schedule, destination).
    newest_ms: BTreeMap<(String, String), u64>,
    /// Backups that failed to be taken, written or checked, per destination.
    failures: BTreeMap<String, u64>,
    /// The last failure, per destination.
    last_error: BTreeMap<String, String>,
    /// The last drill of each destination, and how many ran.
    drill: BTreeMap<String, drill::DrillReport>,
    drills: u64,
}

impl BackupHealth {
    /// The state of `cfg`'s schedules at the destinations named
    /// `destinations`, nothing known yet, at `now_ms`.
    pub fn new(cfg: &BackupConfig, destinations: &[String], now_ms: u64) -> Arc<BackupHealth> {
        Arc::new(BackupHealth {
            schedules: cfg.schedules(),
            destinations: destinations.to_vec(),
            drill_interval_ms: cfg.drill_interval_ms,
            started_ms: now_ms,
            state: Mutex::new(HealthState::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backups of `node` present now at `destination`.
    fn saw(&self, points: &[Point], node: &str, destination: &str) {
        let mut st = self.state();
        for p in points.iter().filter(|p| p.node == node) {
            let newest = st
                .newest_ms
                .entry((p.schedule.clone(), destination.to_string()))
                .or_insert(0);
            *newest = (*newest).max(p.taken_ms);
        }
    }

    fn failed(&self, destination: &str, error: String) {
        let mut st = self.state();
        *st.failures.entry(destination.to_string()).or_insert(0) += 1;
        st.last_error.insert(destination.to_string(), error);
    }

    fn drilled(&self, report: drill::DrillReport) {
        let mut st = self.state();
        st.drills += 1;
        st.drill.insert(report.destination.clone(), report);
    }
}

impl Extra for BackupHealth {
    fn reasons(&self, now_ms: u64) -> Vec<Reason> {
        let st = self.state();
        let mut out = Vec::new();
        for s in &self.schedules {
            for d in &self.destinations {
                // Twice the interval, and a look's delay: one failed or late
                // backup is not yet a reason.
                let allowed_ms = s.interval_ms.saturating_mul(2).saturating_add(TICK_MS_MIN);
                let since = st
                    .newest_ms
                    .get(&(s.name.clone(), d.clone()))
                    .copied()
                    .unwrap_or(self.started_ms);
                let age_ms = now_ms.saturating_sub(since);
                if age_ms > allowed_ms {
                    let error = st
                        .last_error
                        .get(d)
                        .map_or(String::new(), |e| format!(" (last error: {e})"));
                    out.push(Reason {
                        check: HealthCheck::BackupStale,
                        subject: format!("{}@{d}", s.name),
                        for_ms: age_ms,
                        threshold_ms: allowed_ms,
                        message: format!(
                            "backup schedule {:?} at destination {d:?}: no backup for {} s, more than twice its interval{error}",
                            s.name,
                            age_ms / 1_000
                        ),
                    });
                }
            }
        }
        for d in st.drill.values().filter(|d| !d.ok) {
            out.push(Reason {
                check: HealthCheck::DrillFailed,
                subject: d.destination.clone(),
                for_ms: 0,
                threshold_ms: self.drill_interval_ms,
                message: format!(
                    "the last restore drill failed at destination {:?}: {}",
                    d.destination,
                    d.error.as_deref().unwrap_or("unknown")
                ),
            });
        }
        out
    }

    fn samples(&self, now_ms: u64) -> Vec<Sample> {
        let st = self.state();
        let mut out = Vec::new();
        for ((schedule, destination), newest) in &st.newest_ms {
            out.push(Sample {
                name: "backup_age_ms",
                kind: "gauge",
                help: "Age of the newest backup of each schedule at each destination.",
                labels: vec![
                    ("schedule", schedule.clone()),
                    ("destination", destination.clone()),
                ],
                value: now_ms.saturating_sub(*newest),
            });
        }
        for d in &self.destinations {
            out.push(Sample {
                name: "backup_failures_total",
                kind: "counter",
                help: "Scheduled backups that failed to be taken, written or checked, per destination.",
                labels: vec![("destination", d.clone())],
                value: st.failures.get(d).copied().unwrap_or(0),
            });
        }
        out.push(Sample {
            name: "drills_total",
            kind: "counter",
            help: "Restore drills run on schedule.",
            labels: Vec::new(),
            value: st.drills,
        });
        for d in st.drill.values() {
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
                    "Recovery time of the last drill: fetching, checking and restoring.",
                    d.rto_ms,
                ),
                ("drill_keys", "Live keys the last drill restored.", d.keys),
            ];
            for (name, help, value) in gauges {
                out.push(Sample {
                    name,
                    kind: "gauge",
                    help,
                    labels: vec![("destination", d.destination.clone())],
                    value,
                });
            }
        }
        out
    }
}

/// Takes each schedule's backups when due at each destination, applies
/// retention, and runs a drill of each destination every
/// `drill_interval_ms`, until the node stops.
pub(super) async fn backup_loop(
    node: Arc<Node>,
    cfg: BackupConfig,
    destinations: Vec<Destination>,
    health: Arc<BackupHealth>,
) {
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
    // The node started before this loop: a backup taken since was taken
    // after the start.
    let started_ms = drilled_ms;
    loop {
        tick.tick().await;
        let name = node.name().to_string();
        // What each destination holds; one that cannot be listed sits this
        // look out.
        // Destinations are asked at once: one that is slow or down does not
        // hold the others up (each request is bounded by its timeouts).
        let listed = join_all(destinations.iter().map(|d| d.list())).await;
        let mut held: Vec<Option<Vec<Point>>> = Vec::with_capacity(destinations.len());
        for (d, l) in destinations.iter().zip(listed) {
            match l {
                Ok(stored) => held.push(Some(stored.into_iter().map(|s| s.point).collect())),
                Err(e) => {
                    tracing::error!("backups: {e}");
                    health.failed(d.name(), e.to_string());
                    held.push(None);
                }
            }
        }
        // At most one backup per schedule per look, at each destination.
        for _ in 0..schedules.len() {
            let now = crate::node::time::now_ms();
            // The backups due, each with the destinations it is due at.
            let mut wanted: Vec<(plan::Due, Vec<usize>)> = Vec::new();
            for (i, points) in held.iter().enumerate() {
                let Some(due) = points
                    .as_ref()
                    .and_then(|p| plan::due(&schedules, p, &name, now))
                else {
                    continue;
                };
                match wanted.iter_mut().find(|(d, _)| *d == due) {
                    Some((_, at)) => at.push(i),
                    None => wanted.push((due, vec![i])),
                }
            }
            if wanted.is_empty() {
                break;
            }
            for (due, at) in wanted {
                let started = std::time::Instant::now();
                // The base of an incremental, here: was it taken since the start?
                let base_after_start = due.since > 0
                    && at.iter().all(|&i| {
                        held[i].as_ref().is_some_and(|points| {
                            points.iter().any(|p| {
                                p.node == name
                                    && p.is_full()
                                    && p.index == due.since
                                    && p.taken_ms >= started_ms
                            })
                        })
                    });
                let taken = match take(&node, &schedules, due, base_after_start).await {
                    Ok(t) => t,
                    Err(Stop::Node) => return,
                    Err(Stop::Failed(e)) => {
                        tracing::error!("scheduled backup failed: {e}");
                        for &i in &at {
                            health.failed(destinations[i].name(), e.clone());
                            held[i] = None;
                        }
                        continue;
                    }
                };
                let take_ms = started.elapsed().as_millis() as u64;
                let file = taken.point.file_name();
                let (file_at, taken_at, all) = (&file, &taken, &destinations);
                let written = join_all(at.iter().map(|&i| async move {
                    let started = std::time::Instant::now();
                    let r = all[i]
                        .put_checked(file_at, taken_at.bytes.clone(), &taken_at.header)
                        .await;
                    (r, started.elapsed().as_millis() as u64)
                }))
                .await;
                for (i, (result, write_ms)) in at.into_iter().zip(written) {
                    let d = &destinations[i];
                    match result {
                        Ok(()) => {
                            tracing::info!(
                                destination = d.name(),
                                path = %d.path_of(&file),
                                schedule = %taken.point.schedule,
                                index = taken.point.index,
                                full = taken.point.is_full(),
                                bytes = taken.bytes.len(),
                                take_ms,
                                write_ms,
                                "scheduled backup written and checked"
                            );
                            if let Some(points) = held[i].as_mut() {
                                points.push(taken.point.clone());
                            }
                        }
                        Err(e) => {
                            tracing::error!("scheduled backup failed: {e}");
                            health.failed(d.name(), e.to_string());
                            held[i] = None;
                        }
                    }
                }
            }
        }
        for (d, points) in destinations.iter().zip(&held) {
            if let Some(points) = points {
                health.saw(points, &name, d.name());
            }
        }
        let now = crate::node::time::now_ms();
        if cfg.drill_interval_ms > 0 && now.saturating_sub(drilled_ms) >= cfg.drill_interval_ms {
            drilled_ms = now;
            for (d, points) in destinations.iter().zip(&held) {
                let Some(points) = points else { continue };
                let report = drill::drill(d, points, &name, now).await;
                match &report.error {
                    None => tracing::info!(
                        destination = d.name(),
                        rpo_ms = report.rpo_ms,
                        rto_ms = report.rto_ms,
                        keys = report.keys,
                        "restore drill: the restored root is the recorded one"
                    ),
                    Some(e) => tracing::error!(destination = d.name(), "restore drill failed: {e}"),
                }
                health.drilled(report);
            }
        }
        let now = crate::node::time::now_ms();
        for (d, points) in destinations.iter().zip(&held) {
            let Some(points) = points else { continue };
            for p in plan::expired(&schedules, points, &name, now) {
                let file = p.file_name();
                match d.remove(&file).await {
                    Ok(()) => tracing::info!(path = %d.path_of(&file), "backup expired, removed"),
                    Err(e) => tracing::warn!("cannot remove an expired backup: {e}"),
                }
            }
        }
    }
}

/// Why a scheduled backup was not taken.
enum Stop {
    /// The node stopped.
    Node,
    /// Taking or encoding it failed (it is tried at the next look).
    Failed(String),
}

/// A backup taken and encoded, to be written to destinations.
struct Taken {
    point: Point,
    header: backup::Header,
    bytes: Bytes,
}

/// Takes the backup `due` asks for. An incremental the node cannot make (it
/// restarted since the base, or forgot the keys it removed since) is taken
/// as a full backup of the base schedule instead: the next incremental
/// builds on it.
async fn take(
    node: &Node,
    schedules: &[Schedule],
    mut due: plan::Due,
    base_after_start: bool,
) -> Result<Taken, Stop> {
    let snapshot = if base_after_start {
        node.snapshot_after_start(due.since).await
    } else {
        node.snapshot(due.since).await
    };
    let snap = match snapshot {
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
    let encoded = {
        let header = header.clone();
        tokio::task::spawn_blocking(move || backup::encode(&header, &snap.entries))
    };
    let bytes = encoded
        .await
        .map_err(|e| Stop::Failed(e.to_string()))?
        .map_err(|e| Stop::Failed(e.to_string()))?;
    Ok(Taken {
        point,
        header,
        bytes: Bytes::from(bytes),
    })
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
        let h = BackupHealth::new(&cfg, &["local".to_string()], t0);
        // Nothing yet: not a reason until twice the interval has passed.
        assert!(h.reasons(t0 + 1_000_000).is_empty());
        let r = h.reasons(t0 + 2_000_000);
        assert_eq!(r[0].check, HealthCheck::BackupStale);
        assert_eq!(r[0].subject, "quarter@local");
        let p = Point {
            taken_ms: t0 + 1_900_000,
            index: 5,
            since: 0,
            schedule: "quarter".into(),
            node: "n".into(),
        };
        h.saw(&[p], "n", "local");
        assert!(h.reasons(t0 + 2_000_000).is_empty());
        h.failed("local", "disk full".into());
        let r = h.reasons(t0 + 1_900_000 + 1_801_001);
        assert!(r[0].message.contains("disk full"), "{r:?}");
        // A failed drill, until one passes.
        let mut report = drill::DrillReport {
            node: "n".into(),
            destination: "local".into(),
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
        assert!(
            text.contains("meridian_drill_ok{destination=\"local\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "meridian_backup_age_ms{schedule=\"quarter\",destination=\"local\"} 100000"
            ),
            "{text}"
        );
        report.ok = true;
        report.error = None;
        h.drilled(report);
        assert!(h.reasons(t0 + 2_000_000).is_empty());
    }
}
