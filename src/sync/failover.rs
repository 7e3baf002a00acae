//! Prioritized failover: when a standby region takes over from regions that
//! failed, judged by the standby regions together.
//!
//! `[failover] priority` lists the regions in the order they should be
//! active. A standby node judges, at every heartbeat, from what it sees
//! (which regions it reaches, and since when) and what its peers tell it in
//! their [`View`](crate::core::codec::View)s (whether each takes writes,
//! and which regions each cannot reach):
//!
//! 1. An active member in contact in another region: stay (it serves). An
//!    active member in contact in this node's own region: follow it (the
//!    region failed over; its other nodes take writes too).
//! 2. With `majority` (the default), this node must reach a majority of the
//!    regions (the priority list's and every known one): a region cut off
//!    alone never promotes itself.
//! 3. Every region that must be down for this one to take over must be
//!    unreachable from here for at least `after_ms`, and every other standby
//!    region in contact must say it cannot reach it either. Those regions
//!    are the ones known to hold an active member, and every region before
//!    this one in the priority list (a region that comes first and is
//!    reachable will take over itself: this one waits).
//! 4. Then promote.
//!
//! Meridian takes writes in every active region at once, so a promotion
//! while a failed region is in fact alive does not lose data: both take
//! writes, and each key resolves by last-writer-wins (the loser is in the
//! conflict log). A promoted region stays active when the failed one
//! returns; making one a standby again is an operator's act.
//!
//! Pure: times are arguments; nothing here reads a clock.

use crate::core::mutants::{self, Mutant};

/// `[failover]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailoverConfig {
    /// Regions in the order they should be active; empty: no automatic
    /// failover.
    pub priority: Vec<String>,
    /// How long a region must be unreachable before it is failed over.
    pub after_ms: u64,
    /// A region promotes itself only while it reaches a majority of regions.
    pub majority: bool,
}

/// The shortest `after_ms`: a few heartbeats and contact timeouts.
pub const AFTER_MS_MIN: u64 = 5_000;
/// Regions in a priority list, at most.
pub const PRIORITY_REGIONS_MAX: usize = 64;

/// One region as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSeen {
    /// Its name.
    pub region: String,
    /// 0 while one of its members is in contact; else how long none has
    /// been (ms).
    pub unreachable_ms: u64,
}

/// One peer as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSeen {
    /// Its region.
    pub region: String,
    /// It is in contact now.
    pub in_contact: bool,
    /// Its last view said it takes client writes (kept after it is lost).
    pub active: bool,
    /// The regions its last view said it cannot reach.
    pub unreachable: Vec<String>,
}

/// Why a standby stays one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stay {
    /// No `[failover] priority`, or this node is active.
    Off,
    /// This node's region is not in the priority list.
    NotListed,
    /// An active member of this region is in contact.
    ActiveReachable {
        /// Its region.
        region: String,
    },
    /// This node reaches too few regions to judge.
    NoMajority {
        /// Regions reached, this one included.
        reached: usize,
        /// Regions in all.
        regions: usize,
    },
    /// A region before this one in the priority list is reachable: it
    /// takes over first.
    Preceded {
        /// That region.
        region: String,
    },
    /// A region that must be down has not been unreachable long enough.
    Waiting {
        /// That region.
        region: String,
        /// How much longer (ms).
        left_ms: u64,
    },
    /// Another standby region in contact still reaches a region that must
    /// be down.
    NotConfirmed {
        /// The region that must be down.
        region: String,
        /// The region that still reaches it.
        by: String,
    },
}

/// What a standby does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Stays a standby, and why.
    Stay(Stay),
    /// Takes client writes from now on: `failed` are the regions it takes
    /// over from (empty when it follows its own region's promotion).
    Promote {
        /// The regions judged failed.
        failed: Vec<String>,
    },
}

/// Judges whether a standby node of region `mine` takes over. `regions` is
/// every region this node knows, as it sees them; `peers` every peer it
/// knows.
pub fn judge(
    cfg: &FailoverConfig,
    mine: &str,
    regions: &[RegionSeen],
    peers: &[PeerSeen],
) -> Decision {
    if cfg.priority.is_empty() {
        return Decision::Stay(Stay::Off);
    }
    let Some(my_rank) = cfg.priority.iter().position(|r| r == mine) else {
        return Decision::Stay(Stay::NotListed);
    };
    // 1. An active member in contact.
    if peers
        .iter()
        .any(|p| p.in_contact && p.active && p.region == mine)
    {
        return Decision::Promote { failed: Vec::new() };
    }
    if let Some(p) = peers.iter().find(|p| p.in_contact && p.active) {
        return Decision::Stay(Stay::ActiveReachable {
            region: p.region.clone(),
        });
    }
    // How long a region has been out of reach: the caller gives a listed
    // region it never saw as unreachable since it started; one it does not
    // give at all counts as just lost.
    let unreachable_ms = |region: &str| -> u64 {
        if region == mine {
            return 0;
        }
        regions
            .iter()
            .find(|r| r.region == region)
            .map_or(0, |r| r.unreachable_ms)
    };
    let reachable = |region: &str| -> bool {
        region == mine || peers.iter().any(|p| p.region == region && p.in_contact)
    };
    let mut all: Vec<&str> = cfg.priority.iter().map(String::as_str).collect();
    for r in regions {
        if !all.contains(&r.region.as_str()) {
            all.push(&r.region);
        }
    }
    // 2. A majority.
    if cfg.majority {
        let reached = all.iter().filter(|r| reachable(r)).count();
        if reached * 2 <= all.len() {
            return Decision::Stay(Stay::NoMajority {
                reached,
                regions: all.len(),
            });
        }
    }
    // 3. The regions that must be down: those known active, and those
    // before this one.
    let mut must_be_down: Vec<&str> = cfg.priority[..my_rank].iter().map(String::as_str).collect();
    for p in peers.iter().filter(|p| p.active && p.region != mine) {
        if !must_be_down.contains(&p.region.as_str()) {
            must_be_down.push(&p.region);
        }
    }
    for region in &must_be_down {
        if reachable(region) {
            // A reachable active region was handled above: this one is a
            // standby region before ours.
            return Decision::Stay(Stay::Preceded {
                region: region.to_string(),
            });
        }
        let down_ms = unreachable_ms(region);
        let after_ms = if mutants::on(Mutant::FailoverWait) {
            0
        } else {
            cfg.after_ms
        };
        if down_ms < after_ms {
            return Decision::Stay(Stay::Waiting {
                region: region.to_string(),
                left_ms: after_ms - down_ms,
            });
        }
        let still = peers.iter().find(|p| {
            p.in_contact
                && !p.active
                && p.region != mine
                && p.region != *region
                && !p.unreachable.iter().any(|u| u == region)
        });
        if let Some(p) = still {
            return Decision::Stay(Stay::NotConfirmed {
                region: region.to_string(),
                by: p.region.clone(),
            });
        }
    }
    Decision::Promote {
        failed: must_be_down.iter().map(|r| r.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(priority: &[&str]) -> FailoverConfig {
        FailoverConfig {
            priority: priority.iter().map(|s| s.to_string()).collect(),
            after_ms: 60_000,
            majority: true,
        }
    }

    fn region(name: &str, unreachable_ms: u64) -> RegionSeen {
        RegionSeen {
            region: name.into(),
            unreachable_ms,
        }
    }

    fn peer(region: &str, in_contact: bool, active: bool, unreachable: &[&str]) -> PeerSeen {
        PeerSeen {
            region: region.into(),
            in_contact,
            active,
            unreachable: unreachable.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_first_standby_region_takes_over_once_the_active_one_is_down_long_enough() {
        let c = cfg(&["us", "eu", "ap"]);
        // us was active; eu and ap are standbys that reach each other.
        let regions = [region("us", 30_000), region("eu", 0), region("ap", 0)];
        let peers = [
            peer("us", false, true, &[]),
            peer("ap", true, false, &["us"]),
        ];
        assert_eq!(
            judge(&c, "eu", &regions, &peers),
            Decision::Stay(Stay::Waiting {
                region: "us".into(),
                left_ms: 30_000
            })
        );
        let regions = [region("us", 60_000), region("eu", 0), region("ap", 0)];
        assert_eq!(
            judge(&c, "eu", &regions, &peers),
            Decision::Promote {
                failed: vec!["us".into()]
            }
        );
        // ap waits: eu comes first and is reachable.
        let from_ap = [
            peer("us", false, true, &[]),
            peer("eu", true, false, &["us"]),
        ];
        assert_eq!(
            judge(&c, "ap", &regions, &from_ap),
            Decision::Stay(Stay::Preceded {
                region: "eu".into()
            })
        );
        // Once eu is active, ap sees it and stays.
        let from_ap = [
            peer("us", false, true, &[]),
            peer("eu", true, true, &["us"]),
        ];
        assert_eq!(
            judge(&c, "ap", &regions, &from_ap),
            Decision::Stay(Stay::ActiveReachable {
                region: "eu".into()
            })
        );
    }

    #[test]
    fn a_standby_region_cut_off_alone_never_promotes() {
        let c = cfg(&["us", "eu", "ap"]);
        let regions = [
            region("us", 600_000),
            region("eu", 0),
            region("ap", 600_000),
        ];
        let peers = [peer("us", false, true, &[]), peer("ap", false, false, &[])];
        assert_eq!(
            judge(&c, "eu", &regions, &peers),
            Decision::Stay(Stay::NoMajority {
                reached: 1,
                regions: 3
            })
        );
        // Without the majority rule (two regions), it does.
        let two = FailoverConfig {
            majority: false,
            ..cfg(&["us", "eu"])
        };
        let regions = [region("us", 600_000), region("eu", 0)];
        assert_eq!(
            judge(&two, "eu", &regions, &peers[..1]),
            Decision::Promote {
                failed: vec!["us".into()]
            }
        );
    }

    #[test]
    fn a_region_another_standby_still_reaches_is_not_failed_over() {
        let c = cfg(&["us", "eu", "ap"]);
        let regions = [region("us", 90_000), region("eu", 0), region("ap", 0)];
        // Only the link eu-us is cut: ap still reaches us.
        let peers = [peer("us", false, true, &[]), peer("ap", true, false, &[])];
        assert_eq!(
            judge(&c, "eu", &regions, &peers),
            Decision::Stay(Stay::NotConfirmed {
                region: "us".into(),
                by: "ap".into()
            })
        );
    }

    #[test]
    fn an_active_member_in_reach_keeps_standbys_standing_and_a_promoted_one_is_followed() {
        let c = cfg(&["us", "eu"]);
        let regions = [region("us", 0), region("eu", 0)];
        let peers = [peer("us", true, true, &[])];
        assert_eq!(
            judge(&c, "eu", &regions, &peers),
            Decision::Stay(Stay::ActiveReachable {
                region: "us".into()
            })
        );
        // A node of this region was promoted: follow it.
        let peers = [
            peer("us", false, true, &[]),
            peer("eu", true, true, &["us"]),
        ];
        assert_eq!(
            judge(&c, "eu", &regions, &peers),
            Decision::Promote { failed: Vec::new() }
        );
        // Not listed, or no priority at all.
        assert_eq!(
            judge(&c, "ap", &regions, &[]),
            Decision::Stay(Stay::NotListed)
        );
        assert_eq!(
            judge(&FailoverConfig::default(), "eu", &regions, &[]),
            Decision::Stay(Stay::Off)
        );
    }

    #[test]
    fn the_top_region_of_a_cluster_of_standbys_takes_writes() {
        // No active member known at all: the first listed region promotes
        // once it reaches a majority, without waiting on anyone.
        let c = cfg(&["eu", "ap"]);
        let regions = [region("eu", 0), region("ap", 0)];
        let peers = [peer("ap", true, false, &[])];
        assert_eq!(
            judge(&c, "eu", &regions, &peers),
            Decision::Promote { failed: Vec::new() }
        );
        assert_eq!(
            judge(&c, "ap", &regions, &[peer("eu", true, false, &[])]),
            Decision::Stay(Stay::Preceded {
                region: "eu".into()
            })
        );
    }
}
