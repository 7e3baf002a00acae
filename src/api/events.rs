//! Events as operators see them: one JSON shape for `/v1/events` (server-sent
//! events) and for webhooks. Every event has `type`, `at_ms`, `node`, `name`
//! and `region` (of the reporting node), plus fields of its own.

use serde_json::{json, Value};

use crate::node::{EventKind, NodeEvent};
use crate::sync::{Event, Resolution};

/// Every event type, as `type` names it (what webhook filters accept).
pub const EVENT_TYPES: [&str; 19] = [
    "peer_up",
    "peer_down",
    "partition_detected",
    "partition_ended",
    "partition_healed",
    "divergence_found",
    "divergence_repaired",
    "clock_skew",
    "peer_refused",
    "peer_stale",
    "resynced",
    "stamp_collision",
    "record_quarantined",
    "record_repaired",
    "store_lost",
    "recovery_started",
    "recovered",
    "clock_offset",
    "health_changed",
];

/// The type name and the fields of an event.
pub fn event_fields(kind: &EventKind) -> (&'static str, Value) {
    match kind {
        EventKind::Health { healthy, reasons } => (
            "health_changed",
            json!({ "healthy": healthy, "reasons": reasons }),
        ),
        EventKind::Replica(e) => match e {
            Event::PeerUp { peer, name, region } => (
                "peer_up",
                json!({ "peer": peer.to_string(), "peer_name": name, "peer_region": region }),
            ),
            Event::PeerDown { peer, name, region } => (
                "peer_down",
                json!({ "peer": peer.to_string(), "peer_name": name, "peer_region": region }),
            ),
            Event::PartitionDetected { region } => {
                ("partition_detected", json!({ "cut_region": region }))
            }
            Event::PartitionEnded {
                region,
                partition_ms,
            } => (
                "partition_ended",
                json!({ "cut_region": region, "partition_ms": partition_ms }),
            ),
            Event::PartitionHealed {
                region,
                partition_ms,
                keys_exchanged,
                converge_ms,
            } => (
                "partition_healed",
                json!({
                    "cut_region": region,
                    "partition_ms": partition_ms,
                    "keys_exchanged": keys_exchanged,
                    "converge_ms": converge_ms,
                }),
            ),
            Event::DivergenceFound { peer } => {
                ("divergence_found", json!({ "peer": peer.to_string() }))
            }
            Event::DivergenceRepaired { peer, keys } => (
                "divergence_repaired",
                json!({ "peer": peer.to_string(), "keys": keys }),
            ),
            Event::ClockSkew { peer, ahead_ms } => (
                "clock_skew",
                json!({ "peer": peer.to_string(), "ahead_ms": ahead_ms }),
            ),
            Event::PeerRefused { peer, reason } => (
                "peer_refused",
                json!({ "peer": peer.to_string(), "reason": reason.to_string() }),
            ),
            Event::PeerStale { peer } => ("peer_stale", json!({ "peer": peer.to_string() })),
            Event::Resynced { from, dropped } => (
                "resynced",
                json!({ "from": from.to_string(), "dropped": dropped }),
            ),
            Event::StampCollision { key } => ("stamp_collision", json!({ "key": key.as_str() })),
            Event::RecordQuarantined { key, reason } => (
                "record_quarantined",
                json!({ "key": key, "reason": reason }),
            ),
            Event::RecordRepaired { key, how } => {
                let how = match how {
                    Resolution::Repaired { from, stamp } => json!({
                        "how": "repaired", "from": from.to_string(),
                        "stamp": format!("{:016x}-{}", stamp.hlc.0, stamp.node),
                    }),
                    Resolution::Overwritten => json!({ "how": "overwritten" }),
                    Resolution::ReadBack { stamp } => json!({
                        "how": "read_back",
                        "stamp": format!("{:016x}-{}", stamp.hlc.0, stamp.node),
                    }),
                    Resolution::NotHeldByPeers { peers } => {
                        json!({ "how": "not_held_by_peers", "peers": peers })
                    }
                };
                let mut doc = how;
                doc["key"] = key.as_str().into();
                ("record_repaired", doc)
            }
            Event::StoreLost => ("store_lost", json!({})),
            Event::RecoveryStarted { cause } => {
                ("recovery_started", json!({ "cause": cause.as_str() }))
            }
            Event::Recovered { cause, peers } => (
                "recovered",
                json!({ "cause": cause.as_str(), "peers": peers }),
            ),
            Event::ClockOffset {
                offset_ms,
                disagreeing,
                members,
                off,
            } => (
                "clock_offset",
                json!({
                    "offset_ms": offset_ms,
                    "disagreeing": disagreeing,
                    "members": members,
                    "off": off,
                }),
            ),
        },
    }
}

/// The whole JSON document of an event reported by node `node` (`name`, `region`).
pub fn event_json(e: &NodeEvent, node: &str, name: &str, region: &str) -> Value {
    let (kind, mut fields) = event_fields(&e.kind);
    if let Value::Object(m) = &mut fields {
        m.insert("type".into(), kind.into());
        m.insert("at_ms".into(), e.at_ms.into());
        m.insert("node".into(), node.into());
        m.insert("name".into(), name.into());
        m.insert("region".into(), region.into());
    }
    fields
}
