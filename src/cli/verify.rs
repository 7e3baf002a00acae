//! `meridian verify`: asks every member for its root and says whether all
//! agree; with `--diff`, which keys differ and what each node holds.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use meridian::client::{encode_path, Client};
use serde::Serialize;

/// One node as `verify` sees it (and `--json` prints it).
#[derive(Serialize)]
struct Seen {
    #[serde(rename = "api")]
    addr: String,
    name: String,
    region: String,
    node: String,
    root: Option<String>,
    error: Option<String>,
    /// Records quarantined there (missing from its root until repaired),
    /// and of those, how many this check found damaged (`--deep`).
    quarantined: u64,
    damaged_found: u64,
}

/// Most differing keys `verify --diff` prints (and fetches values for).
const DIFF_KEYS_SHOWN_MAX: usize = 100;

/// Asks `addr` for its digest; checks it is the node we expected there.
async fn probe(
    base: &Client,
    addr: &str,
    expected: Option<&str>,
    prefix: &str,
    deep: bool,
) -> Result<Seen> {
    let mut one = Seen {
        addr: addr.to_string(),
        name: String::new(),
        region: String::new(),
        node: expected.unwrap_or("").to_string(),
        root: None,
        error: None,
        quarantined: 0,
        damaged_found: 0,
    };
    // A deep check recomputes every record: give it longer.
    let timeout_ms = if deep { 120_000 } else { 10_000 };
    let c = base.sibling(addr)?.timeout_ms(timeout_ms);
    match c.digest(prefix, deep).await {
        Ok(d) => {
            one.name = d.name;
            one.region = d.region;
            match expected {
                Some(want) if want != d.node => {
                    one.error = Some(format!(
                        "node {want} announced this API address, but node {} ({}) answers there: \
                         set api_advertise in its config",
                        d.node, one.name
                    ));
                }
                _ => {
                    one.node = d.node;
                    one.root = Some(d.root);
                    one.quarantined = d.quarantined;
                    one.damaged_found = d.damaged_found;
                }
            }
        }
        Err(e) => one.error = Some(e.to_string()),
    }
    Ok(one)
}

pub async fn verify(
    client: &Client,
    extra: &[String],
    diff: bool,
    prefix: &str,
    deep: bool,
    as_json: bool,
) -> Result<bool> {
    // Every member the first node knows (each expected to answer as itself),
    // plus the nodes named on the command line.
    let s = client.status().await.context("status")?;
    let mut seen: Vec<Seen> = Vec::new();
    seen.push(probe(client, client.addr(), Some(&s.node), prefix, deep).await?);
    for p in s.peers {
        if p.api.is_empty() {
            seen.push(Seen {
                addr: String::new(),
                name: p.name,
                region: p.region,
                node: p.node,
                root: None,
                error: Some(
                    "its API address is unknown (it has not connected since this node started): \
                     name it with --node"
                        .to_string(),
                ),
                quarantined: 0,
                damaged_found: 0,
            });
            continue;
        }
        let mut one = probe(client, &p.api, Some(&p.node), prefix, deep).await?;
        if one.root.is_none() {
            // Name it as its hello did, not as whatever answered there.
            one.name = p.name;
            one.region = p.region;
        }
        seen.push(one);
    }
    for a in extra {
        let addr = client.sibling(a)?.addr().to_string();
        if seen.iter().any(|n| n.addr == addr) {
            continue;
        }
        let one = probe(client, &addr, None, prefix, deep).await?;
        // The same node reached under another address counts once.
        if one.root.is_some() && seen.iter().any(|n| n.node == one.node && n.root.is_some()) {
            continue;
        }
        seen.retain(|n| !(n.root.is_none() && !one.node.is_empty() && n.node == one.node));
        seen.push(one);
    }
    let mut groups: BTreeMap<String, Vec<&Seen>> = BTreeMap::new();
    for n in seen.iter().filter(|n| n.root.is_some()) {
        groups
            .entry(n.root.clone().unwrap_or_default())
            .or_default()
            .push(n);
    }
    let regions: BTreeSet<&str> = seen
        .iter()
        .map(|n| n.region.as_str())
        .filter(|r| !r.is_empty())
        .collect();
    let mut differing = Vec::new();
    let mut diff_errors = Vec::new();
    if diff && groups.len() > 1 {
        (differing, diff_errors) = diff_keys(client, &seen, prefix).await?;
    }
    let unreachable: Vec<&Seen> = seen.iter().filter(|n| n.error.is_some()).collect();
    // Quarantined records are missing from their node's root: no agreement
    // is claimed until they are repaired.
    let damaged: Vec<&Seen> = seen.iter().filter(|n| n.quarantined > 0).collect();
    let agree = groups.len() == 1 && unreachable.is_empty() && damaged.is_empty();
    let label = |n: &Seen| {
        if n.name.is_empty() {
            format!("node {}", n.node)
        } else {
            format!("{} ({})", n.name, n.region)
        }
    };
    if as_json {
        let doc = VerifyDoc {
            agree,
            nodes: &seen,
            differing_keys: &differing,
            diff_errors: &diff_errors,
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(agree);
    }
    let scope = if prefix.is_empty() {
        String::new()
    } else {
        format!(" (keys under {prefix:?})")
    };
    let checked = if deep {
        " (every record checked against its value)"
    } else {
        ""
    };
    if agree {
        let root = groups.keys().next().cloned().unwrap_or_default();
        println!(
            "all {} nodes in {} regions agree on {root}{scope}{checked}",
            seen.len(),
            regions.len()
        );
        return Ok(true);
    }
    if groups.len() > 1 {
        println!(
            "DIVERGED{scope}: {} different roots among {} nodes",
            groups.len(),
            groups.values().map(Vec::len).sum::<usize>()
        );
    } else if !groups.is_empty() && !unreachable.is_empty() {
        println!("not verified{scope}: the reachable nodes agree, but not every member answered");
    } else if !groups.is_empty() {
        println!("not verified{scope}: the roots agree, but records are quarantined (damaged, not yet repaired)");
    }
    for n in &damaged {
        println!(
            "  {}: {} records quarantined{}",
            label(n),
            n.quarantined,
            if n.damaged_found > 0 {
                format!(" ({} found damaged by this check)", n.damaged_found)
            } else {
                String::new()
            }
        );
    }
    for (root, nodes) in &groups {
        let names: Vec<String> = nodes
            .iter()
            .map(|n| format!("{} {}", label(n), n.addr))
            .collect();
        println!("  {}  {}", &root[..root.len().min(16)], names.join(", "));
    }
    for n in &unreachable {
        println!(
            "  unreachable: {} {} ({})",
            label(n),
            n.addr,
            n.error.as_deref().unwrap_or("")
        );
    }
    for e in &diff_errors {
        println!("  diff: {e}");
    }
    if diff && !differing.is_empty() {
        println!();
        let shown = if differing.len() > DIFF_KEYS_SHOWN_MAX {
            format!(" (first {DIFF_KEYS_SHOWN_MAX} shown)")
        } else {
            String::new()
        };
        println!("{} differing keys{shown}:", differing.len());
        for d in differing.iter().take(DIFF_KEYS_SHOWN_MAX) {
            println!("  {}", d.key);
            for n in &d.nodes {
                println!("    {:<20} {}", n.name, n.state);
            }
        }
    } else if !diff && groups.len() > 1 {
        println!("run with --diff to list the differing keys");
    }
    Ok(false)
}

/// `verify --json`.
#[derive(Serialize)]
struct VerifyDoc<'a> {
    agree: bool,
    nodes: &'a [Seen],
    differing_keys: &'a [Differing],
    diff_errors: &'a [String],
}

/// A key whose live state differs between the reachable nodes.
#[derive(Serialize)]
struct Differing {
    key: String,
    nodes: Vec<HeldBy>,
}

/// What one node holds of a differing key: `absent`, `deleted`, its value
/// (quoted, cut at 80 characters) or its hash (beyond the shown keys).
#[derive(Serialize)]
struct HeldBy {
    name: String,
    state: String,
}

/// What one node holds of a key: (entry hash, deleted).
type Hashes = BTreeMap<String, (String, bool)>;

/// Keys whose state differs between the reachable nodes, with each node's
/// state (values fetched for the shown keys only); and the nodes whose
/// hashes could not be read.
async fn diff_keys(
    base: &Client,
    seen: &[Seen],
    prefix: &str,
) -> Result<(Vec<Differing>, Vec<String>)> {
    let mut per_node: Vec<(&Seen, Hashes)> = Vec::new();
    let mut errors = Vec::new();
    for n in seen.iter().filter(|n| n.root.is_some()) {
        let list = match base.sibling(&n.addr)?.hashes(prefix).await {
            Ok(list) => list,
            Err(e) => {
                errors.push(format!("{}: {e}", n.addr));
                continue;
            }
        };
        let map = list
            .into_iter()
            .map(|k| (k.key, (k.hash, k.deleted)))
            .collect();
        per_node.push((n, map));
    }
    let all: BTreeSet<&String> = per_node.iter().flat_map(|(_, m)| m.keys()).collect();
    let mut out = Vec::new();
    for key in all {
        let states: Vec<Option<&(String, bool)>> =
            per_node.iter().map(|(_, m)| m.get(key)).collect();
        // Roots cover live entries only: a tombstone and no entry at all
        // are the same live state (nodes collect tombstones at different
        // moments), so only a difference in the live value counts.
        fn live(s: Option<&(String, bool)>) -> Option<&String> {
            s.filter(|(_, deleted)| !deleted).map(|(h, _)| h)
        }
        if states.iter().all(|s| live(*s) == live(states[0])) {
            continue;
        }
        let fetch = out.len() < DIFF_KEYS_SHOWN_MAX;
        let mut nodes = Vec::new();
        for ((n, _), state) in per_node.iter().zip(&states) {
            let state = match state {
                None => "absent".to_string(),
                Some((_, true)) => "deleted".to_string(),
                Some((hash, false)) if !fetch => format!("value with hash {hash}"),
                Some((_, false)) => {
                    let c = base.sibling(&n.addr)?;
                    match c.get(&format!("/v1/kv/{}?raw", encode_path(key))).await {
                        Ok(r) if r.status.is_success() => {
                            let v = String::from_utf8_lossy(&r.body);
                            let mut v: String = v.chars().take(80).collect();
                            if r.body.len() > 80 {
                                v.push('…');
                            }
                            format!("{v:?}")
                        }
                        Ok(r) => format!("(read failed: {})", r.status.as_u16()),
                        Err(e) => format!("(read failed: {e})"),
                    }
                }
            };
            let name = if n.name.is_empty() {
                n.addr.clone()
            } else {
                n.name.clone()
            };
            nodes.push(HeldBy { name, state });
        }
        out.push(Differing {
            key: key.clone(),
            nodes,
        });
    }
    Ok((out, errors))
}
