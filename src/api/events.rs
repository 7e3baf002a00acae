//! `api::events`: events as operators see them, one JSON shape
//! ([`wire::EventDoc`]) for `GET /v1/events` (server-sent events) and for
//! webhooks; and the `/v1/events` stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::{wire, Api, KEEP_ALIVE_MS};
use crate::node::{EventKind, NodeEvent};
use crate::sync::{Event, Resolution};

/// What happened, as the API names it.
pub fn event(kind: &EventKind) -> wire::Event {
    use wire::Event as W;
    let e = match kind {
        EventKind::Health { healthy, reasons } => {
            return W::HealthChanged {
                healthy: *healthy,
                reasons: reasons.clone(),
            }
        }
        EventKind::Replica(e) => e,
    };
    match e {
        Event::PeerUp { peer, name, region } => W::PeerUp {
            peer: peer.to_string(),
            peer_name: name.clone(),
            peer_region: region.clone(),
        },
        Event::PeerDown { peer, name, region } => W::PeerDown {
            peer: peer.to_string(),
            peer_name: name.clone(),
            peer_region: region.clone(),
        },
        Event::PartitionDetected { region } => W::PartitionDetected {
            cut_region: region.clone(),
        },
        Event::PartitionEnded {
            region,
            partition_ms,
        } => W::PartitionEnded {
            cut_region: region.clone(),
            partition_ms: *partition_ms,
        },
        Event::PartitionHealed {
            region,
            partition_ms,
            keys_exchanged,
            converge_ms,
        } => W::PartitionHealed {
            cut_region: region.clone(),
            partition_ms: *partition_ms,
            keys_exchanged: *keys_exchanged,
            converge_ms: *converge_ms,
        },
        Event::FailedOver { failed, after_ms } => W::FailedOver {
            failed: failed.clone(),
            after_ms: *after_ms,
        },
        Event::DivergenceFound { peer } => W::DivergenceFound {
            peer: peer.to_string(),
        },
        Event::DivergenceRepaired { peer, keys } => W::DivergenceRepaired {
            peer: peer.to_string(),
            keys: *keys,
        },
        Event::ClockSkew { peer, ahead_ms } => W::ClockSkew {
            peer: peer.to_string(),
            ahead_ms: *ahead_ms,
        },
        Event::PeerRefused { peer, reason } => W::PeerRefused {
            peer: peer.to_string(),
            reason: reason.to_string(),
        },
        Event::PeerStale { peer } => W::PeerStale {
            peer: peer.to_string(),
        },
        Event::Left { at } => W::Left {
            left_ms: at.physical_ms(),
        },
        Event::MemberForgotten {
            peer,
            name,
            region,
            left,
        } => W::MemberForgotten {
            peer: peer.to_string(),
            peer_name: name.clone(),
            peer_region: region.clone(),
            left: *left,
        },
        Event::MemberBack { peer, name } => W::MemberBack {
            peer: peer.to_string(),
            peer_name: name.clone(),
        },
        Event::LocalWriteDropped { key, reason } => W::LocalWriteDropped {
            key: key.clone(),
            reason: reason.clone(),
        },
        Event::Resynced { from, dropped } => W::Resynced {
            from: from.to_string(),
            dropped: *dropped as u64,
        },
        Event::StampCollision { key } => W::StampCollision {
            key: key.as_str().to_string(),
        },
        Event::RecordQuarantined { key, reason } => W::RecordQuarantined {
            key: key.clone(),
            reason: reason.clone(),
        },
        Event::RecordRepaired { key, how } => W::RecordRepaired {
            key: key.clone(),
            how: match how {
                Resolution::Repaired { from, stamp } => wire::Repair::Repaired {
                    from: from.to_string(),
                    stamp: stamp.to_string(),
                },
                Resolution::Overwritten => wire::Repair::Overwritten,
                Resolution::ReadBack { stamp } => wire::Repair::ReadBack {
                    stamp: stamp.to_string(),
                },
                Resolution::NotHeldByPeers { peers } => wire::Repair::NotHeldByPeers {
                    peers: *peers as u64,
                },
            },
        },
        Event::StoreLost => W::StoreLost,
        Event::LostStoreFound { peer } => W::LostStoreFound {
            peer: peer.to_string(),
        },
        Event::IdConfirmed => W::IdConfirmed,
        Event::RecoveryStarted { cause } => W::RecoveryStarted {
            cause: cause.as_str().to_string(),
        },
        Event::Recovered { cause, peers } => W::Recovered {
            cause: cause.as_str().to_string(),
            peers: *peers as u64,
        },
        Event::ClockOffset {
            offset_ms,
            disagreeing,
            members,
            off,
        } => W::ClockOffset {
            offset_ms: *offset_ms,
            disagreeing: *disagreeing as u64,
            members: *members as u64,
            off: *off,
        },
    }
}

/// The whole document of an event reported by node `node` (`name`, `region`).
pub fn event_doc(e: &NodeEvent, node: &str, name: &str, region: &str) -> wire::EventDoc {
    wire::EventDoc {
        event: event(&e.kind),
        at_ms: e.at_ms,
        node: node.to_string(),
        name: name.to_string(),
        region: region.to_string(),
    }
}

/// `GET /v1/events`: operators' events as server-sent events named by
/// their type, from now on. A stream that falls behind gets a `missed`
/// event saying how many it lost.
pub(super) async fn events(State(api): State<Arc<Api>>) -> Response {
    let permit = match api.permit() {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let rx = api.node.subscribe();
    let who = (
        api.node.id().to_string(),
        api.node.name().to_string(),
        api.node.region().to_string(),
    );
    let stream =
        futures_util::stream::unfold((rx, permit, who), |(mut rx, permit, who)| async move {
            use tokio::sync::broadcast::error::RecvError;
            let ev = match rx.recv().await {
                Ok(e) => {
                    let doc = event_doc(&e, &who.0, &who.1, &who.2);
                    let kind = wire::EventType::from(&doc.event).as_str();
                    SseEvent::default().event(kind).json_data(&doc)
                }
                Err(RecvError::Lagged(missed)) => SseEvent::default()
                    .event("missed")
                    .json_data(wire::Missed { missed }),
                Err(RecvError::Closed) => return None,
            };
            let ev = ev.unwrap_or_else(|e| SseEvent::default().comment(e.to_string()));
            Some((Ok::<_, Infallible>(ev), (rx, permit, who)))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_millis(KEEP_ALIVE_MS)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hlc::Hlc;
    use crate::core::types::{Key, NodeId, Stamp};
    use crate::sync::Recovery;

    /// One event of every kind the node reports.
    fn every_kind() -> Vec<EventKind> {
        let peer = NodeId(0xab);
        let stamp = Stamp::new(Hlc(5 << 16), peer);
        let key = Key::new("k").unwrap();
        let replica = vec![
            Event::PeerUp {
                peer,
                name: "n".into(),
                region: "r".into(),
            },
            Event::PeerDown {
                peer,
                name: "n".into(),
                region: "r".into(),
            },
            Event::PartitionDetected { region: "r".into() },
            Event::PartitionEnded {
                region: "r".into(),
                partition_ms: 1,
            },
            Event::PartitionHealed {
                region: "r".into(),
                partition_ms: 1,
                keys_exchanged: 2,
                converge_ms: 3,
            },
            Event::FailedOver {
                failed: vec!["r".into()],
                after_ms: 60_000,
            },
            Event::DivergenceFound { peer },
            Event::DivergenceRepaired { peer, keys: 1 },
            Event::ClockSkew { peer, ahead_ms: 1 },
            Event::PeerRefused {
                peer,
                reason: crate::sync::Refusal::Cluster,
            },
            Event::PeerStale { peer },
            Event::Left { at: stamp.hlc },
            Event::MemberForgotten {
                peer,
                name: "n".into(),
                region: "r".into(),
                left: true,
            },
            Event::MemberBack {
                peer,
                name: "n".into(),
            },
            Event::LocalWriteDropped {
                key: "k".into(),
                reason: "bad".into(),
            },
            Event::Resynced {
                from: peer,
                dropped: 1,
            },
            Event::StampCollision { key },
            Event::RecordQuarantined {
                key: "k".into(),
                reason: "bad".into(),
            },
            Event::RecordRepaired {
                key: "k".into(),
                how: Resolution::Repaired { from: peer, stamp },
            },
            Event::StoreLost,
            Event::LostStoreFound { peer },
            Event::IdConfirmed,
            Event::RecoveryStarted {
                cause: Recovery::AfterStoreLoss,
            },
            Event::Recovered {
                cause: Recovery::AfterStoreLoss,
                peers: 2,
            },
            Event::ClockOffset {
                offset_ms: -4,
                disagreeing: 1,
                members: 3,
                off: false,
            },
        ];
        let mut all: Vec<EventKind> = replica.into_iter().map(EventKind::Replica).collect();
        all.push(EventKind::Health {
            healthy: false,
            reasons: vec!["x".into()],
        });
        all
    }

    #[test]
    fn every_event_type_is_named_alike_in_its_document_and_the_list() {
        let kinds = every_kind();
        let mut seen = std::collections::BTreeSet::new();
        for kind in &kinds {
            let e = NodeEvent {
                at_ms: 9,
                kind: kind.clone(),
            };
            let doc = event_doc(&e, "id", "name", "region");
            let v = serde_json::to_value(&doc).unwrap();
            let name = wire::EventType::from(&doc.event).as_str();
            assert_eq!(v["type"], name, "{v}");
            assert!(wire::EventType::NAMES.contains(&name));
            assert_eq!(v["at_ms"], 9);
            assert_eq!(v["region"], "region");
            // What a receiver reads back is what was sent.
            assert_eq!(serde_json::from_value::<wire::EventDoc>(v).unwrap(), doc);
            seen.insert(name);
        }
        assert_eq!(
            seen.len(),
            wire::EventType::NAMES.len(),
            "one sample per type"
        );
    }

    #[test]
    fn a_repair_names_how_beside_the_key() {
        let e = NodeEvent {
            at_ms: 1,
            kind: EventKind::Replica(Event::RecordRepaired {
                key: "k".into(),
                how: Resolution::NotHeldByPeers { peers: 2 },
            }),
        };
        let v = serde_json::to_value(event_doc(&e, "a", "b", "c")).unwrap();
        assert_eq!(v["type"], "record_repaired");
        assert_eq!(v["how"], "not_held_by_peers");
        assert_eq!(v["peers"], 2);
        assert_eq!(v["key"], "k");
    }
}
