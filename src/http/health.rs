//! Liveness, readiness and the OpenAPI document; none of them needs a token.

use actix_web::web::{self, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::error::{ApiError, ApiResult, DbOutage, Problem};
use crate::startup::{AppState, MIGRATOR};

/// Registers this resource's routes (and their documentation).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(healthz).service(readyz).service(openapi_json);
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", impl_for = healthz, tag = "health", security(()), responses((status = 200, body = Health)))]
#[actix_web::get("/healthz")]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The database answers and every migration this binary knows is applied.
#[utoipa::path(get, path = "/readyz", impl_for = readyz, tag = "health", security(()), responses((status = 200, body = Health), (status = 503, body = Problem)))]
#[actix_web::get("/readyz")]
async fn readyz(st: web::Data<AppState>) -> ApiResult<Json<Health>> {
    let applied = sqlx::query_scalar!("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(&st.db)
        .await
        .map_err(|e| ApiError::Unavailable(format!("database not ready: {}", db_reason(&e))))?;
    let missing: Vec<i64> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "migrations not applied: {missing:?}; run `weft migrate`"
        )));
    }
    Ok(Json(Health {
        status: "ready".into(),
    }))
}

/// A short reason that never includes connection strings. A lost database and a missing schema
/// say so differently: the first needs the database back, the second `weft migrate`.
fn db_reason(e: &sqlx::Error) -> String {
    if let Some(outage) = DbOutage::of(e) {
        return outage.to_string();
    }
    match e {
        // 42P01 undefined_table: the database answers but was never migrated.
        sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => {
            "schema missing (no migrations applied); run `weft migrate`".into()
        }
        _ => "the readiness query failed".into(),
    }
}

/// This API's OpenAPI 3.1 document (the same as `openapi/weft.json`).
#[utoipa::path(get, path = "/api/v1/openapi.json", impl_for = openapi_json, tag = "health", security(()), responses((status = 200, description = "OpenAPI document")))]
#[actix_web::get("/api/v1/openapi.json")]
async fn openapi_json(st: web::Data<AppState>) -> Json<serde_json::Value> {
    Json((*st.openapi).clone())
}
