//! The replica's side of clock-offset judgement (see
//! [`crate::sync::clock_offset`]): probing peers, keeping the judgement,
//! and what it changes: client writes are refused while this node's clock
//! is off, and peers' stamps are checked against the cluster's time when
//! this node's clock is behind it.

use super::{Event, Output, Replica};
use crate::core::codec::Message;
use crate::core::hlc::{ClockError, Hlc};
use crate::core::types::NodeId;
use crate::sync::clock_offset::{judge, Judgement, Sample};

/// What this node knows of its own clock, for status and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockStatus {
    /// The peers' judgement of this node's clock.
    pub judgement: Judgement,
    /// How far this node's clock (the greatest stamp issued or observed)
    /// runs ahead of its physical clock beyond the bound; writes are
    /// refused while it does (0: it does not).
    pub ahead_of_time_ms: u64,
    /// The bound, for messages.
    pub offset_ms_max: u64,
}

impl Replica {
    /// Asks `peer` for its clock (a round trip gives the offset).
    pub(super) fn probe(&mut self, peer: NodeId, now_ms: u64) {
        self.send(peer, Message::Probe { sent_ms: now_ms });
    }

    pub(super) fn on_probe(&mut self, from: NodeId, sent_ms: u64, now_ms: u64) {
        self.send(
            from,
            Message::ProbeReply {
                sent_ms,
                their_ms: now_ms,
            },
        );
    }

    pub(super) fn on_probe_reply(
        &mut self,
        from: NodeId,
        sent_ms: u64,
        their_ms: u64,
        now_ms: u64,
    ) {
        let Some(sample) = Sample::of(sent_ms, their_ms, now_ms) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        p.clock.add(sample);
        self.rejudge(now_ms);
    }

    /// Judges this node's clock again from the peers' estimates; reports a
    /// change of mind.
    pub(super) fn rejudge(&mut self, now_ms: u64) {
        let members = self.members().count() + 1;
        let j = judge(
            self.members().map(|(_, p)| p.clock.estimate(now_ms)),
            members,
            self.cfg.clock_offset_ms_max,
        );
        let was = self.judgement;
        self.judgement = j;
        let disagreed = was.disagreeing > 0;
        if j.off != was.off || (j.disagreeing > 0) != disagreed {
            self.staged.push(Output::Event(Event::ClockOffset {
                offset_ms: j.offset_ms.unwrap_or(0),
                disagreeing: j.disagreeing,
                members: j.members,
                off: j.off,
            }));
        }
    }

    /// The physical time to check peers' stamps against: ours, or the
    /// cluster's when ours is judged behind it.
    pub(super) fn checked_now(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.judgement.correction_ms())
    }

    /// What the peers' clocks say of this node's, and whether its own clock
    /// runs ahead of time.
    pub fn clock_status(&self, now_ms: u64) -> ClockStatus {
        ClockStatus {
            judgement: self.judgement,
            ahead_of_time_ms: self.clock.ahead_of(now_ms),
            offset_ms_max: self.cfg.clock_offset_ms_max,
        }
    }

    /// Refuses (and reports) a message whose stamps run too far ahead of our clock.
    /// Stamps are checked against our clock, or the cluster's when ours
    /// is judged behind it: a correct peer is not refused because our
    /// clock is wrong.
    pub(super) fn check_skew(
        &mut self,
        from: NodeId,
        stamps: impl Iterator<Item = Hlc>,
        now_ms: u64,
    ) -> bool {
        let mut worst: Option<u64> = None;
        let checked = self.checked_now(now_ms);
        for s in stamps {
            if let Err(ClockError::AheadOfClock { ahead_ms, .. }) = self.clock.check(s, checked) {
                worst = Some(worst.map_or(ahead_ms, |w| w.max(ahead_ms)));
            }
        }
        match worst {
            None => true,
            Some(ahead_ms) => {
                self.metrics.clock_skew_refusals += 1;
                if let Some(p) = self.peers.get_mut(&from) {
                    p.refused_ms = now_ms;
                    p.refused_ahead_ms = ahead_ms;
                }
                self.staged.push(Output::Event(Event::ClockSkew {
                    peer: from,
                    ahead_ms,
                }));
                false
            }
        }
    }
}
