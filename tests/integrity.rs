//! Integrity (design §3): records that no longer match their checks, on
//! disk or in memory, are quarantined, never served, sent or allowed to win,
//! and repaired from a peer. Replicas wired by hand (tests/common/net.rs).

#[path = "common/net.rs"]
mod net;

use bytes::Bytes;
use meridian::core::codec::Message;
use meridian::core::types::{Entry, Key, Kind, Stamp};
use meridian::sync::{DamagedRecord, Event, Resolution, WriteError};
use net::*;

fn quarantined(net: &Net, i: usize) -> usize {
    net.events_of(i)
        .iter()
        .filter(|e| matches!(e, Event::RecordQuarantined { .. }))
        .count()
}

fn repaired(net: &Net, i: usize) -> Vec<(String, Resolution)> {
    net.events_of(i)
        .into_iter()
        .filter_map(|e| match e {
            Event::RecordRepaired { key, how } => Some((key.clone(), how.clone())),
            _ => None,
        })
        .collect()
}

fn no_collisions(net: &Net) {
    assert!(
        !net.events
            .iter()
            .any(|(_, e)| matches!(e, Event::StampCollision { .. })),
        "{:?}",
        net.events
    );
}

/// Later deletes on node 1, collected everywhere: the collection floor
/// rises above `stamp`.
fn raise_floor_above(net: &mut Net, stamp: Stamp) {
    net.advance(100);
    for i in 0..5 {
        net.put(1, &format!("tmp/{i}"), "t");
        let now = net.local(1);
        net.nodes[1].delete(format!("tmp/{i}"), None, now).unwrap();
    }
    net.settle();
    net.advance(3_000);
    assert!(net.nodes[1].gc_floor() > stamp.hlc, "the floor rose");
}

/// A value damaged on a stopped replica's disk is quarantined when it is
/// read back, never sent, and repaired from a peer that holds the same
/// stamp intact, although its stamp is below the collection floor.
#[test]
fn a_value_damaged_on_disk_is_quarantined_and_repaired_below_the_floor() {
    let mut net = Net::new(2);
    net.connect_all();
    let stamp = net.put(0, "cfg/db", "postgres://good");
    net.put(0, "cfg/other", "x");
    raise_floor_above(&mut net, stamp);
    // Restarted apart, to see the state before the peer is reached.
    net.disconnect(0, 1);
    net.restart_with(1, |d| {
        let k = Key::new("cfg/db").unwrap();
        let r = d.records.get_mut(&k).unwrap();
        // One flipped bit in the stored value; the stored check is as it was.
        r.entry.value = Some(Bytes::from_static(b"postgres://gooe"));
    });
    net.advance(10);
    assert_eq!(quarantined(&net, 1), 1);
    assert!(net.nodes[1].quarantined("cfg/db"));
    assert!(net.nodes[1].get("cfg/db").is_none(), "never served");
    let now = net.local(1);
    assert!(!net.nodes[1].check_before_serving("cfg/db", now));
    assert!(!net.roots_equal(), "the root covers checked data only");
    // Node 0's state, taken in the recovery, repairs it (the same stamp).
    net.connect(0, 1);
    net.advance(8_000);
    assert!(net.roots_equal());
    assert_eq!(
        net.value(1, "cfg/db").as_deref(),
        Some(&b"postgres://good"[..])
    );
    assert_eq!(net.nodes[1].get("cfg/db").unwrap().entry.stamp, stamp);
    assert_eq!(
        net.value(0, "cfg/db").as_deref(),
        Some(&b"postgres://good"[..]),
        "the damaged value never left node 1"
    );
    let fixed = repaired(&net, 1);
    assert!(
        matches!(&fixed[..], [(k, Resolution::Repaired { stamp: s, .. })] if k == "cfg/db" && *s == stamp),
        "{fixed:?}"
    );
    assert!(!net.nodes[1].quarantined("cfg/db"));
    // The repair is durable: a restart reads back an intact record.
    net.restart(1);
    assert_eq!(quarantined(&net, 1), 1, "nothing new quarantined");
    assert_eq!(
        net.value(1, "cfg/db").as_deref(),
        Some(&b"postgres://good"[..])
    );
    no_collisions(&net);
}

/// Every field the check covers: flags and stamps damaged on disk are
/// caught as well as values.
#[test]
fn damaged_flags_stamps_and_indexes_on_disk_are_caught() {
    let mut net = Net::new(2);
    net.connect_all();
    net.put(0, "a", "1");
    net.put(0, "b", "2");
    net.put(0, "c", "3");
    net.disconnect(0, 1);
    net.restart_with(1, |d| {
        d.records
            .get_mut(&Key::new("a").unwrap())
            .unwrap()
            .entry
            .flags ^= 1;
        d.records
            .get_mut(&Key::new("b").unwrap())
            .unwrap()
            .entry
            .stamp
            .hlc
            .0 ^= 1 << 20;
        // Indexes are bookkeeping: an impossible one is renumbered, the
        // record kept.
        d.records
            .get_mut(&Key::new("c").unwrap())
            .unwrap()
            .modify_index = u64::MAX / 2;
    });
    net.advance(10);
    assert_eq!(quarantined(&net, 1), 2);
    assert!(net.nodes[1].get("a").is_none() && net.nodes[1].get("b").is_none());
    assert_eq!(net.value(1, "c").as_deref(), Some(&b"3"[..]));
    assert!(net.nodes[1].get("c").unwrap().modify_index < 1_000);
    net.connect(0, 1);
    net.advance(8_000);
    assert!(net.roots_equal());
    assert_eq!(net.value(1, "a").as_deref(), Some(&b"1"[..]));
    assert_eq!(net.nodes[1].get("a").unwrap().entry.flags, 0);
    assert_eq!(net.value(1, "b").as_deref(), Some(&b"2"[..]));
    assert_eq!(repaired(&net, 1).len(), 2);
    no_collisions(&net);
}

/// A record whose key itself is damaged cannot be named: the replica takes
/// a full transfer from a peer, and the damaged bytes are dropped.
#[test]
fn a_damaged_key_or_undecodable_record_takes_a_full_transfer() {
    let mut net = Net::new(2);
    net.connect_all();
    for i in 0..20 {
        net.put(0, &format!("k{i:02}"), "v");
    }
    net.restart_with(1, |d| {
        // "k03" stored under another name, its check still of "k03".
        let r = d.records.remove(&Key::new("k03").unwrap()).unwrap();
        d.records.insert(Key::new("k0\u{13}").unwrap(), r);
        d.damaged.push(DamagedRecord {
            raw_key: b"k\xff\x07".to_vec(),
            reason: "does not decode".to_string(),
        });
    });
    assert_eq!(quarantined(&net, 1), 2);
    net.advance(3_000);
    assert!(net.roots_equal());
    assert!(!net.nodes[1].rebuilding());
    assert_eq!(net.value(1, "k03").as_deref(), Some(&b"v"[..]));
    assert!(net.nodes[1].get("k0\u{13}").is_none());
    let fixed = repaired(&net, 1);
    assert_eq!(fixed.len(), 2, "{fixed:?}");
    assert!(fixed
        .iter()
        .all(|(_, how)| matches!(how, Resolution::NotHeldByPeers { peers: 1 })));
    // The damaged bytes are gone from the store.
    assert!(net.durable[1].damaged.is_empty());
    assert!(!net.durable[1]
        .records
        .contains_key(&Key::new("k0\u{13}").unwrap()));
    net.restart(1);
    assert_eq!(quarantined(&net, 1), 2, "nothing new after a restart");
}

/// A record that changed in memory is quarantined before it is sent or
/// served, and by the background scrub; the copy on disk is left alone.
#[test]
fn damage_in_memory_is_caught_before_sending_serving_and_by_the_scrub() {
    let mut net = Net::new(2);
    net.connect_all();
    net.put(0, "served", "v");
    net.put(0, "scrubbed", "v");
    let now = net.local(1);
    assert!(net.nodes[1].check_before_serving("served", now));
    // Before serving.
    assert!(net.nodes[1].simulate_memory_damage("served", Some(Bytes::from_static(b"x"))));
    assert!(!net.nodes[1].check_before_serving("served", now));
    assert!(net.nodes[1].quarantined("served"));
    // The scrub.
    assert!(net.nodes[1].simulate_memory_damage("scrubbed", None));
    net.advance(1_100);
    // (The recovery that follows may have repaired it already.)
    assert!(net
        .events_of(1)
        .iter()
        .any(|e| matches!(e, Event::RecordQuarantined { key, .. } if key == "scrubbed")));
    assert!(net.nodes[1].metrics().records_scrubbed > 0);
    // Before sending: a write made while the link is down, damaged before
    // the feed carries it.
    net.disconnect(0, 1);
    net.put(0, "sent", "intact");
    assert!(net.nodes[0].simulate_memory_damage("sent", Some(Bytes::from_static(b"bad"))));
    net.connect(0, 1);
    assert!(net
        .events_of(0)
        .iter()
        .any(|e| matches!(e, Event::RecordQuarantined { key, .. } if key == "sent")));
    assert_eq!(net.nodes[0].metrics().damage_found_in_memory, 1);
    // The stored copy of "sent" was intact: it was read back at once, and
    // only the intact value ever left.
    assert_eq!(net.nodes[0].metrics().records_read_back, 1);
    assert!(repaired(&net, 0)
        .iter()
        .any(|(k, how)| k == "sent" && matches!(how, Resolution::ReadBack { .. })));
    assert_eq!(net.value(1, "sent").as_deref(), Some(&b"intact"[..]));
    assert!(!net
        .events_of(1)
        .iter()
        .any(|e| matches!(e, Event::RecordQuarantined { key, .. } if key == "sent")));
    net.restart(0);
    net.advance(8_000);
    assert!(net.roots_equal());
    assert_eq!(net.value(1, "sent").as_deref(), Some(&b"intact"[..]));
    assert_eq!(net.value(1, "served").as_deref(), Some(&b"v"[..]));
    assert_eq!(net.value(1, "scrubbed").as_deref(), Some(&b"v"[..]));
    no_collisions(&net);
}

/// A stamp collision is resolved by the checks: an entry here that no
/// longer matches its check loses to the intact one with the same stamp.
#[test]
fn a_stamp_collision_keeps_the_intact_entry() {
    let mut net = Net::new(2);
    net.connect_all();
    let stamp = net.put(0, "k", "intact");
    assert!(net.nodes[1].simulate_memory_damage("k", Some(Bytes::from_static(b"zzzzzz"))));
    // The intact entry arrives again (a repeated anti-entropy exchange).
    let entry = Entry {
        stamp,
        prev: meridian::core::types::Stamp::ZERO,
        flags: 0,
        value: Some(Bytes::from_static(b"intact")),
        kind: Kind::Value,
    };
    let msg = Message::AeEntries {
        session: 9,
        entries: vec![(Key::new("k").unwrap(), entry)],
        want: vec![],
    };
    let (from, now) = (net.id(0), net.local(1));
    net.nodes[1].handle(from, msg, now);
    net.settle();
    assert_eq!(net.value(1, "k").as_deref(), Some(&b"intact"[..]));
    assert!(net.nodes[1].check_before_serving("k", now));
    assert_eq!(repaired(&net, 1).len(), 1);
    no_collisions(&net);
}

/// A damaged record of a key that no peer holds live (deleted and
/// collected there) is resolved once every peer's state was taken, and
/// its damaged copy leaves the disk.
#[test]
fn a_damaged_record_no_peer_holds_is_resolved_after_recovery() {
    let mut net = Net::new(2);
    net.connect_all();
    net.put(0, "live", "v");
    net.disconnect(0, 1);
    net.put(1, "lonely", "only on 1");
    let now = net.local(1);
    net.nodes[1].delete("lonely", None, now).unwrap();
    net.settle();
    net.restart_with(1, |d| {
        let r = d.records.get_mut(&Key::new("lonely").unwrap()).unwrap();
        r.entry.flags = 7;
    });
    assert!(net.nodes[1].quarantined("lonely"));
    net.connect(0, 1);
    net.advance(8_000);
    assert!(!net.nodes[1].quarantined("lonely"));
    assert!(matches!(
        &repaired(&net, 1)[..],
        [(k, Resolution::NotHeldByPeers { peers: 1 })] if k == "lonely"
    ));
    assert!(!net.durable[1]
        .records
        .contains_key(&Key::new("lonely").unwrap()));
}

/// A replica whose store was lost refuses writes until it has rebuilt
/// from a peer (its clock may be behind stamps it issued before).
#[test]
fn a_lost_store_refuses_writes_until_rebuilt() {
    let mut net = Net::new(2);
    net.connect_all();
    for i in 0..10 {
        net.put(1, &format!("k{i}"), "v");
    }
    net.restart_with(0, |d| {
        *d = meridian::sync::DurableState::new(d.node);
    });
    // What the node does when its store cannot be read: an empty replica
    // told so. (Restarted links already carry a hello: start over.)
    net.disconnect(0, 1);
    net.nodes[0].store_lost();
    net.pump(0);
    let now = net.local(0);
    assert_eq!(
        net.nodes[0].put("x", Bytes::from_static(b"1"), 0, None, now),
        Err(WriteError::Rebuilding)
    );
    assert!(net
        .events_of(0)
        .iter()
        .any(|e| matches!(e, Event::StoreLost)));
    net.connect(0, 1);
    net.advance(1_000);
    assert!(net.roots_equal());
    assert!(!net.nodes[0].rebuilding());
    // Its member list is what reached it: it waits one contact timeout
    // for gossip to bring the rest before it trusts it.
    let now = net.local(0);
    assert_eq!(
        net.nodes[0].put("x", Bytes::from_static(b"1"), 0, None, now),
        Err(WriteError::Rebuilding)
    );
    net.advance(2_000);
    let now = net.local(0);
    assert!(net.nodes[0]
        .put("x", Bytes::from_static(b"1"), 0, None, now)
        .is_ok());
}

/// A node whose store was lost takes every peer's state before it claims
/// to hold its own writes: a write of its own that only one peer holds
/// comes back, and until then it refuses writes and claims nothing (a
/// peer would otherwise count that write as held, and raise its floor
/// above it). The recovery survives a restart.
#[test]
fn a_lost_store_recovers_from_every_peer_before_claiming() {
    let mut net = Net::new(3);
    net.connect_all();
    net.put(0, "before", "v");
    // Node 0's next write reaches node 1 only.
    net.disconnect(1, 2);
    net.disconnect(0, 2);
    let w = net.put(0, "only-on-1", "w");
    assert!(net.nodes[2].get("only-on-1").is_none());
    net.disconnect(0, 1);
    // Node 0 loses its store and comes back next to node 2 only.
    net.restart_with(0, |d| *d = meridian::sync::DurableState::new(d.node));
    net.nodes[0].store_lost();
    net.pump(0);
    net.connect(0, 2);
    net.advance(3_000);
    assert!(!net.nodes[0].rebuilding(), "rebuilt from node 2");
    assert_eq!(net.value(0, "before").as_deref(), Some(&b"v"[..]));
    let now = net.local(0);
    assert_eq!(
        net.nodes[0].put("x", Bytes::from_static(b"1"), 0, None, now),
        Err(WriteError::Rebuilding),
        "node 1 may hold writes of node 0's"
    );
    let s = net.nodes[0].status();
    assert_eq!(s.frontier, meridian::core::hlc::Hlc::ZERO, "claims nothing");
    let r = s.recovery.expect("recovering");
    assert_eq!((r.peers_done, r.peers), (1, 2));
    // A restart resumes the recovery.
    net.restart(0);
    net.advance(1_000);
    let now = net.local(0);
    assert_eq!(
        net.nodes[0].put("x", Bytes::from_static(b"1"), 0, None, now),
        Err(WriteError::Rebuilding)
    );
    // Node 1's state brings the write back; then node 0 claims again.
    net.connect(0, 1);
    net.advance(3_000);
    assert_eq!(net.nodes[0].get("only-on-1").unwrap().entry.stamp, w);
    let s = net.nodes[0].status();
    assert!(s.recovery.is_none());
    assert!(s.frontier > meridian::core::hlc::Hlc::ZERO);
    let now = net.local(0);
    assert!(net.nodes[0]
        .put("x", Bytes::from_static(b"1"), 0, None, now)
        .is_ok());
    assert!(net
        .events_of(0)
        .iter()
        .any(|e| matches!(e, Event::Recovered { peers: 2, .. })));
    net.connect(1, 2);
    net.advance(8_000);
    assert!(net.roots_equal());
    assert_eq!(net.value(2, "only-on-1").as_deref(), Some(&b"w"[..]));
}

/// A lost store takes every peer's state. A peer's full transfer is its
/// live state, so the collection floor does not apply to it: values older
/// than the floor come back. (Simulation seed 39182, in
/// tests/simulation.rs, lost one when only the rebuild's source was exempt.)
#[test]
fn a_lost_store_takes_values_older_than_the_floor_from_every_peer() {
    let mut net = Net::new(3);
    net.connect_all();
    let old = net.put(1, "old", "v");
    net.settle();
    raise_floor_above(&mut net, old);
    net.advance(3_000);
    for i in 0..3 {
        assert!(net.nodes[i].gc_floor() > old.hlc, "node {i}'s floor rose");
    }
    net.disconnect(0, 1);
    net.disconnect(0, 2);
    net.restart_with(0, |d| *d = meridian::sync::DurableState::new(d.node));
    net.nodes[0].store_lost();
    net.pump(0);
    net.connect(0, 1);
    net.connect(0, 2);
    net.advance(8_000);
    assert!(net.nodes[0].status().recovery.is_none(), "recovered");
    assert_eq!(net.value(0, "old").as_deref(), Some(&b"v"[..]));
    assert!(net.roots_equal());
}

/// A rebuild takes on its source's floor, so the source must hold all it
/// should: a source that is itself recovering (a record of it damaged)
/// lacks records below that floor. The rebuild waits for the source's
/// recovery, and what the source takes back reaches it (simulation seed
/// 14417).
#[test]
fn a_rebuild_from_a_recovering_source_waits_for_its_recovery() {
    let mut net = Net::new(3);
    net.connect_all();
    let stamp = net.put(0, "cfg/db", "postgres://good");
    raise_floor_above(&mut net, stamp);
    // Node 2's copy is damaged on disk; it restarts apart from node 1.
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    net.restart_with(2, |d| {
        let r = d.records.get_mut(&Key::new("cfg/db").unwrap()).unwrap();
        r.entry.value = Some(Bytes::from_static(b"postgres://gooe"));
    });
    assert!(net.nodes[2].quarantined("cfg/db"));
    // Node 0 loses its store and rebuilds from node 2 (its first peer).
    net.disconnect(0, 1);
    net.restart_with(0, |d| *d = meridian::sync::DurableState::new(d.node));
    net.nodes[0].store_lost();
    net.pump(0);
    net.connect(0, 2);
    net.connect(0, 1);
    net.advance(5_000);
    assert!(
        net.nodes[0].rebuilding(),
        "node 2 is recovering: its state lacks cfg/db"
    );
    // Node 1's full transfer (node 0 recovers from every peer) is its live
    // state: its copy is taken although it is below the floor (seed 39182).
    assert_eq!(
        net.nodes[0].get("cfg/db").map(|r| r.entry.stamp),
        Some(stamp)
    );
    // Node 2 recovers from node 1; its transfer to node 0 goes on with
    // what it took back, and ends with its claim.
    net.connect(1, 2);
    net.advance(10_000);
    assert!(!net.nodes[2].quarantined("cfg/db"));
    assert!(!net.nodes[0].rebuilding());
    assert_eq!(net.nodes[0].get("cfg/db").unwrap().entry.stamp, stamp);
    assert!(net.roots_equal());
    no_collisions(&net);
}

/// A record silently lost from a store (a lost write on disk: what is left
/// passes its checks, and the feed positions claim what was lost) comes
/// back by anti-entropy, although its stamp is below the collection floor:
/// the peer's answer to a key we asked for is its state after we asked, not
/// an old copy (simulation seed 8; the floor refused it for good).
#[test]
fn a_record_lost_from_a_store_comes_back_by_anti_entropy_below_the_floor() {
    let mut net = Net::new(3);
    net.connect_all();
    let old = net.put(1, "cfg/lost", "v");
    net.settle();
    raise_floor_above(&mut net, old);
    net.advance(3_000);
    assert!(net.nodes[0].gc_floor() > old.hlc, "node 0's floor rose");
    net.restart_with(0, |d| {
        assert!(d.records.remove(&Key::new("cfg/lost").unwrap()).is_some());
    });
    assert!(net.nodes[0].get("cfg/lost").is_none(), "lost on restart");
    assert!(
        net.nodes[0].status().recovery.is_none(),
        "nothing tells the replica it lost a record"
    );
    // Anti-entropy runs every 5 s with jitter.
    net.advance(30_000);
    assert_eq!(net.value(0, "cfg/lost").as_deref(), Some(&b"v"[..]));
    assert!(net.roots_equal());
}

/// Replaces node `i` (not connected) by an empty replica under its id,
/// adopted now, as a node with a wiped directory and a bound certificate
/// starts.
fn wipe_adopting_the_id(net: &mut Net, i: usize) {
    let now = net.local(i);
    let mut cfg = net.nodes[i].config().clone();
    cfg.id_adopted_at_ms = now;
    net.durable[i] = meridian::sync::DurableState::new(cfg.node);
    let mut r = meridian::sync::Replica::restore(cfg, net.durable[i].clone(), now).unwrap();
    for j in 0..net.nodes.len() {
        r.add_member(
            meridian::core::types::NodeId(100 + j as u64),
            REGIONS[j % 3],
        );
    }
    net.nodes[i] = r;
    net.pump(i);
}

/// A node whose data directory was wiped comes back under the id its
/// certificate names, empty, with nothing to say its store was lost. Its
/// peers know the id from before: the first hello says so, and it recovers
/// as after a known loss (its write that only one peer held comes back).
#[test]
fn a_wiped_node_under_its_certificates_id_finds_the_loss_from_its_peers() {
    let mut net = Net::new(3);
    net.connect_all();
    net.put(0, "before", "v");
    net.disconnect(0, 2);
    net.put(0, "only-on-1", "w");
    net.disconnect(0, 1);
    net.settle();
    assert!(net.nodes[2].get("only-on-1").is_none());
    // Wiped, and restarted adopting its certificate's id.
    wipe_adopting_the_id(&mut net, 0);
    assert!(net.nodes[0].id_unconfirmed());
    // Node 2 connects first: it holds writes of node 0 from before.
    net.connect(0, 2);
    net.advance(100);
    assert!(net
        .events_of(0)
        .iter()
        .any(|e| matches!(e, Event::LostStoreFound { .. })));
    assert!(net
        .events_of(0)
        .iter()
        .any(|e| matches!(e, Event::StoreLost)));
    assert!(!net.nodes[0].id_unconfirmed());
    net.connect(0, 1);
    net.advance(5_000);
    assert!(net.roots_equal());
    assert!(
        net.nodes[0].get("only-on-1").is_some(),
        "taken back from node 1"
    );
    assert!(!net
        .events_of(0)
        .iter()
        .any(|e| matches!(e, Event::IdConfirmed)));
    let now = net.local(0);
    assert!(net.nodes[0]
        .put("after", Bytes::from_static(b"1"), 0, None, now)
        .is_ok());
}

/// A new cluster whose nodes all adopted their ids from their certificates
/// starts as any other: no peer knows an id from before, every id is
/// confirmed, nothing is recovered, writes are taken.
#[test]
fn a_new_cluster_of_adopted_ids_confirms_them() {
    let mut net = Net::with(3, |i| {
        let mut c = config(i);
        c.id_adopted_at_ms = T0;
        c
    });
    for i in 0..3 {
        assert!(net.nodes[i].id_unconfirmed());
    }
    net.connect_all();
    net.advance(1_000);
    for i in 0..3 {
        assert!(
            net.nodes[i].id_unconfirmed(),
            "watched for a while: node {i}"
        );
    }
    net.advance(30_000);
    for i in 0..3 {
        assert!(!net.nodes[i].id_unconfirmed(), "node {i}");
        let events = net.events_of(i);
        assert!(events.iter().any(|e| matches!(e, Event::IdConfirmed)));
        assert!(!events
            .iter()
            .any(|e| matches!(e, Event::StoreLost | Event::LostStoreFound { .. })));
    }
    net.put(1, "k", "v");
    net.settle();
    assert!(net.roots_equal());
}

/// A new node that adopted its id takes older writes from its peers before
/// it stamps anything: its claims must not look like claims from before the
/// adoption when its peers repeat them in a later hello (a reconnection).
#[test]
fn an_adopted_ids_own_claims_are_not_taken_for_a_past() {
    let mut net = Net::new(2);
    for i in 0..5 {
        net.put(0, &format!("old/{i}"), "v");
    }
    net.advance(5_000);
    wipe_adopting_the_id(&mut net, 1);
    net.connect(0, 1);
    net.advance(1_000);
    assert!(net.nodes[1].get("old/4").is_some());
    // Reconnections: node 0 repeats what node 1 claimed.
    for _ in 0..3 {
        net.disconnect(0, 1);
        net.connect(0, 1);
        net.advance(1_000);
    }
    assert!(
        !net.events_of(1)
            .iter()
            .any(|e| matches!(e, Event::LostStoreFound { .. } | Event::StoreLost)),
        "{:?}",
        net.events_of(1)
    );
    net.advance(30_000);
    assert!(!net.nodes[1].id_unconfirmed());
}
