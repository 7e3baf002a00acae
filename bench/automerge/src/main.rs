//! Automerge beside Meridian's core, on the same machine in one run:
//! applying and merging maps of N keys, and the bytes and round trips to
//! reconcile two replicas of M keys of which D diverged (Automerge's sync
//! protocol against Meridian's Merkle anti-entropy between two sans-IO
//! replicas). Usage: `cargo run --release -- [N] [M] [D]`
//! (defaults 100000 100000 1000); `cargo run --release -- memory [N]`
//! measures the memory of Meridian's map of N keys (default 1M).

use std::time::Instant;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT};
use bytes::Bytes;
use meridian::core::codec::{self, ClusterId, Message};
use meridian::core::map::LwwMap;
use meridian::core::types::{Entry, Key, NodeId, Stamp};
use meridian::core::Hlc;
use meridian::sync::{Config, Output, Replica};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn value(i: usize, tag: u8) -> Vec<u8> {
    let mut v = vec![tag; 100];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

fn automerge_apply(n: usize) -> (f64, f64) {
    let t = Instant::now();
    let mut a = AutoCommit::new();
    for i in 0..n {
        a.put(ROOT, format!("k{i:08}"), value(i, b'a'))
            .expect("put");
    }
    a.commit();
    let put = t.elapsed().as_secs_f64();
    let mut b = AutoCommit::new();
    let t = Instant::now();
    b.merge(&mut a).expect("merge");
    (put, t.elapsed().as_secs_f64())
}

fn meridian_apply(n: usize) -> (f64, f64) {
    let entries: Vec<(Key, Entry)> = (0..n)
        .map(|i| {
            let e = Entry {
                stamp: Stamp::new(Hlc::new(1_750_000_000_000 + i as u64, 0), NodeId(1)),
                prev: Stamp::ZERO,
                flags: 0,
                value: Some(Bytes::from(value(i, b'a'))),
            };
            (Key::new(&format!("k{i:08}")).expect("key"), e)
        })
        .collect();
    let t = Instant::now();
    let mut a = LwwMap::new(0);
    for (k, e) in &entries {
        a.apply_local(k, e.clone());
    }
    let put = t.elapsed().as_secs_f64();
    let mut b = LwwMap::new(0);
    let t = Instant::now();
    for (k, e) in entries {
        b.merge(&k, e, Hlc::ZERO);
    }
    (put, t.elapsed().as_secs_f64())
}

/// Two automerge docs with `m` shared keys, then `d` keys changed (half on each side);
/// the sync protocol until both are quiet: (bytes, messages, round trips, seconds).
fn automerge_sync(m: usize, d: usize) -> (usize, usize, usize, f64) {
    let mut a = AutoCommit::new();
    for i in 0..m {
        a.put(ROOT, format!("k{i:08}"), value(i, b'a'))
            .expect("put");
    }
    a.commit();
    let mut b = a.fork();
    // Half the overwrites on each side, as for Meridian.
    for j in 0..d {
        let side = if j % 2 == 0 { &mut a } else { &mut b };
        side.put(ROOT, format!("k{:08}", j * (m / d.max(1))), value(j, b'b'))
            .expect("put");
    }
    a.commit();
    b.commit();
    let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
    let (mut bytes, mut messages, mut rounds) = (0, 0, 0);
    let t = Instant::now();
    loop {
        let mut quiet = true;
        if let Some(msg) = a.sync().generate_sync_message(&mut sa) {
            let enc = msg.encode();
            bytes += enc.len();
            messages += 1;
            quiet = false;
            let msg = sync::Message::decode(&enc).expect("decode");
            b.sync()
                .receive_sync_message(&mut sb, msg)
                .expect("receive");
        }
        if let Some(msg) = b.sync().generate_sync_message(&mut sb) {
            let enc = msg.encode();
            bytes += enc.len();
            messages += 1;
            quiet = false;
            let msg = sync::Message::decode(&enc).expect("decode");
            a.sync()
                .receive_sync_message(&mut sa, msg)
                .expect("receive");
        }
        if quiet {
            break;
        }
        rounds += 1;
    }
    assert_eq!(
        a.get_heads(),
        b.get_heads(),
        "automerge replicas did not converge"
    );
    (bytes, messages, rounds, t.elapsed().as_secs_f64())
}

fn config(i: u64) -> Config {
    let mut c = Config::new(NodeId(i), &format!("n{i}"), "r", ClusterId([1; 16]));
    c.push_delay_ms = 0;
    c
}

/// Delivers messages between two replicas until quiet; counts the bytes of
/// anti-entropy frames. With `drop_feeds`, pushes are lost (so only
/// anti-entropy can repair).
fn exchange(a: &mut Replica, b: &mut Replica, drop_feeds: bool, now: u64) -> (usize, usize) {
    let (mut bytes, mut messages) = (0, 0);
    loop {
        let mut wire: Vec<(bool, Vec<u8>)> = Vec::new();
        for (to_b, r) in [(true, &mut *a), (false, &mut *b)] {
            while let Some(o) = r.poll_output() {
                if let Output::Send { msg, .. } = o {
                    if drop_feeds && matches!(msg, Message::Feed(_) | Message::Ack { .. }) {
                        continue;
                    }
                    let f = codec::encode(&msg).expect("encode");
                    if msg.kind().starts_with("ae_") {
                        bytes += f.len();
                        messages += 1;
                    }
                    wire.push((to_b, f));
                }
            }
        }
        if wire.is_empty() {
            return (bytes, messages);
        }
        for (to_b, f) in wire {
            let msg = codec::decode(&f).expect("decode");
            if to_b {
                b.handle(a.node(), msg, now);
            } else {
                a.handle(b.node(), msg, now);
            }
        }
    }
}

/// Two sans-IO replicas with `m` shared keys, `d` overwritten while their
/// pushes were lost (half on each side), one anti-entropy round:
/// (bytes, messages, seconds, diverged entry bytes).
fn meridian_ae(m: usize, d: usize) -> (usize, usize, f64, usize) {
    let t0 = 1_750_000_000_000u64;
    let mut cfg = [config(1), config(2)];
    for c in &mut cfg {
        c.ae_interval_ms = 1_000_000;
    }
    let [ca, cb] = cfg;
    let mut a = Replica::new(ca, t0).expect("replica");
    let mut b = Replica::new(cb, t0).expect("replica");
    for i in 0..m {
        a.put(
            &format!("k{i:08}"),
            Bytes::from(value(i, b'a')),
            0,
            None,
            t0,
        )
        .expect("put");
    }
    while a.poll_output().is_some() {}
    a.connected(b.node(), t0);
    b.connected(a.node(), t0);
    exchange(&mut a, &mut b, false, t0);
    let mut diverged = 0;
    for j in 0..d {
        let key = format!("k{:08}", j * (m / d.max(1)));
        let side = if j % 2 == 0 { &mut a } else { &mut b };
        side.put(&key, Bytes::from(value(j, b'b')), 0, None, t0 + 5)
            .expect("put");
        let e = side.get(&key).expect("written").entry.clone();
        diverged += codec::encode(&Message::Feed(meridian::core::codec::Feed {
            from: 0,
            to: 1,
            clock: None,
            frontier: Hlc::ZERO,
            entries: vec![(Key::new(&key).expect("key"), e)],
        }))
        .expect("encode")
        .len()
            - 12;
    }
    for r in [&mut a, &mut b] {
        while r.poll_output().is_some() {}
    }
    let t = Instant::now();
    a.tick(t0 + 2_000_000);
    let (bytes, messages) = exchange(&mut a, &mut b, true, t0 + 10);
    assert_eq!(a.root(), b.root(), "anti-entropy converged");
    (bytes, messages, t.elapsed().as_secs_f64(), diverged)
}

/// Resident memory of this process, bytes (Linux).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn memory_record(i: usize, value_bytes: usize) -> (Key, Entry) {
    let key = format!("config/service-{:07}/setting", i);
    let mut value = value(i, b'm');
    value.resize(value_bytes, b'm');
    let e = Entry {
        stamp: Stamp::new(Hlc::new(1_750_000_000_000 + i as u64, 0), NodeId(1)),
        prev: Stamp::ZERO,
        flags: 0,
        value: Some(Bytes::from(value)),
    };
    (Key::new(&key).expect("key"), e)
}

/// Memory of an LwwMap holding `n` keys of `value_bytes`-byte values, beside the raw
/// key and value bytes (the design's target: <= 1.5 x raw + 100 B per key):
/// built by writes, and restored from records as after a restart. Returns
/// the process's growth while building by writes and the raw bytes.
fn meridian_memory(n: usize, value_bytes: usize) -> (u64, u64) {
    let report = |what: &str, bytes: f64, raw: f64| {
        println!(
            "  {what}: {bytes:.0} heap bytes = {:.2} x raw = {:.0} B per key over raw",
            bytes / raw,
            (bytes - raw) / n as f64
        )
    };
    let before = rss_bytes();
    let heap0 = heap_bytes();
    let mut map = LwwMap::new(0);
    let mut raw = 0u64;
    for i in 0..n {
        let (k, e) = memory_record(i, value_bytes);
        raw += (k.len() + e.value_len()) as u64;
        map.apply_local(&k, e);
    }
    let _ = map.root();
    let used = rss_bytes().saturating_sub(before);
    println!("heap held by the map, keys and values (malloc's own headers not counted):");
    report("built by writes", (heap_bytes() - heap0) as f64, raw as f64);
    let index = map.index();
    drop(map);
    // The same records as read from disk on a restart.
    let heap0 = heap_bytes();
    let records: Vec<_> = (0..n)
        .map(|i| {
            let (k, e) = memory_record(i, value_bytes);
            (k, e, i as u64 + 1, i as u64 + 1)
        })
        .collect();
    let t = Instant::now();
    let mut restored = LwwMap::restore(records, index, 0, 1);
    let _ = restored.root();
    let secs = t.elapsed().as_secs_f64();
    report(
        "restored from records",
        (heap_bytes() - heap0) as f64,
        raw as f64,
    );
    println!("restore of {n} records took {:.0} ms", secs * 1e3);
    drop(restored);
    (used, raw)
}

// The counting allocator of Meridian's tests, shared by path.
#[path = "../../../tests/common/heap.rs"]
mod heap;
use heap::heap_bytes;

#[global_allocator]
static GLOBAL: heap::Counting = heap::Counting;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("memory") {
        let n = arg(2, 1_000_000);
        let value_bytes = arg(3, 100);
        let (used, raw) = meridian_memory(n, value_bytes);
        let target = 1.5 * raw as f64 + 100.0 * n as f64;
        println!(
            "memory: {n} keys, {raw} raw key+value bytes: the map grew the process by {used} bytes = {:.2} x raw = {:.0} B per key over raw; target <= {:.0} bytes: {}",
            used as f64 / raw as f64,
            (used as f64 - raw as f64) / n as f64,
            target,
            if (used as f64) <= target { "met" } else { "NOT met" }
        );
        return;
    }
    let n = arg(1, 100_000);
    let m = arg(2, 100_000);
    let d = arg(3, 1_000);
    println!("apply and merge a map of {n} keys (100-byte values), one core:");
    let (ap, am) = automerge_apply(n);
    let (mp, mm) = meridian_apply(n);
    println!("  {:<28} {:>14} {:>14}", "", "put/apply", "merge");
    println!(
        "  {:<28} {:>11.0}/s {:>11.0}/s",
        "automerge 0.12 (map ops)",
        n as f64 / ap,
        n as f64 / am
    );
    println!(
        "  {:<28} {:>11.0}/s {:>11.0}/s",
        "meridian LwwMap",
        n as f64 / mp,
        n as f64 / mm
    );
    println!("reconcile two replicas of {m} keys, {d} diverged (half changed on each side):");
    let (ab, amsg, arounds, asecs) = automerge_sync(m, d);
    println!(
        "  automerge sync protocol: {ab} bytes in {amsg} messages ({arounds} round trips), {:.1} ms",
        asecs * 1e3
    );
    let (mb, mmsg, msecs, diverged) = meridian_ae(m, d);
    println!(
        "  meridian anti-entropy:   {mb} bytes in {mmsg} messages (one round: root, levels, leaves, entries), {:.1} ms",
        msecs * 1e3
    );
    println!(
        "  diverged entries (key, stamp, value as Meridian encodes them): {diverged} bytes; automerge {:.2}x, meridian {:.2}x",
        ab as f64 / diverged as f64,
        mb as f64 / diverged as f64
    );
}
