//! A few replicas wired together by hand, in virtual time, every message
//! through the real codec: the harness of `tests/replica.rs` and
//! `tests/integrity.rs`.
#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;
use meridian::core::codec::{self, ClusterId, Message};
use meridian::core::types::{NodeId, Stamp};
use meridian::sync::{
    BarrierError, Config, DurableState, Event, ForwardReceipt, Output, Refusal, Replica, Role,
    WriteError, WriteReceipt,
};

pub const T0: u64 = 1_750_000_000_000;
pub const CLUSTER: ClusterId = ClusterId([9; 16]);
pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-southeast"];

pub struct Net {
    pub nodes: Vec<Replica>,
    pub durable: Vec<DurableState>,
    /// Per node: its clock runs this far ahead of `now` (behind when negative).
    pub skew: Vec<i64>,
    pub up: HashSet<(usize, usize)>,
    pub wire: VecDeque<(usize, usize, Vec<u8>)>,
    /// Drops every message this says to drop.
    pub drop: fn(&Message) -> bool,
    /// Changes messages on their way (after `drop`).
    pub tamper: fn(&mut Message),
    /// Bytes of feed frames put on the wire, per (sender, receiver).
    pub feed_bytes: std::collections::HashMap<(usize, usize), usize>,
    pub events: Vec<(usize, Event)>,
    /// Acknowledged writes, and writes answered as not acknowledged.
    pub acks: Vec<(usize, WriteReceipt)>,
    pub unacked: Vec<(usize, WriteReceipt)>,
    pub disconnects: Vec<(usize, Refusal)>,
    /// Read barriers done: the node, the barrier, how it ended.
    pub barriers: Vec<(usize, u64, Result<(), BarrierError>)>,
    /// Forwarded writes done (at edges): the edge, the number, how it ended.
    pub forwarded: Vec<(usize, u64, Result<ForwardReceipt, WriteError>)>,
    pub feed_entries_sent: usize,
    /// Members forgotten: the node that forgot, and whom (their link is
    /// closed, as a driver would).
    pub forgot: Vec<(usize, NodeId)>,
    pub now: u64,
}

pub fn config(i: usize) -> Config {
    let mut c = Config::new(
        NodeId(100 + i as u64),
        &format!("n{i}"),
        REGIONS[i % 3],
        CLUSTER,
    );
    c.push_delay_ms = 0;
    c
}

impl Net {
    pub fn new(n: usize) -> Net {
        Net::with(n, config)
    }

    pub fn with(n: usize, cfg: fn(usize) -> Config) -> Net {
        let mut nodes: Vec<Replica> = (0..n).map(|i| Replica::new(cfg(i), T0).unwrap()).collect();
        for r in nodes.iter_mut() {
            for j in 0..n {
                r.add_member(NodeId(100 + j as u64), REGIONS[j % 3]);
            }
        }
        Net {
            durable: (0..n)
                .map(|i| DurableState::new(NodeId(100 + i as u64)))
                .collect(),
            skew: vec![0; n],
            nodes,
            up: HashSet::new(),
            wire: VecDeque::new(),
            drop: |_| false,
            tamper: |_| {},
            feed_bytes: std::collections::HashMap::new(),
            events: Vec::new(),
            acks: Vec::new(),
            unacked: Vec::new(),
            disconnects: Vec::new(),
            barriers: Vec::new(),
            forwarded: Vec::new(),
            feed_entries_sent: 0,
            forgot: Vec::new(),
            now: T0,
        }
    }

    /// `servers` members (as [`Net::new`]) and then `edges` edges, edge
    /// `e` in the region of server `e % servers`; nothing connected.
    pub fn with_edges(servers: usize, edges: usize) -> Net {
        Net::with_edges_and(servers, edges, config)
    }

    /// [`Net::with_edges`], the servers configured by `cfg`.
    pub fn with_edges_and(servers: usize, edges: usize, cfg: fn(usize) -> Config) -> Net {
        let mut net = Net::with(servers, cfg);
        for e in 0..edges {
            let i = servers + e;
            let mut c = config(i);
            c.region = REGIONS[(e % servers) % 3].to_string();
            c.role = Role::Edge;
            net.nodes.push(Replica::new(c, T0).unwrap());
            net.durable.push(DurableState::new(NodeId(100 + i as u64)));
            net.skew.push(0);
        }
        net
    }

    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].node()
    }

    pub fn index_of(&self, id: NodeId) -> usize {
        self.nodes
            .iter()
            .position(|r| r.node() == id)
            .expect("known node")
    }

    pub fn local(&self, i: usize) -> u64 {
        (self.now as i64 + self.skew[i]) as u64
    }

    pub fn connect(&mut self, a: usize, b: usize) {
        self.link(a, b);
        self.settle();
    }

    /// Brings a connection up without delivering anything yet.
    pub fn link(&mut self, a: usize, b: usize) {
        self.up.insert((a.min(b), a.max(b)));
        let (ia, ib, na, nb) = (self.id(a), self.id(b), self.local(a), self.local(b));
        self.nodes[a].connected(ib, na);
        self.nodes[b].connected(ia, nb);
    }

    /// Attaches edge `edge` to server `server` (each told what the other is).
    pub fn attach(&mut self, server: usize, edge: usize) {
        self.up.insert((server.min(edge), server.max(edge)));
        let (is, ie, ns, ne) = (
            self.id(server),
            self.id(edge),
            self.local(server),
            self.local(edge),
        );
        self.nodes[server].connected_as(ie, Role::Edge, ns);
        self.nodes[edge].connected_as(is, Role::Server, ne);
        self.settle();
    }

    pub fn connect_all(&mut self) {
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                self.connect(a, b);
            }
        }
    }

    /// Cuts the link silently: messages vanish, and neither side is told
    /// (the transport has not noticed yet).
    pub fn cut(&mut self, a: usize, b: usize) {
        self.up.remove(&(a.min(b), a.max(b)));
    }

    pub fn disconnect(&mut self, a: usize, b: usize) {
        self.up.remove(&(a.min(b), a.max(b)));
        let (ia, ib, na, nb) = (self.id(a), self.id(b), self.local(a), self.local(b));
        self.nodes[a].disconnected(ib, na);
        self.nodes[b].disconnected(ia, nb);
        self.settle();
    }

    pub fn pump(&mut self, i: usize) {
        while let Some(o) = self.nodes[i].poll_output() {
            match o {
                Output::Persist(b) => self.durable[i].apply(&b),
                Output::Send { to, mut msg } => {
                    let j = self.index_of(to);
                    if let Message::Feed(f) = &msg {
                        self.feed_entries_sent += f.entries.len() + f.docs.len();
                    }
                    if self.up.contains(&(i.min(j), i.max(j))) && !(self.drop)(&msg) {
                        (self.tamper)(&mut msg);
                        let frame = codec::encode(&msg).unwrap();
                        if matches!(msg, Message::Feed(_)) {
                            *self.feed_bytes.entry((i, j)).or_default() += frame.len();
                        }
                        self.wire.push_back((i, j, frame));
                    }
                }
                Output::Event(e) => self.events.push((i, e)),
                Output::Disconnect { reason, .. } => self.disconnects.push((i, reason)),
                Output::Acknowledge(r) => self.acks.push((i, r)),
                Output::Unacknowledged { receipt, .. } => self.unacked.push((i, receipt)),
                Output::Notify { .. } | Output::HandedOver { .. } => {}
                Output::BarrierDone { id, result } => self.barriers.push((i, id, result)),
                Output::Forwarded { id, result } => self.forwarded.push((i, id, result)),
                Output::Forgot { peer } => {
                    self.forgot.push((i, peer));
                    // The driver closes the connection: both sides hear it.
                    let j = self.index_of(peer);
                    if self.up.remove(&(i.min(j), i.max(j))) {
                        let (ii, now_i, now_j) = (self.id(i), self.local(i), self.local(j));
                        self.nodes[i].disconnected(peer, now_i);
                        self.nodes[j].disconnected(ii, now_j);
                    }
                }
                Output::ReadBack { key } => {
                    let found = self.durable[i].load_record(&key);
                    let now = self.local(i);
                    self.nodes[i].read_back(&key, found, now);
                }
            }
        }
    }

    /// Delivers one message (after carrying out every pending output);
    /// false once the wire is quiet.
    pub fn deliver_one(&mut self) -> bool {
        for i in 0..self.nodes.len() {
            self.pump(i);
        }
        let Some((from, to, frame)) = self.wire.pop_front() else {
            return false;
        };
        if self.up.contains(&(from.min(to), from.max(to))) {
            let msg = codec::decode(&frame).unwrap();
            let (id, now) = (self.id(from), self.local(to));
            self.nodes[to].handle(id, msg, now);
        }
        true
    }

    /// Delivers every message, and the replies, until the wire is quiet.
    pub fn settle(&mut self) {
        for _ in 0..1_000_000 {
            if !self.deliver_one() {
                return;
            }
        }
        panic!("the wire never went quiet");
    }

    /// Delivers at most `n` messages (and the outputs they cause).
    pub fn deliver_some(&mut self, n: usize) {
        for _ in 0..n {
            if !self.deliver_one() {
                return;
            }
        }
    }

    /// Lets `ms` pass in steps of 100 ms, ticking every replica.
    pub fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 100;
            for i in 0..self.nodes.len() {
                let now = self.local(i);
                self.nodes[i].tick(now);
            }
            self.settle();
        }
    }

    pub fn put(&mut self, i: usize, k: &str, v: &str) -> Stamp {
        let now = self.local(i);
        let r = self.nodes[i]
            .put(k, Bytes::from(v.to_string()), 0, None, now)
            .unwrap();
        self.settle();
        r.stamp
    }

    pub fn value(&self, i: usize, k: &str) -> Option<Bytes> {
        self.nodes[i].get(k).and_then(|r| r.entry.value.clone())
    }

    pub fn roots_equal(&mut self) -> bool {
        let r0 = self.nodes[0].root();
        self.nodes.iter_mut().all(|r| r.root() == r0)
    }
}

impl Net {
    /// Restarts replica `i` from its durable state (its links go down
    /// first and come back after).
    pub fn restart(&mut self, i: usize) {
        self.restart_with(i, |_| {});
    }

    /// Restarts replica `i` after `damage` changed its durable state, as a
    /// disk fault while it was down would.
    pub fn restart_with(&mut self, i: usize, damage: impl FnOnce(&mut DurableState)) {
        let n = self.nodes.len();
        let linked: Vec<usize> = (0..n)
            .filter(|&j| j != i && self.up.contains(&(i.min(j), i.max(j))))
            .collect();
        for &j in &linked {
            self.disconnect(i, j);
        }
        damage(&mut self.durable[i]);
        let cfg = self.nodes[i].config().clone();
        let now = self.local(i);
        let mut r = Replica::restore(cfg, self.durable[i].clone(), now).unwrap();
        for j in 0..n {
            r.add_member(NodeId(100 + j as u64), REGIONS[j % 3]);
        }
        self.nodes[i] = r;
        self.pump(i);
        for j in linked {
            self.connect(i, j);
        }
    }

    /// Events of node `i` so far.
    pub fn events_of(&self, i: usize) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|(j, _)| *j == i)
            .map(|(_, e)| e)
            .collect()
    }
}
