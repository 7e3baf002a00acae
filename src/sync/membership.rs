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

/// A member's identity, as SWIM spreads it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    pub node: NodeId,
    pub name: String,
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
    pub member: Member,
    /// "alive", "suspect" or "down".
    pub state: &'static str,
}

/// What membership asks the driver to do, or tells it.
#[derive(Debug, Clone)]
pub enum MembershipOutput {
    /// Send `data` to `to` (unreliably is fine).
    Send {
        to: Member,
        data: Vec<u8>,
    },
    /// Call [`Membership::handle_timer`] with `timer` after `after_ms`.
    Timer {
        timer: Timer<Member>,
        after_ms: u64,
    },
    Up(Member),
    Down(Member),
}

/// Why membership refused input.
#[derive(Debug, Error)]
pub enum MembershipError {
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
            Notification::Rename(old, new) => {
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
    /// Membership for `me`, tuned for a WAN (probe every 5 s) or a LAN (every 1 s).
    pub fn new(me: Member, cluster_size: u32, wan: bool, seed: u64) -> Membership {
        let size = NonZeroU32::new(cluster_size.max(1)).unwrap_or(NonZeroU32::MIN);
        let mut config = if wan {
            FocaConfig::new_wan(size)
        } else {
            FocaConfig::new_lan(size)
        };
        config.max_packet_size =
            std::num::NonZeroUsize::new(PACKET_BYTES_MAX).unwrap_or(config.max_packet_size);
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
        Self::map(self.foca.handle_data(data, Collect(&mut self.out)))
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

    fn member(i: u64) -> Member {
        Member {
            node: NodeId(i),
            name: format!("n{i}"),
            region: "r".into(),
            addr: format!("127.0.0.1:{}", 7000 + i),
            bump: 0,
        }
    }

    /// Three memberships wired by hand: one announce to one node spreads everyone.
    #[test]
    fn members_discover_each_other_through_one_seed() {
        let mut ms: Vec<Membership> = (1..=3)
            .map(|i| Membership::new(member(i), 3, false, i))
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
}
