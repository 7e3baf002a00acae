//! `meridian verify`: asks every member for its root and says whether all
//! agree; with `--diff`, which keys differ and what each node holds.
//!
//! Every member is asked through the node at `--addr`, over its
//! authenticated peer connections (`?node=` on `/v1/digest` and the rest):
//! only that node's API has to be reachable, and each member checks the
//! caller's token itself. `--diff` narrows the difference by the Merkle
//! descent over the mesh (as anti-entropy does between two peers): level
//! by level, only the subtrees where the members differ are asked for, so
//! a few differing keys among millions cost kilobytes. With `--prefix`,
//! the keys under the prefix are compared one by one instead (the tree
//! covers every key). Nodes named with `--node ADDR` are asked at that API.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use meridian::api::wire;
use meridian::client::{encode_path, Client};
use meridian::core::digest::{FANOUT, FANOUT_BITS, FINGERPRINT_BYTES, LEAF_LEVEL};
use meridian::core::types::RESERVED_PREFIX;
use serde::Serialize;

/// How `verify` reaches a node.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Via {
    /// It is the node at `--addr`.
    Here,
    /// Through the node at `--addr`, over its peer connection (the node id).
    Mesh(String),
    /// At this API address (`--node`).
    Api(String),
}

/// One node as `verify` sees it (and `--json` prints it).
#[derive(Serialize)]
struct Seen {
    /// The API address it was asked at; empty when asked through `--addr`
    /// over the mesh.
    #[serde(rename = "api")]
    addr: String,
    /// It was asked over the mesh, through the node at `--addr`.
    mesh: bool,
    name: String,
    region: String,
    node: String,
    root: Option<String>,
    error: Option<String>,
    /// Records quarantined there (missing from its root until repaired),
    /// and of those, how many this check found damaged (`--deep`).
    quarantined: u64,
    damaged_found: u64,
    #[serde(skip)]
    via: Via,
}

impl Seen {
    fn label(&self) -> String {
        if self.name.is_empty() {
            format!("node {}", self.node)
        } else {
            format!("{} ({})", self.name, self.region)
        }
    }

    /// The client to ask it with, and the `?node=` to name it by.
    fn reach<'a>(&'a self, base: &Client) -> Result<(Client, Option<&'a str>)> {
        Ok(match &self.via {
            Via::Here => (base.clone(), None),
            Via::Mesh(node) => (base.clone(), Some(node.as_str())),
            Via::Api(addr) => (base.sibling(addr)?, None),
        })
    }
}

/// Most differing keys `verify --diff` prints (and fetches values for).
const DIFF_KEYS_SHOWN_MAX: usize = 100;
/// Most subtrees the descent follows at each level: with more differing
/// leaves than this, the first ones are listed and the report says so.
const DIFF_LEAVES_MAX: usize = 2048;
/// Parents or leaves per descent request (within the API's bound).
const DESCENT_BATCH: usize = 256;

/// Asks a node for its digest; checks it is the node we expected there.
async fn probe(
    base: &Client,
    via: Via,
    expected: Option<&str>,
    prefix: &str,
    deep: bool,
) -> Result<Seen> {
    let mut one = Seen {
        addr: match &via {
            Via::Api(a) => a.clone(),
            Via::Here => base.addr().to_string(),
            Via::Mesh(_) => String::new(),
        },
        mesh: matches!(via, Via::Mesh(_)),
        name: String::new(),
        region: String::new(),
        node: expected.unwrap_or("").to_string(),
        root: None,
        error: None,
        quarantined: 0,
        damaged_found: 0,
        via,
    };
    // A deep check recomputes every record: give it longer.
    let timeout_ms = if deep { 150_000 } else { 15_000 };
    let (c, at) = one.reach(base)?;
    match c.timeout_ms(timeout_ms).digest_of(at, prefix, deep).await {
        Ok(d) => {
            one.name = d.name;
            one.region = d.region;
            match expected {
                Some(want) if want != d.node => {
                    one.error = Some(format!(
                        "node {want} was expected, but node {} ({}) answered",
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
    // Every member the first node knows, asked through it over the mesh,
    // plus the nodes named on the command line, asked at their API.
    let s = client.status().await.context("status")?;
    let mut seen: Vec<Seen> = Vec::new();
    seen.push(probe(client, Via::Here, Some(&s.node), prefix, deep).await?);
    for p in s.peers {
        let mut one = probe(
            client,
            Via::Mesh(p.node.clone()),
            Some(&p.node),
            prefix,
            deep,
        )
        .await?;
        if one.root.is_none() {
            // Name it as its hello did, not as whatever answered.
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
        let one = probe(client, Via::Api(addr), None, prefix, deep).await?;
        // The same node reached another way counts once.
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
    let mut found = Found::default();
    let before = client.bytes_received();
    if diff && groups.len() > 1 {
        found = diff_keys(client, &seen, prefix).await?;
    }
    let diff_bytes = client.bytes_received() - before;
    let unreachable: Vec<&Seen> = seen.iter().filter(|n| n.error.is_some()).collect();
    // Quarantined records are missing from their node's root: no agreement
    // is claimed until they are repaired.
    let damaged: Vec<&Seen> = seen.iter().filter(|n| n.quarantined > 0).collect();
    let agree = groups.len() == 1 && unreachable.is_empty() && damaged.is_empty();
    if as_json {
        let doc = VerifyDoc {
            agree,
            nodes: &seen,
            differing_keys: &found.keys,
            diff_errors: &found.errors,
            diff_leaves_truncated: found.truncated,
            diff_bytes,
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
            n.label(),
            n.quarantined,
            if n.damaged_found > 0 {
                format!(" ({} found damaged by this check)", n.damaged_found)
            } else {
                String::new()
            }
        );
    }
    let place = |n: &Seen| {
        if n.mesh {
            "(over the mesh)".to_string()
        } else {
            n.addr.clone()
        }
    };
    for (root, nodes) in &groups {
        let names: Vec<String> = nodes
            .iter()
            .map(|n| format!("{} {}", n.label(), place(n)))
            .collect();
        println!("  {}  {}", &root[..root.len().min(16)], names.join(", "));
    }
    for n in &unreachable {
        println!(
            "  unreachable: {} {} ({})",
            n.label(),
            place(n),
            n.error.as_deref().unwrap_or("")
        );
    }
    for e in &found.errors {
        println!("  diff: {e}");
    }
    if diff && groups.len() > 1 {
        println!();
        let shown = if found.keys.len() > DIFF_KEYS_SHOWN_MAX {
            format!(" (first {DIFF_KEYS_SHOWN_MAX} shown)")
        } else {
            String::new()
        };
        let more = if found.truncated {
            format!(" at least (more than {DIFF_LEAVES_MAX} leaves of the digest differ)")
        } else {
            String::new()
        };
        println!(
            "{} differing keys{more}{shown}, found reading {}:",
            found.keys.len(),
            kib(diff_bytes)
        );
        for d in found.keys.iter().take(DIFF_KEYS_SHOWN_MAX) {
            println!("  {}", shown_key(&d.key));
            for n in &d.nodes {
                println!("    {:<20} {}", n.name, n.state);
            }
        }
    } else if !diff && groups.len() > 1 {
        println!("run with --diff to list the differing keys");
    }
    Ok(false)
}

fn kib(bytes: u64) -> String {
    if bytes < 10 * 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

/// A key as printed: Meridian's own records (ACL policies and tokens) by
/// what they are, the rest as they are.
fn shown_key(key: &str) -> String {
    match key.strip_prefix(RESERVED_PREFIX) {
        Some(rest) => format!("(Meridian's own record {rest:?})"),
        None => key.to_string(),
    }
}

/// `verify --json`.
#[derive(Serialize)]
struct VerifyDoc<'a> {
    agree: bool,
    nodes: &'a [Seen],
    differing_keys: &'a [Differing],
    diff_errors: &'a [String],
    /// More leaves differed than the descent follows: the list is partial.
    diff_leaves_truncated: bool,
    /// Response bytes `--diff` read.
    diff_bytes: u64,
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

/// What `--diff` found.
#[derive(Default)]
struct Found {
    keys: Vec<Differing>,
    /// The nodes that could not be compared, and why.
    errors: Vec<String>,
    truncated: bool,
}

/// What one node holds of a key: (entry hash, deleted).
type Hashes = BTreeMap<String, (String, bool)>;

fn hashes(list: Vec<wire::KeyHash>) -> Hashes {
    list.into_iter()
        .map(|k| (k.key, (k.hash, k.deleted)))
        .collect()
}

/// The Merkle descent over the nodes in `nodes`: the leaves where they do
/// not all agree (at most [`DIFF_LEAVES_MAX`]; true when there were more).
/// A node that fails to answer is left out, with the error.
async fn differing_leaves(
    base: &Client,
    nodes: &mut Vec<&Seen>,
    errors: &mut Vec<String>,
) -> Result<(Vec<u32>, bool)> {
    let mut frontier: Vec<u32> = vec![0];
    let mut truncated = false;
    let width = FINGERPRINT_BYTES * 2;
    for level in 1..=LEAF_LEVEL {
        // Each node's children of the frontier, as hex fingerprints.
        let mut prints: Vec<String> = Vec::new();
        let mut answered = Vec::new();
        for n in nodes.iter() {
            let (c, at) = n.reach(base)?;
            let mut all = String::new();
            let mut failed = None;
            for batch in frontier.chunks(DESCENT_BATCH) {
                match c.digest_tree(at, level, batch).await {
                    Ok(d) if d.fingerprints.len() == batch.len() * FANOUT * width => {
                        all.push_str(&d.fingerprints);
                    }
                    Ok(d) => {
                        failed = Some(format!(
                            "{} fingerprint digits for {} parents at level {level}",
                            d.fingerprints.len(),
                            batch.len()
                        ));
                        break;
                    }
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            match failed {
                None => {
                    prints.push(all);
                    answered.push(*n);
                }
                Some(e) => errors.push(format!("{}: {e}", n.label())),
            }
        }
        *nodes = answered;
        if nodes.len() < 2 {
            return Ok((Vec::new(), false));
        }
        let mut next = Vec::new();
        for (i, parent) in frontier.iter().enumerate() {
            for c in 0..FANOUT {
                // Bytes, not text: the lengths were checked, the contents
                // come from the network.
                let at = (i * FANOUT + c) * width;
                let first = &prints[0].as_bytes()[at..at + width];
                if prints
                    .iter()
                    .any(|p| &p.as_bytes()[at..at + width] != first)
                {
                    if next.len() == DIFF_LEAVES_MAX {
                        truncated = true;
                        break;
                    }
                    next.push((parent << FANOUT_BITS) | c as u32);
                }
            }
        }
        frontier = next;
        if frontier.is_empty() {
            break;
        }
    }
    Ok((frontier, truncated))
}

/// Keys whose state differs between the reachable nodes, with each node's
/// state (values fetched for the shown keys only); and the nodes whose
/// hashes could not be read.
async fn diff_keys(base: &Client, seen: &[Seen], prefix: &str) -> Result<Found> {
    let mut found = Found::default();
    let mut nodes: Vec<&Seen> = seen.iter().filter(|n| n.root.is_some()).collect();
    let mut per_node: Vec<(&Seen, Hashes)> = Vec::new();
    if prefix.is_empty() {
        let (leaves, truncated) = differing_leaves(base, &mut nodes, &mut found.errors).await?;
        found.truncated = truncated;
        for n in nodes {
            let (c, at) = n.reach(base)?;
            let mut list = Vec::new();
            let mut failed = None;
            for batch in leaves.chunks(DESCENT_BATCH) {
                match c.digest_leaves(at, batch).await {
                    Ok(d) => list.extend(d.keys),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => per_node.push((n, hashes(list))),
                Some(e) => found.errors.push(format!("{}: {e}", n.label())),
            }
        }
    } else {
        for n in nodes {
            let (c, at) = n.reach(base)?;
            match c.hashes_of(at, prefix).await {
                Ok(list) => per_node.push((n, hashes(list))),
                Err(e) => found.errors.push(format!("{}: {e}", n.label())),
            }
        }
    }
    let all: BTreeSet<&String> = per_node.iter().flat_map(|(_, m)| m.keys()).collect();
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
        let fetch = found.keys.len() < DIFF_KEYS_SHOWN_MAX && !key.starts_with(RESERVED_PREFIX);
        let mut held = Vec::new();
        for ((n, _), state) in per_node.iter().zip(&states) {
            let state = match state {
                None => "absent".to_string(),
                Some((_, true)) => "deleted".to_string(),
                Some((hash, false)) if !fetch => format!("value with hash {hash}"),
                Some((_, false)) => value_of(base, n, key).await?,
            };
            let name = if n.name.is_empty() {
                n.addr.clone()
            } else {
                n.name.clone()
            };
            held.push(HeldBy { name, state });
        }
        found.keys.push(Differing {
            key: key.clone(),
            nodes: held,
        });
    }
    Ok(found)
}

/// A node's value of `key`, quoted and cut at 80 characters.
async fn value_of(base: &Client, n: &Seen, key: &str) -> Result<String> {
    let (c, at) = n.reach(base)?;
    let node = at.map_or(String::new(), |a| format!("&node={}", encode_path(a)));
    Ok(
        match c
            .get(&format!("/v1/kv/{}?raw{node}", encode_path(key)))
            .await
        {
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
        },
    )
}
