//! `meridian status`, `meridian health` and `meridian promote`: what one
//! node says of itself, printed for people (or as the API's JSON).

use anyhow::{Context, Result};
use meridian::api::wire;
use meridian::client::Client;

/// A duration for people: ms below 10 s, else whole seconds; `-` for none.
pub(super) fn ms(v: Option<u64>) -> String {
    match v {
        None => "-".to_string(),
        Some(ms) if ms < 10_000 => format!("{ms} ms"),
        Some(ms) => format!("{:.0} s", ms as f64 / 1e3),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub async fn status(client: &Client, as_json: bool) -> Result<bool> {
    let s = client.status().await.context("status")?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(true);
    }
    print(&s);
    Ok(true)
}

fn print(s: &wire::Status) {
    let state = match s.state {
        wire::NodeState::Syncing => "syncing",
        wire::NodeState::Active => "active",
    };
    println!(
        "{} ({}) node {}  {state}  index {}  keys {}  root {}",
        s.name,
        s.region,
        s.node,
        s.index,
        s.keys,
        &s.root[..s.root.len().min(16)],
    );
    if s.role == wire::Role::Standby {
        println!(
            "role standby: replicates, refuses client writes (`meridian promote` makes it active)"
        );
    }
    if s.role == wire::Role::Edge {
        println!("role edge: attached to one server (below), its writes forwarded to it");
        if s.local_writes_waiting > 0 {
            println!(
                "local writes waiting for a server: {} (taken while none was reachable)",
                s.local_writes_waiting
            );
        }
    }
    if s.edges > 0 {
        println!(
            "edges attached {}  most changes an edge has yet to acknowledge {}",
            s.edges, s.edges_lag_index_max
        );
    }
    if let Some(r) = &s.rebuild {
        println!(
            "syncing: rebuilding from {}, {} of its {} changes applied, {} keys so far",
            r.from, r.applied, r.of, r.keys,
        );
    } else if s.state == wire::NodeState::Syncing {
        println!("syncing: waiting for a peer to rebuild from");
    }
    println!(
        "quorum {}  regions reachable {}/{}  conflicts {}  healthy {}",
        yes(s.quorum),
        s.reachable_regions.len(),
        s.total_regions,
        s.conflicts,
        yes(s.healthy),
    );
    println!();
    println!(
        "{:<20} {:<14} {:<10} {:>8} {:>12} {:>12}  API",
        "PEER", "REGION", "STATE", "LAG", "IN SYNC AGO", "LAST HEARD"
    );
    for p in &s.peers {
        let swim = s
            .members
            .iter()
            .find(|m| m.node == p.node)
            .map_or("down", |m| m.state.as_str());
        let state = if p.connected { "connected" } else { swim };
        let heard = match p.last_heard_ms_ago {
            None => "never".to_string(),
            ago => format!("{} ago", ms(ago)),
        };
        println!(
            "{:<20} {:<14} {:<10} {:>8} {:>12} {:>12}  {}",
            p.name,
            p.region,
            state,
            p.lag_index,
            ms(p.lag_ms),
            heard,
            p.api,
        );
    }
    println!();
    println!("{:<20} {:<12} FOR", "REGION", "REACHABLE");
    for g in &s.regions {
        println!(
            "{:<20} {:<12} {}",
            g.region,
            if g.reachable { "yes" } else { "NO" },
            ms(Some(g.for_ms)),
        );
    }
}

pub async fn promote(client: &Client) -> Result<bool> {
    let p = client.promote().await.context("promote")?;
    if p.was == wire::Role::Standby {
        println!("promoted: {} accepts client writes now", client.addr());
    } else {
        println!("{} was already active", client.addr());
    }
    Ok(true)
}

pub async fn health(client: &Client, as_json: bool) -> Result<bool> {
    let h = client.health().await.context("health")?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&h)?);
    } else if h.healthy {
        println!("healthy");
    } else {
        println!("unhealthy:");
        for reason in &h.reasons {
            println!("  {}: {}", reason.check.as_str(), reason.message);
        }
    }
    Ok(h.healthy)
}
