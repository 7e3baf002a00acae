//! `api::wire::consul`: the documents of Consul's endpoints besides the KV
//! entry itself: the probes (`/v1/agent/self`, `/v1/agent/members`) and
//! the transaction (`/v1/txn`), in Consul's `PascalCase` shapes, so that
//! Consul clients read them unchanged.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::KvEntry;

/// Serf's member status "alive" (Consul's `Member.Status`).
pub const MEMBER_ALIVE: u8 = 1;
/// Serf's member status "left".
pub const MEMBER_LEFT: u8 = 3;
/// Serf's member status "failed".
pub const MEMBER_FAILED: u8 = 4;

/// `GET /v1/agent/self`: the fields Consul clients read of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentSelf {
    /// The agent's configuration.
    pub config: AgentConfig,
    /// The agent as a member of the cluster.
    pub member: AgentMember,
}

/// `Config` of `/v1/agent/self`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentConfig {
    /// The node's region: Meridian's regions are Consul's datacenters.
    pub datacenter: String,
    /// Also the node's region (every region is primary for its own writes).
    pub primary_datacenter: String,
    /// The node's name.
    pub node_name: String,
    /// The node's id, shaped as the UUID Consul uses.
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// Always true: every Meridian node serves writes.
    pub server: bool,
    /// Meridian's version.
    pub version: String,
    /// The build's revision (empty: not known).
    pub revision: String,
}

/// A member of the cluster as Consul (serf) describes one: `Member` of
/// `/v1/agent/self`, and each entry of `/v1/agent/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentMember {
    /// The member's node name.
    pub name: String,
    /// The IP address of its cluster (QUIC) endpoint.
    pub addr: String,
    /// The port of its cluster endpoint.
    pub port: u16,
    /// `dc` (its region), `role` (`node`) and `id` (its node id).
    pub tags: BTreeMap<String, String>,
    /// Serf's status: 1 alive (suspect members too, as serf has it), 4 failed.
    pub status: u8,
    /// Serf's protocol fields, reported as a current Consul does.
    pub protocol_min: u8,
    /// See `protocol_min`.
    pub protocol_max: u8,
    /// See `protocol_min`.
    pub protocol_cur: u8,
    /// See `protocol_min`.
    pub delegate_min: u8,
    /// See `protocol_min`.
    pub delegate_max: u8,
    /// See `protocol_min`.
    pub delegate_cur: u8,
}

/// One operation of `PUT /v1/txn`: only `KV` operations are served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOp {
    /// The KV operation (`null` or absent when the operation is of another kind).
    #[serde(rename = "KV", default)]
    pub kv: Option<TxnKvOp>,
    /// Any other kind (`Node`, `Service`, `Check`, `Session`): refused by name.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A KV operation of a transaction, as Consul's `api.KVTxnOp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnKvOp {
    /// `set`, `cas`, `get`, `get-tree`, `check-index`, `check-not-exists`,
    /// `delete`, `delete-tree` or `delete-cas`.
    pub verb: String,
    /// The key (the prefix, for the `-tree` verbs).
    #[serde(default)]
    pub key: String,
    /// The value of `set` and `cas`, base64.
    #[serde(default, with = "super::b64")]
    pub value: Bytes,
    /// The flags of `set` and `cas`.
    #[serde(default)]
    pub flags: u64,
    /// The modify index `cas`, `check-index` and `delete-cas` compare with.
    #[serde(default)]
    pub index: u64,
    /// A session: the session verbs are refused.
    #[serde(default)]
    pub session: String,
}

/// One result of a transaction: the entry an operation read or wrote
/// (without its value unless the operation read it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResult {
    /// The entry.
    #[serde(rename = "KV")]
    pub kv: KvEntry,
}

/// Why a transaction was refused: which operation, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnError {
    /// The index of the operation in the request.
    pub op_index: u64,
    /// What was wrong with it.
    pub what: String,
}

/// The answer to `PUT /v1/txn`: `Results` with a 200, `Errors` with a 409
/// (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnResponse {
    /// The operations' results, in order (operations that return none are skipped).
    pub results: Option<Vec<TxnResult>>,
    /// The operations that failed.
    pub errors: Option<Vec<TxnError>>,
}
