//! `api::txn`: Consul's `PUT /v1/txn` for the KV verbs. The body is read
//! within its bound and decoded strictly; the operations are turned into
//! the replica's [`TxnOp`]s (session verbs and non-KV operations are
//! refused by name) and run on the node as one transaction: 200 with
//! `Results`, or 409 with `Errors` (`OpIndex`, `What`) and nothing written.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::audit::Audited;
use super::error::{body_error, error, node_error, ApiError};
use super::query::Params;
use super::{forward, wire, Api, DELETE_KEYS_MAX, TXN_BYTES_MIN};
use crate::core::acl::Resolved;
use crate::node::NodeError;
use crate::sync::{TxnEntry, TxnOp};

/// What Meridian answers for Consul's session verbs.
const NO_SESSIONS: &str = "Meridian has no sessions: the lock, unlock and check-session verbs \
                           are not supported (a lock needs a store with one leader)";

/// The largest body a transaction may have: Consul's 512 KiB, or more so
/// that one largest value fits base64-encoded.
fn body_bytes_max(value_bytes_max: usize) -> usize {
    TXN_BYTES_MIN.max(value_bytes_max / 3 * 4 + 4 * 1024)
}

/// One requested operation as the replica takes it, or why it is refused.
fn op(o: wire::TxnOp) -> Result<TxnOp, String> {
    let Some(kv) = o.kv else {
        let kinds: Vec<&str> = o.other.keys().map(String::as_str).collect();
        return Err(if kinds.is_empty() {
            "the operation is empty: Meridian serves KV operations only".to_string()
        } else {
            format!(
                "{} operations are not supported: Meridian serves KV operations only",
                kinds.join(", ")
            )
        });
    };
    let key = kv.key;
    if super::query::reserved(&key).is_err() {
        return Err(format!("key {key:?} is reserved for Meridian's own state"));
    }
    Ok(match kv.verb.as_str() {
        "set" => TxnOp::Set {
            key,
            value: kv.value,
            flags: kv.flags,
        },
        "cas" => TxnOp::Cas {
            key,
            value: kv.value,
            flags: kv.flags,
            index: kv.index,
        },
        "get" => TxnOp::Get { key },
        "get-tree" => TxnOp::GetTree { prefix: key },
        "check-index" => TxnOp::CheckIndex {
            key,
            index: kv.index,
        },
        "check-not-exists" => TxnOp::CheckNotExists { key },
        "delete" => TxnOp::Delete { key },
        "delete-tree" => TxnOp::DeleteTree { prefix: key },
        "delete-cas" => TxnOp::DeleteCas {
            key,
            index: kv.index,
        },
        "lock" | "unlock" | "check-session" => return Err(NO_SESSIONS.to_string()),
        other => return Err(format!("unknown KV verb {other:?}")),
    })
}

fn result(e: TxnEntry) -> wire::TxnResult {
    wire::TxnResult {
        kv: wire::KvEntry {
            lock_index: 0,
            key: e.key,
            flags: e.flags,
            value: e.value.unwrap_or_default(),
            create_index: e.create_index,
            modify_index: e.modify_index,
        },
    }
}

/// A 409: the operations that failed, nothing written.
fn conflict(errors: Vec<wire::TxnError>) -> Response {
    let body = wire::TxnResponse {
        results: None,
        errors: Some(errors),
    };
    (StatusCode::CONFLICT, Json(body)).into_response()
}

pub(super) async fn txn(
    State(api): State<Arc<Api>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match forward::elsewhere(&api, &Method::PUT, &uri, &headers, body).await {
        Ok(answer) => return answer,
        Err(body) => body,
    };
    let caller = api.caller(&headers, &uri);
    run(&api, &uri, body, &caller)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Whether the caller may run `o`: write for the writing verbs (on every
/// key under the prefix for `delete-tree`), read for the others
/// (`get-tree` results are filtered instead).
fn permitted(caller: &Resolved, o: &TxnOp) -> bool {
    match o {
        TxnOp::DeleteTree { prefix } => caller.authz.key_write_prefix(prefix),
        TxnOp::GetTree { .. } => true,
        o if o.writes() => o.key().is_some_and(|k| caller.authz.key_write(k)),
        o => o.key().is_some_and(|k| caller.authz.key_read(k)),
    }
}

async fn run(api: &Api, uri: &Uri, body: Body, caller: &Resolved) -> Result<Response, ApiError> {
    let q = Params::parse(uri)?;
    let ack = q.ack()?;
    let consistent = q.consistent()?;
    let max = body_bytes_max(api.cfg.limits.value_bytes_max);
    let bytes = axum::body::to_bytes(body, max)
        .await
        .map_err(|e| body_error(&e, max, "transaction"))?;
    let ops: Vec<wire::TxnOp> = serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("Failed to parse body: {e}"),
        )
    })?;
    let ops_max = api.cfg.txn_ops_max;
    if ops.len() > ops_max {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Transaction contains too many operations ({} > {ops_max})",
                ops.len()
            ),
        ));
    }
    let mut refused = Vec::new();
    let mut parsed = Vec::with_capacity(ops.len());
    for (i, o) in ops.into_iter().enumerate() {
        match op(o) {
            Ok(o) => parsed.push(o),
            Err(what) => refused.push(wire::TxnError {
                op_index: i as u64,
                what,
            }),
        }
    }
    // Every operation is checked against the token before any runs (as
    // Consul's pre-check): one forbidden operation and nothing is written.
    for (i, o) in parsed.iter().enumerate() {
        if !permitted(caller, o) {
            refused.push(wire::TxnError {
                op_index: i as u64,
                what: "Permission denied".to_string(),
            });
        }
    }
    if !refused.is_empty() {
        return Ok(conflict(refused));
    }
    // A read-only transaction reads behind a barrier with `?consistent`, as a GET does.
    if consistent && !parsed.iter().any(TxnOp::writes) {
        let mut scopes: Vec<(&str, bool)> = parsed
            .iter()
            .map(|o| match o {
                TxnOp::GetTree { prefix } => (prefix.as_str(), true),
                other => (other.key().unwrap_or(""), false),
            })
            .collect();
        scopes.sort_unstable();
        scopes.dedup();
        for (scope, prefix) in scopes {
            api.node
                .read_barrier(scope, prefix)
                .await
                .map_err(node_error)?;
        }
    }
    let written: Vec<String> = parsed
        .iter()
        .filter(|o| o.writes())
        .filter_map(|o| match o {
            TxnOp::DeleteTree { prefix } => Some(prefix.clone()),
            o => o.key().map(str::to_string),
        })
        .collect();
    match api.node.txn(parsed, ack, DELETE_KEYS_MAX).await {
        Ok(outcome) => {
            let body = wire::TxnResponse {
                results: Some(
                    outcome
                        .results
                        .into_iter()
                        .filter(|e| caller.authz.key_read(&e.key))
                        .map(result)
                        .collect(),
                ),
                errors: None,
            };
            let r = Json(body).into_response();
            Ok(if written.is_empty() {
                r
            } else {
                Audited::new("txn", written).on(r)
            })
        }
        Err(NodeError::TxnFailed(failures)) => Ok(conflict(
            failures
                .into_iter()
                .map(|(i, f)| wire::TxnError {
                    op_index: i as u64,
                    what: f.to_string(),
                })
                .collect(),
        )),
        Err(e) => Err(node_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<TxnOp, String> {
        let o: wire::TxnOp = serde_json::from_str(json).unwrap();
        op(o)
    }

    #[test]
    fn consul_operations_become_the_replicas() {
        let set = parse(r#"{"KV": {"Verb": "set", "Key": "a", "Value": "aGk=", "Flags": 3}}"#);
        assert_eq!(
            set,
            Ok(TxnOp::Set {
                key: "a".into(),
                value: bytes::Bytes::from_static(b"hi"),
                flags: 3
            })
        );
        let cas = parse(r#"{"KV": {"Verb": "delete-cas", "Key": "a", "Index": 9}}"#);
        assert_eq!(
            cas,
            Ok(TxnOp::DeleteCas {
                key: "a".into(),
                index: 9
            })
        );
        let lock = parse(r#"{"KV": {"Verb": "lock", "Key": "a", "Session": "s"}}"#);
        assert!(lock.unwrap_err().contains("no sessions"));
        let node = parse(r#"{"Node": {"Verb": "get"}}"#);
        assert!(node.unwrap_err().contains("Node operations"));
        let verb = parse(r#"{"KV": {"Verb": "frob", "Key": "a"}}"#);
        assert_eq!(verb, Err("unknown KV verb \"frob\"".to_string()));
    }

    #[test]
    fn the_body_bound_fits_one_largest_value() {
        assert_eq!(body_bytes_max(1024), TXN_BYTES_MIN);
        assert!(body_bytes_max(1 << 20) > (1 << 20) / 3 * 4);
    }
}
