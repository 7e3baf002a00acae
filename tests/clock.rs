//! Clocks that run fast, run slow or jump (design §3, "Clock skew"): a node
//! whose clock a majority of members disagree with refuses client writes
//! and still takes correct peers' writes; a node never stamps from a stored
//! clock ahead of time. Replicas wired by hand (tests/common/net.rs).

#[path = "common/net.rs"]
mod net;

use bytes::Bytes;
use meridian::core::ClockError;
use meridian::sync::{Event, WriteError};
use net::*;

const HOUR_MS: i64 = 3_600_000;

fn write(net: &mut Net, i: usize, k: &str) -> Result<(), WriteError> {
    let now = net.local(i);
    let r = net.nodes[i].put(k, Bytes::from_static(b"v"), 0, None, now);
    net.settle();
    r.map(|_| ())
}

fn judged_off(net: &Net, i: usize) -> bool {
    net.events_of(i)
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::ClockOffset { off, .. } => Some(*off),
            _ => None,
        })
        .unwrap_or(false)
}

/// A node whose clock runs an hour fast is outvoted by the two others: it
/// refuses client writes (peers would refuse them as from the future)
/// instead of acknowledging writes that never leave it.
#[test]
fn a_fast_node_is_judged_off_and_refuses_writes() {
    let mut net = Net::new(3);
    net.skew[2] = HOUR_MS;
    net.connect_all();
    net.advance(2_000);
    assert!(judged_off(&net, 2));
    match write(&mut net, 2, "from-the-future") {
        Err(e @ WriteError::ClockOffset { offset_ms, .. }) => {
            assert!(offset_ms < -HOUR_MS + 1_000, "{offset_ms}");
            assert!(e.to_string().contains("ahead of"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The others are fine, and say which peer is off.
    for i in 0..2 {
        assert!(!judged_off(&net, i));
        write(&mut net, i, &format!("ok{i}")).unwrap();
        let st = net.nodes[i].status();
        let p = st.peers.iter().find(|p| p.name == "n2").unwrap();
        assert!(p.clock_offset_ms.unwrap() > HOUR_MS - 1_000);
    }
    // Its clock is fixed: writes resume once its stamps are no longer
    // ahead of time (it never issued any from the future).
    net.skew[2] = 0;
    net.advance(2_000);
    assert!(!judged_off(&net, 2));
    write(&mut net, 2, "fixed").unwrap();
    net.advance(1_000);
    assert!(net.roots_equal());
}

/// A node whose clock runs an hour slow is outvoted too: it refuses
/// client writes (their stamps would lose to every earlier write) but
/// takes correct peers' writes instead of refusing them as from the future.
#[test]
fn a_slow_node_takes_correct_peers_writes_and_refuses_its_own() {
    let mut net = Net::new(3);
    net.skew[2] = -HOUR_MS;
    net.connect_all();
    net.advance(2_000);
    assert!(judged_off(&net, 2));
    assert!(matches!(
        write(&mut net, 2, "late"),
        Err(WriteError::ClockOffset { offset_ms, .. }) if offset_ms > HOUR_MS - 1_000
    ));
    let refused_before = net.nodes[2].metrics().clock_skew_refusals;
    net.put(0, "from-a-correct-peer", "v");
    net.advance(1_000);
    assert_eq!(
        net.value(2, "from-a-correct-peer").as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(net.nodes[2].metrics().clock_skew_refusals, refused_before);
    assert!(net.roots_equal());
}

/// Restarted with its clock fixed, a node that ran fast holds a stored
/// clock an hour ahead: it refuses to stamp from it (writes would overwrite
/// later ones once real time caught up) until time catches up.
#[test]
fn a_stored_clock_from_the_future_is_not_resumed_silently() {
    let mut net = Net::new(1);
    net.skew[0] = HOUR_MS;
    write(&mut net, 0, "stamped-fast").unwrap();
    net.skew[0] = 0;
    net.restart(0);
    let err = write(&mut net, 0, "after-the-restart").unwrap_err();
    assert!(
        matches!(err, WriteError::Clock(ClockError::AheadOfTime { ahead_ms, .. }) if ahead_ms > HOUR_MS as u64 - 1_000),
        "{err:?}"
    );
    assert!(net.nodes[0].status().clock.ahead_of_time_ms > 0);
    // Real time catches up with the stored clock: writes resume, stamped
    // after every earlier one.
    net.now += HOUR_MS as u64;
    net.advance(100);
    write(&mut net, 0, "after-time-caught-up").unwrap();
    let old = net.nodes[0].get("stamped-fast").unwrap().entry.stamp;
    let new = net.nodes[0]
        .get("after-time-caught-up")
        .unwrap()
        .entry
        .stamp;
    assert!(new > old);
}

/// A clock that jumps back by more than the bound: stamps stop until the
/// physical clock is back where the stamps were.
#[test]
fn a_clock_that_jumps_back_stops_stamping_until_it_catches_up() {
    let mut net = Net::new(2);
    net.connect_all();
    write(&mut net, 0, "before").unwrap();
    net.skew[0] = -10_000;
    assert!(matches!(
        write(&mut net, 0, "after-the-jump"),
        Err(WriteError::Clock(ClockError::AheadOfTime { .. }))
    ));
    net.advance(10_000);
    write(&mut net, 0, "caught-up").unwrap();
    net.advance(1_000);
    assert!(net.roots_equal());
}

/// With two members neither outvotes the other: both say their clocks
/// disagree, neither refuses writes; the fast one's writes are refused by
/// its peer, and the peer's status says so (lag and refusal, not "0 behind").
#[test]
fn two_members_that_disagree_both_report_it() {
    let mut net = Net::new(2);
    net.skew[1] = HOUR_MS;
    net.connect_all();
    net.advance(2_000);
    for i in 0..2 {
        let st = net.nodes[i].status();
        assert_eq!(st.clock.judgement.disagreeing, 1, "node {i}");
        assert!(!st.clock.judgement.off, "node {i}");
    }
    write(&mut net, 0, "from-0").unwrap();
    write(&mut net, 1, "from-the-fast-one").unwrap();
    net.advance(2_000);
    let st = net.nodes[0].status();
    let p = &st.peers[0];
    assert!(p.refused_at_ms > 0 && p.refused_ahead_ms > HOUR_MS as u64 - 1_000);
    assert!(p.lag_index > 0, "the refused changes show as lag");
    assert!(net.nodes[0].get("from-the-fast-one").is_none());
    assert_eq!(net.value(1, "from-0").as_deref(), Some(&b"v"[..]));
}
