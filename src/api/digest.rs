//! `api::digest`: what `meridian verify` reads of a node's state: its root
//! (`/v1/digest`), every key's entry hash under a prefix (`/v1/hashes`),
//! and the steps of the Merkle descent over the mesh (`/v1/digest/tree`,
//! `/v1/digest/leaves`). Each answers for another member too with
//! `?node=ID|NAME`: the request then travels over the authenticated peer
//! connection ([`super::forward`]) and that member checks the caller's
//! token itself, so no member's API has to be reachable by the operator.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::error::{error, node_error, ApiError};
use super::forward;
use super::query::Params;
use super::{wire, Api};
use crate::core::digest::{level_width, FINGERPRINT_BYTES, LEAF_LEVEL};
use crate::core::types::hex;
use crate::node::{DigestReport, KeyHash};

/// Most parents one `/v1/digest/tree` request names (16 fingerprints each
/// come back), and most leaves one `/v1/digest/leaves` request names.
pub const DESCENT_BATCH_MAX: usize = 512;

/// Which keys a digest or hash list covers.
#[derive(Debug)]
struct DigestQuery {
    prefix: String,
    /// Check every record against its value first.
    deep: bool,
}

impl DigestQuery {
    fn parse(q: &Params) -> DigestQuery {
        DigestQuery {
            prefix: q.text("prefix").unwrap_or_default().to_string(),
            deep: q.flag("deep"),
        }
    }
}

/// The answer of the member `?node=` names, if it names another one.
async fn elsewhere(api: &Api, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    forward::elsewhere(api, &Method::GET, uri, headers, Body::empty())
        .await
        .ok()
}

/// `GET /v1/digest?prefix=&deep`: the root over the live keys under the
/// prefix; with `deep`, after checking every record against its value.
pub(super) async fn digest(State(api): State<Arc<Api>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(answer) = elsewhere(&api, &uri, &headers).await {
        return answer;
    }
    let go = async {
        let q = DigestQuery::parse(&Params::parse(&uri)?);
        let report = if q.deep {
            api.node.deep_digest(&q.prefix).await.map_err(node_error)?
        } else {
            DigestReport {
                root: api.node.digest(&q.prefix).await.map_err(node_error)?,
                deep: false,
                damaged_found: 0,
                digest_repaired: false,
                quarantined: api.status_cached().map_or(0, |s| s.replica.quarantined),
            }
        };
        let index = api.node.index();
        let doc = wire::Digest {
            node: api.node.id().to_string(),
            name: api.node.name().to_string(),
            region: api.node.region().to_string(),
            prefix: q.prefix,
            root: hex(&report.root),
            index,
            deep: report.deep,
            damaged_found: report.damaged_found as u64,
            digest_repaired: report.digest_repaired,
            quarantined: report.quarantined as u64,
        };
        Ok::<_, ApiError>((api.headers(index), axum::Json(doc)).into_response())
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

fn key_hashes(list: &[KeyHash]) -> Vec<wire::KeyHash> {
    list.iter()
        .map(|k| wire::KeyHash {
            key: k.key.clone(),
            deleted: k.deleted,
            stamp: k.stamp.to_string(),
            hash: hex(&k.hash),
        })
        .collect()
}

/// `GET /v1/hashes?prefix=`: every key under the prefix (tombstones
/// included) with its stamp and entry hash, for `meridian verify --diff`.
pub(super) async fn hashes(State(api): State<Arc<Api>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(answer) = elsewhere(&api, &uri, &headers).await {
        return answer;
    }
    let go = async {
        let q = DigestQuery::parse(&Params::parse(&uri)?);
        let list = api.node.hashes(&q.prefix).await.map_err(node_error)?;
        Ok::<_, ApiError>(axum::Json(key_hashes(&list)).into_response())
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

/// A comma-separated list of indices, each below `width`, at most
/// [`DESCENT_BATCH_MAX`] of them.
fn indices(q: &Params, name: &str, width: usize) -> Result<Vec<u32>, ApiError> {
    let text = q.text(name).unwrap_or_default();
    let list: Vec<u32> = text
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .ok()
                .filter(|i| (*i as usize) < width)
                .ok_or_else(|| {
                    error(
                        StatusCode::BAD_REQUEST,
                        format!("?{name}= takes indices below {width}, separated by commas: {t:?} is not one"),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    if list.is_empty() || list.len() > DESCENT_BATCH_MAX {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "?{name}= takes 1 to {DESCENT_BATCH_MAX} indices, got {}",
                list.len()
            ),
        ));
    }
    Ok(list)
}

/// `GET /v1/digest/tree?level=L&parents=P,Q`: the fingerprints of the
/// children (at level `L`, 1..=5) of the parents (at `L - 1`).
pub(super) async fn tree(State(api): State<Arc<Api>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(answer) = elsewhere(&api, &uri, &headers).await {
        return answer;
    }
    let go = async {
        let q = Params::parse(&uri)?;
        let level = q
            .number("level")?
            .and_then(|l| u8::try_from(l).ok())
            .filter(|l| (1..=LEAF_LEVEL).contains(l))
            .ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("?level= is required, 1 to {LEAF_LEVEL}"),
                )
            })?;
        let parents = indices(&q, "parents", level_width(level - 1))?;
        let prints = api
            .node
            .digest_children(level, parents.clone())
            .await
            .map_err(node_error)?;
        let mut fingerprints = String::with_capacity(prints.len() * FINGERPRINT_BYTES * 2);
        for f in &prints {
            fingerprints.push_str(&hex(f));
        }
        let doc = wire::DigestChildren {
            level,
            parents,
            fingerprints,
        };
        Ok::<_, ApiError>(axum::Json(doc).into_response())
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/digest/leaves?leaves=A,B`: every key in those leaves
/// (tombstones included) with its stamp and entry hash.
pub(super) async fn leaves(State(api): State<Arc<Api>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(answer) = elsewhere(&api, &uri, &headers).await {
        return answer;
    }
    let go = async {
        let q = Params::parse(&uri)?;
        let leaves = indices(&q, "leaves", level_width(LEAF_LEVEL))?;
        let list = api
            .node
            .leaf_hashes(leaves.clone())
            .await
            .map_err(node_error)?;
        let doc = wire::DigestLeaves {
            leaves,
            keys: key_hashes(&list),
        };
        Ok::<_, ApiError>(axum::Json(doc).into_response())
    };
    go.await.unwrap_or_else(IntoResponse::into_response)
}
