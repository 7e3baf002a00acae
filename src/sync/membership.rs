//! Cluster membership: SWIM failure detection and dissemination (foca).
//!
//! Owns the membership view of one node: who is in the cluster (node id,
//! name, region, address), who is alive, suspect or down. foca decides;
//! this module runs it sans-IO: packets, timers and up/down changes come out
//! as [`MembershipOutput`]s for the driver to carry out (the node sends the
//! packets as QUIC datagrams and runs the timers), and randomness comes from
//! a seed. The replica learns members and regions from the `Up` outputs.

use std::convert::Infallible;
use std::num::NonZeroU32;

use foca::{
    Config as FocaConfig, Foca, NoCustomBroadcast, Notification, PostcardCodec, Runtime, State,
    Timer,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::rng::Rng;
use crate::core::types::NodeId;

/// Largest membership packet: fits a QUIC datagram on any sane path.
pub const PACKET_BYTES_MAX: usize = 1_000;
/// How often members declared down are announced to.
pub const ANNOUNCE_TO_DOWN_MS: u64 = 5_000;

/// Shortest probe period a node may be given.
pub const PROBE_PERIOD_MS_MIN: u64 = 100;
/// Longest probe period, and longest wait before a suspect is declared down.
pub const SWIM_PERIOD_MS_MAX: u64 = 600_000;

/// SWIM's timing: a profile, and what overrides it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwimTiming {
    /// `lan` (the default: probe every second, memberlist's LAN settings)
    /// or `wan` (every 5 s, a 3 s probe timeout, longer suspicion).
    pub profile: SwimProfile,
    /// Probe a random member this often, instead of the profile's.
    pub probe_period_ms: Option<u64>,
    /// A probe unanswered this long asks other members to probe, instead
    /// of the profile's (less than the period).
    pub probe_rtt_ms: Option<u64>,
    /// A suspect not heard from this long is declared down, instead of the
    /// profile's (which grows with the cluster's size).
    pub suspect_to_down_ms: Option<u64>,
}

/// SWIM's timing profile (memberlist's LAN and WAN settings, as foca has them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwimProfile {
    /// Members on one network: fast detection.
    #[default]
    Lan,
    /// Members across a WAN: slower probes, fewer false suspicions.
    Wan,
}

/// Why a SWIM timing was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct SwimTimingError(String);

impl SwimTiming {
    /// Checks the overrides: a probe period within bounds, a probe timeout
    /// shorter than the period, a suspicion no shorter than the period.
    pub fn validate(&self) -> Result<(), SwimTimingError> {
        let period = self.probe_period_ms.unwrap_or(match self.profile {
            SwimProfile::Lan => 1_000,
            SwimProfile::Wan => 5_000,
        });
        if !(PROBE_PERIOD_MS_MIN..=SWIM_PERIOD_MS_MAX).contains(&period) {
            return Err(SwimTimingError(format!(
                "probe_period_ms {period} is outside {PROBE_PERIOD_MS_MIN}..={SWIM_PERIOD_MS_MAX}"
            )));
        }
        if let Some(rtt) = self.probe_rtt_ms {
            if rtt == 0 || rtt >= period {
                return Err(SwimTimingError(format!(
                    "probe_rtt_ms {rtt} must be above 0 and below the probe period ({period} ms)"
                )));
            }
        }
        if let Some(s) = self.suspect_to_down_ms {
            if s < period || s > SWIM_PERIOD_MS_MAX {
                return Err(SwimTimingError(format!(
                    "suspect_to_down_ms {s} is outside the probe period ({period} ms)..={SWIM_PERIOD_MS_MAX}"
                )));
            }
        }
        Ok(())
    }

    /// foca's configuration for a cluster of `size`.
    fn foca(&self, size: NonZeroU32) -> FocaConfig {
        use std::time::Duration;
        let mut c = match self.profile {
            SwimProfile::Lan => FocaConfig::new_lan(size),
            SwimProfile::Wan => FocaConfig::new_wan(size),
        };
        if let Some(p) = self.probe_period_ms {
            c.probe_period = Duration::from_millis(p);
            // The profile's timeout, kept below a shorter period.
            if c.probe_rtt >= c.probe_period {
                c.probe_rtt = c.probe_period / 2;
            }
        }
        if let Some(r) = self.probe_rtt_ms {
            c.probe_rtt = Duration::from_millis(r);
        }
        if let Some(s) = self.suspect_to_down_ms {
            c.suspect_to_down_after = Duration::from_millis(s);
        }
        c
    }
}

/// A member's identity, as SWIM spreads it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    /// The member's node id.
    pub node: NodeId,
    /// The member's node name.
    pub name: String,
    /// The region the member runs in.
    pub region: String,
    /// Where peers reach it (`ip:port`).
    pub addr: String,
    /// Bumped when the member rejoins after being declared down.
    pub bump: u16,
}

impl foca::Identity for Member {
    type Addr = String;

    fn renew(&self) -> Option<Self> {
        Some(Member {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> String {
        self.addr.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // The same address: a restart (new node id, or a bump) replaces the old one.
        (self.bump, self.node) > (adversary.bump, adversary.node)
    }
}

/// The view of one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Who the member is.
    pub member: Member,
    /// "alive", "suspect" or "down".
    pub state: &'static str,
}

/// What membership asks the driver to do, or tells it.
#[derive(Debug, Clone)]
pub enum MembershipOutput {
    /// Send `data` to `to` (unreliably is fine).
    Send {
        /// The member to send to (at its `addr`).
        to: Member,
        /// The packet, at most [`PACKET_BYTES_MAX`] bytes.
        data: Vec<u8>,
    },
    /// Call [`Membership::handle_timer`] with `timer` after `after_ms`.
    Timer {
        /// The timer to hand back.
        timer: Timer<Member>,
        /// The delay, in ms.
        after_ms: u64,
    },
    /// A member became alive, or joined: its region and address are now known.
    Up(Member),
    /// A member was declared down, or another node took over its address.
    Down(Member),
}

/// Why membership refused input.
#[derive(Debug, Error)]
pub enum MembershipError {
    /// foca refused the input (an oversized or malformed packet, for one): its error text.
    #[error("membership: {0}")]
    Foca(String),
}

/// foca's randomness, from our seeded generator.
struct SeededRng(Rng);

impl rand_core::TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.next_u64() as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let b = self.0.next_u64().to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        Ok(())
    }
}

struct Collect<'a>(&'a mut Vec<MembershipOutput>);

impl Runtime<Member> for Collect<'_> {
    fn notify(&mut self, n: Notification<'_, Member>) {
        match n {
            Notification::MemberUp(m) => self.0.push(MembershipOutput::Up(m.clone())),
            Notification::MemberDown(m) => self.0.push(MembershipOutput::Down(m.clone())),
            // The same node with a higher bump (it rejoined after being
            // declared down): nothing the driver keys on (node id, address)
            // changed, and a change of liveness comes as MemberUp or
            // MemberDown. Only another node taking over the address
            // replaces one.
            Notification::Rename(old, new) if old.node != new.node => {
                self.0.push(MembershipOutput::Down(old.clone()));
                self.0.push(MembershipOutput::Up(new.clone()));
            }
            _ => {}
        }
    }

    fn send_to(&mut self, to: Member, data: &[u8]) {
        self.0.push(MembershipOutput::Send {
            to,
            data: data.to_vec(),
        });
    }

    fn submit_after(&mut self, timer: Timer<Member>, after: std::time::Duration) {
        self.0.push(MembershipOutput::Timer {
            timer,
            after_ms: after.as_millis() as u64,
        });
    }
}

/// One node's membership (see the module docs).
pub struct Membership {
    foca: Foca<Member, PostcardCodec, SeededRng, NoCustomBroadcast>,
    out: Vec<MembershipOutput>,
}

impl Membership {
    /// Membership for `me`, with `timing` (validated: see
    /// [`SwimTiming::validate`]).
    pub fn new(me: Member, cluster_size: u32, timing: &SwimTiming, seed: u64) -> Membership {
        let size = NonZeroU32::new(cluster_size.max(1)).unwrap_or(NonZeroU32::MIN);
        let mut config = timing.foca(size);
        config.max_packet_size =
            std::num::NonZeroUsize::new(PACKET_BYTES_MAX).unwrap_or(config.max_packet_size);
        // A partition shorter than the transport's idle timeout keeps the
        // connections (no announce on a new one): down members hear from us
        // every few seconds rather than every 65.
        if let Some(p) = config.periodic_announce_to_down_members.as_mut() {
            p.frequency = p
                .frequency
                .min(std::time::Duration::from_millis(ANNOUNCE_TO_DOWN_MS));
        }
        Membership {
            foca: Foca::new(me, config, SeededRng(Rng::new(seed)), PostcardCodec),
            out: Vec::new(),
        }
    }

    fn map(r: Result<(), foca::Error>) -> Result<(), MembershipError> {
        r.map_err(|e| MembershipError::Foca(e.to_string()))
    }

    /// Joins through `to` (a seed, or a peer we just connected to).
    pub fn announce(&mut self, to: Member) -> Result<(), MembershipError> {
        Self::map(self.foca.announce(to, Collect(&mut self.out)))
    }

    /// A packet from the network.
    pub fn handle_data(&mut self, data: &[u8]) -> Result<(), MembershipError> {
        if data.len() > PACKET_BYTES_MAX {
            return Err(MembershipError::Foca(format!(
                "packet of {} bytes, more than {PACKET_BYTES_MAX}",
                data.len()
            )));
        }
        let before = self.foca.identity().clone();
        let r = self.foca.handle_data(data, Collect(&mut self.out));
        if *self.foca.identity() != before {
            // foca renewed our identity (a peer told us we were declared
            // down, as both sides of a healed partition tell each other).
            // It tells only the members it holds active, and its answer
            // goes to the peer's old identity, which that peer drops if it
            // renewed too: without more, both sides keep each other down
            // until the next announce to down members (65 s). An announce
            // is taken by address whatever the bump: tell everyone now.
            let known: Vec<Member> = self
                .foca
                .iter_membership_state()
                .map(|m| m.id().clone())
                .collect();
            for m in known {
                let _ = self.foca.announce(m, Collect(&mut self.out));
            }
        }
        Self::map(r)
    }

    /// `node` is forgotten (it left, or an operator forgot it): declared
    /// down, so that it is no longer probed; foca drops it after a while.
    /// If it comes back it announces itself, and the replica decides.
    pub fn forget(&mut self, node: NodeId) {
        let found = self
            .foca
            .iter_membership_state()
            .find(|m| m.id().node == node)
            .map(|m| m.id().clone());
        if let Some(id) = found {
            let _ = self.foca.apply_many(
                std::iter::once(foca::Member::down(id)),
                true,
                Collect(&mut self.out),
            );
        }
    }

    /// This node leaves: its members hear it is down (and stop probing
    /// it). foca takes no more input after it.
    pub fn leave(&mut self) {
        let _ = self.foca.leave_cluster(Collect(&mut self.out));
    }

    /// A timer that a `Timer` output asked for went off.
    pub fn handle_timer(&mut self, timer: Timer<Member>) -> Result<(), MembershipError> {
        Self::map(self.foca.handle_timer(timer, Collect(&mut self.out)))
    }

    /// Everything to carry out since the last call.
    pub fn drain(&mut self) -> Vec<MembershipOutput> {
        std::mem::take(&mut self.out)
    }

    /// Every member foca knows, with its state.
    pub fn view(&self) -> Vec<MemberView> {
        let mut v: Vec<MemberView> = self
            .foca
            .iter_membership_state()
            .map(|m| MemberView {
                member: m.id().clone(),
                state: match m.state() {
                    State::Alive => "alive",
                    State::Suspect => "suspect",
                    State::Down => "down",
                },
            })
            .collect();
        v.sort_by(|a, b| a.member.cmp(&b.member));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn member(i: u64) -> Member {
        Member {
            node: NodeId(i),
            name: format!("n{i}"),
            region: "r".into(),
            addr: format!("127.0.0.1:{}", 7000 + i),
            bump: 0,
        }
    }

    /// The profiles give foca memberlist's settings; overrides replace one
    /// each; timings that cannot work are refused with the field named.
    #[test]
    fn swim_timing_profiles_overrides_and_bounds() {
        let size = NonZeroU32::new(5).unwrap();
        let lan = SwimTiming::default().foca(size);
        let wan = SwimTiming {
            profile: SwimProfile::Wan,
            ..SwimTiming::default()
        }
        .foca(size);
        assert_eq!(lan.probe_period.as_millis(), 1_000);
        assert_eq!(wan.probe_period.as_millis(), 5_000);
        assert!(wan.suspect_to_down_after > lan.suspect_to_down_after);
        // A shorter period than the profile's timeout keeps the timeout below it.
        let fast = SwimTiming {
            probe_period_ms: Some(200),
            suspect_to_down_ms: Some(3_000),
            ..SwimTiming::default()
        };
        fast.validate().unwrap();
        let c = fast.foca(size);
        assert_eq!(c.probe_period.as_millis(), 200);
        assert!(c.probe_rtt < c.probe_period);
        assert_eq!(c.suspect_to_down_after.as_millis(), 3_000);
        for (bad, field) in [
            (
                SwimTiming {
                    probe_period_ms: Some(10),
                    ..SwimTiming::default()
                },
                "probe_period_ms",
            ),
            (
                SwimTiming {
                    probe_rtt_ms: Some(1_000),
                    ..SwimTiming::default()
                },
                "probe_rtt_ms",
            ),
            (
                SwimTiming {
                    profile: SwimProfile::Wan,
                    suspect_to_down_ms: Some(1_000),
                    ..SwimTiming::default()
                },
                "suspect_to_down_ms",
            ),
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    /// Three memberships wired by hand: one announce to one node spreads everyone.
    #[test]
    fn members_discover_each_other_through_one_seed() {
        let mut ms: Vec<Membership> = (1..=3)
            .map(|i| Membership::new(member(i), 3, &SwimTiming::default(), i))
            .collect();
        ms[1].announce(member(1)).unwrap();
        ms[2].announce(member(2)).unwrap();
        let mut ups = [0usize; 3];
        for _round in 0..200 {
            let mut packets = Vec::new();
            for (i, m) in ms.iter_mut().enumerate() {
                for o in m.drain() {
                    match o {
                        MembershipOutput::Send { to, data } => {
                            packets.push((to.node.0 as usize - 1, data))
                        }
                        MembershipOutput::Up(_) => ups[i] += 1,
                        _ => {}
                    }
                }
            }
            for (to, data) in packets {
                ms[to].handle_data(&data).unwrap();
            }
            // Fire probe timers by hand so gossip keeps flowing.
            for m in ms.iter_mut() {
                let _ = m.handle_timer(Timer::ProbeRandomMember(0));
            }
        }
        for m in &ms {
            assert_eq!(
                m.view().iter().filter(|v| v.state == "alive").count(),
                2,
                "{:?}",
                m.view()
            );
        }
        assert!(ups.iter().all(|u| *u >= 2));
    }

    /// Memberships wired by hand in virtual time: packets are delivered at
    /// once (unless the pair is cut), timers fire in order of their due time
    /// with the exact values foca asked for.
    struct Wired {
        ms: Vec<Membership>,
        now: u64,
        seq: u64,
        timers: Vec<(u64, u64, usize, Timer<Member>)>,
        cut: HashSet<(usize, usize)>,
        downs: Vec<(usize, usize)>,
    }

    impl Wired {
        fn new(n: u64) -> Wired {
            Wired {
                ms: (1..=n)
                    .map(|i| Membership::new(member(i), n as u32, &SwimTiming::default(), i))
                    .collect(),
                now: 0,
                seq: 0,
                timers: Vec::new(),
                cut: HashSet::new(),
                downs: Vec::new(),
            }
        }

        fn idx(m: &Member) -> usize {
            m.node.0 as usize - 1
        }

        fn pump(&mut self) {
            loop {
                let mut packets = Vec::new();
                for i in 0..self.ms.len() {
                    for o in self.ms[i].drain() {
                        match o {
                            MembershipOutput::Send { to, data } => {
                                let j = Self::idx(&to);
                                if !self.cut.contains(&(i, j)) {
                                    packets.push((j, data));
                                }
                            }
                            MembershipOutput::Timer { timer, after_ms } => {
                                self.seq += 1;
                                self.timers.push((self.now + after_ms, self.seq, i, timer));
                            }
                            MembershipOutput::Down(m) => self.downs.push((i, Self::idx(&m))),
                            MembershipOutput::Up(_) => {}
                        }
                    }
                }
                if packets.is_empty() {
                    return;
                }
                for (j, d) in packets {
                    let _ = self.ms[j].handle_data(&d);
                }
            }
        }

        fn run(&mut self, ms: u64) {
            let end = self.now + ms;
            loop {
                self.pump();
                let next = (0..self.timers.len())
                    .filter(|&k| self.timers[k].0 <= end)
                    .min_by_key(|&k| (self.timers[k].0, self.timers[k].1));
                let Some(k) = next else { break };
                let (due, _, i, t) = self.timers.swap_remove(k);
                self.now = due;
                let _ = self.ms[i].handle_timer(t);
            }
            self.now = end;
        }

        /// What the node driver does when a QUIC connection comes up: both
        /// ends announce to the other.
        fn connect(&mut self, a: usize, b: usize) {
            self.ms[a].announce(member(b as u64 + 1)).unwrap();
            self.ms[b].announce(member(a as u64 + 1)).unwrap();
        }

        fn state(&self, at: usize, of: usize) -> &'static str {
            self.ms[at]
                .view()
                .iter()
                .find(|v| Self::idx(&v.member) == of)
                .map_or("unknown", |v| v.state)
        }
    }

    /// Members that declared each other down during a partition are alive
    /// again within seconds of the heal (they were down for about 65 s:
    /// both sides renewed, and each answered the other's old identity).
    #[test]
    fn members_declared_down_in_a_partition_are_alive_soon_after_the_heal() {
        let mut w = Wired::new(3);
        w.connect(0, 1);
        w.connect(0, 2);
        w.connect(1, 2);
        w.run(10_000);
        for a in 0..3 {
            for b in 0..3 {
                if a != b {
                    assert_eq!(w.state(a, b), "alive", "{a} sees {b} before the cut");
                }
            }
        }
        for i in 0..2 {
            w.cut.insert((i, 2));
            w.cut.insert((2, i));
        }
        w.run(20_000);
        assert_eq!((w.state(2, 0), w.state(2, 1)), ("down", "down"));
        assert_eq!((w.state(0, 2), w.state(1, 2)), ("down", "down"));
        w.cut.clear();
        w.downs.clear();
        w.connect(2, 0);
        w.connect(2, 1);
        w.run(5_000);
        for a in 0..3 {
            for b in 0..3 {
                if a != b {
                    assert_eq!(w.state(a, b), "alive", "{a} sees {b}: {:?}", w.ms[a].view());
                }
            }
        }
        assert!(
            w.downs.is_empty(),
            "spurious downs after the heal: {:?}",
            w.downs
        );
    }
}
