//! Members: `GET /v1/members` (who this node knows, with roles and
//! states), `PUT /v1/agent/leave` (this node leaves the cluster, then the
//! daemon stops) and `PUT /v1/agent/force-leave/NODE` (forget a member
//! that is gone for good), at Consul's paths.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{error, node_error, ApiError};
use super::{wire, Api};
use crate::node::{MembersReport, NodeError};
use crate::sync::{ForgetError, LeaveError, Role};

/// How long a leave waits for the members in contact to hold every write
/// of this node before it is refused.
pub const LEAVE_WAIT_MS: u64 = 15_000;

/// Maps a leave's or a forget's refusal to its status.
fn refusal(e: NodeError) -> ApiError {
    match e {
        NodeError::Leave(l) => {
            let code = match l {
                LeaveError::Edge => StatusCode::BAD_REQUEST,
                LeaveError::Alone => StatusCode::CONFLICT,
                LeaveError::NotHandedOver { .. } | LeaveError::Clock(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            error(code, format!("cannot leave: {l}"))
        }
        NodeError::Forget(f) => {
            let code = match f {
                ForgetError::Myself | ForgetError::Edge | ForgetError::Left => {
                    StatusCode::BAD_REQUEST
                }
                ForgetError::Unknown(_) => StatusCode::NOT_FOUND,
                ForgetError::InContact { .. } | ForgetError::TooMany => StatusCode::CONFLICT,
                ForgetError::Clock(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(code, format!("cannot forget: {f}"))
        }
        NodeError::UnknownMember(who) => error(
            StatusCode::NOT_FOUND,
            format!("no member {who} is known here"),
        ),
        other => node_error(other),
    }
}

/// The members document of a report, this node included.
pub(super) fn members_doc(api: &Api, report: MembersReport) -> wire::Members {
    let node = &api.node;
    let me = node.id();
    let swim = |id| report.swim.iter().find(|v| v.member.node == id);
    let mut servers = vec![wire::MemberDoc {
        node: me.to_string(),
        name: node.name().to_string(),
        region: node.region().to_string(),
        role: if report.edge {
            wire::MemberRole::Edge
        } else {
            wire::MemberRole::Server
        },
        state: wire::MemberState::Alive,
        addr: node.local_addr().to_string(),
        api: node.api_addr(),
        this: true,
    }];
    let mut edges = Vec::new();
    for k in &report.known {
        let seen = swim(k.node);
        let state = match seen.map(|v| v.state) {
            Some("alive") => wire::MemberState::Alive,
            Some("suspect") => wire::MemberState::Suspect,
            _ if k.connected => wire::MemberState::Alive,
            _ => wire::MemberState::Down,
        };
        let doc = wire::MemberDoc {
            node: k.node.to_string(),
            name: k.name.clone(),
            region: k.region.clone(),
            role: match k.role {
                Role::Server => wire::MemberRole::Server,
                Role::Edge => wire::MemberRole::Edge,
            },
            state,
            addr: seen.map(|v| v.member.addr.clone()).unwrap_or_default(),
            api: k.api.clone(),
            this: false,
        };
        match k.role {
            Role::Server => servers.push(doc),
            Role::Edge => edges.push(doc),
        }
    }
    // Members SWIM knows that the replica has not heard from yet.
    for v in &report.swim {
        let id = v.member.node;
        if id == me
            || report.known.iter().any(|k| k.node == id)
            || report.forgotten.iter().any(|(f, _)| *f == id)
        {
            continue;
        }
        servers.push(wire::MemberDoc {
            node: id.to_string(),
            name: v.member.name.clone(),
            region: v.member.region.clone(),
            role: wire::MemberRole::Server,
            state: match v.state {
                "alive" => wire::MemberState::Alive,
                "suspect" => wire::MemberState::Suspect,
                _ => wire::MemberState::Down,
            },
            addr: v.member.addr.clone(),
            api: String::new(),
            this: false,
        });
    }
    let mut forgotten: Vec<wire::MemberDoc> = report
        .forgotten
        .iter()
        .map(|(id, f)| wire::MemberDoc {
            node: id.to_string(),
            name: f.name.clone(),
            region: f.region.clone(),
            role: wire::MemberRole::Server,
            state: if f.left {
                wire::MemberState::Left
            } else {
                wire::MemberState::Forgotten
            },
            addr: String::new(),
            api: String::new(),
            this: false,
        })
        .collect();
    for list in [&mut servers, &mut edges, &mut forgotten] {
        list.sort_by(|a, b| (&a.region, &a.name).cmp(&(&b.region, &b.name)));
    }
    servers.extend(edges);
    servers.extend(forgotten);
    wire::Members { members: servers }
}

/// `GET /v1/members`.
pub(super) async fn members(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let report = api.node.members().await.map_err(node_error)?;
    Ok(Json(members_doc(&api, report)).into_response())
}

/// `PUT /v1/agent/leave`: waits up to [`LEAVE_WAIT_MS`] for the members in
/// contact to hold every write of this node, tells every peer, and
/// answers once that is durable; the daemon then shuts down.
pub(super) async fn leave(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    api.node
        .leave(Duration::from_millis(LEAVE_WAIT_MS))
        .await
        .map_err(refusal)?;
    tracing::warn!("left the cluster: shutting down");
    let doc = wire::LeftDoc {
        node: api.node.id().to_string(),
        name: api.node.name().to_string(),
    };
    Ok(Json(doc).into_response())
}

/// `PUT /v1/agent/force-leave/NODE`: forgets a member that is gone for
/// good (by name or node id).
pub(super) async fn force_leave(
    State(api): State<Arc<Api>>,
    Path(who): Path<String>,
) -> Result<Response, ApiError> {
    let f = api.node.forget(&who).await.map_err(refusal)?;
    let report = api.node.members().await.map_err(node_error)?;
    let node = report
        .forgotten
        .iter()
        .find(|(_, g)| g.at == f.at && g.name == f.name)
        .map(|(id, _)| id.to_string())
        .unwrap_or(who);
    tracing::warn!(member = %node, name = %f.name, "forgotten: it no longer counts");
    let doc = wire::ForgotDoc {
        node,
        name: f.name,
        region: f.region,
        left: f.left,
    };
    Ok(Json(doc).into_response())
}
