//! Clock-offset judgement: how far this node's clock is from its peers',
//! and whether it is this node's clock that is wrong.
//!
//! Owns the estimate of each peer's clock offset from round trips (a probe
//! carries the sender's clock; the reply carries the probe's and the
//! replier's clocks, so offset = theirs − (sent + received) / 2, good to
//! within half the round trip), and the judgement over all peers (design §3,
//! "Clock skew"). A peer *disagrees* when its offset is beyond the bound by
//! more than the estimate's uncertainty. This node's clock is *off* when a
//! majority of the cluster's members (this one included) disagree with it:
//! it cannot be the others that are wrong. Then it refuses client writes
//! (they would lose, or never leave it), and when its clock is behind it
//! accepts peers' stamps up to the estimated cluster time rather than
//! refusing correct peers. With two members neither outvotes the other:
//! both report the disagreement and neither refuses.
//!
//! Pure: times are arguments; nothing here reads a clock.

use std::collections::VecDeque;

/// Samples kept per peer (one a heartbeat: the last 8 s or so).
pub const SAMPLES_MAX: usize = 8;
/// Samples older than this no longer count (a clock that was fixed is
/// judged by its new samples soon).
pub const SAMPLE_AGE_MS_MAX: u64 = 15_000;

/// One round trip to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The peer's clock minus ours (ms): positive when theirs is ahead.
    pub offset_ms: i64,
    /// The round trip (ms); the offset is good to within half of it.
    pub rtt_ms: u64,
    /// When the reply arrived (our clock).
    pub at_ms: u64,
}

impl Sample {
    /// The sample of a probe sent at `sent_ms` (our clock), answered at
    /// `their_ms` (theirs), whose reply arrived at `now_ms` (ours); `None`
    /// when our clock went back meanwhile.
    pub fn of(sent_ms: u64, their_ms: u64, now_ms: u64) -> Option<Sample> {
        let rtt_ms = now_ms.checked_sub(sent_ms)?;
        let mid = sent_ms as i128 + rtt_ms as i128 / 2;
        let offset = (their_ms as i128 - mid).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        Some(Sample {
            offset_ms: offset,
            rtt_ms,
            at_ms: now_ms,
        })
    }

    /// Beyond `bound_ms` by more than the estimate's uncertainty.
    pub fn disagrees(&self, bound_ms: u64) -> bool {
        self.offset_ms.unsigned_abs() > bound_ms.saturating_add(self.rtt_ms / 2)
    }
}

/// The recent round trips to one peer.
#[derive(Debug, Clone, Default)]
pub struct PeerClock {
    samples: VecDeque<Sample>,
}

impl PeerClock {
    /// Records a sample, dropping the oldest beyond [`SAMPLES_MAX`].
    pub fn add(&mut self, s: Sample) {
        if self.samples.len() == SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    /// The best recent estimate: the fresh sample with the shortest round
    /// trip (the least uncertain), the newest of those.
    pub fn estimate(&self, now_ms: u64) -> Option<Sample> {
        self.samples
            .iter()
            .rev()
            .filter(|s| now_ms.saturating_sub(s.at_ms) <= SAMPLE_AGE_MS_MAX && s.at_ms <= now_ms)
            .min_by_key(|s| s.rtt_ms)
            .copied()
    }
}

/// What the peers' clocks say about this node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Judgement {
    /// Peers with a fresh estimate.
    pub measured: usize,
    /// Of those, how many disagree with this node beyond the bound.
    pub disagreeing: usize,
    /// Members of the cluster, this node included.
    pub members: usize,
    /// The median offset of the disagreeing peers (theirs minus ours),
    /// or of all measured peers when none disagrees.
    pub offset_ms: Option<i64>,
    /// A majority of the members disagree: this node's clock is the wrong one.
    pub off: bool,
}

impl Judgement {
    /// How much to add to this node's clock when checking peers' stamps:
    /// the estimated lead of the cluster's clocks when this node's is off
    /// and behind; else 0.
    pub fn correction_ms(&self) -> u64 {
        match self.offset_ms {
            Some(o) if self.off && o > 0 => o as u64,
            _ => 0,
        }
    }
}

/// Judges this node's clock from the estimates of its peers.
pub fn judge(
    estimates: impl IntoIterator<Item = Option<Sample>>,
    members: usize,
    bound_ms: u64,
) -> Judgement {
    let fresh: Vec<Sample> = estimates.into_iter().flatten().collect();
    let mut off: Vec<i64> = fresh
        .iter()
        .filter(|s| s.disagrees(bound_ms))
        .map(|s| s.offset_ms)
        .collect();
    let disagreeing = off.len();
    let mut all: Vec<i64> = fresh.iter().map(|s| s.offset_ms).collect();
    let pick = if off.is_empty() { &mut all } else { &mut off };
    pick.sort_unstable();
    let offset_ms = pick.get(pick.len() / 2).copied();
    Judgement {
        measured: fresh.len(),
        disagreeing,
        members,
        offset_ms,
        off: disagreeing * 2 > members,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(offset_ms: i64, rtt_ms: u64) -> Option<Sample> {
        Some(Sample {
            offset_ms,
            rtt_ms,
            at_ms: 1_000,
        })
    }

    #[test]
    fn a_round_trip_gives_the_offset_within_half_the_round_trip() {
        // Sent at 1000 (ours), answered at 4000 (theirs), back at 1100 (ours).
        let x = Sample::of(1_000, 4_000, 1_100).unwrap();
        assert_eq!((x.offset_ms, x.rtt_ms), (2_950, 100));
        // Our clock went back: no sample.
        assert_eq!(Sample::of(1_000, 4_000, 900), None);
        // The uncertainty widens the bound.
        assert!(!Sample {
            offset_ms: 600,
            rtt_ms: 300,
            at_ms: 0
        }
        .disagrees(500));
        assert!(Sample {
            offset_ms: -700,
            rtt_ms: 300,
            at_ms: 0
        }
        .disagrees(500));
    }

    #[test]
    fn the_best_fresh_sample_is_the_estimate() {
        let mut p = PeerClock::default();
        p.add(Sample {
            offset_ms: 10,
            rtt_ms: 50,
            at_ms: 0,
        });
        p.add(Sample {
            offset_ms: 20,
            rtt_ms: 5,
            at_ms: 100,
        });
        p.add(Sample {
            offset_ms: 30,
            rtt_ms: 9,
            at_ms: 200,
        });
        assert_eq!(p.estimate(300).unwrap().offset_ms, 20);
        assert_eq!(p.estimate(SAMPLE_AGE_MS_MAX + 150).unwrap().offset_ms, 30);
        assert_eq!(p.estimate(SAMPLE_AGE_MS_MAX + 500), None);
        // Of equal round trips, the newest: a clock that was fixed shows.
        p.add(Sample {
            offset_ms: 40,
            rtt_ms: 5,
            at_ms: 300,
        });
        assert_eq!(p.estimate(400).unwrap().offset_ms, 40);
        for i in 0..20 {
            p.add(Sample {
                offset_ms: i,
                rtt_ms: 100,
                at_ms: 1_000,
            });
        }
        assert_eq!(p.samples.len(), SAMPLES_MAX);
    }

    #[test]
    fn a_clock_is_off_only_against_a_majority() {
        // Three members, both peers an hour ahead: this clock is an hour slow.
        let j = judge([s(3_600_000, 20), s(3_600_010, 30)], 3, 500);
        assert!(j.off);
        assert_eq!(j.offset_ms, Some(3_600_010));
        assert_eq!(j.correction_ms(), 3_600_010);
        // One fast peer of two: it is the peer that is wrong.
        let j = judge([s(3_600_000, 20), s(10, 20)], 3, 500);
        assert!(!j.off);
        assert_eq!(j.disagreeing, 1);
        assert_eq!(j.correction_ms(), 0);
        // Two members: neither outvotes the other.
        let j = judge([s(-3_600_000, 20)], 2, 500);
        assert!(!j.off && j.disagreeing == 1);
        // This clock fast: peers behind, nothing to correct when checking
        // their stamps (they are not ahead).
        let j = judge([s(-3_600_000, 20), s(-3_600_000, 20)], 3, 500);
        assert!(j.off);
        assert_eq!(j.correction_ms(), 0);
        // Unmeasured peers count as members, not as votes.
        let j = judge([s(3_600_000, 20), None, None], 4, 500);
        assert!(!j.off);
        assert_eq!(j.measured, 1);
    }
}
