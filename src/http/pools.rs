//! `/api/v1/vlan-pools`: VLAN pools, their ranges and usage.

use actix_web::web::{self, Json};
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::{finish_delete, finish_put, vanished, ApiJson, ApiPath, ApiQuery, Page, Paging, Put};
use crate::auth::{Admin, Auth, Viewer};
use crate::db::pools::{self, PoolRow};
use crate::domain::{ApicName, VlanRange};
use crate::error::{ApiError, ApiResult, Problem};
use crate::startup::AppState;

/// Registers this resource's routes (and their documentation).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_pools)
        .service(get_pool)
        .service(put_pool)
        .service(delete_pool);
}

/// What a client declares about a pool.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Non-overlapping VLAN ranges, at least one.
    pub ranges: Vec<VlanRange>,
    /// A physical domain whose static VLAN blocks the pool follows: each reconcile pass sets
    /// `ranges` to them (unless a VLAN held by an EPG would fall outside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_domain: Option<ApicName>,
}

/// How much of a pool is in use.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolUsage {
    pub total: i64,
    /// Held by EPGs.
    pub allocated: i64,
    /// Released, not reusable before their quarantine ends.
    pub quarantined: i64,
    pub free: i64,
}

/// A pool as stored, with server-computed usage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Pool {
    pub name: ApicName,
    pub ranges: Vec<VlanRange>,
    /// The physical domain whose VLAN blocks the reconciler copies into `ranges`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_domain: Option<ApicName>,
    pub usage: PoolUsage,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Pool {
    fn from_row(r: PoolRow) -> ApiResult<Self> {
        let total: i64 = r.ranges.iter().map(|r| i64::from(r.size())).sum();
        Ok(Self {
            name: ApicName::parse(&r.name)?,
            usage: PoolUsage {
                total,
                allocated: r.allocated,
                quarantined: r.quarantined,
                free: total - r.allocated - r.quarantined,
            },
            ranges: r.ranges,
            follow_domain: r
                .follow_domain
                .as_deref()
                .map(ApicName::parse)
                .transpose()?,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PoolFilter {
    /// Only pools whose name starts with this.
    #[param(pattern = r"^[^\x00]*$")]
    pub name_prefix: Option<String>,
}

fn resource(name: &ApicName) -> String {
    format!("vlan-pools/{name}")
}

/// A stored pool, read in the caller's connection or transaction.
async fn read(conn: &mut PgConnection, name: &ApicName) -> ApiResult<Option<Pool>> {
    pools::get(conn, name.as_str())
        .await?
        .map(Pool::from_row)
        .transpose()
}

#[utoipa::path(get, path = "/api/v1/vlan-pools", impl_for = list_pools, tag = "vlan-pools", params(Paging, PoolFilter),
    responses((status = 200, body = Page<Pool>)))]
#[actix_web::get("/api/v1/vlan-pools")]
async fn list_pools(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiQuery(paging): ApiQuery<Paging>,
    ApiQuery(filter): ApiQuery<PoolFilter>,
) -> ApiResult<Json<Page<Pool>>> {
    let (after, limit) = paging.resolve()?;
    let mut conn = st.db.acquire().await?;
    let rows = pools::list(&mut conn, filter.name_prefix.as_deref(), after, limit + 1).await?;
    Ok(Json(Page::decode(rows, limit, |r| {
        Ok((r.id, Pool::from_row(r)?))
    })?))
}

#[utoipa::path(get, path = "/api/v1/vlan-pools/{name}", impl_for = get_pool, tag = "vlan-pools", params(("name" = ApicName, Path)),
    responses((status = 200, body = Pool), (status = 404, body = Problem)))]
#[actix_web::get("/api/v1/vlan-pools/{name}")]
async fn get_pool(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Pool>> {
    let name = ApicName::parse(&name)?;
    let mut conn = st.db.acquire().await?;
    read(&mut conn, &name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no VLAN pool `{name}`")))
}

/// Creates or replaces a pool. Shrinking the ranges below a VLAN held by an EPG is a 409.
/// A PUT that changes nothing writes nothing (no new `updated_at`, no audit entry).
#[utoipa::path(put, path = "/api/v1/vlan-pools/{name}", impl_for = put_pool, tag = "vlan-pools", params(("name" = ApicName, Path)), request_body = PoolSpec,
    responses((status = 200, body = Pool, description = "replaced"), (status = 201, body = Pool, description = "created"),
        (status = 409, body = Problem)))]
#[actix_web::put("/api/v1/vlan-pools/{name}")]
async fn put_pool(
    auth: Auth<Admin>,
    st: web::Data<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(mut spec): ApiJson<PoolSpec>,
) -> ApiResult<Put<Pool>> {
    let name = ApicName::parse(&name)?;
    // Stored and returned in order, so a repeated PUT compares equal whatever order it uses.
    spec.ranges.sort_by_key(|r| r.first);
    validate_ranges(&spec.ranges)?;
    let mut tx = st.db.begin().await?;
    let before = read(&mut tx, &name).await?;
    if let Some(unchanged) = before
        .as_ref()
        .filter(|b| b.ranges == spec.ranges && b.follow_domain == spec.follow_domain)
    {
        return Ok(Put(false, unchanged.clone()));
    }
    let (id, created) = pools::lock_or_create(&mut tx, name.as_str()).await?;
    let outside = pools::active_outside(&mut tx, id, &spec.ranges).await?;
    if !outside.is_empty() {
        return Err(ApiError::InUse(format!(
            "VLANs {outside:?} are held by EPGs and would fall outside the new ranges"
        )));
    }
    pools::set_ranges(&mut tx, id, &spec.ranges).await?;
    let follow = spec.follow_domain.as_ref().map(ApicName::as_str);
    pools::set_follow_domain(&mut tx, id, follow).await?;
    let after = read(&mut tx, &name)
        .await?
        .ok_or_else(|| vanished("pool"))?;
    finish_put(
        tx,
        created,
        auth.actor(),
        "vlan-pool.put",
        &resource(&name),
        before.as_ref(),
        after,
    )
    .await
}

/// Deletes a pool; 409 while an EPG uses it. Deleting a missing pool is a no-op.
#[utoipa::path(delete, path = "/api/v1/vlan-pools/{name}", impl_for = delete_pool, tag = "vlan-pools", params(("name" = ApicName, Path)),
    responses((status = 204, description = "deleted or absent"), (status = 409, body = Problem)))]
#[actix_web::delete("/api/v1/vlan-pools/{name}")]
async fn delete_pool(
    auth: Auth<Admin>,
    st: web::Data<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<HttpResponse> {
    let name = ApicName::parse(&name)?;
    let mut tx = st.db.begin().await?;
    let before = read(&mut tx, &name).await?;
    let outcome = pools::delete(&mut tx, name.as_str()).await?;
    finish_delete(
        tx,
        outcome,
        |n| format!("VLAN pool `{name}` is used by {n} EPG(s)"),
        auth.actor(),
        "vlan-pool.delete",
        &resource(&name),
        before.as_ref(),
    )
    .await
}

/// Checks ranges sorted by their first VLAN: in that order an overlap always shows between
/// neighbours, so the check is linear however many ranges a body lists.
fn validate_ranges(sorted: &[VlanRange]) -> ApiResult<()> {
    if sorted.is_empty() {
        return Err(ApiError::Invalid(
            "a pool needs at least one VLAN range".into(),
        ));
    }
    match sorted.windows(2).find(|w| w[0].overlaps(&w[1])) {
        Some([a, b]) => Err(ApiError::Invalid(format!(
            "VLAN ranges {}-{} and {}-{} overlap",
            a.first, a.last, b.first, b.last
        ))),
        _ => Ok(()),
    }
}
