//! Health: a node's status judged against the three alert thresholds of a
//! multi-region config system (sync lag, partition duration, peer down).
//!
//! Pure: it reads a [`NodeStatus`] (which carries its own `now_ms`) and
//! returns the reasons the node is unhealthy; the HTTP layer turns a
//! non-empty list into a 503.

use serde::{Deserialize, Serialize};

pub use super::wire::{HealthCheck, Reason};
use crate::node::NodeStatus;

/// When a node stops being healthy. Every field is in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// A connected peer whose writes we have not fully held for this long. Default 10 s.
    pub sync_lag_ms_max: u64,
    /// A region unreachable for this long. Default 60 s.
    pub partition_ms_max: u64,
    /// A peer out of contact for this long. Default 30 s.
    pub peer_down_ms_max: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            sync_lag_ms_max: 10_000,
            partition_ms_max: 60_000,
            peer_down_ms_max: 30_000,
        }
    }
}

/// What the node's operator-side tasks (scheduled backups and drills, run
/// by the daemon) say of its health and in its metrics. The daemon installs
/// one in [`super::ApiConfig::extra`]; `/v1/health`, `/v1/status` and
/// `/metrics` add what it says.
pub trait Extra: Send + Sync + std::fmt::Debug {
    /// Reasons the node is unhealthy at `now_ms`; empty when none.
    fn reasons(&self, now_ms: u64) -> Vec<Reason>;
    /// Its metrics at `now_ms`.
    fn samples(&self, now_ms: u64) -> Vec<super::metrics::Sample>;
}

/// Every reason `status` is unhealthy under `t`; empty when healthy.
pub fn assess(status: &NodeStatus, t: &Thresholds) -> Vec<Reason> {
    let now = status.now_ms;
    let r = &status.replica;
    let mut out = Vec::new();
    let peers_done = r.recovery.as_ref().map_or(String::new(), |c| {
        format!(" ({} of {} peers done)", c.peers_done, c.peers)
    });
    if r.store_lost {
        out.push(Reason {
            check: HealthCheck::StoreLost,
            subject: String::new(),
            for_ms: now.saturating_sub(status.started_ms),
            threshold_ms: 0,
            message: format!(
                "the store could not be read (moved aside): taking every peer's state, \
                 refusing writes until then{peers_done}"
            ),
        });
    } else if let Some(c) = &r.recovery {
        out.push(Reason {
            check: HealthCheck::Recovering,
            subject: String::new(),
            for_ms: now.saturating_sub(c.since_ms),
            threshold_ms: 0,
            message: format!(
                "records were found damaged: taking every peer's state before this node \
                 claims to hold its writes again; tombstones wait{peers_done}"
            ),
        });
    } else if r.rebuilding {
        out.push(Reason {
            check: HealthCheck::Rebuilding,
            subject: String::new(),
            for_ms: now.saturating_sub(status.started_ms),
            threshold_ms: 0,
            message: "the node is rebuilding its state from a peer".to_string(),
        });
    }
    if let Some(t) = &status.store_trouble {
        let for_ms = now.saturating_sub(t.since_ms);
        out.push(Reason {
            check: if t.disk_full {
                HealthCheck::DiskFull
            } else {
                HealthCheck::StoreError
            },
            subject: String::new(),
            for_ms,
            threshold_ms: 0,
            message: if t.disk_full {
                format!(
                    "the disk is full: writes refused for {for_ms} ms, reads served ({})",
                    t.error
                )
            } else {
                format!(
                    "the store refuses commits: writes refused for {for_ms} ms ({})",
                    t.error
                )
            },
        });
    }
    if r.quarantined > 0 {
        let oldest = r.quarantine.iter().map(|q| q.since_ms).min().unwrap_or(now);
        let named: Vec<&str> = r
            .quarantine
            .iter()
            .take(5)
            .map(|q| q.key.as_str())
            .collect();
        out.push(Reason {
            check: HealthCheck::Quarantine,
            subject: String::new(),
            for_ms: now.saturating_sub(oldest),
            threshold_ms: 0,
            message: format!(
                "{} records failed their integrity check and are quarantined until repaired \
                 from a peer ({}{})",
                r.quarantined,
                named.join(", "),
                if r.quarantined > named.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
        });
    }
    if r.refusing_writes_no_quorum {
        let lost = r
            .regions
            .iter()
            .filter(|g| !g.reachable)
            .map(|g| now.saturating_sub(g.since_ms))
            .min()
            .unwrap_or(0);
        out.push(Reason {
            check: HealthCheck::NoQuorum,
            subject: String::new(),
            for_ms: lost,
            threshold_ms: 0,
            message: format!(
                "client writes are refused (partition_policy = quorum): {} of {} regions reachable",
                r.reachable_regions.len(),
                r.total_regions
            ),
        });
    }
    let c = &r.clock;
    let j = &c.judgement;
    if j.disagreeing > 0 && (j.off || j.members <= 2) {
        let offset = j.offset_ms.unwrap_or(0);
        let way = if offset > 0 { "behind" } else { "ahead of" };
        out.push(Reason {
            check: HealthCheck::ClockOffset,
            subject: String::new(),
            for_ms: offset.unsigned_abs(),
            threshold_ms: c.offset_ms_max,
            message: if j.off {
                format!(
                    "this node's clock is {} ms {way} {} of the {} other members: client writes \
                     are refused until it is fixed",
                    offset.unsigned_abs(),
                    j.disagreeing,
                    j.members - 1
                )
            } else {
                format!(
                    "this node's clock and its only peer's differ by {} ms (bound {} ms): one \
                     of them is wrong",
                    offset.unsigned_abs(),
                    c.offset_ms_max
                )
            },
        });
    }
    if c.ahead_of_time_ms > 0 {
        out.push(Reason {
            check: HealthCheck::ClockAhead,
            subject: String::new(),
            for_ms: c.ahead_of_time_ms,
            threshold_ms: c.offset_ms_max,
            message: format!(
                "this node's clock already reached stamps {} ms beyond its physical clock and \
                 the bound: client writes are refused until the physical clock catches up",
                c.ahead_of_time_ms
            ),
        });
    }
    for p in &r.peers {
        // A minority of peers whose clocks disagree with ours: theirs are wrong.
        if let Some(o) = p.clock_offset_ms {
            let beyond = o.unsigned_abs() > c.offset_ms_max + p.rtt_ms.unwrap_or(0) / 2;
            if beyond && !j.off && j.members > 2 {
                out.push(Reason {
                    check: HealthCheck::PeerClock,
                    subject: p.name.clone(),
                    for_ms: o.unsigned_abs(),
                    threshold_ms: c.offset_ms_max,
                    message: format!(
                        "peer {} ({}) has its clock {} ms {} this node's and most members'",
                        p.name,
                        p.region,
                        o.unsigned_abs(),
                        if o > 0 { "ahead of" } else { "behind" }
                    ),
                });
            }
        }
        if p.connected {
            // Never fully synced: lagging since the connection came up.
            let since = if p.in_sync_at_ms == 0 {
                p.connected_at_ms
            } else {
                p.in_sync_at_ms
            };
            let lag = now.saturating_sub(since);
            if lag > t.sync_lag_ms_max {
                out.push(Reason {
                    check: HealthCheck::SyncLag,
                    subject: p.name.clone(),
                    for_ms: lag,
                    threshold_ms: t.sync_lag_ms_max,
                    message: format!(
                        "peer {} ({}) has not been fully synced for {lag} ms ({} changes behind){}",
                        p.name,
                        p.region,
                        p.lag_index,
                        if p.refused_at_ms > since {
                            format!(
                                "; its changes are refused: its stamps run {} ms ahead of our clock",
                                p.refused_ahead_ms
                            )
                        } else {
                            String::new()
                        }
                    ),
                });
            }
        } else {
            // Never heard: it is known from membership only; count from our start.
            let since = if p.last_heard_ms == 0 {
                status.started_ms
            } else {
                p.last_heard_ms
            };
            let down = now.saturating_sub(since);
            if down > t.peer_down_ms_max {
                out.push(Reason {
                    check: HealthCheck::PeerDown,
                    subject: p.name.clone(),
                    for_ms: down,
                    threshold_ms: t.peer_down_ms_max,
                    message: format!("peer {} ({}) unreachable for {down} ms", p.name, p.region),
                });
            }
        }
    }
    for g in &r.regions {
        if g.reachable || g.region == r.region {
            continue;
        }
        let cut = now.saturating_sub(g.since_ms);
        if cut > t.partition_ms_max {
            out.push(Reason {
                check: HealthCheck::Partition,
                subject: g.region.clone(),
                for_ms: cut,
                threshold_ms: t.partition_ms_max,
                message: format!("region {} unreachable for {cut} ms", g.region),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hlc::Hlc;
    use crate::core::types::NodeId;
    use crate::sync::{Metrics, PeerStatus, RegionStatus, Status};

    fn status(now_ms: u64, peers: Vec<PeerStatus>, regions: Vec<RegionStatus>) -> NodeStatus {
        NodeStatus {
            replica: Status {
                node: NodeId(1),
                region: "us".into(),
                index: 0,
                root: [0; 32],
                keys: 0,
                tombstones: 0,
                rebuilding: false,
                rebuild_from: None,
                failover: crate::sync::FailoverState::Off,
                standby: false,
                peers,
                reachable_regions: vec!["us".into()],
                regions,
                total_regions: 2,
                quorum: true,
                conflicts: 0,
                gc_floor: Hlc(0),
                frontier: Hlc(0),
                quarantined: 0,
                quarantine: Vec::new(),
                store_lost: false,
                recovery: None,
                clock: Default::default(),
                refusing_writes_no_quorum: false,
                quorum_writes_waiting: 0,
                edge: false,
                edges: 0,
                edges_lag_index_max: 0,
                local_writes_waiting: 0,
            },
            metrics: Metrics::default(),
            frames_in: 0,
            frames_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            frames_dropped: 0,
            malformed_frames: 0,
            peers_refused: 0,
            commits: 0,
            recent_events: Vec::new(),
            members: Vec::new(),
            now_ms,
            started_ms: 1_000,
            commit_latency: Default::default(),
            store_trouble: None,
        }
    }

    fn peer(connected: bool, in_sync_at_ms: u64, last_heard_ms: u64) -> PeerStatus {
        PeerStatus {
            node: NodeId(2),
            name: "eu-1".into(),
            region: "eu".into(),
            api: String::new(),
            connected,
            stale: false,
            lag_index: 3,
            in_sync_at_ms,
            connected_at_ms: 1_000,
            last_heard_ms,
            acked: 0,
            applied: 0,
            received: Hlc(0),
            frontier: Hlc(0),
            clock_offset_ms: None,
            rtt_ms: None,
            refused_at_ms: 0,
            refused_ahead_ms: 0,
        }
    }

    fn region(reachable: bool, since_ms: u64) -> RegionStatus {
        RegionStatus {
            region: "eu".into(),
            reachable,
            since_ms,
        }
    }

    #[test]
    fn healthy_within_every_threshold() {
        let t = Thresholds::default();
        let s = status(
            100_000,
            vec![peer(true, 95_000, 99_000)],
            vec![region(true, 0)],
        );
        assert!(assess(&s, &t).is_empty());
    }

    #[test]
    fn each_threshold_is_reported_once_exceeded() {
        let t = Thresholds::default();
        let lagging = status(
            100_000,
            vec![peer(true, 89_000, 99_000)],
            vec![region(true, 0)],
        );
        let r = assess(&lagging, &t);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].check, r[0].for_ms), (HealthCheck::SyncLag, 11_000));
        // Connected but never fully synced: lagging since it connected.
        let never = status(100_000, vec![peer(true, 0, 99_000)], vec![region(true, 0)]);
        assert_eq!(assess(&never, &t)[0].for_ms, 99_000);

        let down = status(
            100_000,
            vec![peer(false, 50_000, 69_000)],
            vec![region(true, 0)],
        );
        let r = assess(&down, &t);
        assert_eq!((r[0].check, r[0].for_ms), (HealthCheck::PeerDown, 31_000));
        // Just under the threshold: healthy.
        let recent = status(
            100_000,
            vec![peer(false, 50_000, 71_000)],
            vec![region(true, 0)],
        );
        assert!(assess(&recent, &t).is_empty());

        let cut = status(100_000, Vec::new(), vec![region(false, 39_000)]);
        let r = assess(&cut, &t);
        assert_eq!(
            (r[0].check, r[0].subject.as_str()),
            (HealthCheck::Partition, "eu")
        );

        let mut rebuilding = status(100_000, Vec::new(), Vec::new());
        rebuilding.replica.rebuilding = true;
        assert_eq!(assess(&rebuilding, &t)[0].check, HealthCheck::Rebuilding);
    }
}
