//! API errors as RFC 9457 `application/problem+json`, each kind with a stable `type` URI.

use actix_web::http::header::RETRY_AFTER;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weft_apic::{ApicError, PreflightError};

use crate::alloc::AllocError;
use crate::domain::ParseError;

/// Prefix of every problem `type`; the suffix is the error kind and never changes meaning.
pub const PROBLEM_BASE: &str = "https://weft.dev/problems/";

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Stable machine-readable kind, e.g. `https://weft.dev/problems/pool-exhausted`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The APIC object at fault (`preflight-failed` problems).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_dn: Option<String>,
}

/// The part of a request that can be over a limit; each has its own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Body,
    Uri,
    Headers,
}

impl Limit {
    fn status(self) -> StatusCode {
        match self {
            Self::Body => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Uri => StatusCode::URI_TOO_LONG,
            Self::Headers => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("role `{have}` may not do this; it needs `{need}`")]
    Forbidden {
        have: &'static str,
        need: &'static str,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("this method is not allowed on this resource")]
    MethodNotAllowed,
    /// A body, URI or header section over the server's limits.
    #[error("{1}")]
    TooLarge(Limit, String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("no APIC is configured on this Weft server (the [apic] section)")]
    ApicNotConfigured,
    /// Talking to the APIC failed; the message never carries a password, token or cookie.
    #[error("{0}")]
    Apic(#[from] ApicError),
    /// The fabric would refuse the binding; `object_dn` names the APIC object at fault.
    #[error("{detail}")]
    PreflightFailed {
        object_dn: Option<String>,
        detail: String,
    },
    /// Configured uplinks and the APIC's LLDP neighbours disagree.
    #[error("{0}")]
    UplinkConflict(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Malformed(_) => (
                StatusCode::BAD_REQUEST,
                "malformed-request",
                "Malformed request",
            ),
            Self::Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-input",
                "Invalid input",
            ),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Self::TooLarge(limit, _) => (limit.status(), "too-large", "Request too large"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::InUse(_) => (StatusCode::CONFLICT, "in-use", "Resource in use"),
            Self::Exhausted(_) => (StatusCode::CONFLICT, "pool-exhausted", "Pool exhausted"),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Self::ApicNotConfigured => (
                StatusCode::SERVICE_UNAVAILABLE,
                "apic-not-configured",
                "No APIC configured",
            ),
            Self::Apic(e) => match e {
                ApicError::Unavailable { .. } => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "apic-unavailable",
                    "APIC unavailable",
                ),
                ApicError::Auth { .. } => (
                    StatusCode::BAD_GATEWAY,
                    "apic-auth-failed",
                    "APIC login failed",
                ),
                ApicError::NotOwned { .. } => (
                    StatusCode::CONFLICT,
                    "apic-not-owned",
                    "APIC object not owned by Weft",
                ),
                ApicError::Api { .. } | ApicError::Protocol { .. } | ApicError::Config(_) => {
                    (StatusCode::BAD_GATEWAY, "apic-error", "APIC error")
                }
            },
            Self::PreflightFailed { .. } => (
                StatusCode::CONFLICT,
                "preflight-failed",
                "Pre-flight check failed",
            ),
            Self::UplinkConflict(_) => (
                StatusCode::CONFLICT,
                "uplink-conflict",
                "Configured uplinks and LLDP disagree",
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match DbOutage::of(&e) {
            Some(outage) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::Unavailable(format!("{outage}; retry later"))
            }
            None => Self::Internal(anyhow::Error::new(e).context("database query failed")),
        }
    }
}

/// Why the database cannot serve a request right now; a client can retry (503), unlike a query
/// that failed (500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DbOutage {
    #[error("the database is busy: no connection became free in time")]
    Saturated,
    #[error("the database is unreachable (connection refused, lost or closed)")]
    Unreachable,
}

impl DbOutage {
    /// `None` when `e` is an error of the query itself rather than of getting to the database.
    pub fn of(e: &sqlx::Error) -> Option<Self> {
        match e {
            sqlx::Error::PoolTimedOut => Some(Self::Saturated),
            sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Some(Self::Unreachable),
            // SQLSTATE classes 08 (connection exception) and 57P (server shut down or
            // restarting), 3D000 (the database was dropped), 53300 (too many connections).
            sqlx::Error::Database(d) => d
                .code()
                .filter(|c| {
                    c.starts_with("08") || c.starts_with("57P") || c == "3D000" || c == "53300"
                })
                .map(|_| Self::Unreachable),
            _ => None,
        }
    }
}

/// Seconds a client should wait before retrying a 503 `unavailable`.
const RETRY_AFTER_SECS: u32 = 5;

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        Self::Invalid(e.0)
    }
}

impl From<AllocError> for ApiError {
    fn from(e: AllocError) -> Self {
        match e {
            AllocError::Exhausted(m) => Self::Exhausted(m),
            AllocError::Unavailable(m) => Self::Conflict(m),
            AllocError::InUse(m) => Self::InUse(m),
            AllocError::Gone(m) => Self::NotFound(m),
            AllocError::OutOfRange(m) => Self::Invalid(m),
            AllocError::Database(e) => e.into(),
        }
    }
}

impl From<PreflightError> for ApiError {
    fn from(e: PreflightError) -> Self {
        match e {
            PreflightError::Apic(e) => Self::Apic(e),
            other => Self::PreflightFailed {
                object_dn: other.object_dn().map(str::to_owned),
                detail: other.to_string(),
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, kind, title) = self.parts();
        if let Self::Internal(e) = self {
            // The chain goes to the log only; the client sees a generic message.
            tracing::error!(error = ?e, "request failed");
        }
        if let Self::Apic(e) = self {
            tracing::warn!(error = %e, "APIC request failed");
        }
        let object_dn = match self {
            Self::PreflightFailed { object_dn, .. } => object_dn.clone(),
            _ => None,
        };
        let problem = Problem {
            kind: format!("{PROBLEM_BASE}{kind}"),
            title: title.into(),
            status: status.as_u16(),
            detail: self.to_string(),
            object_dn,
        };
        let mut resp = HttpResponse::build(status);
        resp.content_type(PROBLEM_JSON);
        if let Self::Unavailable(_) = self {
            resp.insert_header((RETRY_AFTER, RETRY_AFTER_SECS));
        }
        resp.json(problem)
    }
}

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

pub type ApiResult<T> = Result<T, ApiError>;
