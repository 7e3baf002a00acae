//! The replica's timers as one table (after quinn-proto's
//! `connection/timer.rs`): each [`Timer`] is unset or due at a physical
//! time in ms; [`Replica::tick`](super::Replica::tick) runs the expired
//! ones, and the earliest is when the driver must call it next.

/// What the replica does at a time of its choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Push the local writes batched since the first one (set by a write).
    Push,
    /// Push to the edges the changes of other origins applied here since
    /// the first one (set when a server applies a peer's change).
    EdgePush,
    /// On an edge: acknowledge its server's feed (acknowledgements are
    /// batched; see `replica/edge.rs`).
    EdgeAck,
    /// Heartbeats: clock probes, feed ends, retransmissions, contact.
    Heartbeat,
    /// Start an anti-entropy round with a random peer.
    AntiEntropy,
    /// Collect tombstones.
    Gc,
    /// Check the next batch of records against their checks.
    Scrub,
}

impl Timer {
    const COUNT: usize = 7;
    const ALL: [Timer; Timer::COUNT] = [
        Timer::Push,
        Timer::EdgePush,
        Timer::EdgeAck,
        Timer::Heartbeat,
        Timer::AntiEntropy,
        Timer::Gc,
        Timer::Scrub,
    ];
}

/// When each timer is due (ms), if it is set.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TimerTable {
    due_ms: [Option<u64>; Timer::COUNT],
}

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, due_ms: u64) {
        self.due_ms[timer as usize] = Some(due_ms);
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.due_ms[timer as usize] = None;
    }

    pub(super) fn is_set(&self, timer: Timer) -> bool {
        self.due_ms[timer as usize].is_some()
    }

    /// Sets `timer` to `due_ms` if that is sooner (or it is unset).
    pub(super) fn set_sooner(&mut self, timer: Timer, due_ms: u64) {
        let slot = &mut self.due_ms[timer as usize];
        *slot = Some(slot.map_or(due_ms, |t| t.min(due_ms)));
    }

    /// Brings a set `timer` back to `due_ms` if it is due later (a
    /// physical clock that went back must not leave it far away).
    pub(super) fn bring_back(&mut self, timer: Timer, due_ms: u64) {
        if let Some(t) = self.due_ms[timer as usize].as_mut() {
            *t = (*t).min(due_ms);
        }
    }

    /// True if `timer` is set and due at or before `now_ms`.
    pub(super) fn expired(&self, timer: Timer, now_ms: u64) -> bool {
        self.due_ms[timer as usize].is_some_and(|t| t <= now_ms)
    }

    /// The earliest time a timer is due.
    pub(super) fn next_ms(&self) -> Option<u64> {
        Timer::ALL
            .iter()
            .filter_map(|t| self.due_ms[*t as usize])
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_keeps_each_timer_and_the_earliest() {
        let mut t = TimerTable::default();
        assert_eq!(t.next_ms(), None);
        t.set(Timer::Gc, 50);
        t.set(Timer::Heartbeat, 30);
        assert_eq!(t.next_ms(), Some(30));
        assert!(t.expired(Timer::Heartbeat, 30) && !t.expired(Timer::Gc, 49));
        t.set_sooner(Timer::Gc, 70);
        t.set_sooner(Timer::Push, 90);
        assert!(t.expired(Timer::Gc, 50) && t.is_set(Timer::Push));
        t.bring_back(Timer::Gc, 10);
        t.bring_back(Timer::Scrub, 5);
        assert_eq!(t.next_ms(), Some(10));
        assert!(!t.is_set(Timer::Scrub));
        t.stop(Timer::Gc);
        assert_eq!(t.next_ms(), Some(30));
    }
}
