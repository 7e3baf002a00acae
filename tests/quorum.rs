//! What "quorum" promises (design §3): `partition_policy = quorum` refuses
//! writes once a majority of regions is out of contact (judged from
//! heartbeats, not from the transport giving a connection up), and
//! `write_ack = quorum` acknowledges a write only once it is durable in a
//! majority of regions, so losing any minority loses no acknowledged write.
//! Replicas wired by hand (tests/common/net.rs).

#[path = "common/net.rs"]
mod net;

use bytes::Bytes;
use meridian::sync::{Config, PartitionPolicy, WriteAck, WriteError};
use net::*;

fn quorum_ack(i: usize) -> Config {
    let mut c = config(i);
    c.write_ack = WriteAck::Quorum;
    c.quorum_ack_timeout_ms = 3_000;
    c
}

fn put_acked(net: &mut Net, i: usize, k: &str, ack: WriteAck) -> Result<(), WriteError> {
    let now = net.local(i);
    let r = net.nodes[i].put_acked(k, Bytes::from_static(b"v"), 0, None, ack, now);
    r.map(|_| ())
}

fn acked(net: &Net, k: &str) -> bool {
    net.acks.iter().any(|(_, r)| r.key.as_str() == k)
}

fn unacked(net: &Net, k: &str) -> bool {
    net.unacked.iter().any(|(_, r)| r.key.as_str() == k)
}

/// A quorum write is not acknowledged when it is durable here, only once a
/// node of another region (of three) has applied it durably and said so.
#[test]
fn a_quorum_write_is_acknowledged_once_a_majority_of_regions_holds_it() {
    let mut net = Net::with(3, quorum_ack);
    net.connect_all();
    put_acked(&mut net, 0, "k", WriteAck::Quorum).unwrap();
    // Persisted here and pushed, nothing delivered yet.
    net.pump(0);
    assert!(
        !acked(&net, "k"),
        "acknowledged on the local durable copy alone"
    );
    net.settle();
    assert!(acked(&net, "k"));
    assert!(net.nodes[1].get("k").is_some() || net.nodes[2].get("k").is_some());
    // A local write on the same node is acknowledged at once.
    put_acked(&mut net, 0, "local", WriteAck::Local).unwrap();
    net.pump(0);
    assert!(acked(&net, "local"));
}

/// Cut off from both other regions, a quorum write already accepted is
/// answered as not acknowledged after the timeout, and new ones are
/// refused once the others are out of contact.
#[test]
fn a_quorum_write_without_a_majority_is_refused_or_not_acknowledged() {
    let mut net = Net::with(3, quorum_ack);
    net.connect_all();
    net.cut(0, 1);
    net.cut(0, 2);
    // The cut is not noticed yet: the write is taken, and waits.
    put_acked(&mut net, 0, "waits", WriteAck::Quorum).unwrap();
    net.advance(1_000);
    assert!(!acked(&net, "waits") && !unacked(&net, "waits"));
    net.advance(2_500);
    assert!(unacked(&net, "waits"), "answered as not acknowledged");
    assert!(!acked(&net, "waits"));
    // Out of contact now: refused up front.
    assert!(matches!(
        put_acked(&mut net, 0, "refused", WriteAck::Quorum),
        Err(WriteError::NoQuorum {
            reachable: 1,
            total: 3
        })
    ));
    // The majority side takes quorum writes.
    put_acked(&mut net, 1, "majority", WriteAck::Quorum).unwrap();
    net.settle();
    assert!(acked(&net, "majority"));
}

/// `partition_policy = quorum`: writes stop within the contact timeout of
/// a silent cut (heartbeats stop arriving), not when the transport's idle
/// timeout finally closes the connections.
#[test]
fn the_quorum_policy_notices_a_silent_cut_from_missing_heartbeats() {
    fn policy(i: usize) -> Config {
        let mut c = config(i);
        c.partition_policy = PartitionPolicy::Quorum;
        c
    }
    let mut net = Net::with(3, policy);
    net.connect_all();
    net.advance(1_000);
    net.put(0, "before", "v");
    net.cut(0, 1);
    net.cut(0, 2);
    let cut_at = net.now;
    let mut refused_after = None;
    for _ in 0..100 {
        net.advance(100);
        let now = net.local(0);
        let r = net.nodes[0].put("during", Bytes::from_static(b"v"), 0, None, now);
        if matches!(r, Err(WriteError::NoQuorum { .. })) {
            refused_after = Some(net.now - cut_at);
            break;
        }
    }
    let after = refused_after.expect("writes never refused");
    let c = config(0);
    assert!(
        after <= c.contact_timeout_ms + c.heartbeat_interval_ms + 200,
        "refused only {after} ms after the cut"
    );
    assert!(net.nodes[0].status().refusing_writes_no_quorum);
}

/// The point of quorum acknowledgement: a region destroyed right after it
/// acknowledged a write loses nothing that was acknowledged.
#[test]
fn a_region_destroyed_after_acknowledging_loses_no_acknowledged_write() {
    let mut net = Net::with(3, quorum_ack);
    net.connect_all();
    // Node 2 is cut off (unnoticed): each quorum write is acknowledged once
    // node 1 holds it.
    net.cut(0, 2);
    net.cut(1, 2);
    for i in 0..20 {
        put_acked(&mut net, 0, &format!("k{i}"), WriteAck::Quorum).unwrap();
        net.settle();
    }
    assert_eq!(net.acks.len(), 20);
    // And a local write while node 0 is cut off from node 1 too: it is
    // acknowledged on node 0's disk alone.
    net.cut(0, 1);
    put_acked(&mut net, 0, "local-only", WriteAck::Local).unwrap();
    net.settle();
    assert!(acked(&net, "local-only"));
    // Node 0's region is destroyed: its disk is gone, it comes back empty
    // under its own id and rebuilds from what is left.
    net.restart_with(0, |d| *d = meridian::sync::DurableState::new(d.node));
    net.connect(0, 1);
    net.connect(0, 2);
    net.connect(1, 2);
    net.advance(2_000);
    assert!(net.roots_equal());
    for i in 0..20 {
        let k = format!("k{i}");
        assert!(net.value(0, &k).is_some(), "quorum-acknowledged {k} lost");
    }
    assert!(
        net.value(0, "local-only").is_none(),
        "what only the destroyed region held is gone"
    );
}

/// A recursive delete asked with a quorum acknowledges each tombstone only
/// once a majority of regions holds it (it was acknowledged locally before:
/// a simulated seed lost such a delete with its region).
#[test]
fn a_quorum_prefix_delete_is_acknowledged_once_a_majority_holds_it() {
    let mut net = Net::with(3, quorum_ack);
    net.connect_all();
    for k in ["app/a", "app/b"] {
        put_acked(&mut net, 0, k, WriteAck::Local).unwrap();
    }
    net.settle();
    net.acks.clear();
    net.cut(0, 1);
    net.cut(0, 2);
    let now = net.local(0);
    let receipts = net.nodes[0]
        .delete_prefix_acked("app/", 100, WriteAck::Quorum, now)
        .unwrap();
    assert_eq!(receipts.len(), 2);
    net.advance(1_000);
    assert!(net.acks.is_empty(), "acknowledged without a majority");
    net.advance(2_500);
    assert!(unacked(&net, "app/a") && unacked(&net, "app/b"));
    // Healed: a quorum prefix delete is acknowledged once the feed is held.
    for j in [1, 2] {
        net.disconnect(0, j);
        net.connect(0, j);
    }
    net.advance(3_000);
    net.unacked.clear();
    for k in ["app/c", "app/d"] {
        put_acked(&mut net, 0, k, WriteAck::Local).unwrap();
    }
    net.settle();
    net.acks.clear();
    let now = net.local(0);
    let receipts = net.nodes[0]
        .delete_prefix_acked("app/", 100, WriteAck::Quorum, now)
        .unwrap();
    assert!(receipts.len() >= 2);
    net.pump(0);
    assert!(net.acks.is_empty(), "acknowledged on the local copy alone");
    net.settle();
    assert_eq!(net.acks.len(), receipts.len());
    assert!(acked(&net, "app/c") && acked(&net, "app/d"));
    assert!(net.unacked.is_empty());
}
