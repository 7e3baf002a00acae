//! `GET /v1/backup` and `POST /v1/restore`: backup files (see
//! [`crate::backup`]) out of and into a node.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::error::{body_error, error, node_error, ApiError};
use super::query::Params;
use super::{wire, Api, RESTORE_STEP_ENTRIES};
use crate::core::types::hex;

/// `GET /v1/backup[?since=N]`: a backup file (see [`crate::backup`]) of a
/// consistent snapshot: every entry (full) or those changed after index N
/// (incremental), streamed chunk by chunk while writes go on.
pub(super) async fn backup(State(api): State<Arc<Api>>, uri: Uri) -> Response {
    let go = async {
        let since = Params::parse(&uri)?.number("since")?.unwrap_or(0);
        if since > api.node.index() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "since={since} is ahead of this node's index {}",
                    api.node.index()
                ),
            ));
        }
        let snap = api.node.snapshot(since).await.map_err(node_error)?;
        let header = snap.backup_header(api.node.cluster());
        let name = format!(
            "meridian-{}-{}{}.mbak",
            snap.name,
            snap.index,
            if since > 0 {
                format!("-since-{since}")
            } else {
                String::new()
            }
        );
        let entries = snap.entries.len();
        let w = crate::backup::Writer::new(&header)
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let state = Some((w, blake3::Hasher::new(), snap.entries.into_iter()));
        let stream = futures_util::stream::unfold(state, |state| async move {
            let (mut w, mut hasher, mut it) = state?;
            for _ in 0..crate::backup::CHUNK_ENTRIES_MAX {
                let Some((k, e)) = it.next() else {
                    let ready = w.take_ready();
                    hasher.update(&ready);
                    let out = w
                        .finish(hasher)
                        .map(|tail| Bytes::from([ready, tail].concat()));
                    return Some((out, None));
                };
                if let Err(e) = w.push(k, e) {
                    return Some((Err(e), None));
                }
            }
            let ready = w.take_ready();
            hasher.update(&ready);
            Some((Ok(Bytes::from(ready)), Some((w, hasher, it))))
        });
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
        headers.insert("X-Meridian-Index", HeaderValue::from(header.index));
        headers.insert("X-Meridian-Entries", HeaderValue::from(entries));
        Ok::<_, ApiError>((headers, Body::from_stream(stream)).into_response())
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/restore[?force]` with a backup file as the body: checks it
/// (checksums, count, root of a full backup, cluster unless `force`), then
/// merges its entries as CRDT state, durably, in steps. Answers what the
/// merge did.
pub(super) async fn restore(State(api): State<Arc<Api>>, uri: Uri, body: Body) -> Response {
    let go = async {
        let force = Params::parse(&uri)?.flag("force");
        let max = api.cfg.restore_bytes_max;
        let bytes = axum::body::to_bytes(body, max)
            .await
            .map_err(|e| body_error(&e, max, "the backup"))?;
        // Checking a large backup (checksums, rebuilding its root) is CPU
        // work: off the async workers, one restore at a time per node.
        let _one = api.restoring.lock().await;
        let b = tokio::task::spawn_blocking(move || crate::backup::decode(&bytes))
            .await
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid backup: {e}")))?;
        if b.header.cluster != api.node.cluster() && !force {
            let e = crate::backup::BackupError::OtherCluster {
                expected: crate::backup::cluster_hex(&api.node.cluster()),
                found: crate::backup::cluster_hex(&b.header.cluster),
            };
            return Err(error(StatusCode::CONFLICT, e.to_string()));
        }
        if api
            .node
            .status()
            .await
            .map_err(node_error)?
            .replica
            .rebuilding
        {
            return Err(error(
                StatusCode::CONFLICT,
                "this node is still rebuilding from a peer: restore once it is active",
            ));
        }
        let total = b.entries.len();
        let mut report = crate::sync::ImportReport::default();
        let mut entries = b.entries;
        while !entries.is_empty() {
            let rest = entries.split_off(entries.len().min(RESTORE_STEP_ENTRIES));
            let r = api.node.import(entries).await.map_err(node_error)?;
            report.applied += r.applied;
            report.unchanged += r.unchanged;
            report.refused_floor += r.refused_floor;
            report.refused_clock += r.refused_clock;
            entries = rest;
        }
        let root = api.node.digest("").await.map_err(node_error)?;
        tracing::info!(
            entries = total,
            applied = report.applied,
            "restored a backup"
        );
        let doc = wire::Restored {
            entries: total as u64,
            applied: report.applied,
            unchanged: report.unchanged,
            refused_below_floor: report.refused_floor,
            refused_clock: report.refused_clock,
            backup_root: hex(&b.header.root),
            root: hex(&root),
            backup_index: b.header.index,
            backup_node: b.header.name,
        };
        let audited = super::audit::Audited {
            op: "restore",
            keys: Vec::new(),
            total: Some(total as u64),
        };
        Ok::<_, ApiError>(audited.on(axum::Json(doc).into_response()))
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}
