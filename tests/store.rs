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
use meridian::sync::{Config, DocWrite, Loaded, Output, PersistBatch, Replica, WriteAck};

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
            } else if rng.chance(300_000) {
                // Documents too: stored as their own kind.
                let doc = format!("doc/{}", rng.below(5));
                let field = format!("f{}", rng.below(4));
                let write = DocWrite::Patch(serde_json::json!({ field: rng.below(100) }));
                r.put_doc(&doc, write, 0, None, WriteAck::Local, now)
                    .unwrap();
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
    let docs = restored
        .map()
        .iter()
        .filter(|(_, rec)| rec.entry.is_doc())
        .count();
    assert!(
        docs > 0,
        "documents were written and read back as documents"
    );
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
            format!("k/{:06}", (i * 7919) % n),
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

/// A store of `n` keys (values named after their keys), committed and closed.
fn written_store(path: &std::path::Path, n: usize) -> Replica {
    let mut disk = RedbStore::open(path, Durability::Immediate).unwrap();
    let mut r = replica();
    for i in 0..n {
        r.put(
            format!("cfg/{i:05}"),
            Bytes::from(format!("value of {i:05} {}", "x".repeat(i % 90))),
            (i % 3) as u64,
            None,
            T0 + i as u64,
        )
        .unwrap();
    }
    disk.commit(&batches(&mut r)).unwrap();
    disk.set_node(NodeId(7)).unwrap();
    r
}

/// What a replica restored from the store at `path` serves, or why the
/// store could not be read. Never panics, whatever the file holds.
fn served_after(path: &std::path::Path) -> Result<(Replica, usize), StoreError> {
    let disk = RedbStore::open(path, Durability::Immediate)?;
    let state = disk.load()?;
    let damaged = state.damaged.len();
    let r = Replica::restore(replica().config().clone(), state, T0 + 1_000_000).unwrap();
    Ok((r, damaged))
}

#[test]
fn a_damaged_value_is_read_back_as_a_record_that_fails_its_check() {
    let dir = scratch("damaged-value");
    let path = dir.join("node.redb");
    let mut original = written_store(&path, 50);
    let mut disk = RedbStore::open(&path, Durability::Immediate).unwrap();
    // One bit of the value.
    assert!(disk.damage_value("cfg/00007", 3, 0x01).unwrap());
    // Inside the entry's postcard: it no longer decodes.
    assert!(disk.damage_record("cfg/00011", 34, 0x80).unwrap());
    // The modify index: bookkeeping, renumbered rather than quarantined.
    assert!(disk.damage_record("cfg/00013", -1, 0x01).unwrap());
    drop(disk);
    let (mut r, _) = served_after(&path).unwrap();
    assert_eq!(r.metrics().records_renumbered, 1);
    assert!(r.get("cfg/00013").unwrap().modify_index > 50);
    assert!(
        r.quarantined("cfg/00007") && r.quarantined("cfg/00011"),
        "{:?}",
        r.quarantine()
    );
    assert!(r.get("cfg/00007").is_none());
    assert_eq!(r.map().len(), 48);
    assert_eq!(r.metrics().records_quarantined, 2);
    // Everything else is what was written.
    for (k, rec) in r.map().iter() {
        assert_eq!(original.get(k.as_str()).unwrap().entry, rec.entry);
    }
    assert_ne!(r.root(), original.root());
    let _ = std::fs::remove_dir_all(dir);
}

/// Bytes damaged anywhere in the file (a zeroed page, XORed bytes, a cut):
/// the store is refused as damaged, or reads back with the damage caught
/// by the records' checks; a wrong value is never served, and nothing panics.
#[test]
fn a_damaged_file_never_serves_a_wrong_value() {
    let dir = scratch("damaged-file");
    let path = dir.join("node.redb");
    let original = written_store(&path, 3_000);
    let good = std::fs::read(&path).unwrap();
    let len = good.len();
    let mut kinds: Vec<(String, Vec<u8>)> = Vec::new();
    for page in [1usize, 2, 3, len / 4096 / 2, len / 4096 - 2] {
        let mut b = good.clone();
        let at = page * 4096;
        if at + 4096 <= len {
            b[at..at + 4096].fill(0);
            kinds.push((format!("page {page} zeroed"), b));
        }
    }
    for at in [600usize, 4_200, len / 3, len / 2 + 77, len - 5_000] {
        let mut b = good.clone();
        for x in &mut b[at..at + 16] {
            *x ^= 0x5a;
        }
        kinds.push((format!("16 bytes XORed at {at}"), b));
    }
    for cut in [0usize, 9, 4_096, len / 10, len / 2, len - 4_096] {
        kinds.push((format!("cut to {cut} bytes"), good[..cut].to_vec()));
    }
    let mut refused = 0;
    let mut caught = 0;
    for (what, bytes) in kinds {
        std::fs::write(&path, &bytes).unwrap();
        match served_after(&path) {
            Err(StoreError::Damaged { .. }) => refused += 1,
            Err(e) => panic!("{what}: an error that does not say the store is damaged: {e}"),
            Ok((r, damaged)) => {
                for (k, rec) in r.map().iter() {
                    let want = original.get(k.as_str());
                    assert_eq!(
                        want.map(|w| &w.entry),
                        Some(&rec.entry),
                        "{what}: {k} is served with a value never written"
                    );
                }
                if r.map().len() < original.map().len() {
                    assert!(
                        r.metrics().records_quarantined > 0 || damaged > 0,
                        "{what}: records are missing and nothing says so"
                    );
                    caught += 1;
                }
            }
        }
    }
    assert!(refused > 0, "no damage was refused as such");
    println!("{refused} refused as damaged, {caught} read back with the damage caught");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_empty_file_is_damaged_not_a_new_store() {
    let dir = scratch("empty-file");
    let path = dir.join("node.redb");
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        RedbStore::open(&path, Durability::Immediate),
        Err(StoreError::Damaged { .. })
    ));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as it was");
    let _ = std::fs::remove_dir_all(dir);
}

/// The meta table (index, clock, floors) carries a check: values changed
/// behind the store's back make it damaged.
#[test]
fn meta_values_that_fail_their_check_make_the_store_damaged() {
    let dir = scratch("meta");
    let path = dir.join("node.redb");
    written_store(&path, 10);
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut meta = tx
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap();
            meta.insert("gc_floor", 1u64 << 60).unwrap();
        }
        tx.commit().unwrap();
    }
    let disk = RedbStore::open(&path, Durability::Immediate).unwrap();
    assert!(matches!(disk.load_meta(), Err(StoreError::Damaged { .. })));
    let _ = std::fs::remove_dir_all(dir);
}

/// A store written by format 1 (string keys, records without checks) is
/// migrated on open and restores the same state.
#[test]
fn a_format_1_store_is_migrated_on_open() {
    use meridian::core::types::{Entry, Kind, Stamp};
    use meridian::core::Hlc;
    let dir = scratch("format-1");
    let path = dir.join("node.redb");
    let entries: Vec<(String, Entry)> = (0..20u64)
        .map(|i| {
            (
                format!("old/{i}"),
                Entry {
                    stamp: Stamp::new(Hlc::new(T0 + i, 0), NodeId(7)),
                    prev: Stamp::ZERO,
                    flags: i,
                    value: (i % 5 != 0).then(|| Bytes::from(format!("v{i}"))),
                    kind: Kind::Value,
                },
            )
        })
        .collect();
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("entries"))
                .unwrap();
            for (i, (k, e)) in entries.iter().enumerate() {
                // Format 1: a format byte, then postcard of (entry, create, modify).
                let mut v = vec![1u8];
                v.extend(postcard::to_allocvec(&(e, i as u64 + 1, i as u64 + 1)).unwrap());
                t.insert(k.as_str(), v.as_slice()).unwrap();
            }
            let mut meta = tx
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap();
            meta.insert("node", 7).unwrap();
            meta.insert("index", 20).unwrap();
        }
        tx.commit().unwrap();
    }
    let (r, damaged) = served_after(&path).unwrap();
    assert_eq!(damaged, 0);
    assert_eq!(r.metrics().records_quarantined, 0);
    assert_eq!(r.map().len(), 20);
    for (k, e) in &entries {
        assert_eq!(&r.get(k).unwrap().entry, e);
    }
    // Read again: already migrated, the same.
    let (again, _) = served_after(&path).unwrap();
    assert_eq!(again.map().len(), 20);
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
                format!("k{i}"),
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

/// The recovery state is durable (it enters the meta check only when set,
/// so older stores keep theirs), and one record reads back as the whole
/// load reads it: intact, failing its check, not decoding, or absent.
#[test]
fn the_recovery_state_and_single_records_read_back() {
    use meridian::core::types::{Check, Key};
    use meridian::sync::Recovery;
    let dir = scratch("read-back");
    let path = dir.join("node.redb");
    written_store(&path, 50);
    let mut disk = RedbStore::open(&path, Durability::Immediate).unwrap();
    assert_eq!(disk.load_meta().unwrap().recovery, Recovery::None);
    for r in [
        Recovery::AfterStoreLoss,
        Recovery::AfterDamage,
        Recovery::None,
    ] {
        let b = PersistBatch {
            recovery: Some(r),
            ..PersistBatch::default()
        };
        disk.commit(&[b]).unwrap();
        drop(disk);
        disk = RedbStore::open(&path, Durability::Immediate).unwrap();
        assert_eq!(disk.load_meta().unwrap().recovery, r);
    }
    let key = Key::new("cfg/00003").unwrap();
    let Some(Loaded::Record(k, rec)) = disk.load_record(&key).unwrap() else {
        panic!("the record reads back");
    };
    assert_eq!(k, key);
    assert_eq!(Check::of(k.as_str(), &rec.entry), rec.check);
    assert!(disk
        .load_record(&Key::new("cfg/absent").unwrap())
        .unwrap()
        .is_none());
    assert!(disk.damage_value("cfg/00003", 2, 0x01).unwrap());
    // The last byte's continuation bit: the postcard runs past its end.
    assert!(disk.damage_record("cfg/00011", -1, 0x80).unwrap());
    let Some(Loaded::Record(k, rec)) = disk.load_record(&key).unwrap() else {
        panic!("a damaged value still decodes");
    };
    assert_ne!(
        Check::of(k.as_str(), &rec.entry),
        rec.check,
        "its check fails"
    );
    assert!(matches!(
        disk.load_record(&Key::new("cfg/00011").unwrap()).unwrap(),
        Some(Loaded::Damaged(_))
    ));
    let _ = std::fs::remove_dir_all(dir);
}
