//! `sim::outputs`: what the simulator does with a node's outputs, as a
//! node's driver would: persists take virtual time (later outputs wait
//! behind them), messages go on the simulated network, acknowledgements and
//! events go to the oracle and the checks.

use super::{pair, Ev, Sim};
use crate::sync::{Event, Output};

impl Sim {
    /// Carries out a node's outputs until one must wait for a persist.
    pub(super) fn drain(&mut self, i: usize) {
        loop {
            if self.nodes[i].pending.is_some() {
                break;
            }
            let n = &mut self.nodes[i];
            let Some(r) = n.replica.as_mut() else { return };
            while let Some(o) = r.poll_output() {
                n.queue.push_back(o);
            }
            let Some(out) = n.queue.pop_front() else {
                break;
            };
            match out {
                Output::Persist(b) => {
                    if self.trace.is_some() {
                        for (k, r) in &b.records {
                            if self.traced(k.as_str()) {
                                let s = r.as_ref().map(|r| r.entry.stamp);
                                self.tr(|| format!("n{i} persist {k} {s:?}"));
                            }
                        }
                        if b.recovery.is_some() {
                            self.tr(|| format!("n{i} persist recovery {:?}", b.recovery));
                        }
                    }
                    let delay = self.rng.range(0, self.cfg.persist_ms_max);
                    if delay == 0 {
                        self.nodes[i].durable.apply(&b);
                    } else {
                        let incarnation = self.nodes[i].incarnation;
                        self.nodes[i].pending = Some(b);
                        self.schedule(
                            self.now + delay,
                            Ev::PersistDone {
                                node: i,
                                incarnation,
                            },
                        );
                    }
                }
                Output::Send { to, msg } => self.transmit(i, to, &msg),
                Output::Forwarded { id, result } => self.edge_write_done(i, id, result),
                Output::HandedOver { key, local, made } => self.handed_over(i, &key, local, made),
                Output::Acknowledge(receipt) => {
                    self.report.writes_acknowledged += 1;
                    let Some(issued) = self.issued.get_mut(&receipt.stamp) else {
                        return self.fail(format!(
                            "node {i} acknowledged a write nobody issued: {receipt:?}"
                        ));
                    };
                    if std::mem::replace(&mut issued.answered, true) {
                        return self.fail(format!("node {i} answered twice: {receipt:?}"));
                    }
                    let w = issued.clone();
                    if self.nodes[w.node].attached.is_some() {
                        // An edge's local write: it counts once a server
                        // makes it (see `edges.rs`).
                        self.local_write_acknowledged(receipt.stamp, w);
                    } else if self.nodes[w.node].rejoining {
                        // May be dropped when it hears it was forgotten.
                        self.report.writes_taken_while_forgotten += 1;
                    } else {
                        if let Some(issued) = self.issued.get_mut(&receipt.stamp) {
                            issued.acknowledged = true;
                        }
                        let n = &mut self.nodes[w.node];
                        n.acked_hlc_max = n.acked_hlc_max.max(receipt.stamp.hlc);
                        let newer = self
                            .oracle
                            .get(&w.key)
                            .is_none_or(|(s, _, _)| *s < receipt.stamp);
                        if newer {
                            self.oracle.insert(w.key, (receipt.stamp, w.value, w.flags));
                        }
                    }
                }
                Output::Notify { .. } => {}
                Output::BarrierDone { id, result } => self.barrier_done(i, id, result),
                Output::ReadBack { key } => {
                    // Every persist before it has been applied (see above).
                    let found = self.nodes[i].durable.load_record(&key);
                    let now = self.node_now(i);
                    if let Some(r) = self.nodes[i].replica.as_mut() {
                        r.read_back(&key, found, now);
                    }
                }
                Output::Unacknowledged { receipt, .. } => {
                    // Not acknowledged: the oracle does not count it (it may
                    // still replicate, or not).
                    let Some(issued) = self.issued.get_mut(&receipt.stamp) else {
                        return self.fail(format!(
                            "node {i} answered a write nobody issued: {receipt:?}"
                        ));
                    };
                    if std::mem::replace(&mut issued.answered, true) {
                        return self.fail(format!("node {i} answered twice: {receipt:?}"));
                    }
                    self.report.writes_unacknowledged += 1;
                }
                Output::Disconnect {
                    peer,
                    reason: crate::sync::Refusal::TakesNoWrites { .. },
                } if self.nodes[i].attached.is_some() => {
                    // An edge leaves a server that refuses its writes: the
                    // driver closes the connection and races its seeds.
                    self.report.edge_reattaches += 1;
                    if let Some(j) = self.index_of(peer) {
                        let (a, b) = pair(i, j);
                        self.schedule(self.now, Ev::Close { a, b });
                    }
                    self.schedule(self.now, Ev::EdgeSwitch { edge: Some(i) });
                }
                Output::Disconnect { peer, reason } => {
                    return self.fail(format!("node {i} refused peer {peer}: {reason}"));
                }
                Output::Forgot { peer } => self.close_forgotten(i, peer),
                Output::Event(e) => match e {
                    _ if self.trace.is_some()
                        && !matches!(
                            e,
                            Event::ClockSkew { .. }
                                | Event::DivergenceFound { .. }
                                | Event::PeerUp { .. }
                                | Event::PeerDown { .. }
                        )
                        && {
                            self.tr(|| format!("n{i} event {e:?}"));
                            false
                        } => {}
                    Event::ClockSkew { .. } => self.report.clock_skew_events += 1,
                    Event::StampCollision { key } => {
                        return self.fail(format!("stamp collision on {key:?} at node {i}"));
                    }
                    // Connectivity and repair reports: what operators see.
                    Event::PeerUp { .. }
                    | Event::PeerDown { .. }
                    | Event::PartitionDetected { .. }
                    | Event::PartitionEnded { .. }
                    | Event::PartitionHealed { .. }
                    | Event::DivergenceFound { .. }
                    | Event::DivergenceRepaired { .. }
                    | Event::RecordQuarantined { .. }
                    | Event::RecordRepaired { .. }
                    | Event::StoreLost
                    | Event::ClockOffset { .. }
                    | Event::Left { .. }
                    | Event::MemberForgotten { .. }
                    | Event::MemberBack { .. } => {}
                    Event::LocalWriteDropped { key, reason } => {
                        return self.fail(format!(
                            "edge {i} dropped its local write of {key:?}: {reason}"
                        ));
                    }
                    Event::FailedOver { failed, .. } => {
                        self.report.failovers += 1;
                        // Promoted for good, as the daemon records it.
                        self.nodes[i].cfg.standby = false;
                        if let Err(e) = self.check_failover(i, &failed) {
                            return self.fail(e);
                        }
                    }
                    Event::LostStoreFound { .. } => {
                        self.report.lost_stores_found += 1;
                        self.nodes[i].cfg.id_adopted_at_ms = 0;
                    }
                    Event::IdConfirmed => {
                        if let Some(key) = self.written_before_adoption(i) {
                            return self.fail(format!(
                                "node {i} confirmed its adopted id as new, but another node \
                                 holds {key:?} written under that id before"
                            ));
                        }
                        self.nodes[i].cfg.id_adopted_at_ms = 0;
                    }
                    Event::RecoveryStarted { cause } => {
                        if cause == crate::sync::Recovery::AfterStoreLoss {
                            self.nodes[i].store_lost_since_ms = Some(self.now);
                        }
                        self.nodes[i].recovery_snapshot = Some(self.agreed_elsewhere(i));
                        self.nodes[i].recovery_server =
                            self.nodes[i].attached.map(|s| (s, self.nodes[s].resyncs));
                    }
                    Event::Recovered { cause, .. } => {
                        self.nodes[i].store_lost_since_ms = None;
                        if cause == crate::sync::Recovery::AfterForget {
                            self.nodes[i].rejoining = false;
                        }
                        if let Err(reason) = self.check_recovered(i) {
                            return self.fail(reason);
                        }
                    }
                    // Only the member that was away longer than the
                    // horizon is told to resync.
                    // And the peers of a node whose clock ran fast while
                    // it heard from no peer: it collected by age early
                    // (the horizon's documented limit).
                    Event::PeerStale { peer } if self.is_away(peer) || self.clock_wrong(i) => {}
                    // An edge that stayed with a server rebuilding a lost
                    // store for longer than the horizon (it collected
                    // nothing meanwhile).
                    Event::PeerStale { peer }
                        if self
                            .index_of(peer)
                            .is_some_and(|e| self.nodes[e].behind_horizon) => {}
                    Event::Resynced { from, .. }
                        if self.nodes[i].away
                            || self.nodes[i].behind_horizon
                            || self.index_of(from).is_some_and(|j| self.clock_wrong(j)) =>
                    {
                        self.report.resyncs += 1;
                        self.nodes[i].resyncs += 1;
                    }
                    Event::PeerRefused {
                        reason: crate::sync::Refusal::TakesNoWrites { .. },
                        ..
                    } if self.nodes[i].attached.is_some() => {}
                    Event::PeerRefused { .. }
                    | Event::PeerStale { .. }
                    | Event::Resynced { .. } => {
                        return self.fail(format!("unexpected event at node {i}: {e:?}"));
                    }
                },
            }
        }
        self.schedule_tick(i);
    }
}
