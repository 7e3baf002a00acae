//! The change feed: streaming our feed to each peer within its window,
//! applying theirs (contiguous ranges, gaps, resumes, acknowledgements),
//! heartbeats at its end, and the full transfer that rebuilds an empty
//! replica.

use super::{Output, Replica, Timer};
use crate::core::codec::{Feed, FeedEnd, Message};
use crate::core::hlc::Hlc;
use crate::core::mutants::{self, Mutant};
use crate::core::types::{Check, NodeId};
use crate::sync::config::Role;

/// An idle edge hears its server's feed end every this many heartbeats.
const EDGE_BEAT_EVERY: u64 = 5;

impl Replica {
    pub(super) fn on_feed(&mut self, from: NodeId, f: Feed, now_ms: u64) {
        self.metrics.feed_messages_in += 1;
        // How far their feed reaches, refused or not: what the lag reports.
        if let Some(p) = self.peers.get_mut(&from) {
            p.their_index = p.their_index.max(f.to);
        }
        // An edge takes its server's stamps as they are: the server judged
        // them against its clock (an edge's clock stamps nothing).
        if !self.is_edge()
            && !self.check_skew(
                from,
                f.entries
                    .iter()
                    .map(|(_, e)| e.stamp.hlc)
                    .chain(f.docs.iter().map(|d| d.stamp.hlc))
                    .chain(f.end.claim()),
                now_ms,
            )
        {
            return;
        }
        let rebuilding_from_them = self.rebuild_from == Some(from);
        let full_wanted = rebuilding_from_them || self.recovering_from(from);
        let told_stale = self.peers.get(&from).is_some_and(|p| p.told_stale);
        // A full transfer asked for (the rebuild's source, or every peer a
        // recovery takes the state of) is that peer's live state: nothing
        // in it is a collected delete, so the floor does not apply to it.
        // A lost store recovering from every peer took the greatest of the
        // peers' floors and refused their older live values for good (sim
        // seed 39182), when only the rebuild's source was exempt. Not a
        // peer we told to resync: a frame from before its resync, arriving
        // after its new hello, brought back deleted values (sim seed 1254).
        // A member we took back after forgetting it vouches for nothing at
        // or below our floor then (see `replica/members.rs`).
        let floor = if full_wanted && !told_stale && !mutants::on(Mutant::RebuildFloor) {
            self.peers.get(&from).map_or(Hlc::ZERO, |p| p.suspect_floor)
        } else {
            self.merge_floor()
        };
        let mut applied = 0u64;
        let heartbeat = f.from == f.to && f.entries.is_empty() && f.docs.is_empty();
        for (k, e) in f.entries {
            self.learn_doc_held(from, &k, &e);
            if self.merge_entry(Some(from), k, e, floor, now_ms) {
                applied += 1;
            }
        }
        // Documents as changes: one that cannot be rebuilt here is a gap
        // (the range is asked for again, and comes with documents whole).
        let mut docs_missed = false;
        for d in f.docs {
            match self.rebuild_doc(from, &d) {
                Some(e) => {
                    if self.merge_entry(Some(from), d.key, e, floor, now_ms) {
                        applied += 1;
                    }
                }
                None => {
                    self.metrics.doc_changes_missed += 1;
                    docs_missed = true;
                }
            }
        }
        self.metrics.feed_entries_applied += applied;
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        p.frontier = p.frontier.max(f.frontier);
        // Contiguous, and up to the sender's last index: we hold all it had.
        let mut reached_end = false;
        if (f.from <= p.applied && !docs_missed) || mutants::on(Mutant::FeedGap) {
            if f.to >= p.applied {
                reached_end = f.end.is_end();
                if f.to > p.applied {
                    p.applied = f.to;
                    self.dirty_peers.insert(from);
                }
                if reached_end {
                    p.in_sync_ms = now_ms;
                    // Its feed carries every origin to an edge: we hold
                    // every write it held (its frontier, when it sent
                    // this), unless we took its feed from the middle.
                    if !p.tailing {
                        p.held = p.held.max(f.frontier);
                    }
                }
                if let Some(c) = f.end.claim() {
                    if c > p.received {
                        p.received = c;
                        self.dirty_peers.insert(from);
                    }
                }
                p.resume_asked_ms = None;
            }
        } else {
            if !docs_missed {
                self.metrics.feed_gaps += 1;
            }
            let timeout = self.cfg.peer_timeout_ms;
            if p.resume_asked_ms.is_none_or(|t| now_ms >= t + timeout) {
                p.resume_asked_ms = Some(now_ms);
                let resume = Message::Resume {
                    from: p.applied,
                    full: full_wanted,
                };
                self.staged.push(Output::Send {
                    to: from,
                    msg: resume,
                });
            }
        }
        let mut start_ae = false;
        if !p.link.caught_up() && reached_end {
            p.link.set_caught_up(true);
            start_ae = true;
            // All they held is here (their full transfer, if we are recovering).
            self.recovered_from(from);
        }
        // A rebuild ends with a source that holds all it should: one that
        // is itself recovering lacks records (perhaps below its floor,
        // which the rebuild takes on), so it must finish first; what it
        // takes back reaches us through its feed (seed 14417).
        if rebuilding_from_them && reached_end && f.end != FeedEnd::Recovering {
            self.rebuild_done(from);
        }
        let Some(p) = self.peers.get(&from) else {
            return;
        };
        let applied = p.applied;
        let frontier = self.frontier();
        // An edge does not answer its server's heartbeats (nothing moved),
        // and batches its acknowledgements of the rest.
        if self.is_edge() {
            if !heartbeat {
                self.owe_ack(from, now_ms);
            }
        } else {
            self.send(from, Message::Ack { applied, frontier });
        }
        // Caught up after a reconnect: check with one cheap round soon, once
        // the other connections of a restart are up and caught up too
        // (earlier, it would repeat what their feeds still carry).
        if start_ae {
            let soon_ms = now_ms + self.cfg.heartbeat_interval_ms;
            self.timers.set_sooner(Timer::AntiEntropy, soon_ms);
        }
    }

    /// The full transfer from `from` is complete: this replica holds
    /// everything that peer held.
    fn rebuild_done(&mut self, from: NodeId) {
        self.rebuilding = false;
        self.rebuild_ended = true;
        self.rebuild_from = None;
        self.confirm_id_when_due();
        // The transfer was the source's state after its collections: values
        // of keys deleted and collected there are refused from now on, as
        // they are there (a late or replayed message cannot bring one back).
        if let Some(floor) = self.peers.get(&from).map(|p| p.gc_floor) {
            if floor > self.gc_floor {
                self.gc_floor = floor;
                self.dirty_meta = true;
            }
        }
    }

    /// The collection floor for entries from a peer (not a rebuild's full
    /// transfer): while rebuilding, this replica's own floor says little
    /// (it collected nothing), so the highest floor its peers told it holds.
    pub(super) fn merge_floor(&self) -> Hlc {
        if !self.rebuilding {
            return self.gc_floor;
        }
        self.members()
            .map(|(_, p)| p.gc_floor)
            .fold(self.gc_floor, Hlc::max)
    }

    pub(super) fn on_resume(&mut self, from: NodeId, start: u64, full: bool, now_ms: u64) {
        let index = self.map.index();
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        let start = start.min(index);
        // What it holds is in doubt: documents go whole until learned again.
        p.doc_heads.forget_all();
        p.acked = start;
        p.sent = start;
        p.in_flight.clear();
        p.last_progress_ms = now_ms;
        if full {
            p.full_until = Some(index);
        }
        self.pump(from, now_ms);
    }

    pub(super) fn on_ack(&mut self, from: NodeId, applied: u64, frontier: Hlc, now_ms: u64) {
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        p.frontier = p.frontier.max(frontier);
        if applied > p.acked {
            p.acked = applied;
            p.last_progress_ms = now_ms;
        }
        while p.in_flight.front().is_some_and(|t| *t <= applied) {
            p.in_flight.pop_front();
        }
        self.pump(from, now_ms);
        self.release_acks(now_ms);
    }

    pub(super) fn pump_all(&mut self, now_ms: u64) {
        let ids: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.link.ready())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.pump(id, now_ms);
        }
    }

    /// Sends the next feed messages to `id`, within its window.
    pub(super) fn pump(&mut self, id: NodeId, now_ms: u64) {
        if self.is_edge() {
            // An edge writes nothing of its own (it forwards its writes):
            // it has no feed to send.
            return;
        }
        let frontier = self.frontier();
        let claim = self.feed_claim();
        let recovering = !self.claims_held();
        let index = self.map.index();
        let me = self.cfg.node;
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if !p.link.up() {
            return;
        }
        let mut damaged = Vec::new();
        let mut feeds = Vec::new();
        let to_edge = p.role == Role::Edge;
        let window = if to_edge {
            self.cfg.edge_window_max
        } else {
            self.cfg.feed_window_max
        };
        while p.in_flight.len() < window && p.sent < index {
            let from = p.sent;
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            let mut to = index;
            for (scanned, (i, current)) in self.map.feed_since(from).enumerate() {
                if scanned == self.cfg.feed_scan_max {
                    to = i - 1;
                    break;
                }
                let Some((k, r)) = current else {
                    continue;
                };
                let origin = r.entry.stamp.node;
                // A full transfer carries every origin, the receiver's own
                // included (a resynced node dropped some of its own). While
                // we recover it goes on: it is complete only with what we
                // take back, and it ends with our first claim (a rebuild
                // from us waits for that claim: seed 14417).
                let full = p.full_until.is_some_and(|u| i <= u || recovering);
                // An edge takes every origin's entries from its server.
                let include = full || origin == me || (to_edge && origin != id);
                let size = r.entry.encoded_len_estimate(k);
                let full = entries.len() == self.cfg.feed_entries_max
                    || (include && !entries.is_empty() && bytes + size > self.cfg.batch_bytes_max);
                if full {
                    to = i - 1;
                    break;
                }
                if include {
                    // Checked before it leaves: a record damaged in memory
                    // is quarantined, never sent.
                    if Check::of(k.as_str(), &r.entry) != r.stored_check() {
                        damaged.push(k.clone());
                        continue;
                    }
                    bytes += size;
                    entries.push((k.clone(), r.entry.clone()));
                }
            }
            debug_assert!(to > from);
            let end = if to == index { claim } else { FeedEnd::Partial };
            if p.in_flight.is_empty() {
                p.last_progress_ms = now_ms;
            }
            p.sent = to;
            p.in_flight.push_back(to);
            p.last_sent_ms = now_ms;
            self.metrics.feed_entries_sent += entries.len() as u64;
            feeds.push(Feed {
                from,
                to,
                end,
                frontier,
                entries,
                docs: Vec::new(),
            });
        }
        for mut f in feeds {
            self.docs_as_changes(id, &mut f);
            self.staged.push(Output::Send {
                to: id,
                msg: Message::Feed(f),
            });
        }
        for k in damaged {
            self.quarantine_damaged(&k, "the entry in memory does not match its check", now_ms);
        }
    }

    pub(super) fn heartbeats(&mut self, now_ms: u64) {
        let frontier = self.frontier();
        let index = self.map.index();
        let end = self.feed_claim();
        let interval = self.cfg.heartbeat_interval_ms;
        let timeout = self.cfg.peer_timeout_ms;
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            let p = self.peers.get_mut(&id).expect("listed");
            if p.link.hello_unconfirmed() {
                // Our hello may have been lost: until the peer shows it
                // accepted it, it ignores everything else we send.
                self.say_hello(id);
            }
            let p = self.peers.get_mut(&id).expect("listed");
            if !p.link.up() {
                continue;
            }
            if self.cfg.role == Role::Edge {
                // An edge sends its server nothing on a beat: it has no
                // feed, no view and no clock to judge.
                continue;
            }
            if p.role == Role::Edge {
                // An idle edge hears from its server every few beats (its
                // connection's keep-alives say the server is there), and a
                // view when stability moved.
                let quiet = now_ms < p.last_sent_ms + EDGE_BEAT_EVERY * interval;
                let due = (!p.in_flight.is_empty() && now_ms >= p.last_progress_ms + timeout)
                    || (p.in_flight.is_empty() && p.sent < index);
                let stable = self.stable();
                let p = self.peers.get_mut(&id).expect("listed");
                if p.view_stable != stable {
                    p.view_stable = stable;
                    self.send_view(id);
                }
                if quiet && !due {
                    continue;
                }
            } else {
                self.probe(id, now_ms);
                self.send_view(id);
            }
            let p = self.peers.get_mut(&id).expect("listed");
            if !p.in_flight.is_empty() && now_ms >= p.last_progress_ms + timeout {
                // Nothing acknowledged for a while: send it again.
                self.metrics.feed_rewinds += 1;
                p.doc_heads.forget_all();
                p.sent = p.acked;
                p.in_flight.clear();
                self.pump(id, now_ms);
                continue;
            }
            if p.in_flight.is_empty() && p.sent < index {
                // Remote changes moved our index: the feed message (maybe
                // empty of entries) carries the progress and the clock.
                self.pump(id, now_ms);
                continue;
            }
            if now_ms >= p.last_sent_ms + interval {
                self.send_feed_end(id, index, end, frontier, now_ms);
            }
        }
    }

    /// Tells `id` our feed ends at `index` (the message carries no entries,
    /// only the claim and frontier), if all of it was sent and acknowledged.
    pub(super) fn send_feed_end(
        &mut self,
        id: NodeId,
        index: u64,
        end: FeedEnd,
        frontier: Hlc,
        now_ms: u64,
    ) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if !p.in_flight.is_empty() || p.sent != index {
            return;
        }
        p.last_sent_ms = now_ms;
        let msg = Message::Feed(Feed {
            from: index,
            to: index,
            end,
            frontier,
            entries: Vec::new(),
            docs: Vec::new(),
        });
        self.staged.push(Output::Send { to: id, msg });
    }

    /// What the last message of the feed claims ("every write of mine
    /// stamped at or below this clock is in my feed"): nothing while a
    /// recovery is on, since a write of ours the feed no longer carries may
    /// be held by a peer. (The message still marks the end of the feed: a
    /// recovering peer's transfer must be seen to complete.)
    pub(super) fn feed_claim(&self) -> FeedEnd {
        if self.claims_held() {
            FeedEnd::Claim(self.clock.last())
        } else {
            FeedEnd::Recovering
        }
    }
}
