//! Edges at the replica level (see `sync/replica/edge.rs`): servers and
//! edges wired by hand, every message through the real codec.

#[path = "common/net.rs"]
mod net;

use bytes::Bytes;
use meridian::core::codec::Message;
use meridian::sync::{
    EdgeWrites, EdgeWritten, Event, ForwardError, PartitionPolicy, Refusal, Replica, WriteAck,
    WriteError,
};
use net::*;

/// Connects the first `servers` nodes with each other.
fn mesh(net: &mut Net, servers: usize) {
    for a in 0..servers {
        for b in a + 1..servers {
            net.link(a, b);
        }
    }
    net.settle();
}

/// Forwards a put of `k` from edge `e` as write `id`.
fn edge_put(net: &mut Net, e: usize, id: u64, k: &str, v: &str) -> Result<(), WriteError> {
    let now = net.local(e);
    let r = net.nodes[e].edge_write(id, k, Some(Bytes::from(v.to_string())), 0, None, None, now);
    net.settle();
    r.map(|_| ())
}

/// Makes edge `e` take writes while no server is connected.
fn local_writes(net: &mut Net, e: usize) {
    let mut c = net.nodes[e].config().clone();
    c.edge_writes = EdgeWrites::Local;
    net.nodes[e] = Replica::new(c, net.local(e)).unwrap();
}

/// A write at edge `e` (`None`: a delete) with `cas` and `ack`.
fn edge_write(
    net: &mut Net,
    e: usize,
    k: &str,
    v: Option<&str>,
    cas: Option<u64>,
    ack: Option<WriteAck>,
) -> Result<EdgeWritten, WriteError> {
    let now = net.local(e);
    let value = v.map(|v| Bytes::from(v.to_string()));
    let r = net.nodes[e].edge_write(0, k, value, 0, cas, ack, now);
    net.settle();
    r
}

/// Lets a few anti-entropy rounds run.
fn rounds(net: &mut Net) {
    let c = net.nodes[0].config().clone();
    for _ in 0..3 {
        net.advance(c.ae_interval_ms + c.ae_jitter_ms + 1);
    }
}

/// How forwarded write `id` ended.
fn outcome(net: &Net, id: u64) -> &Result<meridian::sync::ForwardReceipt, WriteError> {
    &net.forwarded
        .iter()
        .find(|(_, i, _)| *i == id)
        .unwrap_or_else(|| panic!("write {id} was not answered"))
        .2
}

#[test]
fn an_edge_takes_every_origin_from_its_server_and_its_writes_reach_every_member() {
    let mut net = Net::with_edges(3, 1);
    mesh(&mut net, 3);
    net.attach(0, 3);
    // Written in another region: it reaches the edge through its server.
    net.put(1, "from/eu", "x");
    assert_eq!(net.value(3, "from/eu").as_deref(), Some(&b"x"[..]));
    // The edge's write is made by its server, and answered once it is
    // back here too (a read after the answer sees it).
    edge_put(&mut net, 3, 1, "from/edge", "y").unwrap();
    let receipt = outcome(&net, 1).as_ref().unwrap();
    assert_eq!(receipt.count, 1);
    assert_eq!(receipt.receipts[0].stamp.node, net.id(0));
    assert_eq!(
        receipt.receipts[0].index,
        net.nodes[3].get("from/edge").unwrap().modify_index
    );
    for i in 0..4 {
        assert_eq!(
            net.value(i, "from/edge").as_deref(),
            Some(&b"y"[..]),
            "node {i}"
        );
    }
    assert!(net.roots_equal());
    // The edge counts for nothing the members decide, and sends no feed.
    let st = net.nodes[0].status();
    assert_eq!((st.peers.len(), st.edges), (2, 1));
    assert_eq!(st.total_regions, 3);
    assert_eq!(net.nodes[3].metrics().feed_entries_sent, 0);
    assert_eq!(net.nodes[3].metrics().forwards_sent, 1);
    assert_eq!(net.nodes[0].metrics().forwards_made, 1);
    // A prefix delete from the edge deletes what the server knows.
    let now = net.local(3);
    net.nodes[3]
        .edge_delete_prefix(2, "from/", 100, None, now)
        .unwrap();
    net.settle();
    assert_eq!(outcome(&net, 2).as_ref().unwrap().count, 2);
    for i in 0..4 {
        assert!(net.value(i, "from/eu").is_none(), "node {i}");
    }
}

#[test]
fn an_edge_without_a_server_refuses_writes_and_one_cut_off_fails_them() {
    let mut net = Net::with_edges(1, 1);
    // No server yet.
    let e = edge_put(&mut net, 1, 1, "k", "v").unwrap_err();
    assert_eq!(e, WriteError::Forward(ForwardError::NoServer));
    net.attach(0, 1);
    // Cut off without a word: the forward is lost; the loss of the
    // connection fails it (the server may or may not have made it).
    net.cut(0, 1);
    edge_put(&mut net, 1, 2, "k", "v").unwrap();
    assert!(net.forwarded.iter().all(|(_, id, _)| *id != 2));
    net.disconnect(0, 1);
    assert_eq!(
        outcome(&net, 2),
        &Err(WriteError::Forward(ForwardError::Lost))
    );
    // Cut off and never told: the forward times out.
    net.attach(0, 1);
    net.cut(0, 1);
    edge_put(&mut net, 1, 3, "k", "v").unwrap();
    let timeout = net.nodes[1].config().forward_timeout_ms;
    net.advance(timeout + 200);
    assert!(matches!(
        outcome(&net, 3),
        Err(WriteError::Forward(ForwardError::Timeout { .. }))
    ));
    assert!(net.value(0, "k").is_none(), "nothing was made");
}

#[test]
fn check_and_set_at_an_edge_holds_against_what_the_server_holds() {
    let mut net = Net::with_edges(1, 1);
    net.attach(0, 1);
    net.put(0, "k", "v1");
    let seen = net.nodes[1].get("k").unwrap().modify_index;
    // A wrong index fails at the edge at once.
    let now = net.local(1);
    let e = net.nodes[1]
        .edge_write(
            9,
            "k",
            Some(Bytes::from_static(b"x")),
            0,
            Some(seen + 5),
            None,
            now,
        )
        .unwrap_err();
    assert!(matches!(e, WriteError::CasMismatch { .. }));
    // The server moved on; the edge has not heard yet: its check-and-set
    // with the index it saw fails at the server, and nothing is written.
    net.drop = |m| matches!(m, Message::Feed(_));
    net.put(0, "k", "v2");
    let now = net.local(1);
    net.nodes[1]
        .edge_write(
            10,
            "k",
            Some(Bytes::from_static(b"x")),
            0,
            Some(seen),
            None,
            now,
        )
        .unwrap();
    net.settle();
    assert!(matches!(
        outcome(&net, 10),
        Err(WriteError::CasMismatch { expected, .. }) if *expected == seen
    ));
    assert_eq!(net.value(0, "k").as_deref(), Some(&b"v2"[..]));
    // Once it holds what the server holds, its check-and-set goes through.
    net.drop = |_| false;
    let resend_ms = net.nodes[0].config().peer_timeout_ms;
    net.advance(resend_ms + 1_000);
    let seen = net.nodes[1].get("k").unwrap().modify_index;
    let now = net.local(1);
    net.nodes[1]
        .edge_write(
            11,
            "k",
            Some(Bytes::from_static(b"x")),
            0,
            Some(seen),
            None,
            now,
        )
        .unwrap();
    net.settle();
    assert!(outcome(&net, 11).is_ok());
    assert_eq!(net.value(0, "k").as_deref(), Some(&b"x"[..]));
}

#[test]
fn a_server_serves_at_most_edges_max_edges_and_edges_take_servers_only() {
    let mut net = Net::with_edges_and(1, 3, |i| {
        let mut c = config(i);
        c.edges_max = 1;
        c
    });
    net.attach(0, 1);
    net.attach(0, 2);
    assert!(net
        .disconnects
        .iter()
        .any(|(i, r)| *i == 0 && *r == Refusal::EdgesFull { max: 1 }));
    assert_eq!(net.nodes[0].status().edges, 1);
    // An edge refuses an edge.
    let (e1, now) = (net.id(1), net.local(3));
    net.nodes[3].connected_as(e1, meridian::sync::Role::Edge, now);
    net.pump(3);
    assert!(net
        .disconnects
        .iter()
        .any(|(i, r)| *i == 3 && *r == Refusal::EdgeToEdge));
}

#[test]
fn an_edge_moved_to_another_server_catches_up_by_anti_entropy_and_drops_what_was_collected() {
    let mut net = Net::with_edges(2, 1);
    mesh(&mut net, 2);
    net.attach(0, 2);
    for i in 0..50 {
        net.put(0, &format!("keep/{i}"), "1");
    }
    net.put(0, "gone", "1");
    assert_eq!(net.value(2, "gone").as_deref(), Some(&b"1"[..]));
    // The edge goes away; meanwhile "gone" is deleted and its tombstone
    // collected by both servers (the edge holds nothing up).
    net.disconnect(0, 2);
    let now = net.local(1);
    net.nodes[1].delete("gone", None, now).unwrap();
    net.put(1, "new", "2");
    net.advance(3_000);
    assert!(net.nodes[0].get("gone").is_none() && net.nodes[1].get("gone").is_none());
    let applied_before = net.nodes[2].metrics().feed_entries_applied;
    // It comes back attached to the other server: it takes that server's
    // feed from now and catches up by anti-entropy, a few entries.
    net.attach(1, 2);
    net.advance(2_000);
    assert!(net.roots_equal());
    assert!(net.value(2, "gone").is_none(), "the deleted key came back");
    assert_eq!(net.value(2, "new").as_deref(), Some(&b"2"[..]));
    let m = net.nodes[2].metrics();
    assert_eq!(m.collected_dropped, 1);
    assert!(
        m.feed_entries_applied - applied_before < 10,
        "not the whole feed again: {}",
        m.feed_entries_applied - applied_before
    );
}

/// `edge_writes = "local"` (see `sync/replica/handover.rs`): cut off, the
/// edge takes puts and deletes itself, durable and acknowledged there,
/// keeps them across a restart, and hands them over when a server is
/// back: the server makes each as its own write unless it holds a newer
/// version of the key, and every node ends with the same state.
#[test]
fn an_edge_with_local_writes_takes_them_while_cut_off_and_hands_them_over() {
    let mut net = Net::with_edges(2, 1);
    mesh(&mut net, 2);
    local_writes(&mut net, 2);
    net.put(0, "old", "o");
    net.put(0, "gone", "g");
    net.attach(0, 2);
    assert_eq!(net.value(2, "gone").as_deref(), Some(&b"g"[..]));
    // Its server says it takes writes (its view, every heartbeat).
    net.advance(net.nodes[0].config().heartbeat_interval_ms + 1);
    net.disconnect(0, 2);

    // Cut off: taken here, acknowledged once durable, read back here.
    let acks = net.acks.len();
    for (k, v) in [("new", Some("n")), ("gone", None), ("old", Some("edge"))] {
        let w = edge_write(&mut net, 2, k, v, None, None).unwrap();
        let EdgeWritten::Local(receipt) = w else {
            panic!("{k} was not taken locally: {w:?}");
        };
        assert_eq!(receipt.stamp.node, net.id(2));
    }
    assert_eq!(net.acks.len(), acks + 3, "each acknowledged once durable");
    assert!(net.acks[acks..].iter().all(|(i, _)| *i == 2));
    assert_eq!(net.value(2, "new").as_deref(), Some(&b"n"[..]));
    assert!(net.value(2, "gone").is_none());
    // What needs a server is still refused.
    let seen = net.nodes[2].get("new").unwrap().modify_index;
    for (cas, ack, what) in [
        (Some(seen), None, "a check-and-set"),
        (None, Some(WriteAck::Quorum), "a quorum write"),
    ] {
        let e = edge_write(&mut net, 2, "new", Some("x"), cas, ack).unwrap_err();
        assert_eq!(e, WriteError::Forward(ForwardError::ServerNeeded { what }));
    }
    let now = net.local(2);
    let e = net.nodes[2]
        .edge_delete_prefix(7, "", 10, None, now)
        .unwrap_err();
    assert!(matches!(
        e,
        WriteError::Forward(ForwardError::ServerNeeded { .. })
    ));
    // A server writes `old` after the edge did: that write is newer.
    net.advance(50);
    net.put(1, "old", "server");
    net.settle();

    // A restart keeps what waits.
    let cfg = net.nodes[2].config().clone();
    net.nodes[2] = Replica::restore(cfg, net.durable[2].clone(), net.local(2)).unwrap();
    assert_eq!(net.nodes[2].local_writes_waiting(), 3);

    // Back: handed over. `new` and the delete are made by the server (its
    // stamps); `old` keeps the server's later write.
    net.attach(0, 2);
    rounds(&mut net);
    for i in 0..3 {
        assert_eq!(net.value(i, "new").as_deref(), Some(&b"n"[..]), "node {i}");
        assert!(net.value(i, "gone").is_none(), "node {i}");
        assert_eq!(
            net.value(i, "old").as_deref(),
            Some(&b"server"[..]),
            "node {i}"
        );
    }
    assert_eq!(
        net.nodes[2].get("new").unwrap().entry.stamp.node,
        net.id(0),
        "made by the server"
    );
    assert_eq!(net.nodes[2].local_writes_waiting(), 0);
    assert_eq!(net.nodes[0].metrics().handovers_made, 2);
    assert_eq!(net.nodes[0].metrics().handovers_skipped, 1);
    assert!(net.roots_equal());
}

/// A server whose limits refuse one of the local writes: the batch is sent
/// again key by key, the refused key is dropped at the edge (with an
/// event) and takes the server's version back; the others are made.
#[test]
fn a_local_write_its_server_refuses_is_dropped_and_the_rest_handed_over() {
    let mut net = Net::with_edges_and(1, 1, |i| {
        let mut c = config(i);
        c.limits.value_bytes_max = 1_024;
        c
    });
    local_writes(&mut net, 1);
    // Never heard from a server since it started: nothing is taken.
    let e = edge_write(&mut net, 1, "k", Some("v"), None, None).unwrap_err();
    assert_eq!(e, WriteError::Forward(ForwardError::NoServer));
    net.attach(0, 1);
    net.advance(net.nodes[0].config().heartbeat_interval_ms + 1);
    net.disconnect(0, 1);
    let big = "x".repeat(2_000);
    edge_write(&mut net, 1, "big", Some(&big), None, None).unwrap();
    edge_write(&mut net, 1, "small", Some("s"), None, None).unwrap();
    assert_eq!(net.nodes[1].local_writes_waiting(), 2);
    net.attach(0, 1);
    rounds(&mut net);
    assert_eq!(net.value(0, "small").as_deref(), Some(&b"s"[..]));
    assert_eq!(net.value(1, "small").as_deref(), Some(&b"s"[..]));
    assert!(net.value(0, "big").is_none());
    assert!(net.value(1, "big").is_none(), "dropped at the edge");
    assert!(net
        .events_of(1)
        .iter()
        .any(|e| matches!(e, Event::LocalWriteDropped { key, .. } if key == "big")));
    assert_eq!(net.nodes[1].local_writes_waiting(), 0);
    assert!(net.roots_equal());
}

/// Without `edge_writes = "local"` nothing is taken while cut off.
#[test]
fn an_edge_without_local_writes_takes_nothing_while_cut_off() {
    let mut net = Net::with_edges(1, 1);
    let e = edge_write(&mut net, 1, "k", Some("v"), None, None).unwrap_err();
    assert_eq!(e, WriteError::Forward(ForwardError::NoServer));
    assert!(net.nodes[1].get("k").is_none());
    assert_eq!(net.nodes[1].local_writes_waiting(), 0);
}

/// An edge never takes local writes while the servers it heard from are
/// standbys: they would refuse them.
#[test]
fn an_edge_takes_no_local_writes_in_a_standby_region() {
    let mut net = Net::with_edges_and(1, 1, |i| {
        let mut c = config(i);
        c.standby = true;
        c
    });
    local_writes(&mut net, 1);
    net.attach(0, 1);
    let beat = net.nodes[0].config().heartbeat_interval_ms;
    net.advance(beat + 1);
    net.disconnect(0, 1);
    // Its server is a standby: nothing is taken.
    let e = edge_write(&mut net, 1, "k", Some("v"), None, None).unwrap_err();
    assert_eq!(e, WriteError::Forward(ForwardError::NoServer));
    assert!(net.nodes[1].get("k").is_none());
}

/// A server that refuses an edge's local writes as unavailable (here it
/// lost its quorum) a few times in a row is left: the edge refuses it, and
/// the next server it attaches to takes them.
#[test]
fn an_edge_leaves_a_server_that_keeps_refusing_its_local_writes() {
    let mut net = Net::with_edges_and(3, 1, |i| {
        let mut c = config(i);
        c.partition_policy = PartitionPolicy::Quorum;
        c
    });
    mesh(&mut net, 3);
    local_writes(&mut net, 3);
    net.attach(0, 3);
    let c = net.nodes[0].config().clone();
    net.advance(c.heartbeat_interval_ms + 1);
    net.disconnect(0, 3);
    let w = edge_write(&mut net, 3, "k", Some("v"), None, None).unwrap();
    assert!(matches!(w, EdgeWritten::Local(_)));
    // Server 0 loses its quorum; the edge comes back to it.
    net.disconnect(0, 1);
    net.disconnect(0, 2);
    net.advance(c.contact_timeout_ms + c.heartbeat_interval_ms);
    net.attach(0, 3);
    for _ in 0..4 {
        net.advance(c.heartbeat_interval_ms + 1);
    }
    assert!(
        net.disconnects
            .iter()
            .any(|(i, r)| *i == 3 && matches!(r, Refusal::TakesNoWrites { times: 3, .. })),
        "{:?}",
        net.disconnects
    );
    assert!(net.value(0, "k").is_none());
    assert_eq!(net.nodes[3].local_writes_waiting(), 1);
    // Another server takes them.
    net.disconnect(0, 3);
    net.attach(1, 3);
    rounds(&mut net);
    for i in 1..4 {
        assert_eq!(net.value(i, "k").as_deref(), Some(&b"v"[..]), "node {i}");
    }
    assert_eq!(net.nodes[3].local_writes_waiting(), 0);
}

/// An edge whose clock runs a minute fast: its local writes count as
/// stamped at most the clock bound past the server's clock when they are
/// handed over (decided on arrival, as the README says), so a write made
/// in another region a second after the hand-over wins over them, and the
/// edge's own version (stamped a minute ahead) gives way everywhere.
#[test]
fn a_fast_edge_clock_does_not_make_its_local_writes_win_for_long() {
    let mut net = Net::with_edges(2, 1);
    mesh(&mut net, 2);
    local_writes(&mut net, 2);
    net.attach(0, 2);
    net.advance(net.nodes[0].config().heartbeat_interval_ms + 1);
    net.disconnect(0, 2);
    net.skew[2] = 60_000;
    edge_write(&mut net, 2, "fast", Some("edge"), None, None).unwrap();
    net.attach(0, 2);
    net.advance(1_000);
    // A second later, in another region.
    net.put(1, "fast", "later");
    rounds(&mut net);
    for i in 0..3 {
        assert_eq!(
            net.value(i, "fast").as_deref(),
            Some(&b"later"[..]),
            "node {i}"
        );
    }
    assert_eq!(net.nodes[2].local_writes_waiting(), 0);
    assert!(net.roots_equal());
}
