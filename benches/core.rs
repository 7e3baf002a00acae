//! Benchmarks of the sans-IO core (design §7). Run with `cargo bench --bench core`.
//!
//! Besides criterion's timings, `ae_bytes_1m_keys_1k_diverged` runs the real
//! anti-entropy protocol between two replicas of 1M keys of which 1k
//! diverged and prints the bytes exchanged next to the diverged entries' size.

use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use meridian::core::codec::{self, ClusterId, Feed, FeedEnd, Message};
use meridian::core::digest::{differing_leaves, Digest};
use meridian::core::types::{entry_hash, key_hash, Entry, Key, Kind, NodeId, Stamp};
use meridian::core::{Hlc, LwwMap};
use meridian::sync::{Config, Output, Replica};

const T0: u64 = 1_750_000_000_000;
const VALUE_BYTES: usize = 100;

fn key(i: usize) -> Key {
    Key::new(&format!("svc/{i:07}/config")).unwrap()
}

fn entries(n: usize, hlc: u64, node: u64) -> Vec<(Key, Entry)> {
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    (0..n)
        .map(|i| {
            let e = Entry {
                stamp: Stamp::new(Hlc(hlc + i as u64), NodeId(node)),
                prev: Stamp::ZERO,
                flags: 0,
                value: Some(value.clone()),
                kind: Kind::Value,
            };
            (key(i), e)
        })
        .collect()
}

fn map_of(es: &[(Key, Entry)]) -> LwwMap {
    let mut m = LwwMap::default();
    for (k, e) in es {
        m.merge(k, e.clone(), Hlc::ZERO);
    }
    m
}

fn merge(c: &mut Criterion) {
    let mut g = c.benchmark_group("merge");
    g.sample_size(10);
    for n in [1_000usize, 100_000] {
        let old = entries(n, 1 << 20, 1);
        let delta = entries(n, 1 << 40, 2);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("new_keys", n), |b| {
            b.iter_batched(
                LwwMap::default,
                |mut m| {
                    for (k, e) in &delta {
                        m.merge(k, e.clone(), Hlc::ZERO);
                    }
                    m
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_function(BenchmarkId::new("replace_keys", n), |b| {
            b.iter_batched(
                || map_of(&old),
                |mut m| {
                    for (k, e) in &delta {
                        m.merge(k, e.clone(), Hlc::ZERO);
                    }
                    m
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn local_put(c: &mut Criterion) {
    let mut g = c.benchmark_group("local_put");
    g.throughput(Throughput::Elements(1));
    let cfg = Config::new(NodeId(1), "n1", "us-east", ClusterId([1; 16]));
    let mut r = Replica::new(cfg, T0).unwrap();
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let keys: Vec<String> = (0..100_000).map(|i| key(i).to_string()).collect();
    for k in &keys {
        r.put(k, value.clone(), 0, None, T0).unwrap();
    }
    while r.poll_output().is_some() {}
    let mut i = 0usize;
    g.bench_function("existing_key_100k_map", |b| {
        b.iter(|| {
            i += 1;
            r.put(
                &keys[i % keys.len()],
                value.clone(),
                0,
                None,
                T0 + (i / 1000) as u64,
            )
            .unwrap();
            while let Some(o) = r.poll_output() {
                std::hint::black_box(o);
            }
        })
    });
    g.finish();
}

fn digest(c: &mut Criterion) {
    let mut g = c.benchmark_group("digest");
    g.sample_size(10);
    let es = entries(1_000_000, 1, 1);
    // The floor under merge: every changed entry is hashed once (a new key
    // also once for its key hash). Entries as in `merge`: ~20-byte keys,
    // 100-byte values.
    g.throughput(Throughput::Elements(1));
    let (k0, e0) = es[12_345].clone();
    g.bench_function("entry_hash_one_entry", |b| {
        b.iter(|| std::hint::black_box(entry_hash(k0.as_str(), std::hint::black_box(&e0))))
    });
    g.bench_function("key_hash_one_key", |b| {
        b.iter(|| std::hint::black_box(key_hash(std::hint::black_box(k0.as_str()))))
    });
    let parts: Vec<(u64, [u8; 16])> = es
        .iter()
        .map(|(k, e)| {
            let mut p = [0u8; 16];
            p.copy_from_slice(&entry_hash(k.as_str(), e)[..16]);
            (key_hash(k.as_str()), p)
        })
        .collect();
    let mut d = Digest::new();
    for (kh, p) in &parts {
        d.toggle(*kh, p);
    }
    d.root();
    let mut i = 0usize;
    g.throughput(Throughput::Elements(1));
    g.bench_function("update_and_root_per_write_1m", |b| {
        b.iter(|| {
            i += 1;
            let (kh, p) = parts[i % parts.len()];
            d.toggle(kh, &p);
            d.toggle(kh, &[i as u8; 16]);
            std::hint::black_box(d.root())
        })
    });
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("root_after_loading_1m", |b| {
        b.iter_batched(
            || {
                let mut d = Digest::new();
                for (kh, p) in &parts {
                    d.toggle(*kh, p);
                }
                d
            },
            |mut d| std::hint::black_box(d.root()),
            BatchSize::LargeInput,
        )
    });
    let mut a = Digest::new();
    let mut b2 = Digest::new();
    for (kh, p) in &parts {
        a.toggle(*kh, p);
        b2.toggle(*kh, p);
    }
    for (kh, _) in parts.iter().step_by(1000) {
        b2.toggle(*kh, &[0xAB; 16]);
    }
    assert_eq!(differing_leaves(&mut a, &mut b2).len(), 1000);
    g.throughput(Throughput::Elements(1));
    g.bench_function("diff_1m_keys_1k_differing", |b| {
        b.iter(|| std::hint::black_box(differing_leaves(&mut a, &mut b2)))
    });
    g.finish();
}

fn codec_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let msg = Message::Feed(Feed {
        from: 0,
        to: 1000,
        end: FeedEnd::Claim(Hlc(T0 << 16)),
        frontier: Hlc(T0 << 16),
        entries: entries(1_000, T0 << 16, 0x1234_5678_9abc_def0),
        docs: Vec::new(),
    });
    let frame = codec::encode(&msg).unwrap();
    println!(
        "codec: a 1k-entry feed of {VALUE_BYTES}-byte values is {} bytes",
        frame.len()
    );
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("encode_feed_1k", |b| {
        b.iter(|| codec::encode(std::hint::black_box(&msg)).unwrap())
    });
    g.bench_function("decode_feed_1k", |b| {
        b.iter(|| codec::decode(std::hint::black_box(&frame)).unwrap())
    });
    g.finish();
}

/// Delivers messages between two replicas until quiet; returns the bytes of anti-entropy frames.
fn exchange(a: &mut Replica, b: &mut Replica, drop_feeds: bool) -> u64 {
    let mut bytes = 0u64;
    let mut wire: Vec<(bool, Vec<u8>)> = Vec::new();
    loop {
        for (to_b, r) in [(true, &mut *a), (false, &mut *b)] {
            while let Some(o) = r.poll_output() {
                if let Output::Send { msg, .. } = o {
                    if drop_feeds && matches!(msg, Message::Feed(_) | Message::Ack { .. }) {
                        continue;
                    }
                    let f = codec::encode(&msg).unwrap();
                    if msg.kind().starts_with("ae_") {
                        bytes += f.len() as u64;
                    }
                    wire.push((to_b, f));
                }
            }
        }
        if wire.is_empty() {
            return bytes;
        }
        for (to_b, f) in std::mem::take(&mut wire) {
            let msg = codec::decode(&f).unwrap();
            if to_b {
                b.handle(a.node(), msg, T0 + 10);
            } else {
                a.handle(b.node(), msg, T0 + 10);
            }
        }
    }
}

fn ae_bytes(c: &mut Criterion) {
    let n = 1_000_000usize;
    let diverged = 1_000usize;
    let cluster = ClusterId([1; 16]);
    let mut cfg_a = Config::new(NodeId(1), "a", "us-east", cluster);
    let mut cfg_b = Config::new(NodeId(2), "b", "eu-west", cluster);
    for c in [&mut cfg_a, &mut cfg_b] {
        c.push_delay_ms = 0;
        c.ae_interval_ms = 1_000_000;
    }
    let mut a = Replica::new(cfg_a, T0).unwrap();
    let mut b = Replica::new(cfg_b, T0).unwrap();
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    for i in 0..n {
        a.put(key(i).as_str(), value.clone(), 0, None, T0).unwrap();
    }
    while a.poll_output().is_some() {}
    a.connected(b.node(), T0);
    b.connected(a.node(), T0);
    exchange(&mut a, &mut b, false);
    assert_eq!(a.root(), b.root());
    // Diverge: each side overwrites 500 keys the other does not hear about.
    let mut diverged_bytes = 0usize;
    let newer = Bytes::from(vec![b'y'; VALUE_BYTES]);
    for j in 0..diverged {
        let k = key(j * (n / diverged));
        let side = if j % 2 == 0 { &mut a } else { &mut b };
        let w = side
            .put(k.as_str(), newer.clone(), 0, None, T0 + 5)
            .unwrap();
        let e = side.get(k.as_str()).unwrap().entry.clone();
        diverged_bytes += postcard::to_allocvec(&(&w.key, &e)).unwrap().len();
    }
    for r in [&mut a, &mut b] {
        while r.poll_output().is_some() {}
    }
    assert_ne!(a.root(), b.root());
    let start = Instant::now();
    a.tick(T0 + 2_000_000);
    let bytes = exchange(&mut a, &mut b, true);
    let took = start.elapsed();
    assert_eq!(a.root(), b.root(), "anti-entropy converged");
    let full: usize =
        n * postcard::to_allocvec(&(key(0), a.get(key(0).as_str()).unwrap().entry.clone()))
            .unwrap()
            .len();
    println!(
        "ae: {n} keys, {diverged} diverged ({diverged_bytes} bytes of entries): anti-entropy exchanged {bytes} bytes \
         ({:.2} x the diverged entries; a full-state transfer is about {full} bytes) in {:.1} ms of CPU, no network",
        bytes as f64 / diverged_bytes as f64,
        took.as_secs_f64() * 1000.0
    );
    // Equal roots: one round trip of the root.
    a.tick(T0 + 4_000_000);
    let equal = exchange(&mut a, &mut b, true);
    println!(
        "ae: a round between equal replicas of {n} keys exchanged {equal} bytes (frames included)"
    );
    let _ = c;
}

criterion_group!(benches, merge, local_put, digest, codec_bench, ae_bytes);
criterion_main!(benches);
