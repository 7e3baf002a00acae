//! `meridian bench docs`: what documents cost (issue 16), measured in
//! process on Meridian's own code beside automerge alone: the feed bytes
//! a one-field change puts on the wire between replicas for a 1 KB and a 100 KB document,
//! the merges per second when two versions meet (as a replica makes them:
//! load both, compare, merge, save) beside automerge's merge of loaded
//! documents, the bytes held per document key beside the same JSON as a
//! plain value, and how a document's saved size grows with its history.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::Result;
use meridian::core::codec::{self, ClusterId, Message};
use meridian::core::doc::Document;
use meridian::core::hlc::Hlc;
use meridian::core::types::{Entry, Key, Kind, NodeId, Stamp, VALUE_BYTES_MAX_DEFAULT};
use meridian::sync::{Config, DocWrite, Output, Replica, WriteAck};
use serde_json::{json, Map, Value};

/// `n` characters of 64 kinds in no order (deflate saves little of them).
fn noise(n: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(ALPHABET[(x % 64) as usize])
        })
        .collect()
}

/// A JSON object of about `bytes` bytes: fields of 40-character values.
fn object(bytes: usize, seed: u64) -> Value {
    let mut m = Map::new();
    for i in 0..(bytes / 52).max(1) {
        m.insert(format!("field{i:04}"), json!(noise(40, seed + i as u64)));
    }
    Value::Object(m)
}

fn stamp(t: u64, node: u64) -> Stamp {
    Stamp::new(Hlc::new(1_750_000_000_000 + t, 0), NodeId(node))
}

/// The bytes one entry takes in a feed frame (key and entry, postcard).
fn entry_bytes(key: &str, value: Vec<u8>, kind: Kind) -> usize {
    let e = Entry {
        stamp: stamp(2, 1),
        prev: stamp(1, 1),
        flags: 0,
        value: Some(value.into()),
        kind,
    };
    let key = Key::new(key).expect("a valid key");
    postcard::to_allocvec(&(key, e)).map_or(0, |v| v.len())
}

/// Three replicas in one process, every message through the real codec:
/// what the feed puts on the wire.
struct Mesh {
    nodes: Vec<Replica>,
    wire: VecDeque<(usize, usize, Vec<u8>)>,
    /// Bytes of feed frames node 0 sent since last taken.
    feed_bytes_from_0: usize,
    now_ms: u64,
}

impl Mesh {
    fn new(n: usize) -> Result<Mesh> {
        const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-southeast"];
        let now_ms = 1_750_000_000_000;
        let id = |i: usize| NodeId(100 + i as u64);
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut c = Config::new(id(i), &format!("n{i}"), REGIONS[i % 3], ClusterId([5; 16]));
            c.push_delay_ms = 0;
            let mut r = Replica::new(c, now_ms)?;
            for j in 0..n {
                r.add_member(id(j), REGIONS[j % 3]);
            }
            nodes.push(r);
        }
        let mut mesh = Mesh {
            nodes,
            wire: VecDeque::new(),
            feed_bytes_from_0: 0,
            now_ms,
        };
        for a in 0..n {
            for b in a + 1..n {
                mesh.nodes[a].connected(id(b), now_ms);
                mesh.nodes[b].connected(id(a), now_ms);
            }
        }
        mesh.settle()?;
        Ok(mesh)
    }

    /// Delivers every message, and the replies, until the wire is quiet.
    fn settle(&mut self) -> Result<()> {
        for _ in 0..1_000_000 {
            for i in 0..self.nodes.len() {
                while let Some(o) = self.nodes[i].poll_output() {
                    if let Output::Send { to, msg } = o {
                        let j = (to.0 - 100) as usize;
                        let frame = codec::encode(&msg)?;
                        if i == 0 && matches!(msg, Message::Feed(_)) {
                            self.feed_bytes_from_0 += frame.len();
                        }
                        self.wire.push_back((i, j, frame));
                    }
                }
            }
            let Some((from, to, frame)) = self.wire.pop_front() else {
                return Ok(());
            };
            let msg = codec::decode(&frame)?;
            let from = self.nodes[from].node();
            self.nodes[to].handle(from, msg, self.now_ms);
        }
        anyhow::bail!("the wire never went quiet")
    }

    /// Writes `doc` to `key` at node 0 and settles: the feed bytes it put
    /// on the wire, per peer.
    fn write_at_0(&mut self, key: &str, doc: Value) -> Result<usize> {
        self.now_ms += 10;
        self.feed_bytes_from_0 = 0;
        self.nodes[0].put_doc(
            key,
            DocWrite::Whole(doc),
            0,
            None,
            WriteAck::Local,
            self.now_ms,
        )?;
        self.settle()?;
        Ok(self.feed_bytes_from_0 / (self.nodes.len() - 1))
    }
}

/// One document size: the feed bytes per peer of the first write, and of
/// a one-field change, between replicas; the automerge change alone.
fn wire(json_bytes: usize) -> Result<Value> {
    let base = object(json_bytes, 7);
    let mut mesh = Mesh::new(3)?;
    let first = mesh.write_at_0("svc/config", base.clone())?;
    let mut changed = base.clone();
    changed["field0000"] = json!("changed");
    let change = mesh.write_at_0("svc/config", changed.clone())?;
    for (i, r) in mesh.nodes.iter().enumerate() {
        let v = r.get("svc/config").and_then(|r| r.entry.visible_value());
        let got: Value = serde_json::from_slice(v.as_deref().unwrap_or_default())?;
        anyhow::ensure!(got == changed, "node {i} does not hold the change");
    }
    let saved = mesh.nodes[0]
        .get("svc/config")
        .map_or(0, |r| r.entry.value_len());
    let mut d = Document::new();
    d.update(&base, stamp(1, 1))?;
    let before = d.heads();
    d.update(&changed, stamp(2, 1))?;
    let json_len = serde_json::to_vec(&changed)?.len();
    let change_bytes = d.changes_after(&before).len();
    Ok(json!({
        "json_bytes": json_len,
        "saved_bytes": saved,
        "first_write_feed_bytes_per_peer": first,
        "change_feed_bytes_per_peer": change,
        "plain_value_entry_bytes": entry_bytes("svc/config", serde_json::to_vec(&changed)?, Kind::Value),
        "automerge_change_bytes": change_bytes,
    }))
}

/// Merges per second of two versions of a 1 KB document that each changed
/// one field: Meridian's path, and automerge's merge of loaded documents.
fn merges(rounds: usize) -> Result<Value> {
    let base = object(1_000, 11);
    let mut d = Document::new();
    d.update(&base, stamp(1, 1))?;
    let saved = d.save();
    let mut a = Document::load(&saved)?;
    let mut b = Document::load(&saved)?;
    let mut va = base.clone();
    va["field0001"] = json!("left");
    a.update(&va, stamp(2, 1))?;
    let mut vb = base.clone();
    vb["field0002"] = json!("right");
    b.update(&vb, stamp(3, 2))?;
    let (sa, sb) = (a.save(), b.save());
    let t = Instant::now();
    for _ in 0..rounds {
        let mut kept = Document::load(&sa)?;
        let mut lost = Document::load(&sb)?;
        if !kept.contains(&mut lost) && kept.origin() == lost.origin() {
            kept.merge(&mut lost)?;
            std::hint::black_box(kept.save());
        }
    }
    let meridian_per_s = rounds as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..rounds {
        let mut kept = Document::load(&sa)?;
        let mut lost = Document::load(&sb)?;
        kept.merge(&mut lost)?;
        std::hint::black_box(&kept);
    }
    let load_merge_per_s = rounds as f64 / t.elapsed().as_secs_f64();
    let mut loaded: Vec<(Document, Document)> = (0..rounds.min(2_000))
        .map(|_| Ok((Document::load(&sa)?, Document::load(&sb)?)))
        .collect::<Result<_>>()?;
    let n = loaded.len();
    let t = Instant::now();
    for (kept, lost) in loaded.iter_mut() {
        kept.merge(lost)?;
    }
    let automerge_per_s = n as f64 / t.elapsed().as_secs_f64();
    Ok(json!({
        "rounds": rounds,
        "replica_merges_per_s": meridian_per_s,
        "load_and_merge_per_s": load_merge_per_s,
        "automerge_merge_loaded_per_s": automerge_per_s,
    }))
}

/// Bytes held per key: a 1 KB JSON object as a document and as a value.
fn held(keys: usize) -> Result<Value> {
    let mut doc_bytes = 0usize;
    let mut json_bytes = 0usize;
    for k in 0..keys {
        let v = object(1_000, 1_000 + k as u64);
        let mut d = Document::new();
        d.update(&v, stamp(k as u64, 1))?;
        doc_bytes += d.save().len();
        json_bytes += serde_json::to_vec(&v)?.len();
    }
    Ok(json!({
        "keys": keys,
        "document_bytes_per_key": doc_bytes / keys.max(1),
        "json_bytes_per_key": json_bytes / keys.max(1),
    }))
}

/// How a 1 KB document's saved size grows as one field is written again
/// and again, and how many such writes fit under the default value limit.
fn history(edits: usize) -> Result<Value> {
    let mut v = object(1_000, 99);
    let mut d = Document::new();
    d.update(&v, stamp(0, 1))?;
    let start = d.save().len();
    for i in 0..edits {
        v["field0003"] = json!(noise(40, 5_000 + i as u64));
        d.update(&v, stamp(1 + i as u64, 1))?;
    }
    let end = d.save().len();
    let per_edit = (end.saturating_sub(start)) as f64 / edits.max(1) as f64;
    Ok(json!({
        "edits": edits,
        "saved_bytes_before": start,
        "saved_bytes_after": end,
        "bytes_per_edit": per_edit,
        "edits_until_value_limit": ((VALUE_BYTES_MAX_DEFAULT - start) as f64 / per_edit.max(1.0)) as u64,
    }))
}

pub fn run(tiny: bool, as_json: bool) -> Result<bool> {
    let small = wire(1_000)?;
    let large = wire(100_000)?;
    let m = merges(if tiny { 50 } else { 5_000 })?;
    let h = held(if tiny { 20 } else { 2_000 })?;
    let g = history(if tiny { 50 } else { 2_000 })?;
    let all = json!({"scenario": "docs", "one_field_change_1kb": small, "one_field_change_100kb": large, "merges": m, "held": h, "history": g});
    if as_json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(true);
    }
    for (name, w) in [("1 KB", &small), ("100 KB", &large)] {
        println!(
            "docs wire   a {name} document ({} B of JSON, {} B saved), 3 replicas: its first write {} B per peer in the feed; a one-field change {} B per peer (a plain value of the same JSON: {} B; the automerge change alone: {} B)",
            w["json_bytes"], w["saved_bytes"], w["first_write_feed_bytes_per_peer"], w["change_feed_bytes_per_peer"], w["plain_value_entry_bytes"], w["automerge_change_bytes"]
        );
    }
    println!(
        "docs merge  two versions of a 1 KB document ({} rounds): {:.0}/s as a replica merges (load both, compare, merge, save); {:.0}/s load and merge; automerge's merge of loaded documents {:.0}/s",
        m["rounds"], m["replica_merges_per_s"].as_f64().unwrap_or(0.0), m["load_and_merge_per_s"].as_f64().unwrap_or(0.0), m["automerge_merge_loaded_per_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "docs held   {} keys of 1 KB JSON: {} B per key as a document, {} B as a plain value",
        h["keys"], h["document_bytes_per_key"], h["json_bytes_per_key"]
    );
    println!(
        "docs growth one field of a 1 KB document written {} times: {} B saved -> {} B ({:.0} B per write; about {} writes fit under the 1 MiB value limit)",
        g["edits"], g["saved_bytes_before"], g["saved_bytes_after"], g["bytes_per_edit"].as_f64().unwrap_or(0.0), g["edits_until_value_limit"]
    );
    Ok(true)
}
