//! `api::wire::members`: the documents of members that leave:
//! `GET /v1/members`, `PUT /v1/agent/leave` and
//! `PUT /v1/agent/force-leave/NODE`.

use serde::{Deserialize, Serialize};

/// `GET /v1/members` (what `meridian members --json` prints): this node,
/// the members it knows, the edges it serves, and the members the cluster
/// forgot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// Servers first (this node among them), then edges, then the
    /// forgotten; by region and name within each.
    pub members: Vec<MemberDoc>,
}

/// One node of [`Members`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDoc {
    /// Its node id (16 hex digits).
    pub node: String,
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// A server (a member of the mesh) or an edge.
    pub role: MemberRole,
    /// Its state, as this node sees it.
    pub state: MemberState,
    /// Its peers' address (`ip:port`), when known.
    pub addr: String,
    /// Its HTTP API address, when known.
    pub api: String,
    /// It is the node that answered.
    #[serde(default)]
    pub this: bool,
}

/// A node's part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// A member of the mesh: counts for quorum, reachability and collection.
    Server,
    /// Attached to one server; counts for none of these.
    Edge,
}

/// A node's state, as the answering node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// In contact (SWIM says alive, or its connection is up).
    Alive,
    /// SWIM suspects it.
    Suspect,
    /// Not in contact: it still counts (forget it if it is gone for good).
    Down,
    /// It left (`meridian leave`): it no longer counts.
    Left,
    /// An operator forgot it (`meridian forget`): it no longer counts.
    Forgotten,
}

/// `PUT /v1/agent/leave`: this node left; it shuts down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftDoc {
    /// This node's id.
    pub node: String,
    /// Its name.
    pub name: String,
}

/// `PUT /v1/agent/force-leave/NODE`: the member forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgotDoc {
    /// Its node id.
    pub node: String,
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// It had left by itself already.
    pub left: bool,
}
