//! Members that leave, at the replica level (see `sync/replica/members.rs`):
//! replicas wired by hand, every message through the real codec.

#[path = "common/net.rs"]
mod net;

use meridian::sync::{ForgetError, LeaveError, Recovery, Replica, WriteError};
use net::*;

/// The regions node `i` counts (reachable, known).
fn regions(net: &mut Net, i: usize) -> (usize, usize) {
    let s = net.nodes[i].status();
    (s.reachable_regions.len(), s.total_regions)
}

fn delete(net: &mut Net, i: usize, k: &str) {
    let now = net.local(i);
    net.nodes[i].delete(k, None, now).unwrap();
    net.settle();
}

/// Whether node `i` holds anything for `k` (a tombstone included).
fn holds(net: &Net, i: usize, k: &str) -> bool {
    net.nodes[i].get(k).is_some()
}

/// A member that died keeps its region unreachable and holds tombstone
/// collection back; forgotten, it stops counting on every member (the
/// notice spreads), collection resumes, and the forget outlives a restart.
#[test]
fn a_forgotten_member_stops_counting_and_collection_resumes() {
    let mut net = Net::new(3);
    net.connect_all();
    net.put(0, "k", "v");
    // Node 2 dies: the delete never reaches it.
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    delete(&mut net, 0, "k");
    net.advance(10_000);
    assert_eq!(regions(&mut net, 0), (2, 3));
    assert!(
        holds(&net, 0, "k") && holds(&net, 1, "k"),
        "the tombstone waits for node 2"
    );
    // Not while it is in contact, not ourselves, not a stranger.
    let (me, one, now) = (net.id(0), net.id(1), net.local(0));
    assert_eq!(net.nodes[0].forget(me, now), Err(ForgetError::Myself));
    let stranger = meridian::core::types::NodeId(7);
    assert_eq!(
        net.nodes[0].forget(stranger, now),
        Err(ForgetError::Unknown(stranger))
    );
    assert!(matches!(
        net.nodes[0].forget(one, now),
        Err(ForgetError::InContact { .. })
    ));
    let gone = net.id(2);
    let now = net.local(0);
    let f = net.nodes[0].forget(gone, now).unwrap();
    assert_eq!((f.name.as_str(), f.left), ("n2", false));
    net.settle();
    for i in 0..2 {
        assert!(net.nodes[i].forgotten().contains_key(&gone), "node {i}");
        assert_eq!(regions(&mut net, i), (2, 2), "node {i}");
        assert!(net.nodes[i].status().peers.iter().all(|p| p.node != gone));
    }
    // Forgetting it again changes nothing.
    let now = net.local(0);
    assert_eq!(net.nodes[0].forget(gone, now).unwrap().at, f.at);
    // Once each member found the other equal (anti-entropy), whatever
    // they held of node 2's writes is everywhere: collection resumes.
    net.advance(20_000);
    assert!(
        !holds(&net, 0, "k") && !holds(&net, 1, "k"),
        "collection by stability resumed"
    );
    // Durable: a restart still has it forgotten, and its progress gone.
    assert!(net.durable[1].forgotten.contains_key(&gone));
    assert!(!net.durable[1].peers.contains_key(&gone));
    let cfg = net.nodes[1].config().clone();
    let now = net.local(1);
    let mut r = Replica::restore(cfg, net.durable[1].clone(), now).unwrap();
    r.add_member(gone, REGIONS[2]);
    assert!(r.forgotten().contains_key(&gone));
    let s = r.status();
    assert_eq!(s.total_regions, 2);
    assert!(s.peers.iter().all(|p| p.node != gone));
}

/// A forgotten member that comes back may hold values whose deletes were
/// collected without it: it is told, drops what is at or below the
/// collection floor, takes the members' state again, and is a member again
/// (its writes made while away and newer than the floor survive).
#[test]
fn a_forgotten_member_that_comes_back_resyncs_first() {
    let mut net = Net::new(3);
    net.connect_all();
    net.put(0, "k", "old");
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    delete(&mut net, 0, "k");
    let gone = net.id(2);
    let now = net.local(0);
    net.nodes[0].forget(gone, now).unwrap();
    net.settle();
    net.advance(5_000);
    assert!(!holds(&net, 0, "k"), "collected without node 2");
    // Node 2 took a write while away, after the collection floor.
    net.put(2, "away", "w");
    assert!(holds(&net, 2, "k"), "node 2 still holds the deleted value");
    net.connect(2, 0);
    net.connect(2, 1);
    net.advance(10_000);
    assert!(
        net.events_of(2)
            .iter()
            .any(|e| matches!(e, meridian::sync::Event::Resynced { .. })),
        "{:?}",
        net.events_of(2)
    );
    assert!(!holds(&net, 2, "k"), "the deleted value did not come back");
    for i in 0..3 {
        assert_eq!(
            net.value(i, "away").as_deref(),
            Some(&b"w"[..]),
            "node {i}: the write made while away survives"
        );
        assert!(net.nodes[i].forgotten().is_empty(), "node {i}");
        assert_eq!(regions(&mut net, i), (3, 3), "node {i}");
    }
    assert!(net.roots_equal());
    assert!(net.nodes[2].status().recovery.is_none());
    // Durable on the returning node: it does not resync again after a restart.
    assert_ne!(net.durable[2].rejoined, meridian::core::hlc::Hlc::ZERO);
    assert_eq!(net.durable[2].recovery, Recovery::None);
}

/// A member that leaves hands its writes over first, tells every member,
/// and takes no more writes; the members forget it at once.
#[test]
fn a_member_that_leaves_is_forgotten_by_every_member() {
    let mut net = Net::new(3);
    net.connect_all();
    net.put(2, "mine", "x");
    // Not while a member in contact lacks one of its writes.
    net.cut(2, 0);
    let now = net.local(2);
    net.nodes[2]
        .put("late", bytes::Bytes::from_static(b"y"), 0, None, now)
        .unwrap();
    net.settle();
    let now = net.local(2);
    assert!(matches!(
        net.nodes[2].leave(now),
        Err(LeaveError::NotHandedOver { .. })
    ));
    net.disconnect(2, 0);
    net.connect(2, 0);
    net.advance(1_000);
    let now = net.local(2);
    let at = net.nodes[2].leave(now).unwrap();
    net.settle();
    let me = net.id(2);
    for i in 0..2 {
        let f = net.nodes[i]
            .forgotten()
            .get(&me)
            .cloned()
            .expect("forgotten");
        assert!(f.left && f.at == at, "node {i}: {f:?}");
        assert_eq!(regions(&mut net, i), (2, 2), "node {i}");
        assert_eq!(net.value(i, "late").as_deref(), Some(&b"y"[..]));
    }
    let now = net.local(2);
    assert_eq!(
        net.nodes[2]
            .put("after", bytes::Bytes::from_static(b"z"), 0, None, now)
            .unwrap_err(),
        WriteError::Left
    );
    // Its connections are closed: the members no longer talk to it.
    assert!(net.forgot.iter().any(|(i, p)| *i == 0 && *p == me));
    assert!(!net.up.contains(&(0, 2)) && !net.up.contains(&(1, 2)));
}

/// A member that was down while another was forgotten learns it at its
/// next hello; a lone node cannot leave.
#[test]
fn a_member_away_during_a_forget_learns_it_when_it_comes_back() {
    let mut net = Net::new(4);
    net.connect_all();
    net.disconnect(0, 3);
    net.disconnect(1, 3);
    net.disconnect(2, 3);
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    let dead = net.id(3);
    let now = net.local(0);
    net.nodes[0].forget(dead, now).unwrap();
    net.settle();
    assert!(net.nodes[1].forgotten().contains_key(&dead));
    assert!(!net.nodes[2].forgotten().contains_key(&dead));
    net.connect(2, 1);
    assert!(net.nodes[2].forgotten().contains_key(&dead));
    // Node 2 still has its progress with the dead node; after it, none.
    assert!(!net.durable[2].peers.contains_key(&dead));
    // Alone, a node cannot leave: nobody would hear it or hold its writes.
    let mut alone = Net::new(1);
    let now = alone.local(0);
    assert_eq!(alone.nodes[0].leave(now), Err(LeaveError::Alone));
}

/// Quorum counts the known regions: forgetting the members of a region
/// that is gone for good gives the quorum back.
#[test]
fn forgetting_a_lost_region_gives_the_quorum_back() {
    let mut net = Net::new(3);
    net.connect_all();
    net.disconnect(0, 1);
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    assert!(!net.nodes[0].has_quorum());
    for j in 1..3 {
        let (id, now) = (net.id(j), net.local(0));
        net.nodes[0].forget(id, now).unwrap();
    }
    net.settle();
    assert!(net.nodes[0].has_quorum());
    assert_eq!(regions(&mut net, 0), (1, 1));
    assert!(net.nodes[0]
        .status()
        .regions
        .iter()
        .all(|r| r.region == REGIONS[0]));
}

/// A member whose leave notice was lost (it restarted before any member
/// heard it) says it left again after its next hello: the members forget
/// it then, tell it so, and it resyncs and takes writes again. Without the
/// repeat it refused writes for good (sim seed 6343).
#[test]
fn a_member_whose_leave_notice_was_lost_repeats_it_and_comes_back() {
    let mut net = Net::new(3);
    net.connect_all();
    net.put(2, "mine", "x");
    net.advance(1_000);
    net.drop = |m| matches!(m, meridian::core::codec::Message::Forget { .. });
    let now = net.local(2);
    net.nodes[2].leave(now).unwrap();
    net.settle();
    let me = net.id(2);
    assert!(net.nodes[0].forgotten().is_empty(), "the notice was lost");
    net.drop = |_| false;
    // It stops and starts again on the same store: still left.
    net.restart(2);
    net.settle();
    assert!(
        net.nodes[0].forgotten().contains_key(&me),
        "told again after its hello"
    );
    // Its connections were closed; it dials again (as a driver does), is
    // told it was forgotten, resyncs and is taken back: it takes writes.
    for i in 0..2 {
        if !net.up.contains(&(i, 2)) {
            net.connect(i, 2);
        }
    }
    net.advance(10_000);
    let now = net.local(2);
    net.nodes[2]
        .put("after", bytes::Bytes::from_static(b"z"), 0, None, now)
        .expect("it takes writes again");
    net.settle();
    assert_eq!(net.value(0, "after").as_deref(), Some(&b"z"[..]));
    assert!(net
        .events_of(0)
        .iter()
        .any(|e| matches!(e, meridian::sync::Event::MemberForgotten { peer, .. } if *peer == me)));
}
