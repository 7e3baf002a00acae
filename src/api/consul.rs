//! `api::consul`: the Consul endpoints around the KV store that clients
//! probe at start-up (`/v1/status/leader`, `/v1/status/peers`,
//! `/v1/agent/self`, `/v1/agent/members`, `/v1/catalog/datacenters`), and
//! the refusal, with a 501 that names what Meridian serves, of every other
//! Consul endpoint: a client then raises instead of reading "not found" as
//! "absent" (a lock recipe that gets `None` for its session would go on to
//! write without the lock).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{error, node_error, ApiError};
use super::{wire, Api};
use crate::node::NodeStatus;
use crate::sync::PartitionPolicy;

/// The top-level groups of Consul's HTTP API (`/v1/<group>/...`). A path
/// in one of them that Meridian does not route answers 501.
const CONSUL_GROUPS: &[&str] = &[
    "acl",
    "agent",
    "catalog",
    "config",
    "connect",
    "coordinate",
    "discovery-chain",
    "event",
    "exported-services",
    "health",
    "imported-services",
    "internal",
    "lock",
    "namespace",
    "namespaces",
    "operator",
    "partition",
    "partitions",
    "peering",
    "peerings",
    "query",
    "semaphore",
    "session",
    "snapshot",
    "status",
    "txn",
    "kv",
];

/// What Meridian serves of Consul's API, for the 501's message.
const SERVED: &str = "/v1/kv, /v1/txn (KV operations), /v1/status/leader, /v1/status/peers, \
                      /v1/agent/self, /v1/agent/members, /v1/agent/leave, \
                      /v1/agent/force-leave, /v1/catalog/datacenters, \
                      /v1/acl/bootstrap, /v1/acl/policy, /v1/acl/policies, /v1/acl/token, \
                      /v1/acl/tokens";

/// Whether this node takes client writes now, as `X-Consul-KnownLeader`
/// and `/v1/status/leader` report it: not a standby, not rebuilding or
/// recovering a lost store, its clock not judged wrong, its store taking
/// commits, and with `partition_policy = "quorum"` a majority of regions
/// reachable.
pub(super) fn accepts_writes(s: &NodeStatus, policy: PartitionPolicy) -> bool {
    let r = &s.replica;
    !r.standby
        && !r.rebuilding
        && !r.store_lost
        && !r.clock.judgement.off
        && s.store_trouble.is_none()
        && (policy == PartitionPolicy::Available || r.quorum)
}

/// `GET /v1/status/leader`: this node's API address while it takes writes
/// (every Meridian node leads its own writes), `""` while it does not.
pub(super) async fn leader(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let s = api.node.status().await.map_err(node_error)?;
    let addr = if accepts_writes(&s, api.cfg.policy) {
        api.node.api_addr()
    } else {
        String::new()
    };
    Ok(Json(addr).into_response())
}

/// `GET /v1/status/peers`: the API addresses of the nodes of this region
/// that this node is connected to, and its own.
pub(super) async fn peers(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let s = api.node.status().await.map_err(node_error)?;
    let mut addrs: Vec<String> = s
        .replica
        .peers
        .iter()
        .filter(|p| p.connected && p.region == s.replica.region && !p.api.is_empty())
        .map(|p| p.api.clone())
        .collect();
    let own = api.node.api_addr();
    if !own.is_empty() {
        addrs.push(own);
    }
    addrs.sort();
    Ok(Json(addrs).into_response())
}

/// Node ids as the UUIDs Consul shows (`NodeID`): the 16 hex digits in the
/// first three groups, zeros after.
fn node_uuid(id: &str) -> String {
    let h = format!("{id:0>16}");
    format!("{}-{}-{}-0000-000000000000", &h[..8], &h[8..12], &h[12..16])
}

fn member(name: &str, region: &str, node: &str, addr: &str, status: u8) -> wire::AgentMember {
    let (ip, port) = match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => (a.ip().to_string(), a.port()),
        Err(_) => (addr.to_string(), 0),
    };
    let tags = BTreeMap::from([
        ("dc".to_string(), region.to_string()),
        ("role".to_string(), "node".to_string()),
        ("id".to_string(), node.to_string()),
    ]);
    wire::AgentMember {
        name: name.to_string(),
        addr: ip,
        port,
        tags,
        status,
        protocol_min: 1,
        protocol_max: 5,
        protocol_cur: 2,
        delegate_min: 2,
        delegate_max: 5,
        delegate_cur: 4,
    }
}

/// `GET /v1/agent/self`: the node as Consul describes an agent.
pub(super) async fn agent_self(State(api): State<Arc<Api>>) -> Response {
    let node = &api.node;
    let id = node.id().to_string();
    let doc = wire::AgentSelf {
        config: wire::AgentConfig {
            datacenter: node.region().to_string(),
            primary_datacenter: node.region().to_string(),
            node_name: node.name().to_string(),
            node_id: node_uuid(&id),
            server: true,
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: String::new(),
        },
        member: member(
            node.name(),
            node.region(),
            &id,
            &node.local_addr().to_string(),
            wire::MEMBER_ALIVE,
        ),
    };
    Json(doc).into_response()
}

/// `GET /v1/agent/members`: the SWIM view, this node included, as serf
/// members (suspect members are alive, as serf reports them; down ones failed).
pub(super) async fn members(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let s = api.node.status().await.map_err(node_error)?;
    let me = api.node.id();
    let mut out: Vec<wire::AgentMember> = s
        .members
        .iter()
        .filter(|m| m.member.node != me)
        .map(|m| {
            let status = match m.state {
                "down" => wire::MEMBER_FAILED,
                _ => wire::MEMBER_ALIVE,
            };
            let id = m.member.node.to_string();
            member(
                &m.member.name,
                &m.member.region,
                &id,
                &m.member.addr,
                status,
            )
        })
        .collect();
    let node = &api.node;
    out.push(member(
        node.name(),
        node.region(),
        &me.to_string(),
        &node.local_addr().to_string(),
        wire::MEMBER_ALIVE,
    ));
    // Members that left or were forgotten, as serf lists left members.
    let report = node.members().await.map_err(node_error)?;
    for (id, f) in &report.forgotten {
        out.retain(|m| m.tags.get("id") != Some(&id.to_string()));
        out.push(member(
            &f.name,
            &f.region,
            &id.to_string(),
            "",
            wire::MEMBER_LEFT,
        ));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(out).into_response())
}

/// The known regions, this node's first, then by the least measured round
/// trip to a node of each (regions without a measurement last, by name).
pub(super) fn regions_nearest_first(s: &NodeStatus) -> Vec<String> {
    let r = &s.replica;
    let mut rtt: BTreeMap<&str, Option<u64>> = BTreeMap::new();
    for g in &r.regions {
        rtt.entry(g.region.as_str()).or_insert(None);
    }
    for p in &r.peers {
        let e = rtt.entry(p.region.as_str()).or_insert(None);
        if let Some(ms) = p.rtt_ms {
            *e = Some(e.map_or(ms, |m| m.min(ms)));
        }
    }
    rtt.remove(r.region.as_str());
    let mut others: Vec<(&str, Option<u64>)> = rtt.into_iter().collect();
    others.sort_by_key(|(name, ms)| (ms.is_none(), ms.unwrap_or(0), *name));
    std::iter::once(r.region.clone())
        .chain(others.into_iter().map(|(n, _)| n.to_string()))
        .collect()
}

/// `GET /v1/catalog/datacenters`: every known region, nearest first.
pub(super) async fn datacenters(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let s = api.node.status().await.map_err(node_error)?;
    Ok(Json(regions_nearest_first(&s)).into_response())
}

/// Paths no route takes: a 501 for Consul's endpoints Meridian does not
/// serve (naming what it serves), a 404 for anything else.
pub(super) async fn fallback(uri: Uri) -> ApiError {
    let path = uri.path();
    let group = path
        .strip_prefix("/v1/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    if CONSUL_GROUPS.contains(&group) {
        let why = match group {
            "session" | "lock" | "semaphore" => {
                " (Meridian has no sessions: locks and leader election need a store with \
                 one leader, such as Consul or etcd)"
            }
            "acl" => {
                " (of the ACL API Meridian serves bootstrap, policies and tokens: no roles, \
                 auth methods, binding rules or the legacy API)"
            }
            _ => "",
        };
        return error(
            StatusCode::NOT_IMPLEMENTED,
            format!("Meridian does not serve {path}{why}; of Consul's API it serves {SERVED}"),
        );
    }
    error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_look_like_consul_uuids() {
        assert_eq!(
            node_uuid("00000000deadbeef"),
            "00000000-dead-beef-0000-000000000000"
        );
        assert_eq!(node_uuid("1"), "00000000-0000-0001-0000-000000000000");
    }
}
