//! The operator commands of the binary: `kv`, `status`, `verify`, `health`.
//! Each talks to a node's HTTP API through [`meridian::client`].

pub mod backup;
pub mod bench;
pub mod conflicts;
pub mod dev;
pub mod transfer;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use base64::Engine;
use bytes::Bytes;
use clap::Subcommand;
use hyper::{Method, StatusCode};
use meridian::client::{encode_path, Client, Reply};
use serde_json::Value;

#[derive(Subcommand)]
pub enum KvCommand {
    /// Print a key's value (raw bytes to stdout).
    Get {
        key: String,
        /// Print the whole entry as JSON (flags, indexes, base64 value).
        #[arg(long)]
        json: bool,
    },
    /// Write a key: the value from the argument, `--file`, or stdin (no value or `-`).
    Put {
        key: String,
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Consul flags stored with the value.
        #[arg(long)]
        flags: Option<u64>,
        /// Only if the key's modify index is this (0: only if absent).
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Delete a key, or every key under a prefix with `--recurse`.
    Delete {
        key: String,
        #[arg(long)]
        recurse: bool,
        /// Allow a recursive delete of more keys than the node's recursive_delete_keys_max.
        #[arg(long, requires = "recurse")]
        force: bool,
        /// Only if the key's modify index is this.
        #[arg(long, conflicts_with = "recurse")]
        cas: Option<u64>,
    },
    /// List keys under a prefix (with values when `--values`).
    List {
        #[arg(default_value = "")]
        prefix: String,
        /// Print key = value lines.
        #[arg(long)]
        values: bool,
        #[arg(long)]
        json: bool,
    },
    /// The versions of a key this node kept: index, time, writer, value.
    History {
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Write an earlier version of a key again, as a new write (it replicates and wins).
    Rollback {
        key: String,
        /// The version: its index (from `kv history`) or its stamp.
        #[arg(long)]
        to: String,
    },
    /// Write keys under a prefix to a file (or stdout): json (Consul's export format), yaml, properties.
    Export {
        #[arg(default_value = "")]
        prefix: String,
        /// Default: from --out's extension, else json.
        #[arg(long, value_enum)]
        format: Option<transfer::Format>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write the keys of a json, yaml or properties file (under --prefix); only what differs.
    Import {
        file: PathBuf,
        /// Put the keys under this prefix (yaml and properties: the root of the file).
        #[arg(long, default_value = "")]
        prefix: String,
        /// Default: from the file's extension.
        #[arg(long, value_enum)]
        format: Option<transfer::Format>,
        /// Show what would be added and changed, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print every change under a prefix as it happens (Ctrl-C stops).
    Watch {
        #[arg(default_value = "")]
        prefix: String,
        /// Start after this index (0: replay every current key first).
        #[arg(long, default_value_t = 0)]
        index: u64,
        #[arg(long)]
        json: bool,
    },
}

fn check(reply: &Reply, what: &str) -> Result<()> {
    if reply.status.is_success() {
        return Ok(());
    }
    bail!(
        "{what}: {} {}",
        reply.status.as_u16(),
        reply.error_message()
    )
}

fn json(reply: &Reply) -> Result<Value> {
    serde_json::from_slice(&reply.body).context("the node's answer is not JSON")
}

fn decode_value(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default()
}

pub async fn kv(client: &Client, cmd: KvCommand) -> Result<bool> {
    match cmd {
        KvCommand::Get { key, json: as_json } => {
            let path = format!("/v1/kv/{}", encode_path(&key));
            let r = client.get(&path).await?;
            if r.status == StatusCode::NOT_FOUND {
                eprintln!("{key}: not found");
                return Ok(false);
            }
            check(&r, &key)?;
            let entries = json(&r)?;
            let e = entries.get(0).cloned().unwrap_or(Value::Null);
            let mut out = std::io::stdout().lock();
            if as_json {
                writeln!(out, "{}", serde_json::to_string_pretty(&e)?)?;
            } else {
                let v = decode_value(&e["Value"]);
                out.write_all(&v)?;
                if !v.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    writeln!(out)?;
                }
            }
            Ok(true)
        }
        KvCommand::Put {
            key,
            value,
            file,
            flags,
            cas,
        } => {
            let body = match (value, file) {
                (Some(v), _) if v != "-" => Bytes::from(v),
                (_, Some(f)) => Bytes::from(
                    std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?,
                ),
                _ => {
                    let mut b = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut b)
                        .context("reading stdin")?;
                    Bytes::from(b)
                }
            };
            let mut path = format!("/v1/kv/{}", encode_path(&key));
            let mut params = Vec::new();
            if let Some(f) = flags {
                params.push(format!("flags={f}"));
            }
            if let Some(c) = cas {
                params.push(format!("cas={c}"));
            }
            if !params.is_empty() {
                path = format!("{path}?{}", params.join("&"));
            }
            let r = client.request(Method::PUT, &path, body).await?;
            check(&r, &key)?;
            if r.body.as_ref() == b"true" {
                println!(
                    "wrote {key} (index {})",
                    r.header("X-Consul-Index").unwrap_or("?")
                );
                Ok(true)
            } else {
                eprintln!(
                    "{key}: check-and-set failed (the key's modify index is not {})",
                    cas.unwrap_or(0)
                );
                Ok(false)
            }
        }
        KvCommand::Delete {
            key,
            recurse,
            force,
            cas,
        } => {
            let mut path = format!("/v1/kv/{}", encode_path(&key));
            if recurse {
                path.push_str(if force { "?recurse&force" } else { "?recurse" });
            } else if let Some(c) = cas {
                path.push_str(&format!("?cas={c}"));
            }
            let r = client.request(Method::DELETE, &path, Bytes::new()).await?;
            check(&r, &key)?;
            if r.body.as_ref() == b"true" {
                println!(
                    "deleted {key}{}",
                    if recurse { " (recursively)" } else { "" }
                );
                Ok(true)
            } else {
                eprintln!("{key}: check-and-set failed");
                Ok(false)
            }
        }
        KvCommand::List {
            prefix,
            values,
            json: as_json,
        } => {
            let path = format!("/v1/kv/{}?recurse", encode_path(&prefix));
            let r = client.get(&path).await?;
            if r.status == StatusCode::NOT_FOUND {
                if as_json {
                    println!("[]");
                }
                return Ok(true);
            }
            check(&r, &prefix)?;
            let entries = json(&r)?;
            let list = entries.as_array().cloned().unwrap_or_default();
            let mut out = std::io::stdout().lock();
            if as_json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
                return Ok(true);
            }
            for e in &list {
                let key = e["Key"].as_str().unwrap_or("");
                if values {
                    let v = decode_value(&e["Value"]);
                    writeln!(out, "{key} = {}", String::from_utf8_lossy(&v))?;
                } else {
                    writeln!(out, "{key}")?;
                }
            }
            Ok(true)
        }
        KvCommand::Export {
            prefix,
            format,
            out,
        } => transfer::export(client, &prefix, format, out).await,
        KvCommand::Import {
            file,
            prefix,
            format,
            dry_run,
        } => transfer::import(client, &file, &prefix, format, dry_run).await,
        KvCommand::History { key, json: as_json } => {
            let r = client
                .get(&format!("/v1/history/{}", encode_path(&key)))
                .await?;
            check(&r, &key)?;
            let list = json(&r)?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(true);
            }
            let list = list.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                eprintln!("{key}: no versions kept on this node");
                return Ok(false);
            }
            println!(
                "{:>8}  {:<24} {:<20} {:<14} VALUE",
                "INDEX", "TIME (UTC)", "WRITER", "REGION"
            );
            for v in &list {
                let value = if v["Deleted"].as_bool() == Some(true) {
                    "(deleted)".to_string()
                } else {
                    let b = decode_value(&v["Value"]);
                    let mut t: String = String::from_utf8_lossy(&b).chars().take(60).collect();
                    if b.len() > 60 {
                        t.push('…');
                    }
                    t
                };
                let writer = match v["NodeName"].as_str() {
                    Some(n) if !n.is_empty() => n.to_string(),
                    _ => v["Node"].as_str().unwrap_or("").to_string(),
                };
                println!(
                    "{:>8}  {:<24} {:<20} {:<14} {value}",
                    v["Index"],
                    utc(v["Time"].as_u64().unwrap_or(0)),
                    writer,
                    v["Region"].as_str().unwrap_or(""),
                );
            }
            Ok(true)
        }
        KvCommand::Rollback { key, to } => {
            let r = client
                .get(&format!("/v1/history/{}", encode_path(&key)))
                .await?;
            check(&r, &key)?;
            let list = json(&r)?.as_array().cloned().unwrap_or_default();
            let Some(target) = list.iter().find(|v| {
                v["Index"].as_u64().map(|i| i.to_string()).as_deref() == Some(to.as_str())
                    || v["Stamp"].as_str() == Some(to.as_str())
            }) else {
                bail!("{key}: no kept version with index or stamp {to} (see `meridian kv history {key}`)");
            };
            // Check-and-set against the current version: a write that lands
            // meanwhile is not silently overwritten.
            let cur = client.get(&format!("/v1/kv/{}", encode_path(&key))).await?;
            let current = if cur.status == StatusCode::NOT_FOUND {
                0
            } else {
                check(&cur, &key)?;
                json(&cur)?[0]["ModifyIndex"].as_u64().unwrap_or(0)
            };
            let path = encode_path(&key);
            let r = if target["Deleted"].as_bool() == Some(true) {
                if current == 0 {
                    println!("{key} is already deleted");
                    return Ok(true);
                }
                client
                    .request(
                        Method::DELETE,
                        &format!("/v1/kv/{path}?cas={current}"),
                        Bytes::new(),
                    )
                    .await?
            } else {
                let value = Bytes::from(decode_value(&target["Value"]));
                let flags = target["Flags"].as_u64().unwrap_or(0);
                client
                    .request(
                        Method::PUT,
                        &format!("/v1/kv/{path}?cas={current}&flags={flags}"),
                        value,
                    )
                    .await?
            };
            check(&r, &key)?;
            if r.body.as_ref() != b"true" {
                eprintln!("{key} changed while rolling back; look at `meridian kv history {key}` and try again");
                return Ok(false);
            }
            println!(
                "rolled {key} back to the version of index {} (written as a new change, index {})",
                target["Index"],
                r.header("X-Consul-Index").unwrap_or("?")
            );
            Ok(true)
        }
        KvCommand::Watch {
            prefix,
            index,
            json: as_json,
        } => {
            let path = format!("/v1/watch/{}?index={index}", encode_path(&prefix));
            let mut s = client.stream(&path).await?;
            if !s.status.is_success() {
                bail!("watch {prefix}: {}", s.status);
            }
            loop {
                let ev = tokio::select! {
                    ev = s.next_event() => ev,
                    _ = tokio::signal::ctrl_c() => return Ok(true),
                };
                let Some(ev) = ev.map_err(|e| anyhow::anyhow!("watch stream: {e}"))? else {
                    eprintln!("the node closed the stream");
                    return Ok(false);
                };
                if as_json {
                    println!("{}", ev.data);
                    continue;
                }
                let c: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                let key = c["Key"].as_str().unwrap_or("");
                match c["Op"].as_str() {
                    Some("delete") => println!("{:>8}  delete {key}", ev.id),
                    _ => {
                        let v = decode_value(&c["Value"]);
                        println!(
                            "{:>8}  put    {key} = {}",
                            ev.id,
                            String::from_utf8_lossy(&v)
                        );
                    }
                }
            }
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm` (UTC) of ms since the epoch.
fn utc(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1_000 % 60,
        rem % 1_000
    )
}

fn ms(v: &Value) -> String {
    match v.as_u64() {
        None => "-".to_string(),
        Some(ms) if ms < 10_000 => format!("{ms} ms"),
        Some(ms) => format!("{:.0} s", ms as f64 / 1e3),
    }
}

pub async fn status(client: &Client, as_json: bool) -> Result<bool> {
    let r = client.get("/v1/status").await?;
    check(&r, "status")?;
    let s = json(&r)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(true);
    }
    let root = s["root"].as_str().unwrap_or("");
    println!(
        "{} ({}) node {}  {}  index {}  keys {}  root {}",
        s["name"].as_str().unwrap_or(""),
        s["region"].as_str().unwrap_or(""),
        s["node"].as_str().unwrap_or(""),
        s["state"].as_str().unwrap_or(""),
        s["index"],
        s["keys"],
        &root[..root.len().min(16)],
    );
    if s["role"] == "standby" {
        println!(
            "role standby: replicates, refuses client writes (`meridian promote` makes it active)"
        );
    }
    if let Some(r) = s["rebuild"].as_object() {
        println!(
            "syncing: rebuilding from {}, {} of its {} changes applied, {} keys so far",
            r.get("from").and_then(Value::as_str).unwrap_or("?"),
            r.get("applied").and_then(Value::as_u64).unwrap_or(0),
            r.get("of").and_then(Value::as_u64).unwrap_or(0),
            r.get("keys").and_then(Value::as_u64).unwrap_or(0),
        );
    } else if s["state"] == "syncing" {
        println!("syncing: waiting for a peer to rebuild from");
    }
    println!(
        "quorum {}  regions reachable {}/{}  conflicts {}  healthy {}",
        if s["quorum"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        },
        s["reachable_regions"].as_array().map_or(0, Vec::len),
        s["total_regions"],
        s["conflicts"],
        if s["healthy"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        },
    );
    println!();
    println!(
        "{:<20} {:<14} {:<10} {:>8} {:>12} {:>12}  API",
        "PEER", "REGION", "STATE", "LAG", "IN SYNC AGO", "LAST HEARD"
    );
    let members = s["members"].as_array().cloned().unwrap_or_default();
    for p in s["peers"].as_array().cloned().unwrap_or_default() {
        let swim = members
            .iter()
            .find(|m| m["node"] == p["node"])
            .and_then(|m| m["state"].as_str())
            .unwrap_or("down");
        let state = if p["connected"].as_bool() == Some(true) {
            "connected"
        } else {
            swim
        };
        let heard = match p["last_heard_ms_ago"].as_u64() {
            None => "never".to_string(),
            Some(_) => format!("{} ago", ms(&p["last_heard_ms_ago"])),
        };
        println!(
            "{:<20} {:<14} {:<10} {:>8} {:>12} {:>12}  {}",
            p["name"].as_str().unwrap_or(""),
            p["region"].as_str().unwrap_or(""),
            state,
            p["lag_index"].as_u64().unwrap_or(0),
            ms(&p["lag_ms"]),
            heard,
            p["api"].as_str().unwrap_or(""),
        );
    }
    println!();
    println!("{:<20} {:<12} FOR", "REGION", "REACHABLE");
    for g in s["regions"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:<20} {:<12} {}",
            g["region"].as_str().unwrap_or(""),
            if g["reachable"].as_bool() == Some(true) {
                "yes"
            } else {
                "NO"
            },
            ms(&g["for_ms"]),
        );
    }
    Ok(true)
}

pub async fn promote(client: &Client) -> Result<bool> {
    let r = client
        .request(Method::POST, "/v1/promote", Bytes::new())
        .await?;
    check(&r, "promote")?;
    let v = json(&r)?;
    if v["was"] == "standby" {
        println!("promoted: {} accepts client writes now", client.addr());
    } else {
        println!("{} was already active", client.addr());
    }
    Ok(true)
}

pub async fn health(client: &Client, as_json: bool) -> Result<bool> {
    let r = client.get("/v1/health").await?;
    if r.status != StatusCode::OK && r.status != StatusCode::SERVICE_UNAVAILABLE {
        check(&r, "health")?;
    }
    let h = json(&r)?;
    let healthy = h["healthy"].as_bool() == Some(true);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&h)?);
    } else if healthy {
        println!("healthy");
    } else {
        println!("unhealthy:");
        for reason in h["reasons"].as_array().cloned().unwrap_or_default() {
            println!(
                "  {}: {}",
                reason["check"].as_str().unwrap_or(""),
                reason["message"].as_str().unwrap_or("")
            );
        }
    }
    Ok(healthy)
}

/// One node as `verify` sees it.
struct Seen {
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
async fn probe(addr: &str, expected: Option<&str>, query: &str) -> Result<Seen> {
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
    let timeout_ms = if query.contains("deep") {
        120_000
    } else {
        10_000
    };
    let c = Client::new(addr)?.timeout_ms(timeout_ms);
    match c.get(query).await {
        Ok(r) if r.status.is_success() => {
            let d = json(&r)?;
            let node = d["node"].as_str().unwrap_or("").to_string();
            one.name = d["name"].as_str().unwrap_or("").to_string();
            one.region = d["region"].as_str().unwrap_or("").to_string();
            match expected {
                Some(want) if want != node => {
                    one.error = Some(format!(
                        "node {want} announced this API address, but node {node} ({}) answers there: \
                         set api_advertise in its config",
                        one.name
                    ));
                }
                _ => {
                    one.node = node;
                    one.root = d["root"].as_str().map(str::to_string);
                    one.quarantined = d["quarantined"].as_u64().unwrap_or(0);
                    one.damaged_found = d["damaged_found"].as_u64().unwrap_or(0);
                }
            }
        }
        Ok(r) => one.error = Some(format!("{} {}", r.status.as_u16(), r.error_message())),
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
    let r = client.get("/v1/status").await?;
    check(&r, "status")?;
    let s = json(&r)?;
    let query = format!(
        "/v1/digest?prefix={}{}",
        encode_path(prefix),
        if deep { "&deep" } else { "" }
    );
    let mut seen: Vec<Seen> = Vec::new();
    let me = s["node"].as_str().map(str::to_string);
    seen.push(probe(client.addr(), me.as_deref(), &query).await?);
    for p in s["peers"].as_array().cloned().unwrap_or_default() {
        let node = p["node"].as_str().unwrap_or("").to_string();
        let api = p["api"].as_str().unwrap_or("");
        if api.is_empty() {
            seen.push(Seen {
                addr: String::new(),
                name: p["name"].as_str().unwrap_or("").to_string(),
                region: p["region"].as_str().unwrap_or("").to_string(),
                node,
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
        let mut one = probe(api, Some(&node), &query).await?;
        if one.root.is_none() {
            // Name it as its hello did, not as whatever answered there.
            one.name = p["name"].as_str().unwrap_or("").to_string();
            one.region = p["region"].as_str().unwrap_or("").to_string();
        }
        seen.push(one);
    }
    for a in extra {
        let addr = Client::new(a)?.addr().to_string();
        if seen.iter().any(|n| n.addr == addr) {
            continue;
        }
        let one = probe(&addr, None, &query).await?;
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
        (differing, diff_errors) = diff_keys(&seen, prefix).await?;
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
        let nodes: Vec<Value> = seen
            .iter()
            .map(|n| {
                serde_json::json!({"name": n.name, "region": n.region, "api": n.addr,
                    "node": n.node, "root": n.root, "error": n.error,
                    "quarantined": n.quarantined, "damaged_found": n.damaged_found})
            })
            .collect();
        let keys: Vec<Value> = differing
            .iter()
            .map(|(k, per)| {
                let nodes: Vec<Value> = per
                    .iter()
                    .map(|(n, v)| serde_json::json!({"name": n, "state": v}))
                    .collect();
                serde_json::json!({"key": k, "nodes": nodes})
            })
            .collect();
        let doc = serde_json::json!({"agree": agree, "nodes": nodes, "differing_keys": keys,
            "diff_errors": diff_errors});
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
        for (key, per) in differing.iter().take(DIFF_KEYS_SHOWN_MAX) {
            println!("  {key}");
            for (name, state) in per {
                println!("    {name:<20} {state}");
            }
        }
    } else if !diff && groups.len() > 1 {
        println!("run with --diff to list the differing keys");
    }
    Ok(false)
}

/// What one node holds of a key: (entry hash, deleted).
type Hashes = BTreeMap<String, (String, bool)>;

/// Keys whose state differs between the reachable nodes, with each node's
/// state (values fetched for the shown keys only); and the nodes whose
/// hashes could not be read.
async fn diff_keys(
    seen: &[Seen],
    prefix: &str,
) -> Result<(Vec<(String, Vec<(String, String)>)>, Vec<String>)> {
    let mut per_node: Vec<(&Seen, Hashes)> = Vec::new();
    let mut errors = Vec::new();
    for n in seen.iter().filter(|n| n.root.is_some()) {
        let c = Client::new(&n.addr)?;
        let r = match c
            .get(&format!("/v1/hashes?prefix={}", encode_path(prefix)))
            .await
        {
            Ok(r) if r.status.is_success() => r,
            Ok(r) => {
                errors.push(format!(
                    "{}: {} {}",
                    n.addr,
                    r.status.as_u16(),
                    r.error_message()
                ));
                continue;
            }
            Err(e) => {
                errors.push(format!("{}: {e}", n.addr));
                continue;
            }
        };
        let mut map = BTreeMap::new();
        for k in json(&r)?.as_array().cloned().unwrap_or_default() {
            let key = k["key"].as_str().unwrap_or("").to_string();
            let hash = k["hash"].as_str().unwrap_or("").to_string();
            map.insert(key, (hash, k["deleted"].as_bool() == Some(true)));
        }
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
        let mut per = Vec::new();
        for ((n, _), state) in per_node.iter().zip(&states) {
            let shown = match state {
                None => "absent".to_string(),
                Some((_, true)) => "deleted".to_string(),
                Some((hash, false)) if !fetch => format!("value with hash {hash}"),
                Some((_, false)) => {
                    let c = Client::new(&n.addr)?;
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
            per.push((name, shown));
        }
        out.push((key.clone(), per));
    }
    Ok((out, errors))
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_795_567_459_522), "2026-11-25 00:44:19.522");
        // A leap day.
        assert_eq!(utc(951_782_400_123), "2000-02-29 00:00:00.123");
    }
}
