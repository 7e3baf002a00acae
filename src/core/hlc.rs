//! Hybrid logical clock.
//!
//! Owns the packing of 48 bits of physical milliseconds and a 16-bit logical
//! counter into one `u64`, the local clock's monotonic advance, the merge of
//! remote timestamps and the clock-offset bound (design §3, "Clock skew").
//!
//! This module never reads a clock: the physical time `now_ms` is always an
//! argument, so the simulation can drive it with virtual, skewed time.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::mutants::{self, Mutant};

/// Bits of the logical counter in a packed [`Hlc`].
pub const LOGICAL_BITS: u32 = 16;
/// Largest logical counter value.
pub const LOGICAL_MAX: u64 = (1 << LOGICAL_BITS) - 1;
/// Largest physical time (ms since the Unix epoch) a [`Hlc`] can hold.
pub const PHYSICAL_MS_MAX: u64 = (1 << (64 - LOGICAL_BITS)) - 1;
/// Default bound on how far a remote stamp may run ahead of the local clock.
pub const CLOCK_OFFSET_MS_MAX_DEFAULT: u64 = 500;

/// A hybrid logical timestamp: physical milliseconds in the high 48 bits,
/// a logical counter in the low 16. Ordered as the packed integer.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The least timestamp: below every one a clock issues.
    pub const ZERO: Hlc = Hlc(0);
    /// The greatest timestamp.
    pub const MAX: Hlc = Hlc(u64::MAX);

    /// Packs `physical_ms` (truncated to 48 bits by the caller's checks) and `logical`.
    pub fn new(physical_ms: u64, logical: u16) -> Hlc {
        debug_assert!(physical_ms <= PHYSICAL_MS_MAX);
        Hlc((physical_ms << LOGICAL_BITS) | u64::from(logical))
    }

    /// The physical part: milliseconds since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter, which orders stamps issued in the same millisecond.
    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MAX) as u16
    }
}

/// Why the clock refused a tick or a remote timestamp.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClockError {
    /// A remote timestamp is further ahead of our physical clock than allowed.
    #[error("remote clock is {ahead_ms} ms ahead of ours (physical {remote_ms} ms vs {now_ms} ms; bound {offset_ms_max} ms)")]
    AheadOfClock {
        /// The physical part of the remote timestamp, in ms.
        remote_ms: u64,
        /// Our physical time, in ms.
        now_ms: u64,
        /// How far the remote timestamp is ahead of `now_ms`, in ms.
        ahead_ms: u64,
        /// The bound it broke, in ms.
        offset_ms_max: u64,
    },
    /// 65,536 stamps were issued in one millisecond and the next one would
    /// carry the clock past `now + clock_offset_ms_max`.
    #[error("hybrid clock exhausted: logical counter full and physical time may not run more than {offset_ms_max} ms ahead of {now_ms} ms")]
    Exhausted {
        /// Our physical time, in ms.
        now_ms: u64,
        /// The bound on how far the clock may run ahead of it, in ms.
        offset_ms_max: u64,
    },
    /// The physical time does not fit in 48 bits of milliseconds.
    #[error("physical time {now_ms} ms is out of range (max {PHYSICAL_MS_MAX})")]
    OutOfRange {
        /// The physical time given, in ms.
        now_ms: u64,
    },
    /// This clock already issued or observed stamps further ahead of the
    /// physical time than the bound (the physical clock went back, or the
    /// node restarted with a stored clock from the future): a new stamp
    /// would come from the future too.
    #[error(
        "this node's clock already reached {last_ms} ms, {ahead_ms} ms ahead of its physical \
         clock ({now_ms} ms; bound {offset_ms_max} ms): writes resume when the physical clock \
         catches up (a clock that ran fast, or went back?)"
    )]
    AheadOfTime {
        /// The physical part of the greatest timestamp issued or observed, in ms.
        last_ms: u64,
        /// Our physical time, in ms.
        now_ms: u64,
        /// How far `last_ms` is ahead of `now_ms`, in ms.
        ahead_ms: u64,
        /// The bound it broke, in ms.
        offset_ms_max: u64,
    },
}

/// The local hybrid logical clock: monotonic, never more than
/// `offset_ms_max` ahead of the physical time it is given.
#[derive(Debug, Clone)]
pub struct Clock {
    last: Hlc,
    offset_ms_max: u64,
}

impl Clock {
    /// A fresh clock (no stamp issued yet) that stays within `offset_ms_max` ms of physical time.
    pub fn new(offset_ms_max: u64) -> Clock {
        Clock::restore(Hlc::ZERO, offset_ms_max)
    }

    /// A clock that resumes after `last` (read back from durable state), so
    /// that it never issues a stamp it issued before a restart.
    pub fn restore(last: Hlc, offset_ms_max: u64) -> Clock {
        Clock {
            last,
            offset_ms_max,
        }
    }

    /// The greatest timestamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// The bound, in ms, on how far stamps may run ahead of physical time.
    pub fn offset_ms_max(&self) -> u64 {
        self.offset_ms_max
    }

    /// How far the last stamp issued or observed is ahead of `now_ms`
    /// beyond the bound (0 when within it).
    pub fn ahead_of(&self, now_ms: u64) -> u64 {
        self.last
            .physical_ms()
            .saturating_sub(now_ms.saturating_add(self.offset_ms_max))
    }

    /// Issues a new timestamp, strictly greater than every one issued or
    /// observed; refused while those run ahead of `now_ms` by more than the
    /// bound (the stamp would come from the future).
    pub fn tick(&mut self, now_ms: u64) -> Result<Hlc, ClockError> {
        if now_ms > PHYSICAL_MS_MAX {
            return Err(ClockError::OutOfRange { now_ms });
        }
        let last_ms = self.last.physical_ms();
        if last_ms > now_ms.saturating_add(self.offset_ms_max) {
            return Err(ClockError::AheadOfTime {
                last_ms,
                now_ms,
                ahead_ms: last_ms - now_ms,
                offset_ms_max: self.offset_ms_max,
            });
        }
        let next = if now_ms > last_ms {
            Hlc::new(now_ms, 0)
        } else if u64::from(self.last.logical()) < LOGICAL_MAX {
            Hlc(self.last.0 + 1)
        } else {
            let ms = last_ms + 1;
            if ms > now_ms.saturating_add(self.offset_ms_max) || ms > PHYSICAL_MS_MAX {
                return Err(ClockError::Exhausted {
                    now_ms,
                    offset_ms_max: self.offset_ms_max,
                });
            }
            Hlc::new(ms, 0)
        };
        debug_assert!(next > self.last);
        self.last = next;
        Ok(next)
    }

    /// The next logical step past every stamp issued or observed, however
    /// far those run ahead of physical time: for a write ordered by what
    /// it holds, not by its stamp (a merge of document versions, ordered by
    /// the newest write it merged), which needs only a stamp no other
    /// write has. It moves the clock one logical step, never its physical
    /// part. Fails only when the logical counter of `last` is used up.
    pub fn tick_logical(&mut self, now_ms: u64) -> Result<Hlc, ClockError> {
        if u64::from(self.last.logical()) >= LOGICAL_MAX {
            return Err(ClockError::Exhausted {
                now_ms,
                offset_ms_max: self.offset_ms_max,
            });
        }
        self.last = Hlc(self.last.0 + 1);
        Ok(self.last)
    }

    /// Checks a remote timestamp against the offset bound without observing it.
    pub fn check(&self, remote: Hlc, now_ms: u64) -> Result<(), ClockError> {
        if mutants::on(Mutant::ClockOffsetBound) {
            return Ok(());
        }
        let remote_ms = remote.physical_ms();
        let bound_ms = now_ms.saturating_add(self.offset_ms_max);
        if remote_ms > bound_ms {
            return Err(ClockError::AheadOfClock {
                remote_ms,
                now_ms,
                ahead_ms: remote_ms - now_ms,
                offset_ms_max: self.offset_ms_max,
            });
        }
        Ok(())
    }

    /// Merges a remote timestamp: later ticks are greater than it. A
    /// timestamp beyond the offset bound is refused and leaves the clock as it was.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<(), ClockError> {
        self.check(remote, now_ms)?;
        if remote > self.last {
            self.last = remote;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_orders() {
        let a = Hlc::new(1_000, 7);
        assert_eq!(a.physical_ms(), 1_000);
        assert_eq!(a.logical(), 7);
        assert!(Hlc::new(1_000, 8) > a);
        assert!(Hlc::new(1_001, 0) > Hlc::new(1_000, u16::MAX));
    }

    #[test]
    fn tick_is_monotonic_when_time_stands_still_or_goes_back() {
        let mut c = Clock::new(500);
        let a = c.tick(1_000).unwrap();
        let b = c.tick(1_000).unwrap();
        let d = c.tick(900).unwrap();
        assert!(a < b && b < d);
        assert_eq!(d.physical_ms(), 1_000);
        assert_eq!(d.logical(), 2);
    }

    #[test]
    fn refuses_remote_stamp_beyond_offset_and_stays_put() {
        let mut c = Clock::new(500);
        c.tick(1_000).unwrap();
        let before = c.last();
        let err = c.observe(Hlc::new(1_501, 0), 1_000).unwrap_err();
        assert!(matches!(
            err,
            ClockError::AheadOfClock { ahead_ms: 501, .. }
        ));
        assert_eq!(c.last(), before);
        c.observe(Hlc::new(1_500, 3), 1_000).unwrap();
        let next = c.tick(1_000).unwrap();
        assert_eq!(next, Hlc::new(1_500, 4));
    }

    #[test]
    fn a_clock_ahead_of_time_refuses_to_stamp_until_time_catches_up() {
        // Restarted with a stored clock an hour ahead (it ran fast before).
        let mut c = Clock::restore(Hlc::new(1_000 + 3_600_000, 0), 500);
        let err = c.tick(1_000).unwrap_err();
        assert!(
            matches!(
                err,
                ClockError::AheadOfTime {
                    ahead_ms: 3_600_000,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(c.ahead_of(1_000), 3_600_000 - 500);
        // Within the bound of it again: stamps resume, after the stored clock.
        let t = c.tick(1_000 + 3_600_000 - 500).unwrap();
        assert!(t > Hlc::new(1_000 + 3_600_000, 0));
        // A physical clock that steps back more than the bound.
        let mut c = Clock::new(500);
        c.tick(10_000).unwrap();
        assert!(c.tick(9_600).is_ok());
        assert!(matches!(c.tick(9_000), Err(ClockError::AheadOfTime { .. })));
        // A logical step still: one past the last, its physical part kept.
        let last = c.last();
        let t = c.tick_logical(9_000).unwrap();
        assert_eq!(
            (t.physical_ms(), t.logical()),
            (last.physical_ms(), last.logical() + 1)
        );
    }

    #[test]
    fn logical_overflow_borrows_a_millisecond_within_the_bound_only() {
        let mut c = Clock::restore(Hlc::new(1_000 + 500, u16::MAX), 500);
        assert!(matches!(c.tick(1_000), Err(ClockError::Exhausted { .. })));
        let mut c = Clock::restore(Hlc::new(1_000, u16::MAX), 500);
        assert_eq!(c.tick(1_000).unwrap(), Hlc::new(1_001, 0));
    }

    #[test]
    fn out_of_range_time_is_an_error() {
        let mut c = Clock::new(500);
        assert!(matches!(
            c.tick(PHYSICAL_MS_MAX + 1),
            Err(ClockError::OutOfRange { .. })
        ));
    }
}
