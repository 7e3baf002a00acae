//! `meridian conflicts`: the conflict log of every member, gathered.
//!
//! Each node keeps a bounded, durable log of the writes that replaced a
//! concurrent write of another node (last-writer-wins). A conflict shows
//! up on every node that resolved it; this command asks every member the
//! first node knows (and the nodes named with `--node`), merges the logs,
//! and prints each conflict once with the nodes that saw it.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::Value;

use super::{check, json, utc};
use meridian::client::Client;

/// One conflict, as gathered.
struct Seen {
    key: String,
    winner: String,
    loser: String,
    loser_deleted: bool,
    loser_value: Option<String>,
    nodes: Vec<String>,
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
    let r = client.get("/v1/status").await?;
    check(&r, "status")?;
    let s = json(&r)?;
    // Every member: its name (to label writers) and API address.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut targets: Vec<(String, String)> = Vec::new();
    let me = s["node"].as_str().unwrap_or("").to_string();
    names.insert(me.clone(), s["name"].as_str().unwrap_or("").to_string());
    targets.push((
        s["name"].as_str().unwrap_or("").to_string(),
        client.addr().to_string(),
    ));
    let mut unreachable = Vec::new();
    for p in s["peers"].as_array().cloned().unwrap_or_default() {
        let name = p["name"].as_str().unwrap_or("").to_string();
        names.insert(p["node"].as_str().unwrap_or("").to_string(), name.clone());
        match p["api"].as_str() {
            Some(api) if !api.is_empty() => targets.push((name, api.to_string())),
            _ => unreachable.push(format!("{name}: its API address is unknown")),
        }
    }
    for a in extra {
        let addr = Client::new(a)?.addr().to_string();
        if !targets.iter().any(|(_, t)| *t == addr) {
            targets.push((addr.clone(), addr));
        }
    }
    let mut gathered: BTreeMap<(String, String, String), Seen> = BTreeMap::new();
    let mut totals = Vec::new();
    for (name, addr) in &targets {
        let c = Client::new(addr)?.timeout_ms(10_000);
        let doc = match c.get("/v1/conflicts").await {
            Ok(r) if r.status.is_success() => json(&r)?,
            Ok(r) => {
                unreachable.push(format!(
                    "{name} ({addr}): {} {}",
                    r.status.as_u16(),
                    r.error_message()
                ));
                continue;
            }
            Err(e) => {
                unreachable.push(format!("{name} ({addr}): {e}"));
                continue;
            }
        };
        totals.push((name.clone(), doc["total"].as_u64().unwrap_or(0)));
        for k in doc["kept"].as_array().cloned().unwrap_or_default() {
            let field = |f: &str| k[f].as_str().unwrap_or("").to_string();
            let id = (field("key"), field("winner"), field("loser"));
            let seen = gathered.entry(id).or_insert_with(|| Seen {
                key: field("key"),
                winner: field("winner"),
                loser: field("loser"),
                loser_deleted: k["loser_deleted"].as_bool() == Some(true),
                loser_value: k["loser_value"].as_str().map(str::to_string),
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
        let items: Vec<Value> = list
            .iter()
            .map(|c| {
                serde_json::json!({
                    "key": c.key, "winner": c.winner, "winner_node": writer(&c.winner),
                    "loser": c.loser, "loser_node": writer(&c.loser),
                    "loser_deleted": c.loser_deleted, "loser_value": c.loser_value,
                    "at_ms": stamp_ms(&c.winner), "seen_on": c.nodes,
                })
            })
            .collect();
        let totals: Vec<Value> = totals
            .iter()
            .map(|(n, t)| serde_json::json!({"name": n, "total": t}))
            .collect();
        let doc =
            serde_json::json!({"conflicts": items, "totals": totals, "unreachable": unreachable});
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
                Some(b64) => {
                    use base64::Engine;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap_or_default();
                    let v: String = String::from_utf8_lossy(&bytes).chars().take(60).collect();
                    format!("{v:?}")
                }
                None => "a value (too large to keep)".to_string(),
            }
        };
        println!(
            "{}  {}  {} won over {} by {} (lost: {lost}; seen on {})",
            utc(stamp_ms(&c.winner)),
            c.key,
            writer(&c.winner),
            c.loser,
            writer(&c.loser),
            c.nodes.join(", ")
        );
    }
    let counted: Vec<String> = totals.iter().map(|(n, t)| format!("{n} {t}")).collect();
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
