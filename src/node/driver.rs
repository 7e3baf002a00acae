//! The driver task: owns the [`Replica`], feeds it inputs (commands from
//! the [`Node`](super::Node) handle, peer messages, connection events,
//! timer ticks) and carries out its outputs in order; persists go to the
//! store thread in groups, and what waits on them is released when they
//! are durable.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::commit::{CommitReport, StoreThread, COMMIT_RETRY_MS_MAX};
use super::time::now_ms;
use super::types::{
    Change, DigestReport, EventKind, Histogram, Indexed, KeyHash, KvEntry, NodeEvent, NodeStatus,
    Snapshot, StoreTrouble, WriteOptions,
};
use super::{history, Halt, NodeError, EVENTS_KEPT_MAX, QUARANTINED_NAMED_MAX};
use crate::core::codec::{self, Message};
use crate::core::conflicts::Conflict;
use crate::core::digest::Fingerprint;
use crate::core::types::{Entry, Key, NodeId, Stamp};
use crate::net::forward::ForwardError;
use crate::net::links::{Adopted, Conn, Links};
use crate::net::{self, NetEvent, NetMetrics, Transport};
use crate::sync::membership::{Member, Membership, MembershipOutput};
use crate::sync::{
    BarrierError, DocWrite, Event, ForgottenMember, ImportReport, Output, PersistBatch, Replica,
    Role, TxnError, TxnOp, TxnOutcome, WriteAck, WriteReceipt,
};

/// Longest the driver sleeps without ticking the replica.
pub(super) const TICK_MS_MAX: u64 = 1_000;

pub(super) enum Command {
    Put {
        key: Key,
        value: Option<Bytes>,
        opts: WriteOptions,
        reply: oneshot::Sender<Result<WriteReceipt, NodeError>>,
    },
    DeletePrefix {
        prefix: String,
        keys_max: usize,
        ack: Option<WriteAck>,
        reply: oneshot::Sender<Result<usize, NodeError>>,
    },
    ReadBarrier {
        scope: String,
        prefix: bool,
        reply: oneshot::Sender<Result<(), BarrierError>>,
    },
    RegionConnection {
        region: String,
        reply: oneshot::Sender<Result<quinn::Connection, ForwardError>>,
    },
    NodeConnection {
        who: String,
        reply: oneshot::Sender<Result<quinn::Connection, ForwardError>>,
    },
    Txn {
        ops: Vec<TxnOp>,
        ack: Option<WriteAck>,
        keys_max: usize,
        reply: oneshot::Sender<Result<TxnOutcome, NodeError>>,
    },
    Get {
        key: String,
        reply: oneshot::Sender<Result<Indexed<Option<KvEntry>>, NodeError>>,
    },
    PutDoc {
        key: Key,
        write: DocWrite,
        opts: WriteOptions,
        reply: oneshot::Sender<Result<WriteReceipt, NodeError>>,
    },
    /// One key's entry as held (checked first), with its create and modify indexes.
    GetEntry {
        key: String,
        reply: oneshot::Sender<Result<Indexed<Option<super::queries::Held>>, NodeError>>,
    },
    List {
        prefix: String,
        reply: oneshot::Sender<Result<Indexed<Vec<KvEntry>>, NodeError>>,
    },
    Changes {
        prefix: String,
        since: u64,
        reply: oneshot::Sender<(Vec<Change>, u64)>,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    Digest {
        prefix: String,
        deep: bool,
        reply: oneshot::Sender<DigestReport>,
    },
    Conflicts {
        reply: oneshot::Sender<(Vec<Conflict>, u64)>,
    },
    Snapshot {
        since: u64,
        /// The state at `since` was taken after this node started.
        base_after_start: bool,
        reply: oneshot::Sender<Result<Snapshot, NodeError>>,
    },
    Import {
        entries: Vec<(Key, Entry)>,
        reply: oneshot::Sender<Result<ImportReport, NodeError>>,
    },
    Hashes {
        prefix: String,
        reply: oneshot::Sender<Vec<KeyHash>>,
    },
    DigestChildren {
        level: u8,
        parents: Vec<u32>,
        reply: oneshot::Sender<Vec<Fingerprint>>,
    },
    LeafHashes {
        leaves: Vec<u32>,
        reply: oneshot::Sender<Vec<KeyHash>>,
    },
    Promote {
        reply: oneshot::Sender<()>,
    },
    Leave {
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Forget {
        who: String,
        reply: oneshot::Sender<Result<ForgottenMember, NodeError>>,
    },
    Members {
        reply: oneshot::Sender<super::types::MembersReport>,
    },
    History {
        key: String,
        reply: oneshot::Sender<Vec<history::Version>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// An answer to send once every persist issued before it is durable (or
/// with the error that stopped the node).
pub(super) type Barrier = Box<dyn FnOnce(Result<(), NodeError>) + Send>;

pub(super) struct Driver {
    pub(super) me: NodeId,
    pub(super) replica: Replica,
    pub(super) transport: Transport,
    pub(super) metrics: Arc<NetMetrics>,
    /// Connections to peers, and the members kept dialed.
    pub(super) links: Links,
    /// Outputs waiting for the persist numbered by their first field.
    pub(super) queue: VecDeque<(u64, Output)>,
    /// Persists seen, and persists durable.
    pub(super) issued: u64,
    pub(super) done: u64,
    pub(super) group: Vec<PersistBatch>,
    pub(super) committing: bool,
    pub(super) commits: u64,
    pub(super) commit_latency: Histogram,
    pub(super) started_ms: u64,
    pub(super) store: StoreThread,
    /// Set while the store refuses commits (a full disk): writes are
    /// refused, reads served, replication paused, the commit retried.
    pub(super) store_trouble: Option<StoreTrouble>,
    pub(super) pending: HashMap<Stamp, oneshot::Sender<Result<WriteReceipt, NodeError>>>,
    /// Quorum prefix deletes: each tombstone's group, and per group the
    /// tombstones not yet acknowledged and the answer.
    pub(super) group_of: HashMap<Stamp, u64>,
    pub(super) groups: HashMap<u64, (usize, Barrier)>,
    pub(super) next_group: u64,
    /// Read barriers waiting on the replica, by number.
    pub(super) read_barriers: HashMap<u64, oneshot::Sender<Result<(), BarrierError>>>,
    pub(super) next_read_barrier: u64,
    pub(super) events_tx: tokio::sync::broadcast::Sender<NodeEvent>,
    pub(super) history: history::History,
    /// Imports waiting for the persist numbered by their first field.
    pub(super) barriers: VecDeque<(u64, Barrier)>,
    pub(super) notify: watch::Sender<u64>,
    pub(super) events: VecDeque<Event>,
    pub(super) failed: Option<Halt>,
    pub(super) membership: Membership,
    pub(super) timer_tx: mpsc::Sender<foca::Timer<Member>>,
    /// Peers refused by the replica, to report as disconnected.
    pub(super) refused: Vec<NodeId>,
    /// On a server: the edges connected now (their preamble said so).
    pub(super) edges: std::collections::HashSet<NodeId>,
    /// On an edge: writes forwarded to the server, by number.
    pub(super) forwards: HashMap<u64, super::edge::ForwardReply>,
    pub(super) next_forward: u64,
    /// The data directory's adoption marker (see `data_dir::ADOPTED_FILE`),
    /// removed once the adopted id is confirmed or the loss recovered.
    pub(super) adopted_file: Option<std::path::PathBuf>,
}

impl Driver {
    /// The adopted node id is settled (confirmed as new, or its loss
    /// recovered): the data directory stops saying it is adopted.
    fn adoption_settled(&mut self) {
        let Some(path) = self.adopted_file.take() else {
            return;
        };
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!("the node id the certificate gave this node is settled"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot remove the adoption marker: {e}")
            }
        }
    }

    pub(super) async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut net_rx: mpsc::Receiver<NetEvent>,
        mut commit_rx: mpsc::Receiver<CommitReport>,
        mut timer_rx: mpsc::Receiver<foca::Timer<Member>>,
    ) {
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        loop {
            // At least once a second, also when the clock went back and
            // the replica's deadlines lie far ahead.
            let wait = self
                .replica
                .next_timeout()
                .saturating_sub(now_ms())
                .min(TICK_MS_MAX);
            tokio::select! {
                biased;
                done = commit_rx.recv() => match done {
                    Some(CommitReport::Done { seq, us }) => {
                        self.commit_latency.record(us);
                        self.committed(seq);
                    }
                    Some(CommitReport::Failed { seq, error, disk_full }) => {
                        self.commit_failed(seq, error, disk_full);
                    }
                    Some(CommitReport::ReadBack { key, found }) => {
                        self.replica.read_back(&key, found, now_ms());
                    }
                    None => {
                        self.committing = false;
                        self.failed = Some(Halt::StoreThread);
                    }
                },
                cmd = cmd_rx.recv(), if shutdown.is_none() => match cmd {
                    None => shutdown = Some(oneshot::channel().0),
                    Some(Command::Shutdown { reply }) => shutdown = Some(reply),
                    Some(c) => self.command(c),
                },
                // While the store refuses commits, replication waits (the
                // transport's bounded queues hold or drop what comes).
                Some(ev) = net_rx.recv(), if self.store_trouble.is_none() => self.net(ev),
                Some(t) = timer_rx.recv() => {
                    if let Err(e) = self.membership.handle_timer(t) {
                        tracing::debug!("{e}");
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(wait)), if self.store_trouble.is_none() => {
                    self.replica.tick(now_ms())
                }
                _ = tokio::time::sleep(Duration::from_millis(COMMIT_RETRY_MS_MAX)), if self.store_trouble.is_some() => {}
            }
            // Timers run even while inputs never stop coming.
            let now = now_ms();
            if self.store_trouble.is_none() && self.replica.next_timeout() <= now {
                self.replica.tick(now);
            }
            loop {
                self.membership_outputs();
                self.absorb();
                self.flush();
                if self.refused.is_empty() {
                    break;
                }
                for peer in std::mem::take(&mut self.refused) {
                    self.replica.disconnected(peer, now_ms());
                }
            }
            // A commit the disk refuses is not waited for at shutdown: what
            // it holds was never acknowledged.
            let settled =
                self.store_trouble.is_some() || (!self.committing && self.group.is_empty());
            if self.failed.is_some() || (shutdown.is_some() && settled) {
                break;
            }
        }
        self.transport
            .endpoint
            .close(net::CLOSE_SHUTDOWN.into(), b"shutdown");
        self.store.stop().await;
        if let Some(t) = &self.store_trouble {
            self.failed = Some(Halt::ShutDownRefusing {
                error: t.error.clone(),
            });
        }
        let err = self.failed.clone().unwrap_or(Halt::ShutDown);
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(NodeError::StoreFailed(err.clone())));
        }
        self.group_of.clear();
        for (_, (_, answer)) in self.groups.drain() {
            answer(Err(NodeError::StoreFailed(err.clone())));
        }
        for (_, answer) in self.barriers.drain(..) {
            answer(Err(NodeError::StoreFailed(err.clone())));
        }
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    /// Moves the replica's outputs into the queue; persists join the next group.
    fn absorb(&mut self) {
        while let Some(o) = self.replica.poll_output() {
            match o {
                Output::Persist(b) => {
                    self.issued += 1;
                    // A rebuild brings the current state, not versions this
                    // node applied: recording a million keys' one version
                    // each would only evict the history it had.
                    if !b.rebuild {
                        self.history.record(&b);
                    }
                    self.group.push(b);
                }
                other => self.queue.push_back((self.issued, other)),
            }
        }
    }

    /// Starts the next group commit if none is running, and carries out every output already durable.
    fn flush(&mut self) {
        if !self.committing && !self.group.is_empty() {
            let group = std::mem::take(&mut self.group);
            if self.store.send(group, self.issued) {
                self.committing = true;
            } else {
                self.failed = Some(Halt::StoreThread);
            }
        }
        while self.queue.front().is_some_and(|(seq, _)| *seq <= self.done) {
            let (_, o) = self.queue.pop_front().expect("checked");
            self.execute(o);
        }
        while self
            .barriers
            .front()
            .is_some_and(|(seq, ..)| *seq <= self.done)
        {
            let (_, answer) = self.barriers.pop_front().expect("checked");
            answer(Ok(()));
        }
    }

    fn committed(&mut self, seq: u64) {
        self.committing = false;
        self.commits += 1;
        self.done = seq;
        if let Some(t) = self.store_trouble.take() {
            tracing::warn!(
                lasted_ms = now_ms().saturating_sub(t.since_ms),
                "the store takes commits again: writes resume"
            );
        }
    }

    /// The store refused a commit; the store thread retries it.
    fn commit_failed(&mut self, seq: u64, error: String, disk_full: bool) {
        let since_ms = self
            .store_trouble
            .as_ref()
            .map_or_else(now_ms, |t| t.since_ms);
        tracing::error!(
            seq,
            disk_full,
            "commit refused: refusing writes, serving reads: {error}"
        );
        // Clients waiting on writes in the refused group hear now, not when
        // space returns: their writes are not acknowledged (they are applied
        // here, and durable if the retried commit lands).
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(NodeError::NotDurable {
                disk_full,
                error: error.clone(),
            }));
        }
        self.group_of.clear();
        for (_, (_, answer)) in self.groups.drain() {
            answer(Err(NodeError::NotDurable {
                disk_full,
                error: error.clone(),
            }));
        }
        for (_, answer) in self.barriers.drain(..) {
            answer(Err(NodeError::NotDurable {
                disk_full,
                error: error.clone(),
            }));
        }
        self.store_trouble = Some(StoreTrouble {
            since_ms,
            error,
            disk_full,
        });
    }

    fn execute(&mut self, o: Output) {
        match o {
            Output::Persist(_) => unreachable!("persists never enter the queue"),
            Output::Send { to, msg } => {
                let Some(c) = self.links.get(to) else { return };
                match codec::encode(&msg) {
                    Ok(frame) => net::try_send(&c.tx, frame, &self.metrics),
                    Err(e) => tracing::error!("cannot encode a {} message: {e}", msg.kind()),
                }
            }
            Output::Acknowledge(r) => {
                if let Some(reply) = self.pending.remove(&r.stamp) {
                    let _ = reply.send(Ok(r));
                } else if let Some(group) = self.group_of.remove(&r.stamp) {
                    let left = self.groups.get_mut(&group).map(|(left, _)| {
                        *left -= 1;
                        *left
                    });
                    if left == Some(0) {
                        if let Some((_, answer)) = self.groups.remove(&group) {
                            answer(Ok(()));
                        }
                    }
                }
            }
            Output::Unacknowledged { receipt, reason } => {
                if let Some(reply) = self.pending.remove(&receipt.stamp) {
                    let _ = reply.send(Err(NodeError::NotReplicated(reason)));
                } else if let Some(group) = self.group_of.remove(&receipt.stamp) {
                    // One is enough to fail the whole delete (the rest of
                    // its tombstones find no group).
                    if let Some((_, answer)) = self.groups.remove(&group) {
                        answer(Err(NodeError::NotReplicated(reason)));
                    }
                }
            }
            Output::Notify { index } => {
                self.notify.send_replace(index);
            }
            Output::ReadBack { key } => {
                // Queued behind the commits before it: it reads what they wrote.
                if !self.store.read_back(key.clone()) {
                    self.replica.read_back(&key, None, now_ms());
                }
            }
            Output::Disconnect { peer, reason } => {
                self.metrics.peers_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, "refused peer: {reason}");
                self.links.refuse(peer, &reason.to_string());
                // Its Down event will no longer match a connection: tell the replica now.
                self.refused.push(peer);
            }
            Output::Forgot { peer } => {
                tracing::info!(%peer, "forgotten: closing its connection and no longer dialing it");
                self.links.unwant(peer);
                if self
                    .links
                    .refuse(peer, "forgotten: it left, or was forgotten")
                {
                    // Its Down event will no longer match a connection: tell the replica now.
                    self.refused.push(peer);
                }
                if !self.replica.is_edge() {
                    self.membership.forget(peer);
                    self.membership_outputs();
                }
            }
            Output::Forwarded { id, result } => self.forwarded(id, result),
            Output::HandedOver { key, local, made } => {
                tracing::debug!(key = %key, ?local, ?made, "local write handed over");
            }
            Output::BarrierDone { id, result } => {
                if let Some(reply) = self.read_barriers.remove(&id) {
                    let _ = reply.send(result);
                }
            }
            Output::Event(e) => {
                tracing::info!("event: {e:?}");
                if matches!(e, Event::IdConfirmed | Event::Recovered { .. }) {
                    self.adoption_settled();
                }
                let _ = self.events_tx.send(NodeEvent {
                    at_ms: now_ms(),
                    kind: EventKind::Replica(e.clone()),
                });
                if self.events.len() == EVENTS_KEPT_MAX {
                    self.events.pop_front();
                }
                self.events.push_back(e);
            }
        }
    }

    /// Carries out what membership decided: packets, timers, members up and down.
    fn membership_outputs(&mut self) {
        for o in self.membership.drain() {
            match o {
                MembershipOutput::Send { to, data } => match self.links.get(to.node) {
                    Some(c) => {
                        let _ = c.connection.send_datagram(Bytes::from(data));
                    }
                    None => self.links.want(to.node, &to.addr, &self.transport),
                },
                MembershipOutput::Timer { timer, after_ms } => {
                    let tx = self.timer_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(after_ms)).await;
                        let _ = tx.send(timer).await;
                    });
                }
                MembershipOutput::Up(m) => {
                    if m.node != self.me {
                        self.replica.add_member(m.node, &m.region);
                        self.links.want(m.node, &m.addr, &self.transport);
                    }
                }
                MembershipOutput::Down(m) => self.links.unwant(m.node),
            }
        }
    }

    fn net(&mut self, ev: NetEvent) {
        let now = now_ms();
        match ev {
            NetEvent::Datagram { conn, node, data } => {
                // Membership is the members' business: not an edge's, nor
                // a server's with its edges.
                let members = !self.replica.is_edge() && !self.edges.contains(&node);
                if members && self.links.is_current(node, conn) {
                    if let Err(e) = self.membership.handle_data(&data) {
                        self.metrics
                            .malformed_frames
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %node, "{e}");
                    }
                }
            }
            NetEvent::Up {
                conn,
                node,
                name,
                region,
                edge,
                dialed,
                tx,
                connection,
            } => {
                let certified = (name.clone(), region.clone());
                let role = if edge { Role::Edge } else { Role::Server };
                if edge {
                    // Not a member: nothing to announce or count.
                    self.edges.insert(node);
                } else if !self.replica.is_edge() {
                    self.edges.remove(&node);
                    self.replica.add_member(node, &region);
                    let member = Member {
                        node,
                        name,
                        region,
                        addr: connection.remote_address().to_string(),
                        bump: 0,
                    };
                    if let Err(e) = self.membership.announce(member) {
                        tracing::debug!("{e}");
                    }
                }
                let new = Conn {
                    id: conn,
                    dialed,
                    tx,
                    connection,
                    certified,
                };
                match self.links.up(node, new) {
                    Adopted::New => self.replica.connected_as(node, role, now),
                    Adopted::Replaced => self.replica.reconnected(node, now),
                    Adopted::Duplicate => {}
                }
            }
            NetEvent::Message { conn, node, msg } => {
                if !self.links.is_current(node, conn) {
                    return;
                }
                // A hello names the node its certificate names, or the peer is refused.
                if let Message::Hello(h) = &msg {
                    let certified = self.links.get(node).map(|c| c.certified.clone());
                    if certified.as_ref() != Some(&(h.name.clone(), h.region.clone())) {
                        self.metrics.peers_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            peer = %node, name = %h.name, region = %h.region, ?certified,
                            "refused a peer whose hello names another node than its certificate"
                        );
                        self.links
                            .refuse(node, "hello differs from the certificate");
                        self.replica.disconnected(node, now);
                        return;
                    }
                }
                self.replica.handle(node, msg, now);
            }
            NetEvent::Down { conn, node } => {
                if self.links.down(node, conn) {
                    self.edges.remove(&node);
                    self.replica.disconnected(node, now);
                }
            }
        }
    }

    /// Why client writes cannot be taken now, if they cannot.
    fn writes_refused(&self) -> Option<NodeError> {
        if let Some(e) = &self.failed {
            return Some(NodeError::StoreFailed(e.clone()));
        }
        self.store_trouble
            .as_ref()
            .map(|t| NodeError::StoreUnavailable {
                disk_full: t.disk_full,
                error: t.error.clone(),
            })
    }

    /// Runs `answer` once every persist issued so far is durable (or with
    /// the error that stopped the node).
    fn barrier(&mut self, answer: Barrier) {
        self.absorb();
        self.barriers.push_back((self.issued, answer));
    }

    /// Sends `value` on `reply` once every persist issued so far is durable.
    fn answer_when_durable<T: Send + 'static>(
        &mut self,
        reply: oneshot::Sender<Result<T, NodeError>>,
        value: T,
    ) {
        self.barrier(Box::new(move |r| {
            let _ = reply.send(r.map(|()| value));
        }));
    }

    fn command(&mut self, c: Command) {
        let now = now_ms();
        match c {
            Command::Put {
                key,
                value,
                opts,
                reply,
            } => self.put(key, value, opts, reply, now),
            Command::DeletePrefix {
                prefix,
                keys_max,
                ack,
                reply,
            } => self.delete_prefix(&prefix, keys_max, ack, reply, now),
            Command::Txn {
                ops,
                ack,
                keys_max,
                reply,
            } => self.txn(ops, ack, keys_max, reply, now),
            Command::RegionConnection { region, reply } => {
                let found = match self.replica.peers_in(&region) {
                    None => Err(ForwardError::UnknownRegion),
                    Some(peers) => peers
                        .iter()
                        .find_map(|p| self.links.get(*p))
                        .map(|c| c.connection.clone())
                        .ok_or(ForwardError::Unreachable(region)),
                };
                let _ = reply.send(found);
            }
            Command::NodeConnection { who, reply } => {
                let found = match self.replica.peer_called(&who) {
                    None => Err(ForwardError::UnknownNode(who)),
                    Some(peer) => self
                        .links
                        .get(peer)
                        .map(|c| c.connection.clone())
                        .ok_or(ForwardError::NodeUnreachable(who)),
                };
                let _ = reply.send(found);
            }
            Command::ReadBarrier {
                scope,
                prefix,
                reply,
            } => {
                let id = self.next_read_barrier;
                self.next_read_barrier += 1;
                self.read_barriers.insert(id, reply);
                self.replica.barrier(id, &scope, prefix, now);
            }
            Command::Import { entries, reply } => {
                if let Some(e) = self.writes_refused() {
                    let _ = reply.send(Err(e));
                    return;
                }
                let report = self.replica.import(entries, now);
                // Answer once the persist it produced is durable.
                self.answer_when_durable(reply, report);
            }
            Command::Promote { reply } => {
                self.replica.promote();
                let _ = reply.send(());
            }
            Command::Leave { reply } => match self.replica.leave(now) {
                Ok(_) => {
                    // SWIM hears it too: the members stop probing us.
                    self.membership.leave();
                    self.membership_outputs();
                    self.answer_when_durable(reply, ());
                }
                Err(e) => {
                    let _ = reply.send(Err(NodeError::Leave(e)));
                }
            },
            Command::Forget { who, reply } => {
                let Some(peer) = self.replica.peer_called(&who).or_else(|| {
                    self.replica
                        .forgotten()
                        .iter()
                        .find(|(id, f)| f.name == who || id.to_string() == who)
                        .map(|(id, _)| *id)
                }) else {
                    let _ = reply.send(Err(NodeError::UnknownMember(who)));
                    return;
                };
                match self.replica.forget(peer, now) {
                    Ok(f) => self.answer_when_durable(reply, f),
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::Forget(e)));
                    }
                }
            }
            Command::Members { reply } => {
                let report = super::types::MembersReport {
                    edge: self.replica.is_edge(),
                    known: self.replica.known_peers(),
                    swim: self.membership.view(),
                    forgotten: self
                        .replica
                        .forgotten()
                        .iter()
                        .map(|(id, f)| (*id, f.clone()))
                        .collect(),
                };
                let _ = reply.send(report);
            }
            Command::Get { key, reply } => {
                let _ = reply.send(self.read(&key, now));
            }
            Command::GetEntry { key, reply } => {
                let _ = reply.send(self.read_entry(&key, now));
            }
            Command::PutDoc {
                key,
                write,
                opts,
                reply,
            } => self.put_doc(key, write, opts, reply, now),
            Command::List { prefix, reply } => {
                let _ = reply.send(self.list(&prefix, now));
            }
            Command::Changes {
                prefix,
                since,
                reply,
            } => {
                let _ = reply.send(self.changes(&prefix, since));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status(now));
            }
            Command::Digest {
                prefix,
                deep,
                reply,
            } => {
                let _ = reply.send(self.digest(&prefix, deep, now));
            }
            Command::Snapshot {
                since,
                base_after_start,
                reply,
            } => match self.snapshot(since, base_after_start, now) {
                // Answered once everything it shows is durable: a backup
                // never holds a change a crash could take back.
                Ok(snap) => self.answer_when_durable(reply, snap),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::History { key, reply } => {
                let _ = reply.send(self.history.versions(&key));
            }
            Command::Conflicts { reply } => {
                let _ = reply.send(self.conflicts());
            }
            Command::Hashes { prefix, reply } => {
                let _ = reply.send(self.hashes(&prefix));
            }
            Command::DigestChildren {
                level,
                parents,
                reply,
            } => {
                let _ = reply.send(self.replica.digest_children(level, &parents));
            }
            Command::LeafHashes { leaves, reply } => {
                let _ = reply.send(self.leaf_hashes(&leaves));
            }
            Command::Shutdown { .. } => unreachable!("handled by the loop"),
        }
    }

    /// A put or a delete of one key, answered when acknowledged.
    fn put(
        &mut self,
        key: Key,
        value: Option<Bytes>,
        opts: WriteOptions,
        reply: oneshot::Sender<Result<WriteReceipt, NodeError>>,
        now: u64,
    ) {
        if let Some(e) = self.writes_refused() {
            let _ = reply.send(Err(e));
            return;
        }
        if self.replica.is_edge() {
            return self.edge_put(key, value, opts, reply, now);
        }
        let ack = opts.ack.unwrap_or(self.replica.config().write_ack);
        let r = match value {
            Some(v) => self
                .replica
                .put_acked(key, v, opts.flags, opts.cas, ack, now),
            None => self.replica.delete_acked(key, opts.cas, ack, now),
        };
        match r {
            Ok(receipt) => {
                self.pending.insert(receipt.stamp, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// A document write, answered once acknowledged (an edge forwards it
    /// to its server).
    fn put_doc(
        &mut self,
        key: Key,
        write: DocWrite,
        opts: WriteOptions,
        reply: oneshot::Sender<Result<WriteReceipt, NodeError>>,
        now: u64,
    ) {
        if let Some(e) = self.writes_refused() {
            let _ = reply.send(Err(e));
            return;
        }
        if self.replica.is_edge() {
            return self.edge_put_doc(key, write, opts, reply, now);
        }
        let ack = opts.ack.unwrap_or(self.replica.config().write_ack);
        match self
            .replica
            .put_doc(key, write, opts.flags, opts.cas, ack, now)
        {
            Ok(receipt) => {
                self.pending.insert(receipt.stamp, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// A delete of every key under `prefix`, answered once its tombstones
    /// are durable (or, with a quorum, all acknowledged).
    fn delete_prefix(
        &mut self,
        prefix: &str,
        keys_max: usize,
        ack: Option<WriteAck>,
        reply: oneshot::Sender<Result<usize, NodeError>>,
        now: u64,
    ) {
        if let Some(e) = self.writes_refused() {
            let _ = reply.send(Err(e));
            return;
        }
        if self.replica.is_edge() {
            return self.edge_delete_prefix(prefix, keys_max, ack, reply, now);
        }
        let ack = ack.unwrap_or(self.replica.config().write_ack);
        match self.replica.delete_prefix_acked(prefix, keys_max, ack, now) {
            Ok(receipts) => {
                let n = receipts.len();
                let answer: Barrier = Box::new(move |r| {
                    let _ = reply.send(r.map(|()| n));
                });
                self.answer_writes(&receipts, ack, answer);
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// Runs `answer` once the writes of `receipts`, made in one input, are
    /// acknowledged: every one of them with a quorum, else once they are
    /// durable (at once when there are none).
    fn answer_writes(&mut self, receipts: &[WriteReceipt], ack: WriteAck, answer: Barrier) {
        let n = receipts.len();
        if ack == WriteAck::Quorum && n > 0 {
            let group = self.next_group;
            self.next_group += 1;
            for r in receipts {
                self.group_of.insert(r.stamp, group);
            }
            self.groups.insert(group, (n, answer));
        } else if n > 0 {
            self.barrier(answer);
        } else {
            answer(Ok(()));
        }
    }

    /// A transaction: its reads checked before they are served, its writes
    /// applied in one input and answered once all are acknowledged.
    fn txn(
        &mut self,
        ops: Vec<TxnOp>,
        ack: Option<WriteAck>,
        keys_max: usize,
        reply: oneshot::Sender<Result<TxnOutcome, NodeError>>,
        now: u64,
    ) {
        for op in &ops {
            let quarantined = match op.reads() {
                Some((key, false)) if !self.replica.check_before_serving(key, now) => {
                    vec![key.to_string()]
                }
                Some((prefix, true)) => {
                    self.replica
                        .check_prefix_before_serving(prefix, QUARANTINED_NAMED_MAX, now)
                }
                _ => Vec::new(),
            };
            if !quarantined.is_empty() {
                let _ = reply.send(Err(NodeError::Quarantined { keys: quarantined }));
                return;
            }
        }
        if ops.iter().any(TxnOp::writes) {
            if let Some(e) = self.writes_refused() {
                let _ = reply.send(Err(e));
                return;
            }
        }
        if self.replica.is_edge() {
            return self.edge_txn(ops, ack, keys_max, reply, now);
        }
        let ack = ack.unwrap_or(self.replica.config().write_ack);
        match self.replica.txn(&ops, ack, keys_max, now) {
            Ok(outcome) => {
                let receipts = outcome.receipts.clone();
                let answer: Barrier = Box::new(move |r| {
                    let _ = reply.send(r.map(|()| outcome));
                });
                self.answer_writes(&receipts, ack, answer);
            }
            Err(TxnError::Failed(failures)) => {
                let _ = reply.send(Err(NodeError::TxnFailed(failures)));
            }
            Err(TxnError::Write(e)) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }
}
