//! HTTP resources under `/api/v1`, one module per resource, plus the extractors that turn
//! every rejected input into a problem+json response.

pub mod audit;
pub mod epgs;
pub mod fabric;
pub mod health;
pub mod hosts;
pub mod pools;
pub mod preflight;
pub mod reservations;
pub mod tokens;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use utoipa::{IntoParams, ToSchema};

use crate::db::audit::{record, Actor};
use crate::db::Deleted;
use crate::error::{ApiError, ApiResult};

/// JSON body; syntax errors are 400, values refused by the domain types are 422.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Path parameters as problem+json on rejection.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters as problem+json on rejection.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => ApiError::Invalid(e.body_text()),
            other => ApiError::Malformed(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::Malformed(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::Invalid(r.body_text())
    }
}

/// A JSON body that may be absent (empty means `T::default()`), with the same error mapping
/// as [`ApiJson`].
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Invalid(e.to_string()),
        _ => ApiError::Malformed(e.to_string()),
    })
}

/// Unknown routes get a problem too.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// A known route with the wrong method gets a problem too.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Paging parameters shared by every list endpoint: keyset pagination over an opaque cursor.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Items per page, 1-1000 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

impl Paging {
    /// (id to continue from, page size), both checked.
    pub fn resolve(&self) -> Result<(Option<i64>, i64), ApiError> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::Invalid(format!(
                "limit {limit} is outside 1-1000"
            )));
        }
        let after = match &self.cursor {
            None => None,
            Some(c) => Some(c.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
                ApiError::Invalid("cursor is not one this server handed out".into())
            })?),
        };
        Ok((after, limit))
    }
}

/// One page of a list; `next_cursor` is absent on the last page.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from rows fetched with `LIMIT limit + 1` (the extra row only tells that
    /// more follow and is not decoded); `decode` turns a row into (id, item).
    pub fn decode<R>(
        mut rows: Vec<R>,
        limit: i64,
        decode: impl FnMut(R) -> ApiResult<(i64, T)>,
    ) -> ApiResult<Self> {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let rows = rows
            .into_iter()
            .map(decode)
            .collect::<ApiResult<Vec<_>>>()?;
        let next_cursor = if more {
            rows.last().map(|(id, _)| id.to_string())
        } else {
            None
        };
        Ok(Self {
            items: rows.into_iter().map(|(_, t)| t).collect(),
            next_cursor,
        })
    }
}

/// Result of a declarative PUT: 201 when the resource was created, 200 when replaced.
pub struct Put<T>(pub bool, pub T);

impl<T: Serialize> IntoResponse for Put<T> {
    fn into_response(self) -> Response {
        let status = if self.0 {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        (status, axum::Json(self.1)).into_response()
    }
}

/// The error for a row a transaction wrote and then could not read back.
pub(crate) fn vanished(what: &str) -> ApiError {
    ApiError::Internal(anyhow::anyhow!(
        "{what} vanished inside its own transaction"
    ))
}

/// The end of a PUT that changed something: audited with both states, committed, 201 or 200.
pub(crate) async fn finish_put<T: Serialize>(
    mut tx: Transaction<'_, Postgres>,
    created: bool,
    actor: Actor<'_>,
    action: &str,
    resource: &str,
    before: Option<&T>,
    after: T,
) -> ApiResult<Put<T>> {
    record(&mut tx, actor, action, resource, before, Some(&after)).await?;
    tx.commit().await?;
    Ok(Put(created, after))
}

/// The end of a DELETE of a named resource: absent is a no-op, in use is a 409 saying by
/// what (`in_use` gets the count), otherwise the deletion is audited with `before` and
/// committed. Always 204 on success, so a repeated DELETE answers the same.
pub(crate) async fn finish_delete<T: Serialize>(
    mut tx: Transaction<'_, Postgres>,
    outcome: Deleted,
    in_use: impl FnOnce(i64) -> String,
    actor: Actor<'_>,
    action: &str,
    resource: &str,
    before: Option<&T>,
) -> ApiResult<StatusCode> {
    match outcome {
        Deleted::Missing => return Ok(StatusCode::NO_CONTENT),
        Deleted::InUse(n) => return Err(ApiError::InUse(in_use(n))),
        Deleted::Done => {}
    }
    record(&mut tx, actor, action, resource, before, None::<&T>).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
