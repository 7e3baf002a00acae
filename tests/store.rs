//! The durable stores: redb against the in-memory model, node identity, and
//! crash durability with a child process killed by SIGKILL mid-load.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian::core::codec::ClusterId;
use meridian::core::rng::Rng;
use meridian::core::types::NodeId;
use meridian::store::{Durability, MemoryStore, RedbStore, Store, StoreError, LOAD_CHUNK_RECORDS};
use meridian::sync::{Config, Loaded, Output, PersistBatch, Replica};

const T0: u64 = 1_750_000_000_000;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn replica() -> Replica {
    Replica::new(
        Config::new(NodeId(7), "n", "us-east", ClusterId([1; 16])),
        T0,
    )
    .unwrap()
}

fn batches(r: &mut Replica) -> Vec<PersistBatch> {
    let mut out = Vec::new();
    while let Some(o) = r.poll_output() {
        if let Output::Persist(b) = o {
            out.push(b);
        }
    }
    out
}

#[test]
fn redb_store_holds_exactly_what_the_memory_model_holds() {
    let dir = scratch("model");
    let path = dir.join("node.redb");
    let mut disk = RedbStore::open(&path, Durability::Immediate).unwrap();
    let mut mem = MemoryStore::new();
    let mut r = replica();
    let mut rng = Rng::new(42);
    for round in 0..40u64 {
        for _ in 0..rng.range(1, 20) {
            let key = format!("app/{}", rng.below(50));
            let now = T0 + round;
            if rng.chance(300_000) {
                r.delete(&key, None, now).unwrap();
            } else {
                let v = Bytes::from(vec![b'a' + rng.below(26) as u8; rng.below(300) as usize]);
                r.put(&key, v, rng.below(3), None, now).unwrap();
            }
        }
        // One commit for the whole group, as the node's group commit does.
        let group = batches(&mut r);
        disk.commit(&group).unwrap();
        mem.commit(&group).unwrap();
    }
    assert_eq!(disk.load().unwrap(), mem.load().unwrap());
    drop(disk);
    let disk = RedbStore::open(&path, Durability::Immediate).unwrap();
    let state = disk.load().unwrap();
    assert_eq!(state, mem.load().unwrap());
    let cfg = r.config().clone();
    let mut restored = Replica::restore(cfg, state, T0 + 100).unwrap();
    assert_eq!(restored.root(), r.root());
    assert!(restored.clock() >= r.clock(), "the clock never goes back");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn records_stream_in_key_order_in_bounded_chunks_and_restore_the_same_root() {
    let dir = scratch("stream");
    let mut disk = RedbStore::open(&dir.join("node.redb"), Durability::None).unwrap();
    let mut r = replica();
    let n = 2 * LOAD_CHUNK_RECORDS + 123;
    for i in 0..n {
        r.put(
            &format!("k/{:06}", (i * 7919) % n),
            Bytes::from_static(b"v"),
            0,
            None,
            T0,
        )
        .unwrap();
    }
    disk.commit(&batches(&mut r)).unwrap();
    assert_eq!(disk.records_len().unwrap(), n as u64);
    let mut chunks = Vec::new();
    disk.load_records(&mut |c| {
        chunks.push(c);
        true
    })
    .unwrap();
    assert!(chunks
        .iter()
        .all(|c| !c.is_empty() && c.len() <= LOAD_CHUNK_RECORDS));
    let keys: Vec<String> = chunks
        .iter()
        .flatten()
        .map(|l| match l {
            Loaded::Record(k, _) => k.to_string(),
            Loaded::Damaged(d) => panic!("damaged: {d:?}"),
        })
        .collect();
    assert_eq!(keys.len(), n);
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "key order");
    // A sink that stops gets no more.
    let mut calls = 0;
    disk.load_records(&mut |_| {
        calls += 1;
        false
    })
    .unwrap();
    assert_eq!(calls, 1);
    let meta = disk.load_meta().unwrap();
    assert!(meta.records.is_empty());
    let mut restored = Replica::restore_from(
        r.config().clone(),
        meta,
        chunks.into_iter().flatten(),
        T0 + 1,
    )
    .unwrap();
    assert_eq!(restored.root(), r.root());
    assert_eq!(restored.map().len(), n);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_node_id_is_created_once() {
    let dir = scratch("node-id");
    let path = dir.join("node.redb");
    let mut s = RedbStore::open(&path, Durability::Immediate).unwrap();
    assert_eq!(s.load().unwrap().node, NodeId(0));
    s.set_node(NodeId(5)).unwrap();
    s.set_node(NodeId(5)).unwrap();
    assert!(matches!(
        s.set_node(NodeId(6)),
        Err(StoreError::WrongNode { .. })
    ));
    drop(s);
    let s = RedbStore::open(&path, Durability::Immediate).unwrap();
    assert_eq!(s.load().unwrap().node, NodeId(5));
    let mut m = MemoryStore::new();
    m.set_node(NodeId(1)).unwrap();
    assert!(m.set_node(NodeId(2)).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_garbage_file_is_refused_with_a_clear_error() {
    let dir = scratch("garbage");
    let path = dir.join("node.redb");
    std::fs::write(&path, vec![0x5a; 10_000]).unwrap();
    let err = RedbStore::open(&path, Durability::Immediate)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("node.redb"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The child: writes keys forever, one group commit per few writes, and
/// prints `acked <i>` for each write once its commit returned.
fn crash_child(path: PathBuf) -> ! {
    let mut store = RedbStore::open(&path, Durability::Immediate).expect("child opens the store");
    let mut r = replica();
    let mut out = std::io::stdout().lock();
    let mut i = 0u64;
    loop {
        let first = i;
        for _ in 0..8 {
            r.put(
                &format!("k{i}"),
                Bytes::from(format!("v{i}")),
                0,
                None,
                T0 + i,
            )
            .unwrap();
            i += 1;
        }
        store.commit(&batches(&mut r)).expect("commit");
        for j in first..i {
            writeln!(out, "acked {j}").unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(path) = std::env::var("MERIDIAN_CRASH_CHILD") {
        crash_child(PathBuf::from(path));
    }
    let dir = scratch("crash");
    let path = dir.join("node.redb");
    for round in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "acknowledged_writes_survive_sigkill",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MERIDIAN_CRASH_CHILD", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().unwrap();
        let mut acked = Vec::new();
        let started = Instant::now();
        // Kill at a different point each round.
        let kill_after = 100 + round * 173;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("acked ") {
                acked.push(n.parse::<u64>().unwrap());
            }
            if acked.len() as u64 >= kill_after || started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        assert!(!acked.is_empty(), "the child acknowledged nothing");
        let store = RedbStore::open(&path, Durability::Immediate).expect("reopens after the crash");
        let state = store.load().unwrap();
        for i in &acked {
            let key = format!("k{i}");
            let rec = state
                .records
                .iter()
                .find(|(k, _)| k.as_str() == key)
                .unwrap_or_else(|| panic!("round {round}: acknowledged {key} lost"));
            assert_eq!(
                rec.1.entry.value.as_deref(),
                Some(format!("v{i}").as_bytes())
            );
        }
        drop(store);
    }
    let _ = std::fs::remove_dir_all(dir);
}
