//! Edges at the replica level (see `sync/replica/edge.rs`): servers and
//! edges wired by hand, every message through the real codec.

#[path = "common/net.rs"]
mod net;

use bytes::Bytes;
use meridian::core::codec::Message;
use meridian::sync::{ForwardError, Refusal, WriteError};
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
    r
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
