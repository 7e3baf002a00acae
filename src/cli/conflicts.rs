//! `meridian conflicts`: the conflict log of every member, gathered.
//!
//! Each node keeps a bounded, durable log of the writes that replaced a
//! concurrent write of another node (last-writer-wins). A conflict shows
//! up on every node that resolved it; this command asks every member the
//! first node knows (and the nodes named with `--node`), merges the logs,
//! and prints each conflict once with the nodes that saw it.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::Serialize;

use super::utc;
use meridian::api::wire;
use meridian::client::Client;

/// One conflict, as gathered.
struct Seen {
    key: String,
    winner: String,
    loser: String,
    loser_deleted: bool,
    loser_value: Option<Bytes>,
    path: Option<String>,
    nodes: Vec<String>,
}

/// One conflict as `--json` prints it.
#[derive(Serialize)]
struct Item<'a> {
    key: &'a str,
    winner: &'a str,
    winner_node: String,
    loser: &'a str,
    loser_node: String,
    loser_deleted: bool,
    #[serde(with = "wire::b64_opt")]
    loser_value: Option<Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    at_ms: u64,
    seen_on: &'a [String],
}

/// How many conflicts a node recorded, kept or not.
#[derive(Serialize)]
struct Total {
    name: String,
    total: u64,
}

/// `--json`.
#[derive(Serialize)]
struct Doc<'a> {
    conflicts: Vec<Item<'a>>,
    totals: Vec<Total>,
    unreachable: &'a [String],
}

/// The node id inside a stamp (`<hlc hex>-<node hex>`).
fn stamp_node(stamp: &str) -> &str {
    stamp.rsplit('-').next().unwrap_or("")
}

/// The physical time (ms) inside a stamp.
fn stamp_ms(stamp: &str) -> u64 {
    let hlc = stamp.split('-').next().unwrap_or("");
    u64::from_str_radix(hlc, 16).map_or(0, |h| h >> 16)
}

pub async fn conflicts(client: &Client, extra: &[String], as_json: bool) -> Result<bool> {
    let s = client.status().await.context("status")?;
    // Every member: its name (to label writers) and API address.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut targets: Vec<(String, String)> = Vec::new();
    names.insert(s.node.clone(), s.name.clone());
    targets.push((s.name.clone(), client.addr().to_string()));
    let mut unreachable = Vec::new();
    for p in s.peers {
        names.insert(p.node, p.name.clone());
        if p.api.is_empty() {
            unreachable.push(format!("{}: its API address is unknown", p.name));
        } else {
            targets.push((p.name, p.api));
        }
    }
    for a in extra {
        let addr = client.sibling(a)?.addr().to_string();
        if !targets.iter().any(|(_, t)| *t == addr) {
            targets.push((addr.clone(), addr));
        }
    }
    let mut gathered: BTreeMap<(String, String, String, Option<String>), Seen> = BTreeMap::new();
    let mut totals = Vec::new();
    for (name, addr) in &targets {
        let c = client.sibling(addr)?.timeout_ms(10_000);
        let doc = match c.conflicts().await {
            Ok(doc) => doc,
            Err(e) => {
                unreachable.push(format!("{name} ({addr}): {e}"));
                continue;
            }
        };
        totals.push(Total {
            name: name.clone(),
            total: doc.total,
        });
        for k in doc.kept {
            let id = (
                k.key.clone(),
                k.winner.clone(),
                k.loser.clone(),
                k.path.clone(),
            );
            let seen = gathered.entry(id).or_insert_with(|| Seen {
                key: k.key,
                winner: k.winner,
                loser: k.loser,
                loser_deleted: k.loser_deleted,
                loser_value: k.loser_value,
                path: k.path,
                nodes: Vec::new(),
            });
            seen.nodes.push(name.clone());
        }
    }
    let mut list: Vec<Seen> = gathered.into_values().collect();
    list.sort_by_key(|c| (stamp_ms(&c.winner), c.key.clone()));
    let writer = |stamp: &str| -> String {
        let id = stamp_node(stamp);
        names
            .iter()
            .find(|(n, _)| n.as_str() == id)
            .map_or_else(|| format!("node {id}"), |(_, name)| name.clone())
    };
    if as_json {
        let conflicts = list
            .iter()
            .map(|c| Item {
                key: &c.key,
                winner: &c.winner,
                winner_node: writer(&c.winner),
                loser: &c.loser,
                loser_node: writer(&c.loser),
                loser_deleted: c.loser_deleted,
                loser_value: c.loser_value.clone(),
                path: c.path.as_deref(),
                at_ms: stamp_ms(&c.winner),
                seen_on: &c.nodes,
            })
            .collect();
        let doc = Doc {
            conflicts,
            totals,
            unreachable: &unreachable,
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(unreachable.is_empty());
    }
    if list.is_empty() {
        println!("no conflicts kept on {} nodes", totals.len());
    }
    for c in &list {
        let lost = if c.loser_deleted {
            "a delete".to_string()
        } else {
            match &c.loser_value {
                Some(bytes) => {
                    let v: String = String::from_utf8_lossy(bytes).chars().take(60).collect();
                    format!("{v:?}")
                }
                None => "a value (too large to keep)".to_string(),
            }
        };
        let field = c
            .path
            .as_ref()
            .map_or_else(String::new, |p| format!(" field {p}"));
        println!(
            "{}  {}{field}  {} won over {} by {} (lost: {lost}; seen on {})",
            utc(stamp_ms(&c.winner)),
            c.key,
            writer(&c.winner),
            c.loser,
            writer(&c.loser),
            c.nodes.join(", ")
        );
    }
    let counted: Vec<String> = totals
        .iter()
        .map(|t| format!("{} {}", t.name, t.total))
        .collect();
    println!(
        "conflicts recorded per node (kept or not): {}",
        counted.join(", ")
    );
    for u in &unreachable {
        println!("  unreachable: {u}");
    }
    Ok(unreachable.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_name_their_writer_and_time() {
        let s = format!(
            "{:016x}-{}",
            (1_795_567_459_522u64 << 16) | 3,
            "00000000000000ab"
        );
        assert_eq!(stamp_ms(&s), 1_795_567_459_522);
        assert_eq!(stamp_node(&s), "00000000000000ab");
    }
}
