//! Replica protocol tests: a few replicas wired together by hand, every
//! message through the real codec, each test aimed at one path.

#[path = "common/net.rs"]
mod net;

use bytes::Bytes;
use meridian::core::codec::{ClusterId, Message};
use meridian::core::types::{Entry, Key, Kind, NodeId, Stamp};
use meridian::core::Hlc;
use meridian::sync::{
    BarrierError, Config, Event, Output, PartitionPolicy, Refusal, Replica, WriteError,
};
use net::*;

#[test]
fn writes_push_to_every_peer_and_cross_each_link_once() {
    let mut net = Net::new(3);
    net.connect_all();
    for i in 0..30 {
        net.put(i % 3, &format!("app/{i}"), "v");
    }
    assert!(net.roots_equal());
    for i in 0..3 {
        assert_eq!(net.value(i, "app/7").as_deref(), Some(&b"v"[..]));
        assert_eq!(net.nodes[i].metrics().feed_entries_applied, 20, "node {i}");
    }
    // 30 writes, each sent to the 2 other replicas, never forwarded again.
    assert_eq!(net.feed_entries_sent, 60);
}

#[test]
fn a_reconnecting_replica_catches_up_from_the_feed_without_anti_entropy_repairs() {
    let mut net = Net::new(3);
    net.connect_all();
    net.put(0, "before", "x");
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    for i in 0..100 {
        net.put(i % 2, &format!("k{i}"), "during");
    }
    // Both connections come back together, as after a restart.
    net.link(0, 2);
    net.link(1, 2);
    net.settle();
    net.advance(1_500);
    assert!(net.roots_equal());
    assert_eq!(net.nodes[2].map().len(), 101);
    let m = net.nodes[2].metrics();
    assert_eq!(m.feed_entries_applied, 101);
    assert_eq!(m.ae_entries_applied, 0, "the feed sufficed");
    assert!(
        m.ae_rounds_started > 0,
        "a check round ran after the catch-up"
    );
}

#[test]
fn an_empty_replica_is_rebuilt_by_a_full_transfer_from_one_peer() {
    let mut net = Net::new(3);
    net.connect(0, 1);
    for i in 0..200 {
        net.put(i % 2, &format!("k{i}"), "v");
    }
    net.connect(0, 2);
    assert!(net.nodes[2].rebuilding() || net.nodes[2].map().len() == 200);
    net.connect(1, 2);
    net.advance(200);
    assert!(net.roots_equal());
    assert!(!net.nodes[2].rebuilding());
    // Everything came once, from the first peer; nothing from the second.
    assert_eq!(net.nodes[2].metrics().feed_entries_applied, 200);
}

#[test]
fn a_new_cluster_of_empty_replicas_is_not_left_rebuilding() {
    let mut net = Net::new(3);
    net.connect_all();
    assert!(net.nodes.iter().all(|r| !r.rebuilding()));
    net.put(0, "k", "v");
    net.disconnect(0, 1);
    net.connect(0, 1);
    // A reconnect resumes the feed; it does not ask for a full transfer again.
    assert_eq!(net.nodes[1].metrics().feed_entries_applied, 1);
    assert!(net.roots_equal());
}

#[test]
fn anti_entropy_alone_repairs_exactly_the_differing_entries() {
    let mut net = Net::new(2);
    net.connect_all();
    for i in 0..500 {
        net.put(0, &format!("shared/{i}"), "v");
    }
    // From now on no feed message with entries gets through.
    net.drop = |m| matches!(m, Message::Feed(f) if !f.entries.is_empty());
    for i in 0..10 {
        net.put(0, &format!("a/{i}"), "only on 0");
    }
    for i in 0..5 {
        net.put(1, &format!("b/{i}"), "only on 1");
        net.put(1, &format!("shared/{i}"), "newer on 1");
    }
    assert!(!net.roots_equal());
    let sent_before =
        net.nodes[0].metrics().ae_entries_sent + net.nodes[1].metrics().ae_entries_sent;
    net.advance(7_000);
    assert!(net.roots_equal());
    let sent = net.nodes[0].metrics().ae_entries_sent + net.nodes[1].metrics().ae_entries_sent
        - sent_before;
    assert_eq!(sent, 20, "only the differing entries travel");
    assert_eq!(
        net.value(0, "shared/3").as_deref(),
        Some(&b"newer on 1"[..])
    );
    assert_eq!(net.value(1, "a/9").as_deref(), Some(&b"only on 0"[..]));
}

#[test]
fn tombstones_are_collected_once_every_member_holds_them_and_never_resurrect() {
    let mut net = Net::new(3);
    net.connect_all();
    let old = net.put(0, "gone", "v1");
    let now = net.local(1);
    net.nodes[1].delete("gone", None, now).unwrap();
    net.settle();
    assert!(net
        .nodes
        .iter()
        .all(|r| r.get("gone").is_some_and(|r| r.entry.is_tombstone())));
    net.advance(3_000);
    for i in 0..3 {
        assert!(
            net.nodes[i].get("gone").is_none(),
            "node {i} still holds the tombstone"
        );
        assert!(net.nodes[i].metrics().tombstones_collected >= 1);
    }
    // The old value shows up again, as from a delayed message: refused.
    let stale = Entry {
        stamp: old,
        prev: Stamp::ZERO,
        flags: 0,
        value: Some(Bytes::from_static(b"v1")),
        kind: Kind::Value,
    };
    let msg = Message::AeEntries {
        session: 1,
        entries: vec![(Key::new("gone").unwrap(), stale)],
        want: vec![],
    };
    let (from, now) = (net.id(0), net.local(2));
    net.nodes[2].handle(from, msg, now);
    net.settle();
    assert!(net.nodes[2].get("gone").is_none());
    assert_eq!(net.nodes[2].metrics().below_floor_refused, 1);
    assert!(net.roots_equal());
}

#[test]
fn a_replica_away_longer_than_the_horizon_resyncs_instead_of_resurrecting() {
    fn short(i: usize) -> Config {
        let mut c = config(i);
        c.tombstone_horizon_ms = 10_000;
        c
    }
    let mut net = Net::with(2, short);
    net.connect_all();
    net.put(0, "deleted", "old");
    net.put(0, "kept", "old");
    net.disconnect(0, 1);
    net.advance(100);
    let now = net.local(0);
    net.nodes[0].delete("deleted", None, now).unwrap();
    net.settle();
    net.advance(20_000);
    assert!(net.nodes[0].get("deleted").is_none(), "collected by age");
    assert!(
        net.nodes[1].get("deleted").is_some(),
        "the absent replica still has it"
    );
    net.put(1, "fresh", "written while away");
    net.connect(0, 1);
    net.advance(1_000);
    assert!(net
        .events
        .iter()
        .any(|(i, e)| *i == 0 && matches!(e, Event::PeerStale { .. })));
    assert!(
        net.events
            .iter()
            .any(|(i, e)| *i == 1 && matches!(e, Event::Resynced { .. })),
        "{:?} {:?}",
        net.events,
        net.nodes[1].metrics()
    );
    assert!(net.roots_equal());
    for i in 0..2 {
        assert!(
            net.value(i, "deleted").is_none(),
            "node {i} resurrected a deleted key"
        );
        assert_eq!(net.value(i, "kept").as_deref(), Some(&b"old"[..]));
        assert_eq!(
            net.value(i, "fresh").as_deref(),
            Some(&b"written while away"[..])
        );
    }
}

#[test]
fn stamps_too_far_ahead_are_refused_and_reported() {
    let mut net = Net::new(2);
    net.skew[0] = 60_000;
    net.connect_all();
    net.put(0, "k", "from the future");
    assert!(net.nodes[1].get("k").is_none());
    assert!(net
        .events
        .iter()
        .any(|(i, e)| *i == 1
            && matches!(e, Event::ClockSkew { ahead_ms, .. } if *ahead_ms >= 59_000)));
    // Our own clock never ran ahead with it.
    assert!(net.nodes[1].clock().physical_ms() <= net.local(1) + 500);
}

#[test]
fn peers_of_another_cluster_are_refused_before_any_data() {
    fn foreign(i: usize) -> Config {
        let mut c = config(i);
        if i == 1 {
            c.cluster = ClusterId([1; 16]);
        }
        c
    }
    let mut net = Net::with(2, foreign);
    net.put(0, "secret", "v");
    net.connect(0, 1);
    net.advance(300);
    assert!(net.disconnects.iter().any(|(_, r)| *r == Refusal::Cluster));
    assert!(net.nodes[1].get("secret").is_none());
    assert!(net.nodes[0].metrics().peers_refused > 0);
}

#[test]
fn quorum_policy_refuses_writes_in_a_minority() {
    fn quorum(i: usize) -> Config {
        let mut c = config(i);
        c.partition_policy = PartitionPolicy::Quorum;
        c
    }
    let mut net = Net::with(3, quorum);
    net.connect_all();
    net.put(0, "k", "ok");
    net.advance(1_100);
    net.disconnect(0, 1);
    net.disconnect(0, 2);
    let now = net.local(0);
    let err = net.nodes[0]
        .put("k", Bytes::from_static(b"no"), 0, None, now)
        .unwrap_err();
    assert_eq!(
        err,
        WriteError::NoQuorum {
            reachable: 1,
            total: 3
        }
    );
    let cut_at = net.local(0);
    let st = net.nodes[0].status();
    // In sync with both peers until the cut; the lag grows from there.
    assert!(st
        .peers
        .iter()
        .all(|p| p.in_sync_at_ms > 0 && p.in_sync_at_ms <= cut_at));
    let down: Vec<_> = st.regions.iter().filter(|r| !r.reachable).collect();
    assert_eq!(down.len(), 2, "{:?}", st.regions);
    assert!(down.iter().all(|r| r.since_ms == cut_at));
    assert!(st
        .regions
        .iter()
        .any(|r| r.region == "us-east" && r.reachable));
    // The majority side still writes.
    net.put(1, "k", "majority");
    assert_eq!(net.value(2, "k").as_deref(), Some(&b"majority"[..]));
}

#[test]
fn limits_and_cas_are_enforced_with_typed_errors() {
    let mut net = Net::new(1);
    let r = &mut net.nodes[0];
    let now = T0;
    assert!(matches!(
        r.put("", Bytes::new(), 0, None, now),
        Err(WriteError::Key(_))
    ));
    assert!(matches!(
        r.put("a\0b", Bytes::new(), 0, None, now),
        Err(WriteError::Key(_))
    ));
    assert!(matches!(
        r.put("k".repeat(1025), Bytes::new(), 0, None, now),
        Err(WriteError::Key(_))
    ));
    let big = Bytes::from(vec![0u8; (1 << 20) + 1]);
    assert!(matches!(
        r.put("k", big, 0, None, now),
        Err(WriteError::Value(_))
    ));
    let w = r
        .put("k", Bytes::from_static(b"1"), 0, Some(0), now)
        .unwrap();
    assert_eq!(
        r.put("k", Bytes::from_static(b"2"), 0, Some(0), now),
        Err(WriteError::CasMismatch {
            expected: 0,
            actual: w.index
        })
    );
    r.put("k", Bytes::from_static(b"2"), 0, Some(w.index), now)
        .unwrap();
    assert_eq!(r.map().len(), 1);
    assert!(r.clock() > Hlc::ZERO);
}

#[test]
fn a_group_cut_off_longer_than_the_horizon_resyncs_even_if_it_kept_talking() {
    fn short(i: usize) -> Config {
        let mut c = config(i);
        c.tombstone_horizon_ms = 10_000;
        c
    }
    let mut net = Net::with(4, short);
    net.connect_all();
    net.put(0, "deleted", "old");
    net.put(0, "kept", "old");
    net.advance(1_500);
    // {0, 1} | {2, 3}: the minority pair keeps talking to each other.
    for (a, b) in [(0, 2), (0, 3), (1, 2), (1, 3)] {
        net.disconnect(a, b);
    }
    net.advance(100);
    let now = net.local(0);
    net.nodes[0].delete("deleted", None, now).unwrap();
    net.settle();
    net.advance(20_000);
    assert!(net.nodes[0].get("deleted").is_none() && net.nodes[1].get("deleted").is_none());
    assert!(net.nodes[2]
        .get("deleted")
        .is_some_and(|r| !r.entry.is_tombstone()));
    net.put(2, "fresh", "from the minority");
    for (a, b) in [(0, 2), (0, 3), (1, 2), (1, 3)] {
        net.connect(a, b);
    }
    // Feed messages the majority ignored while it held the minority stale
    // come again after the peer timeout (5 s), or anti-entropy brings them.
    net.advance(12_000);
    for i in [2, 3] {
        assert!(
            net.events
                .iter()
                .any(|(n, e)| *n == i && matches!(e, Event::Resynced { .. })),
            "node {i} was not made to resync"
        );
    }
    assert!(net.roots_equal());
    for i in 0..4 {
        assert!(
            net.value(i, "deleted").is_none(),
            "node {i} resurrected a deleted key"
        );
        assert_eq!(
            net.value(i, "kept").as_deref(),
            Some(&b"old"[..]),
            "node {i}"
        );
        assert_eq!(
            net.value(i, "fresh").as_deref(),
            Some(&b"from the minority"[..]),
            "node {i}"
        );
    }
}

#[test]
fn a_rebuild_continues_from_another_peer_when_its_source_goes_away() {
    fn small_batches(i: usize) -> Config {
        let mut c = config(i);
        c.feed_entries_max = 10;
        c.feed_window_max = 2;
        c
    }
    let mut net = Net::with(3, small_batches);
    net.connect(0, 1);
    for i in 0..300 {
        net.put(i % 2, &format!("k{i}"), "v");
    }
    // Node 2 is empty: its first peer becomes the rebuild source.
    net.link(0, 2);
    net.link(1, 2);
    net.deliver_some(12);
    assert!(net.nodes[2].rebuilding());
    let got = net.nodes[2].map().len();
    assert!(got < 300, "the transfer should still be under way ({got})");
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    net.connect(1, 2);
    net.advance(2_000);
    assert!(!net.nodes[2].rebuilding(), "the rebuild never finished");
    assert_eq!(net.nodes[2].map().len(), 300);
    net.connect(0, 2);
    net.advance(500);
    assert!(net.roots_equal());
}

#[test]
fn import_merges_backup_entries_as_crdt_state() {
    let mut r = Replica::new(config(0), T0).unwrap();
    r.put("k", Bytes::from_static(b"now"), 0, None, T0).unwrap();
    let stamp = |ms: u64| Stamp::new(Hlc::new(ms, 0), NodeId(7));
    let entry = |ms: u64, v: &'static [u8]| Entry {
        stamp: stamp(ms),
        prev: Stamp::ZERO,
        flags: 3,
        value: Some(Bytes::from_static(v)),
        kind: Kind::Value,
    };
    let report = r.import(
        vec![
            // Older than what the key holds: kept as is.
            (Key::new("k").unwrap(), entry(T0 - 1_000, b"old")),
            // A key it lacks: applied, flags and all.
            (Key::new("new").unwrap(), entry(T0 - 1_000, b"restored")),
            // Stamped a minute ahead of the clock: refused.
            (Key::new("future").unwrap(), entry(T0 + 60_000, b"x")),
        ],
        T0,
    );
    assert_eq!(
        (
            report.applied,
            report.unchanged,
            report.refused_clock,
            report.refused_floor
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(
        r.get("k").unwrap().entry.value.as_deref(),
        Some(&b"now"[..])
    );
    assert_eq!(r.get("new").unwrap().entry.flags, 3);
    assert!(r.get("future").is_none());
    // The merge is durable with the persist that follows it.
    let mut persisted = false;
    while let Some(o) = r.poll_output() {
        if let Output::Persist(b) = o {
            persisted |= b.records.iter().any(|(k, _)| k.as_str() == "new");
        }
    }
    assert!(persisted);
}

#[test]
fn a_swapped_connection_is_no_outage() {
    let mut net = Net::new(2);
    net.connect_all();
    net.put(0, "k", "v");
    net.settle();
    net.events.clear();
    // The transports kept the newer of two connections: the link restarts on both ends.
    for (i, j) in [(0, 1), (1, 0)] {
        let now = net.local(i);
        let peer = net.id(j);
        net.nodes[i].reconnected(peer, now);
    }
    net.settle();
    net.put(0, "k2", "v2");
    net.settle();
    assert!(
        !net.events.iter().any(|(_, e)| matches!(
            e,
            Event::PeerDown { .. } | Event::PeerUp { .. } | Event::PartitionDetected { .. }
        )),
        "{:?}",
        net.events
    );
    assert!(net.nodes[0].status().quorum);
    assert_eq!(net.value(1, "k2").as_deref(), Some(&b"v2"[..]));
    assert!(net.roots_equal());
}

fn short_horizon(i: usize) -> Config {
    let mut c = config(i);
    c.tombstone_horizon_ms = 10_000;
    c
}

/// Every peer that collected by age tells a returning replica it is
/// stale, each in its time and with its own floor. The first notice makes
/// it drop what is older than the horizon and rebuild; a later one, with a
/// higher floor, must not undo that rebuild (simulation seeds 1909, 214).
#[test]
fn a_second_stale_notice_does_not_undo_a_finished_resync() {
    let mut net = Net::with(3, short_horizon);
    net.connect_all();
    net.put(0, "kept", "v");
    net.put(0, "first", "old");
    net.put(0, "second", "old");
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    net.advance(100);
    let now = net.local(0);
    net.nodes[0].delete("first", None, now).unwrap();
    net.settle();
    net.advance(5_000);
    let now = net.local(0);
    net.nodes[0].delete("second", None, now).unwrap();
    net.settle();
    // The first delete is older than the horizon, the second not yet.
    net.advance(7_000);
    assert!(net.nodes[1].get("first").is_none(), "collected by age");
    assert!(net.nodes[1].get("second").is_some());
    // Node 2 hears from node 0 first: it resyncs and rebuilds.
    net.connect(0, 2);
    net.advance(2_000);
    let resyncs = |net: &Net| {
        net.events
            .iter()
            .filter(|(i, e)| *i == 2 && matches!(e, Event::Resynced { .. }))
            .count()
    };
    assert_eq!(resyncs(&net), 1);
    assert_eq!(net.value(2, "kept").as_deref(), Some(&b"v"[..]));
    // Node 1, which collected the second delete by age meanwhile, says the
    // same with a higher floor.
    net.advance(4_000);
    assert!(net.nodes[1].get("second").is_none(), "collected by age");
    net.connect(1, 2);
    net.advance(3_000);
    assert!(net
        .events
        .iter()
        .any(|(i, e)| *i == 1 && matches!(e, Event::PeerStale { .. })));
    assert_eq!(resyncs(&net), 1, "{:?}", net.events_of(2));
    assert!(net.roots_equal());
    for i in 0..3 {
        for k in ["first", "second"] {
            assert!(net.value(i, k).is_none(), "node {i} {k}");
        }
        assert_eq!(net.value(i, "kept").as_deref(), Some(&b"v"[..]), "node {i}");
    }
}

/// `?consistent`: a read barrier brings what the peers hold under its
/// scope. Node 2's acknowledged write was superseded at the others by node
/// 0's, and node 0 is gone: no feed carries either to node 1 (a feed
/// carries its sender's own writes), but the barrier does (sim seed 35).
#[test]
fn a_read_barrier_holds_what_every_reachable_peer_acknowledged() {
    let mut net = Net::new(4);
    net.connect_all();
    for j in [0, 2, 3] {
        net.cut(1, j);
    }
    net.put(2, "app/flag", "a");
    net.put(0, "app/flag", "b");
    assert_eq!(net.value(3, "app/flag").as_deref(), Some(&b"b"[..]));
    assert_eq!(net.value(1, "app/flag"), None);
    // Node 0 is gone; node 1 hears nodes 2 and 3 again.
    net.disconnect(0, 1);
    net.up.insert((1, 2));
    net.up.insert((1, 3));
    net.advance(200);
    assert_eq!(net.value(1, "app/flag"), None, "no feed brings it");
    let now = net.local(1);
    net.nodes[1].barrier(7, "app/flag", false, now);
    net.settle();
    assert_eq!(net.barriers, vec![(1, 7, Ok(()))]);
    assert_eq!(net.value(1, "app/flag").as_deref(), Some(&b"b"[..]));
    // A prefix, deletes included.
    net.put(3, "app/other", "x");
    let now = net.local(3);
    net.nodes[3].delete("app/other", None, now).unwrap();
    let now = net.local(1);
    net.nodes[1].barrier(8, "app/", true, now);
    net.settle();
    assert_eq!(net.barriers[1], (1, 8, Ok(())));
    assert!(net.nodes[1].get("app/other").unwrap().entry.is_tombstone());
}

#[test]
fn a_read_barrier_fails_when_a_region_is_unreachable_or_too_slow() {
    let mut net = Net::new(3);
    net.connect_all();
    // Node 2 is the only node of its region.
    net.disconnect(0, 2);
    let now = net.local(0);
    net.nodes[0].barrier(1, "k", false, now);
    net.settle();
    assert!(
        matches!(&net.barriers[..], [(0, 1, Err(BarrierError::Unreachable { region }))] if region == REGIONS[2]),
        "{:?}",
        net.barriers
    );
    // Connected, but its answers are lost: the timeout.
    net.connect(0, 2);
    net.drop = |m| matches!(m, Message::ReadBarrierReply { .. });
    let now = net.local(0);
    net.nodes[0].barrier(2, "k", false, now);
    net.advance(4_000);
    assert_eq!(net.barriers.len(), 1, "still waiting");
    net.advance(2_000);
    assert!(
        matches!(&net.barriers[1], (0, 2, Err(BarrierError::Timeout { .. }))),
        "{:?}",
        net.barriers
    );
}
