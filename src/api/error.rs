//! `api::error`: how a failed request is answered: the status code each
//! error of the node, the replica and the request body maps to, and the
//! JSON body ([`ErrorBody`]) that names what was wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::server;
use super::wire::ErrorBody;
use crate::core::codec::RefusalClass;
use crate::core::doc::DocError;
use crate::core::types::KeyError;
use crate::node::NodeError;
use crate::sync::{BarrierError, ForwardError, WriteError};

/// A request that failed: its status and a message naming what was wrong,
/// sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status of the answer.
    pub code: StatusCode,
    /// What was wrong, for a person to read.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
        };
        (self.code, axum::Json(body)).into_response()
    }
}

pub(super) fn error(code: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
    }
}

pub(super) fn node_error(e: NodeError) -> ApiError {
    match e {
        NodeError::Write(w) => write_error(w),
        NodeError::Stopped => error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down"),
        NodeError::StoreUnavailable {
            disk_full: true, ..
        }
        | NodeError::NotDurable {
            disk_full: true, ..
        } => error(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
        e @ (NodeError::StoreUnavailable { .. }
        | NodeError::NotDurable { .. }
        | NodeError::Quarantined { .. }) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        NodeError::Snapshot(m) => error(StatusCode::CONFLICT, m),
        NodeError::Barrier(b @ BarrierError::TooMany { .. }) => {
            error(StatusCode::TOO_MANY_REQUESTS, b.to_string())
        }
        NodeError::Barrier(b) => error(StatusCode::SERVICE_UNAVAILABLE, b.to_string()),
        e @ NodeError::TxnFailed(_) => error(StatusCode::CONFLICT, e.to_string()),
        NodeError::Document(d) => error(doc_status(&d), d.to_string()),
        e @ NodeError::NotReplicated(_) => error(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

pub(super) fn write_error(e: WriteError) -> ApiError {
    let code = match &e {
        WriteError::Key(KeyError::TooLong { .. })
        | WriteError::Value(_)
        | WriteError::TooManyKeys { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        WriteError::Key(_) | WriteError::CasMismatch { .. } => StatusCode::BAD_REQUEST,
        WriteError::TooManyPending { .. } => StatusCode::TOO_MANY_REQUESTS,
        WriteError::Forward(f) => match f {
            ForwardError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            ForwardError::Refused { class, .. } => match class {
                RefusalClass::Invalid => StatusCode::BAD_REQUEST,
                RefusalClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                RefusalClass::Busy => StatusCode::TOO_MANY_REQUESTS,
                RefusalClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            },
            ForwardError::Changed { .. } => StatusCode::CONFLICT,
            ForwardError::NoServer
            | ForwardError::ServerNeeded { .. }
            | ForwardError::LocalFull { .. }
            | ForwardError::Lost
            | ForwardError::Timeout { .. }
            | ForwardError::NotAcknowledged(_) => StatusCode::SERVICE_UNAVAILABLE,
        },
        WriteError::NoQuorum { .. }
        | WriteError::Standby
        | WriteError::Left
        | WriteError::Rebuilding
        | WriteError::ClockOffset { .. } => StatusCode::SERVICE_UNAVAILABLE,
        WriteError::Clock(_) => StatusCode::SERVICE_UNAVAILABLE,
        WriteError::Document(d) => doc_status(d),
    };
    error(code, e.to_string())
}

/// The status of a refused document operation.
pub(super) fn doc_status(e: &DocError) -> StatusCode {
    match e {
        DocError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        DocError::NotDocument => StatusCode::CONFLICT,
        DocError::Repairing => StatusCode::SERVICE_UNAVAILABLE,
        DocError::Damaged(_) => StatusCode::INTERNAL_SERVER_ERROR,
        DocError::NotJson(_)
        | DocError::NotObject { .. }
        | DocError::TooDeep { .. }
        | DocError::Heads(_) => StatusCode::BAD_REQUEST,
    }
}

/// The answer to a request body that could not be read: too long (413),
/// too slow (408), or broken (400).
pub(super) fn body_error(e: &axum::Error, max: usize, what: &str) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{what} is more than the limit of {max} bytes"),
            );
        }
        if let Some(t) = c.downcast_ref::<server::BodyTimeout>() {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body stalled: {t}"),
            );
        }
        cause = c.source();
    }
    error(
        StatusCode::BAD_REQUEST,
        format!("cannot read the request body: {e}"),
    )
}

pub(super) fn key_error(e: KeyError) -> ApiError {
    let code = match e {
        KeyError::TooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    error(code, e.to_string())
}
