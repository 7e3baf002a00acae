//! `api::history`: `GET /v1/history/<key>`, the versions of a key this node
//! kept, with who wrote each.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};

use super::error::{key_error, node_error, ApiError};
use super::query::path_rest;
use super::{wire, Api};
use crate::core::types::{Key, NodeId};

/// `GET /v1/history/<key>`: the versions of a key this node kept, oldest
/// first, with who wrote each (node id, and its name and region when known).
pub(super) async fn history(State(api): State<Arc<Api>>, uri: Uri) -> Response {
    let go = async {
        let key = path_rest(&uri, "/v1/history")?;
        Key::check(&key, api.cfg.limits.key_bytes_max).map_err(key_error)?;
        let versions = api.node.history(&key).await.map_err(node_error)?;
        let status = api.node.status().await.ok();
        let who = |node: NodeId| -> (String, String) {
            if node == api.node.id() {
                return (api.node.name().to_string(), api.node.region().to_string());
            }
            status
                .as_ref()
                .and_then(|s| s.replica.peers.iter().find(|p| p.node == node))
                .map(|p| (p.name.clone(), p.region.clone()))
                .unwrap_or_default()
        };
        let list: Vec<wire::Version> = versions
            .iter()
            .map(|v| {
                let stamp = v.entry.stamp;
                let (node_name, region) = who(stamp.node);
                wire::Version {
                    index: v.index,
                    stamp: stamp.to_string(),
                    time: stamp.hlc.physical_ms(),
                    node: stamp.node.to_string(),
                    node_name,
                    region,
                    deleted: v.entry.is_tombstone(),
                    flags: v.entry.flags,
                    value: v.entry.visible_value().unwrap_or_default(),
                }
            })
            .collect();
        Ok::<_, ApiError>((api.headers(api.node.index()), axum::Json(list)).into_response())
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}
