//! The backup plan, pure: which scheduled backup is due, which backups
//! retention removes, and which chain restores the newest state. No files,
//! no clock: the backups present and the time come in as arguments.
//!
//! A backup point is named `meridian-{node}-{schedule}-{ms}-{index}-full.mbak`
//! or `...-{index}-inc{since}.mbak` (`ms`: 13 digits, when it was taken;
//! `index`: the node's index then; `since`: the index of the full backup an
//! incremental builds on), so the plan reads everything it needs from the
//! names. An incremental holds every change since the newest full backup
//! of its base schedule (a differential: one full and one incremental
//! restore any point), so retention never removes a full backup that a kept
//! incremental builds on: no chain is left with a gap.

use serde::{Deserialize, Serialize};

/// What a schedule takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Every entry.
    Full,
    /// The changes since the newest full backup of the base schedule.
    Incremental,
}

/// One tier: what it takes, how often, and how long its backups are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Its name, in its files' names: 1-32 of a-z, 0-9 and `_`.
    pub name: String,
    /// Full or incremental.
    pub kind: Kind,
    /// A backup this often.
    pub interval_ms: u64,
    /// Its backups older than this are removed (0: kept whatever their age).
    #[serde(default)]
    pub keep_ms: u64,
    /// At most this many of its backups are kept (0: no count limit).
    #[serde(default)]
    pub keep: usize,
    /// An incremental schedule: the full schedule it builds on (default:
    /// the first full schedule).
    #[serde(default)]
    pub base: Option<String>,
}

/// Shortest interval of a schedule.
pub const INTERVAL_MS_MIN: u64 = 1_000;
/// Most schedules.
pub const SCHEDULES_MAX: usize = 16;
/// Longest schedule name.
pub const SCHEDULE_NAME_BYTES_MAX: usize = 32;

/// Why a set of schedules cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A schedule's name is not 1-32 of a-z, 0-9 and `_`, or is taken twice.
    #[error("[[backup.schedule]] name {0:?}: 1-{SCHEDULE_NAME_BYTES_MAX} of a-z, 0-9 and _, each name once")]
    Name(String),
    /// A schedule's interval is below [`INTERVAL_MS_MIN`].
    #[error("[[backup.schedule]] {0:?}: interval_ms must be at least {INTERVAL_MS_MIN}")]
    Interval(String),
    /// An incremental schedule has no full schedule to build on.
    #[error("[[backup.schedule]] {0:?} is incremental, but {1}")]
    Base(String, String),
    /// More than [`SCHEDULES_MAX`] schedules.
    #[error("at most {SCHEDULES_MAX} [[backup.schedule]] entries")]
    TooMany,
}

/// Checks a set of schedules.
pub fn check(schedules: &[Schedule]) -> Result<(), PlanError> {
    if schedules.len() > SCHEDULES_MAX {
        return Err(PlanError::TooMany);
    }
    for (i, s) in schedules.iter().enumerate() {
        let ok = !s.name.is_empty()
            && s.name.len() <= SCHEDULE_NAME_BYTES_MAX
            && s.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok || schedules[..i].iter().any(|o| o.name == s.name) {
            return Err(PlanError::Name(s.name.clone()));
        }
        if s.interval_ms < INTERVAL_MS_MIN {
            return Err(PlanError::Interval(s.name.clone()));
        }
        if s.kind == Kind::Incremental {
            match base_of(schedules, s) {
                Some(b) if b.kind == Kind::Full => {}
                Some(b) => {
                    return Err(PlanError::Base(
                        s.name.clone(),
                        format!("its base {:?} is not a full schedule", b.name),
                    ))
                }
                None => {
                    return Err(PlanError::Base(
                        s.name.clone(),
                        match &s.base {
                            Some(b) => format!("no schedule is named {b:?}"),
                            None => "there is no full schedule".to_string(),
                        },
                    ))
                }
            }
        }
    }
    Ok(())
}

/// The full schedule an incremental one builds on.
fn base_of<'a>(schedules: &'a [Schedule], s: &Schedule) -> Option<&'a Schedule> {
    match &s.base {
        Some(name) => schedules.iter().find(|o| &o.name == name),
        None => schedules.iter().find(|o| o.kind == Kind::Full),
    }
}

/// One backup present at a destination, as its name says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Point {
    /// When it was taken (ms since the epoch).
    pub taken_ms: u64,
    /// The node's index then.
    pub index: u64,
    /// 0 for a full backup; else the index of the full backup it builds on.
    pub since: u64,
    /// The schedule that took it.
    pub schedule: String,
    /// The node it was taken from (its name).
    pub node: String,
}

impl Point {
    /// True for a full backup.
    pub fn is_full(&self) -> bool {
        self.since == 0
    }

    /// Its file name.
    pub fn file_name(&self) -> String {
        let tail = if self.is_full() {
            "full".to_string()
        } else {
            format!("inc{}", self.since)
        };
        format!(
            "meridian-{}-{}-{:013}-{}-{tail}.mbak",
            self.node, self.schedule, self.taken_ms, self.index
        )
    }

    /// Reads a name written by [`Point::file_name`]; `None` for any other
    /// file (a hand-made backup, another tool's, a partial upload), which
    /// the plan never touches (nor the points of a schedule no longer
    /// configured: retention goes schedule by schedule).
    pub fn parse(file: &str) -> Option<Point> {
        let rest = file.strip_prefix("meridian-")?.strip_suffix(".mbak")?;
        // The node's name may hold '-': the schedule is found from the end.
        let mut parts = rest.rsplitn(4, '-');
        let (tail, index, ms, head) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let (node, schedule) = head.rsplit_once('-')?;
        let named = !schedule.is_empty()
            && schedule.len() <= SCHEDULE_NAME_BYTES_MAX
            && schedule
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if node.is_empty() || !named {
            return None;
        }
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if ms.len() != 13 || !digits(ms) || !digits(index) {
            return None;
        }
        let since = match tail {
            "full" => 0,
            t => {
                let s = t.strip_prefix("inc")?;
                if !digits(s) {
                    return None;
                }
                s.parse().ok().filter(|s| *s > 0)?
            }
        };
        Some(Point {
            taken_ms: ms.parse().ok()?,
            index: index.parse().ok()?,
            since,
            schedule: schedule.to_string(),
            node: node.to_string(),
        })
    }
}

/// A backup to take now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The schedule it is for.
    pub schedule: String,
    /// 0: a full backup; else the changes after this index (the base full
    /// backup's).
    pub since: u64,
}

/// The backup most overdue now among `node`'s (full backups first, so an
/// incremental due at the same time builds on the new one); `None` when
/// none is due. An incremental whose base schedule has no backup yet waits;
/// one whose base is the full backup of an empty node (index 0) holds every
/// change, and is a full backup of its own schedule.
pub fn due(schedules: &[Schedule], points: &[Point], node: &str, now_ms: u64) -> Option<Due> {
    let last_of = |name: &str| {
        points
            .iter()
            .filter(|p| p.node == node && p.schedule == name)
            .max_by_key(|p| (p.taken_ms, p.index))
    };
    let mut best: Option<(bool, u64, Due)> = None;
    for s in schedules {
        let next_ms = last_of(&s.name).map_or(0, |p| p.taken_ms.saturating_add(s.interval_ms));
        if next_ms > now_ms {
            continue;
        }
        let since = match s.kind {
            Kind::Full => 0,
            Kind::Incremental => {
                let Some(base) = base_of(schedules, s).and_then(|b| last_of(&b.name)) else {
                    continue;
                };
                base.index
            }
        };
        // Fulls first, then the longest overdue.
        let rank = (s.kind == Kind::Incremental, next_ms);
        if best.as_ref().is_none_or(|(inc, at, _)| rank < (*inc, *at)) {
            best = Some((
                rank.0,
                rank.1,
                Due {
                    schedule: s.name.clone(),
                    since,
                },
            ));
        }
    }
    best.map(|(_, _, d)| d)
}

/// The points of `node` that retention removes now: those of a schedule
/// older than its `keep_ms` or beyond its newest `keep`, but never a
/// schedule's newest, and never a full backup that a kept incremental
/// builds on.
pub fn expired(schedules: &[Schedule], points: &[Point], node: &str, now_ms: u64) -> Vec<Point> {
    let mut gone: Vec<Point> = Vec::new();
    for s in schedules {
        let mut mine: Vec<&Point> = points
            .iter()
            .filter(|p| p.node == node && p.schedule == s.name)
            .collect();
        mine.sort_by(|a, b| b.cmp(a)); // newest first
        for (rank, p) in mine.iter().enumerate().skip(1) {
            let too_old = s.keep_ms > 0 && now_ms.saturating_sub(p.taken_ms) > s.keep_ms;
            let too_many = s.keep > 0 && rank >= s.keep;
            if too_old || too_many {
                gone.push((*p).clone());
            }
        }
    }
    // A full backup stays while a kept incremental builds on it.
    let kept_bases: Vec<u64> = points
        .iter()
        .filter(|p| p.node == node && !p.is_full() && !gone.contains(p))
        .map(|p| p.since)
        .collect();
    gone.retain(|p| !(p.is_full() && kept_bases.contains(&p.index)));
    gone
}

/// The chain that restores `node`'s newest state: its newest point, and
/// for an incremental the full backup it builds on (full first). `None`
/// when there is no point, or the newest incremental's full is missing (and
/// then the newest restorable chain is looked for among the older points).
pub fn newest_chain(points: &[Point], node: &str) -> Option<Vec<Point>> {
    let mut mine: Vec<&Point> = points.iter().filter(|p| p.node == node).collect();
    // Newest state first; at equal state a full backup (one file to read).
    mine.sort_by(|a, b| {
        b.index
            .cmp(&a.index)
            .then(b.is_full().cmp(&a.is_full()))
            .then(b.taken_ms.cmp(&a.taken_ms))
    });
    for p in &mine {
        if p.is_full() {
            return Some(vec![(*p).clone()]);
        }
        if let Some(full) = mine.iter().find(|f| f.is_full() && f.index == p.since) {
            return Some(vec![(*full).clone(), (*p).clone()]);
        }
    }
    None
}

/// The chain that restores the state `point` holds: the point, and for an
/// incremental the full backup of its node it builds on (the newest such,
/// full first). `None` when that full backup is missing.
pub fn chain_to(points: &[Point], point: &Point) -> Option<Vec<Point>> {
    if point.is_full() {
        return Some(vec![point.clone()]);
    }
    points
        .iter()
        .filter(|f| f.node == point.node && f.is_full() && f.index == point.since)
        .max_by_key(|f| f.taken_ms)
        .map(|full| vec![full.clone(), point.clone()])
}

/// The newest restorable chain among every node's points: the one whose
/// newest backup was taken last.
pub fn newest_chain_of_any(points: &[Point]) -> Option<Vec<Point>> {
    let mut nodes: Vec<&str> = points.iter().map(|p| p.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
        .into_iter()
        .filter_map(|n| newest_chain(points, n))
        .max_by_key(|c| c.last().map_or(0, |p| p.taken_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 86_400_000;
    const HOUR_MS: u64 = 3_600_000;

    fn seed_plan() -> Vec<Schedule> {
        vec![
            Schedule {
                name: "daily".into(),
                kind: Kind::Full,
                interval_ms: DAY_MS,
                keep_ms: 30 * DAY_MS,
                keep: 0,
                base: None,
            },
            Schedule {
                name: "hourly".into(),
                kind: Kind::Incremental,
                interval_ms: HOUR_MS,
                keep_ms: 7 * DAY_MS,
                keep: 0,
                base: Some("daily".into()),
            },
            Schedule {
                name: "quarter".into(),
                kind: Kind::Full,
                interval_ms: 15 * 60_000,
                keep_ms: DAY_MS,
                keep: 0,
                base: None,
            },
        ]
    }

    fn point(schedule: &str, taken_ms: u64, index: u64, since: u64) -> Point {
        Point {
            taken_ms,
            index,
            since,
            schedule: schedule.into(),
            node: "us-1".into(),
        }
    }

    #[test]
    fn names_round_trip_and_strangers_are_left_alone() {
        for p in [
            point("daily", 1_750_000_000_000, 42, 0),
            point("hourly", 1_750_000_000_001, 50, 42),
        ] {
            assert_eq!(
                Point::parse(&p.file_name()),
                Some(p.clone()),
                "{}",
                p.file_name()
            );
        }
        let mut dashed = point("daily", 1_750_000_000_000, 1, 0);
        dashed.node = "us-east-1".into();
        assert_eq!(Point::parse(&dashed.file_name()), Some(dashed));
        for stranger in [
            "meridian-us-1-Weekly-1750000000000-1-full.mbak",
            "meridian-us-1-daily-1750000000000-1-full.mbak.partial",
            "meridian-us-1-1750000000000-1.mbak",
            "meridian-us-1-daily-175000000000-1-full.mbak",
            "meridian-us-1-hourly-1750000000000-1-inc0.mbak",
            "my-backup.mbak",
        ] {
            assert_eq!(Point::parse(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn schedules_are_checked() {
        assert_eq!(check(&seed_plan()), Ok(()));
        let mut s = seed_plan();
        s[1].base = Some("weekly".into());
        assert!(matches!(check(&s), Err(PlanError::Base(..))));
        s[1].base = Some("hourly".into());
        assert!(matches!(check(&s), Err(PlanError::Base(..))));
        let mut s = seed_plan();
        s[2].name = "daily".into();
        assert!(matches!(check(&s), Err(PlanError::Name(_))));
        let mut s = seed_plan();
        s[0].name = "Daily-1".into();
        assert!(matches!(check(&s), Err(PlanError::Name(_))));
        let mut s = seed_plan();
        s[0].interval_ms = 10;
        assert!(matches!(check(&s), Err(PlanError::Interval(_))));
    }

    #[test]
    fn fulls_come_first_and_incrementals_build_on_the_newest_full() {
        let s = seed_plan();
        let t0 = 1_750_000_000_000;
        // Nothing yet: the fulls, then the incremental on the daily one.
        let d = due(&s, &[], "us-1", t0).unwrap();
        assert_eq!(d.since, 0);
        let mut points = vec![point(&d.schedule, t0, 10, 0)];
        let d = due(&s, &points, "us-1", t0).unwrap();
        assert_eq!(d.since, 0, "{d:?}");
        points.push(point(&d.schedule, t0, 10, 0));
        let d = due(&s, &points, "us-1", t0).unwrap();
        assert_eq!(
            d,
            Due {
                schedule: "hourly".into(),
                since: 10
            }
        );
        points.push(point("hourly", t0, 10, 10));
        assert_eq!(due(&s, &points, "us-1", t0), None);
        // An hour later: the quarter-hourly full is overdue longest.
        let d = due(&s, &points, "us-1", t0 + HOUR_MS).unwrap();
        assert_eq!((d.schedule.as_str(), d.since), ("quarter", 0));
        // Another node's backups do not count.
        assert!(due(&s, &points, "eu-1", t0).is_some());
    }

    #[test]
    fn retention_keeps_by_age_and_count_and_never_breaks_a_chain() {
        let mut s = seed_plan();
        let t0 = 1_750_000_000_000;
        let mut points = Vec::new();
        // 40 days of dailies, each with 24 hourlies on it.
        for day in 0..40u64 {
            let at = t0 + day * DAY_MS;
            let index = 1_000 * (day + 1);
            points.push(point("daily", at, index, 0));
            for h in 1..24u64 {
                points.push(point("hourly", at + h * HOUR_MS, index + h, index));
            }
        }
        let now = t0 + 40 * DAY_MS;
        let gone = expired(&s, &points, "us-1", now);
        let kept: Vec<&Point> = points.iter().filter(|p| !gone.contains(p)).collect();
        let dailies = kept.iter().filter(|p| p.schedule == "daily").count();
        assert_eq!(dailies, 30, "30 days of dailies");
        let hourlies = kept.iter().filter(|p| p.schedule == "hourly").count();
        assert_eq!(hourlies, 7 * 23, "7 days of hourlies");
        for p in kept.iter().filter(|p| !p.is_full()) {
            assert!(
                kept.iter().any(|f| f.is_full() && f.index == p.since),
                "{p:?} lost its full backup"
            );
        }
        // Dailies kept 2 days only: those that kept hourlies build on stay.
        s[0].keep_ms = 2 * DAY_MS;
        let gone = expired(&s, &points, "us-1", now);
        let kept_dailies: Vec<&Point> = points
            .iter()
            .filter(|p| p.schedule == "daily" && !gone.contains(p))
            .collect();
        assert_eq!(
            kept_dailies.len(),
            7,
            "the hourlies' bases: {kept_dailies:?}"
        );
        // By count, and a schedule's newest is kept whatever its age.
        s[0].keep_ms = 0;
        s[0].keep = 3;
        s[1].keep = 1;
        let gone = expired(&s, &points, "us-1", now + 365 * DAY_MS);
        let kept: Vec<&Point> = points.iter().filter(|p| !gone.contains(p)).collect();
        assert_eq!(kept.len(), 3 + 1, "{kept:?}");
        // A schedule no longer configured: its backups are left alone.
        let gone = expired(&s[1..], &points, "us-1", now + 365 * DAY_MS);
        assert!(gone.iter().all(|p| p.schedule != "daily"));
    }

    #[test]
    fn the_newest_chain_is_a_full_and_at_most_one_incremental() {
        let t0 = 1_750_000_000_000;
        let points = vec![
            point("daily", t0, 100, 0),
            point("hourly", t0 + HOUR_MS, 150, 100),
            point("hourly", t0 + 2 * HOUR_MS, 180, 100),
            point("hourly", t0 + 3 * HOUR_MS, 200, 90), // its full is gone
        ];
        let chain = newest_chain(&points, "us-1").unwrap();
        assert_eq!(chain, vec![points[0].clone(), points[2].clone()]);
        assert_eq!(newest_chain(&points, "eu-1"), None);
        // Nothing changed since the full backup: the full backup alone.
        let quiet = vec![
            point("daily", t0, 100, 0),
            point("hourly", t0 + HOUR_MS, 100, 100),
        ];
        assert_eq!(
            newest_chain(&quiet, "us-1").unwrap(),
            vec![quiet[0].clone()]
        );
        assert_eq!(newest_chain(&points[3..], "us-1"), None);
    }
}
