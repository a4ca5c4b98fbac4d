//! `/api/v1/reconcile`: run a reconcile pass now, and read the drift reports of past passes
//! (`src/workflow/reconcile.rs`).

use actix_web::web::{self, Json};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::{ApiPath, ApiQuery, Page, Paging};
use crate::auth::{Auth, Operator, Viewer};
use crate::error::{ApiError, ApiResult, Problem};
use crate::startup::AppState;
use crate::workflow::reconcile::{ReconcileError, Report, RunSummary, Trigger};

/// Registers this resource's routes (and their documentation).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(run_now)
        .service(last_run)
        .service(list_runs)
        .service(get_run);
}

impl From<ReconcileError> for ApiError {
    fn from(e: ReconcileError) -> Self {
        match e {
            ReconcileError::Database(e) => e.into(),
            busy @ ReconcileError::Busy => Self::Unavailable(busy.to_string()),
        }
    }
}

/// Runs a reconcile pass on this replica now (after a pass another replica is running, if
/// any) and answers its drift report.
#[utoipa::path(post, path = "/api/v1/reconcile", impl_for = run_now, tag = "reconcile",
    responses((status = 200, body = Report), (status = 503, body = Problem)))]
#[actix_web::post("/api/v1/reconcile")]
async fn run_now(_auth: Auth<Operator>, st: web::Data<AppState>) -> ApiResult<Json<Report>> {
    Ok(Json(st.reconciler.run(Trigger::Request).await?))
}

fn decode<T: serde::de::DeserializeOwned>(report: serde_json::Value) -> ApiResult<T> {
    serde_json::from_value(report)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("stored reconcile report")))
}

/// The drift report of the latest pass (of any replica); 404 before the first.
#[utoipa::path(get, path = "/api/v1/reconcile/last", impl_for = last_run, tag = "reconcile",
    responses((status = 200, body = Report), (status = 404, body = Problem)))]
#[actix_web::get("/api/v1/reconcile/last")]
async fn last_run(_auth: Auth<Viewer>, st: web::Data<AppState>) -> ApiResult<Json<Report>> {
    let report = sqlx::query_scalar!("SELECT report FROM reconcile_runs ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&st.db)
        .await?
        .ok_or_else(|| ApiError::NotFound("no reconcile pass has run yet".into()))?;
    Ok(Json(decode(report)?))
}

/// One pass's drift report.
#[utoipa::path(get, path = "/api/v1/reconcile/runs/{id}", impl_for = get_run, tag = "reconcile",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Report), (status = 404, body = Problem)))]
#[actix_web::get("/api/v1/reconcile/runs/{id}")]
async fn get_run(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Report>> {
    let report = sqlx::query_scalar!("SELECT report FROM reconcile_runs WHERE id = $1", id)
        .fetch_optional(&st.db)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no reconcile pass {id} is kept")))?;
    Ok(Json(decode(report)?))
}

/// The latest passes, newest first (the last 100 are kept); their items are at
/// `/reconcile/runs/{id}`.
#[utoipa::path(get, path = "/api/v1/reconcile/runs", impl_for = list_runs, tag = "reconcile",
    params(Paging), responses((status = 200, body = Page<RunSummary>)))]
#[actix_web::get("/api/v1/reconcile/runs")]
async fn list_runs(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<RunSummary>>> {
    let (before, limit) = paging.resolve()?;
    let rows = sqlx::query!(
        r#"SELECT seq, report - 'items' AS "report!" FROM reconcile_runs
           WHERE ($1::bigint IS NULL OR seq < $1) ORDER BY seq DESC LIMIT $2"#,
        before,
        limit + 1
    )
    .fetch_all(&st.db)
    .await?;
    Ok(Json(Page::decode(rows, limit, |r| {
        Ok((r.seq, decode(r.report)?))
    })?))
}
