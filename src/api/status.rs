//! `api::status`: what a node says of itself: `/v1/status`, `/v1/health`,
//! `/v1/conflicts`, `/metrics` (rendered by [`super::metrics`]), and
//! `POST /v1/promote`. Its digest is [`super::digest`]'s.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{error, node_error, ApiError};
use super::health::{self, Thresholds};
use super::metrics;
use super::{wire, Api};
use crate::core::types::hex;
use crate::node::NodeStatus;

/// The status document of `GET /v1/status`.
pub(super) fn status_doc(
    s: &NodeStatus,
    name: &str,
    api_addr: &str,
    t: &Thresholds,
) -> wire::Status {
    let r = &s.replica;
    let now = s.now_ms;
    let ago = |at_ms: u64| (at_ms > 0).then(|| now.saturating_sub(at_ms));
    let peers = r
        .peers
        .iter()
        .map(|p| wire::Peer {
            node: p.node.to_string(),
            name: p.name.clone(),
            region: p.region.clone(),
            api: p.api.clone(),
            connected: p.connected,
            stale: p.stale,
            lag_index: p.lag_index,
            lag_ms: ago(p.in_sync_at_ms),
            last_heard_ms_ago: ago(p.last_heard_ms),
            applied: p.applied,
            acked: p.acked,
            clock_offset_ms: p.clock_offset_ms,
            rtt_ms: p.rtt_ms,
            refused_ms_ago: ago(p.refused_at_ms),
        })
        .collect();
    let members = s
        .members
        .iter()
        .map(|m| wire::Member {
            node: m.member.node.to_string(),
            name: m.member.name.clone(),
            region: m.member.region.clone(),
            addr: m.member.addr.to_string(),
            state: m.state.to_string(),
        })
        .collect();
    let regions = r
        .regions
        .iter()
        .map(|g| wire::Region {
            region: g.region.clone(),
            reachable: g.reachable,
            for_ms: now.saturating_sub(g.since_ms),
        })
        .collect();
    // A rebuild's progress: how much of its source's feed it holds.
    let rebuild = r.rebuild_from.and_then(|from| {
        let p = r.peers.iter().find(|p| p.node == from)?;
        Some(wire::Rebuild {
            from: p.name.clone(),
            applied: p.applied,
            of: p.applied + p.lag_index,
            keys: r.keys as u64,
        })
    });
    let j = &r.clock.judgement;
    wire::Status {
        node: r.node.to_string(),
        name: name.to_string(),
        region: r.region.clone(),
        api: api_addr.to_string(),
        state: if r.rebuilding {
            wire::NodeState::Syncing
        } else {
            wire::NodeState::Active
        },
        role: if r.edge {
            wire::Role::Edge
        } else if r.standby {
            wire::Role::Standby
        } else {
            wire::Role::Active
        },
        edges: r.edges as u64,
        edges_lag_index_max: r.edges_lag_index_max,
        local_writes_waiting: r.local_writes_waiting as u64,
        failover: failover_text(&r.failover),
        rebuild,
        index: r.index,
        root: hex(&r.root),
        keys: r.keys as u64,
        tombstones: r.tombstones as u64,
        quorum: r.quorum,
        reachable_regions: r.reachable_regions.clone(),
        total_regions: r.total_regions as u64,
        regions,
        members,
        peers,
        conflicts: r.conflicts,
        clock: wire::Clock {
            offset_ms: j.offset_ms,
            measured: j.measured as u64,
            disagreeing: j.disagreeing as u64,
            members: j.members as u64,
            off: j.off,
            ahead_of_time_ms: r.clock.ahead_of_time_ms,
        },
        quarantined: r.quarantined as u64,
        recovery: r.recovery.as_ref().map(|c| wire::Recovery {
            cause: c.cause.as_str().to_string(),
            peers_done: c.peers_done as u64,
            peers: c.peers as u64,
            for_ms: now.saturating_sub(c.since_ms),
        }),
        quorum_writes_waiting: r.quorum_writes_waiting as u64,
        store: s.store_trouble.as_ref().map(|t| wire::StoreTrouble {
            refusing_commits_ms: now.saturating_sub(t.since_ms),
            disk_full: t.disk_full,
            error: t.error.clone(),
        }),
        healthy: health::assess(s, t).is_empty(),
        uptime_ms: now.saturating_sub(s.started_ms),
    }
}

pub(super) async fn status(State(api): State<Arc<Api>>) -> Response {
    match api.node.status().await {
        Ok(s) => {
            let name = api.node.name().to_string();
            let addr = api.node.api_addr();
            let mut doc = status_doc(&s, &name, &addr, &api.cfg.health);
            doc.healthy = doc.healthy && extra_reasons(&api, s.now_ms).is_empty();
            axum::Json(doc).into_response()
        }
        Err(e) => node_error(e).into_response(),
    }
}

/// What the scheduled backups and drills say of the node's health.
fn extra_reasons(api: &Api, now_ms: u64) -> Vec<health::Reason> {
    api.cfg
        .extra
        .as_ref()
        .map_or(Vec::new(), |e| e.reasons(now_ms))
}

pub(super) async fn health_check(State(api): State<Arc<Api>>) -> Response {
    match api.node.status().await {
        Ok(s) => {
            let mut reasons = health::assess(&s, &api.cfg.health);
            reasons.extend(extra_reasons(&api, s.now_ms));
            let code = if reasons.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = wire::Health {
                healthy: reasons.is_empty(),
                reasons,
                thresholds: api.cfg.health,
            };
            (code, axum::Json(body)).into_response()
        }
        Err(e) => node_error(e).into_response(),
    }
}

pub(super) async fn conflicts(State(api): State<Arc<Api>>) -> Response {
    match api.node.conflicts().await {
        Ok((list, total)) => {
            let kept = list
                .iter()
                .map(|c| wire::Conflict {
                    key: c.key.as_str().to_string(),
                    index: c.index,
                    winner: c.winner.to_string(),
                    loser: c.loser.to_string(),
                    loser_deleted: c.loser_was_tombstone,
                    loser_value: c.loser_value.clone(),
                    path: c.path.clone(),
                })
                .collect();
            axum::Json(wire::Conflicts { total, kept }).into_response()
        }
        Err(e) => node_error(e).into_response(),
    }
}

/// What a node's failover judgement says, for operators.
fn failover_text(f: &crate::sync::FailoverState) -> Option<String> {
    use crate::sync::failover::Stay;
    use crate::sync::FailoverState as F;
    Some(match f {
        F::Off => return None,
        F::Promoted { failed } if failed.is_empty() => {
            "promoted: followed its region's failover".to_string()
        }
        F::Promoted { failed } => format!("promoted: took over from {}", failed.join(", ")),
        F::Standing(why) => match why {
            Stay::Off => return None,
            Stay::NotListed => "standby: this region is not in [failover] priority".to_string(),
            Stay::ActiveReachable { region } => {
                format!("standby: an active member of {region} is reachable")
            }
            Stay::NoMajority { reached, regions } => format!(
                "standby: reaches {reached} of {regions} regions, not a majority: cannot judge"
            ),
            Stay::Preceded { region } => {
                format!("standby: {region} comes first in priority and is reachable")
            }
            Stay::Waiting { region, left_ms } => format!(
                "standby: {region} is out of reach; takes over in {} s unless it returns",
                left_ms.div_ceil(1_000)
            ),
            Stay::NotConfirmed { region, by } => {
                format!("standby: {region} is out of reach from here but {by} still reaches it")
            }
        },
    })
}

/// Records in `path` (synced) that this node was promoted: it starts
/// active from then on, whatever its `role` says.
pub fn record_promotion(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(b"promoted: this node ignores role = \"standby\"\n")?;
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `POST /v1/promote`: a standby starts accepting client writes, and stays
/// active across restarts.
pub(super) async fn promote(State(api): State<Arc<Api>>) -> Response {
    let go = async {
        let was = api.node.status().await.map_err(node_error)?.replica.standby;
        if let Some(path) = api.cfg.promoted_file.clone() {
            let write = tokio::task::spawn_blocking(move || {
                // Durable before the node takes writes: a crash must not bring it back a standby.
                record_promotion(&path)
                    .map_err(|e| format!("cannot record the promotion in {}: {e}", path.display()))
            });
            match write.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
                Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
            }
        }
        api.node.promote().await.map_err(node_error)?;
        tracing::warn!(was_standby = was, "promoted: accepting client writes");
        let doc = wire::Promoted {
            role: wire::Role::Active,
            was: if was {
                wire::Role::Standby
            } else {
                wire::Role::Active
            },
        };
        let audited = super::audit::Audited::new("promote", Vec::new());
        Ok::<_, ApiError>(audited.on(axum::Json(doc).into_response()))
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /metrics`: the Prometheus text format.
pub(super) async fn prometheus(State(api): State<Arc<Api>>) -> Response {
    match api.node.status().await {
        Ok(s) => {
            let mut text = metrics::render(&s);
            if let Some(e) = &api.cfg.extra {
                text.push_str(&metrics::render_samples(&e.samples(s.now_ms)));
            }
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
        }
        Err(e) => node_error(e).into_response(),
    }
}
