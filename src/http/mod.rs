//! HTTP resources under `/api/v1`, one module per resource, plus the extractors that turn
//! every rejected input into a problem+json response.

pub mod attachments;
pub mod audit;
pub mod epgs;
pub mod fabric;
pub mod health;
pub mod hosts;
pub mod pools;
pub mod preflight;
pub mod reconcile;
pub mod reservations;
pub mod tokens;

use std::future::{ready, Future, Ready};
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::{header, Method, StatusCode};
use actix_web::web::{self, BytesMut};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, Responder};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use utoipa::{IntoParams, ToSchema};

use crate::db::audit::{record, Actor};
use crate::db::Deleted;
use crate::error::{ApiError, ApiResult, Limit};
use crate::startup::AppState;

/// Largest JSON body any endpoint takes; bigger ones are 413 before they are parsed.
pub const JSON_LIMIT: usize = 1024 * 1024;

/// JSON body (`content-type: application/json`); syntax errors are 400, values refused by the
/// domain types are 422, a body over [`JSON_LIMIT`] is 413.
pub struct ApiJson<T>(pub T);

/// A JSON body that may be absent (empty or `null` means `T::default()`), with the same error
/// mapping and limit as [`ApiJson`]; the content type is not required.
pub struct OptionalJson<T>(pub T);

/// Path parameters; a segment that does not fit is 400.
pub struct ApiPath<T>(pub T);

/// Query parameters; a value that does not fit is 422.
pub struct ApiQuery<T>(pub T);

type BodyFuture<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = BodyFuture<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req
            .mime_type()
            .ok()
            .flatten()
            .is_some_and(|m| m.essence_str() == "application/json");
        let body = read_body(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::Malformed(
                    "expected a request with content-type: application/json".into(),
                ));
            }
            parse_json(&body.await?).map(ApiJson)
        })
    }
}

impl<T: DeserializeOwned + Default + 'static> FromRequest for OptionalJson<T> {
    type Error = ApiError;
    type Future = BodyFuture<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = read_body(req, payload);
        Box::pin(async move {
            let body = body.await?;
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJson(T::default()));
            }
            // `null` is an absent body too, as the document's nullable schema says.
            parse_json::<Option<T>>(&body).map(|t| OptionalJson(t.unwrap_or_default()))
        })
    }
}

/// Reads the whole body, refusing (413) one longer than [`JSON_LIMIT`] as soon as its declared
/// or received length says so.
fn read_body(req: &HttpRequest, payload: &mut Payload) -> BodyFuture<BytesMut> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut payload = payload.take();
    Box::pin(async move {
        if declared.is_some_and(|n| n > JSON_LIMIT) {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::Malformed(format!("reading the request body: {e}")))?;
            if body.len() + chunk.len() > JSON_LIMIT {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    })
}

fn too_large() -> ApiError {
    ApiError::TooLarge(
        Limit::Body,
        format!("the body is larger than {JSON_LIMIT} bytes"),
    )
}

/// Syntax errors are 400, values the target type refuses (and a NUL anywhere) are 422.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::Malformed(e.to_string()))?;
    refuse_nul_in_json(&value, "the body")?;
    serde_json::from_value(value).map_err(|e| ApiError::Invalid(e.to_string()))
}

/// Postgres text cannot hold a NUL byte (it answers `invalid byte sequence`), so no string that
/// may reach the database contains one: every extractor refuses it with this 422.
fn refuse_nul<'a>(strings: impl IntoIterator<Item = &'a str>, place: &str) -> ApiResult<()> {
    match strings.into_iter().any(|s| s.contains('\0')) {
        true => Err(ApiError::Invalid(format!(
            "{place} contains a NUL byte (U+0000)"
        ))),
        false => Ok(()),
    }
}

fn refuse_nul_in_json(value: &serde_json::Value, place: &str) -> ApiResult<()> {
    use serde_json::Value;
    match value {
        Value::String(s) => refuse_nul([s.as_str()], place),
        Value::Array(items) => items.iter().try_for_each(|v| refuse_nul_in_json(v, place)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            refuse_nul([k.as_str()], place)?;
            refuse_nul_in_json(v, place)
        }),
        _ => Ok(()),
    }
}

impl<T: DeserializeOwned> FromRequest for ApiPath<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let path = |e: actix_web::Error| ApiError::Malformed(format!("path: {e}"));
        ready((|| {
            // The segments as the handler gets them (percent-decoded), checked before use.
            let segments = web::Path::<Vec<String>>::extract(req)
                .into_inner()
                .map_err(path)?;
            refuse_nul(segments.iter().map(String::as_str), "a path segment")?;
            web::Path::<T>::extract(req)
                .into_inner()
                .map(|p| ApiPath(p.into_inner()))
                .map_err(path)
        })())
    }
}

impl<T: DeserializeOwned> FromRequest for ApiQuery<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let query = |e: actix_web::error::QueryPayloadError| ApiError::Invalid(e.to_string());
        ready((|| {
            let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
                .map_err(query)?;
            refuse_nul(
                pairs.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]),
                "a query parameter",
            )?;
            web::Query::<T>::from_query(req.query_string())
                .map(|q| ApiQuery(q.into_inner()))
                .map_err(query)
        })())
    }
}

/// The answer when no route matched: 405 (with `Allow`) when the path is one of ours under
/// another method, otherwise 404.
pub async fn fallback(req: HttpRequest, st: web::Data<AppState>) -> HttpResponse {
    let allowed = st.routes.allowed(req.path());
    if allowed.is_empty() {
        return actix_web::ResponseError::error_response(&ApiError::NotFound(
            "no such route".into(),
        ));
    }
    let mut resp = actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed);
    let allow = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = header::HeaderValue::from_str(&allow) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

/// Paging parameters shared by every list endpoint: keyset pagination over an opaque cursor.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Items per page, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
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
        // Exactly the documented pattern `^[0-9]{1,18}$` (every id and address fits in 18 digits).
        let after = match &self.cursor {
            None => None,
            Some(c) => Some(
                Some(c)
                    .filter(|c| {
                        (1..=18).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|c| c.parse::<i64>().ok())
                    .ok_or_else(|| {
                        ApiError::Invalid("cursor is not one this server handed out".into())
                    })?,
            ),
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

impl<T: Serialize> Responder for Put<T> {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        let status = if self.0 {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        HttpResponse::build(status).json(self.1)
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
) -> ApiResult<HttpResponse> {
    match outcome {
        Deleted::Missing => return Ok(HttpResponse::NoContent().finish()),
        Deleted::InUse(n) => return Err(ApiError::InUse(in_use(n))),
        Deleted::Done => {}
    }
    record(&mut tx, actor, action, resource, before, None::<&T>).await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
