//! Regions: which are reachable (a region is reachable while one of its
//! members is), partitions detected and healed, and the quorum the
//! partition policy and quorum writes rest on.

use std::collections::{BTreeMap, BTreeSet};

use super::{Event, Output, Replica, Timer};
use crate::core::types::NodeId;
use crate::sync::config::Role;

/// A region whose partition ended, until equal state is confirmed with it.
#[derive(Debug, Clone)]
pub(super) struct Healing {
    pub(super) ended_ms: u64,
    pub(super) partition_ms: u64,
    /// `entries_moved()` when it ended.
    pub(super) moved_at_end: u64,
}

impl Replica {
    /// Reachable regions (our own included) and the number of known regions.
    /// The peers of `region` whose hello was accepted on a live connection
    /// (in node id order); `None` when no member of that region is known.
    pub fn peers_in(&self, region: &str) -> Option<Vec<NodeId>> {
        let mut known = false;
        let mut up = Vec::new();
        for (id, p) in self.members() {
            if p.region == region {
                known = true;
                if p.link.up() && !p.told_stale {
                    up.push(*id);
                }
            }
        }
        known.then_some(up)
    }

    /// The known peer whose node id (16 hex digits) or name is `who`.
    pub fn peer_called(&self, who: &str) -> Option<NodeId> {
        let id = u64::from_str_radix(who, 16)
            .ok()
            .filter(|_| who.len() == 16);
        self.peers
            .iter()
            .find(|(node, p)| Some(node.0) == id || p.name == who)
            .map(|(node, _)| *node)
    }

    pub(super) fn region_counts(&self) -> (usize, usize) {
        let mut all: BTreeSet<&str> = BTreeSet::new();
        let mut up: BTreeSet<&str> = BTreeSet::new();
        all.insert(&self.cfg.region);
        up.insert(&self.cfg.region);
        for (_, p) in self.members().filter(|(_, p)| !p.region.is_empty()) {
            all.insert(&p.region);
            if p.in_contact {
                up.insert(&p.region);
            }
        }
        (up.len(), all.len())
    }

    /// Records, per known region, when it became reachable or unreachable.
    /// A region is reachable while a peer in it was heard from within the
    /// contact timeout (heartbeats come every interval): a cut is noticed
    /// then, not when the transport gives the connection up.
    pub(super) fn update_regions(&mut self, now_ms: u64) {
        let timeout = self.cfg.contact_timeout_ms;
        for p in self.peers.values_mut() {
            p.in_contact = p.link.swapping()
                || (p.link.ready() && now_ms.saturating_sub(p.last_heard_ms) <= timeout);
        }
        let mut up: BTreeMap<&str, bool> = BTreeMap::new();
        let forgotten = &self.forgotten;
        for (_, p) in self.peers.iter().filter(|(id, p)| {
            !p.region.is_empty() && p.role == Role::Server && !forgotten.contains_key(id)
        }) {
            *up.entry(&p.region).or_insert(false) |= p.in_contact;
        }
        up.insert(&self.cfg.region, true);
        // A region whose members were all forgotten is no longer known.
        let gone: Vec<String> = self
            .regions
            .keys()
            .filter(|r| !up.contains_key(r.as_str()))
            .cloned()
            .collect();
        for region in gone {
            self.regions.remove(&region);
            self.partitioned.remove(&region);
            self.healing.remove(&region);
            self.unreachable_beats.remove(&region);
        }
        let mut flips = Vec::new();
        for (region, reachable) in up {
            match self.regions.get_mut(region) {
                Some(state) if state.0 == reachable => {}
                Some(state) => {
                    flips.push((
                        region.to_string(),
                        reachable,
                        now_ms.saturating_sub(state.1),
                    ));
                    *state = (reachable, now_ms);
                }
                None => {
                    self.regions.insert(region.to_string(), (reachable, now_ms));
                }
            }
        }
        for (region, reachable, lasted_ms) in flips {
            // Only a partition that was reported ends: a region first seen
            // (or remembered across a restart) connecting is no news.
            if reachable && !self.partitioned.remove(&region) {
                continue;
            }
            if reachable {
                let moved_at_end = self.entries_moved();
                self.healing.insert(
                    region.clone(),
                    Healing {
                        ended_ms: now_ms,
                        partition_ms: lasted_ms,
                        moved_at_end,
                    },
                );
                // Compare states soon: once the catch-up has had a moment.
                let soon_ms = now_ms + self.cfg.heartbeat_interval_ms;
                self.timers.set_sooner(Timer::AntiEntropy, soon_ms);
                self.staged.push(Output::Event(Event::PartitionEnded {
                    region,
                    partition_ms: lasted_ms,
                }));
            } else {
                self.healing.remove(&region);
                self.partitioned.insert(region.clone());
                self.staged
                    .push(Output::Event(Event::PartitionDetected { region }));
            }
        }
    }

    /// True while a majority of the known regions (ours included) is reachable.
    pub fn has_quorum(&self) -> bool {
        let (up, all) = self.region_counts();
        up * 2 > all
    }
}
