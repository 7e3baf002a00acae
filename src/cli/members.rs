//! `meridian members`, `meridian leave` and `meridian forget`: who the
//! cluster holds, a node that leaves it, and a dead member forgotten.

use anyhow::{Context, Result};
use meridian::api::wire;
use meridian::client::Client;

/// `meridian members`: the node at --addr's view, one line per node.
pub async fn members(client: &Client, as_json: bool) -> Result<bool> {
    let m = client.members().await.context("members")?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(true);
    }
    println!(
        "{:<20} {:<16} {:<12} {:<7} {:<10} {:<22} API",
        "NAME", "NODE", "REGION", "ROLE", "STATE", "ADDRESS"
    );
    for d in &m.members {
        let role = match d.role {
            wire::MemberRole::Server => "server",
            wire::MemberRole::Edge => "edge",
        };
        let state = match d.state {
            wire::MemberState::Alive => "alive",
            wire::MemberState::Suspect => "suspect",
            wire::MemberState::Down => "down",
            wire::MemberState::Left => "left",
            wire::MemberState::Forgotten => "forgotten",
        };
        let name = if d.this {
            format!("{} *", d.name)
        } else {
            d.name.clone()
        };
        println!(
            "{:<20} {:<16} {:<12} {:<7} {:<10} {:<22} {}",
            name,
            d.node,
            d.region,
            role,
            state,
            if d.addr.is_empty() { "-" } else { &d.addr },
            if d.api.is_empty() { "-" } else { &d.api },
        );
    }
    let down = m
        .members
        .iter()
        .filter(|d| d.role == wire::MemberRole::Server && d.state == wire::MemberState::Down)
        .count();
    if down > 0 {
        println!(
            "{down} member(s) down still count for quorum, partition health and tombstone \
             collection: `meridian forget NAME` one that is gone for good"
        );
    }
    Ok(true)
}

/// `meridian leave`: the node at --addr leaves the cluster and stops.
pub async fn leave(client: &Client) -> Result<bool> {
    let left = client.leave().await.context("leave")?;
    println!(
        "{} ({}) left the cluster: the members no longer count it; it is shutting down",
        left.name, left.node
    );
    Ok(true)
}

/// `meridian forget NODE`: the node at --addr forgets a dead member, and
/// tells every member.
pub async fn forget(client: &Client, who: &str) -> Result<bool> {
    let f = client.forget(who).await.context("forget")?;
    println!(
        "forgot {} ({}, region {}): it no longer counts for quorum, partition health or \
         tombstone collection; if it comes back it resyncs first",
        f.name, f.node, f.region
    );
    Ok(true)
}
