//! Liveness, readiness and the OpenAPI document; none of them needs a token.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::error::{ApiError, ApiResult, Problem};
use crate::startup::{AppState, MIGRATOR};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The database answers and every migration this binary knows is applied.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses((status = 200, body = Health), (status = 503, body = Problem)))]
async fn readyz(State(st): State<AppState>) -> ApiResult<Json<Health>> {
    let applied: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(&st.db)
        .await
        .map_err(|e| ApiError::Unavailable(format!("database not ready: {}", db_reason(&e))))?;
    let missing: Vec<i64> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .filter(|v| !applied.iter().any(|(a,)| a == v))
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

/// A short reason that never includes connection strings.
fn db_reason(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Database(_) => "query failed (schema missing?)",
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => "unreachable",
        _ => "error",
    }
}

/// This API's OpenAPI 3.1 document (the same as `openapi/weft.json`).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health", security(()), responses((status = 200, description = "OpenAPI document")))]
async fn openapi_json(State(st): State<AppState>) -> Json<serde_json::Value> {
    Json((*st.openapi).clone())
}
