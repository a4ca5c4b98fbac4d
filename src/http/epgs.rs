//! `/api/v1/epgs/{tenant}/{app}/{epg}`: EPGs, their subnets and their VLAN.

use actix_web::web::{self, Json};
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::{finish_put, vanished, ApiJson, ApiPath, ApiQuery, Page, Paging, Put};
use crate::alloc::vlan;
use crate::auth::{Auth, Operator, Viewer};
use crate::db::{audit, epgs, epgs::EpgRow, pools, subnets};
use crate::domain::{ApicName, BindingMode, Encap, EpgKey, Immediacy, SubnetSpec, VlanId};
use crate::error::{ApiError, ApiResult, Problem};
use crate::startup::AppState;

/// Registers this resource's routes (and their documentation).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_epgs)
        .service(get_epg)
        .service(put_epg)
        .service(delete_epg);
}

/// What a client declares about an EPG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EpgSpec {
    pub bridge_domain: ApicName,
    pub physical_domain: ApicName,
    /// The pool the EPG's VLAN comes from; fixed once the EPG exists.
    pub vlan_pool: ApicName,
    /// Wanted VLAN, honoured at creation when free (otherwise the lowest free one is used).
    #[serde(default)]
    pub requested_vlan: Option<VlanId>,
    #[serde(default)]
    pub mode: BindingMode,
    #[serde(default)]
    pub immediacy: Immediacy,
    /// Whether Weft may create the tenant, application profile and EPG on the APIC.
    #[serde(default)]
    pub managed: bool,
    /// One or more non-overlapping subnets; addresses are handed out from the first with room.
    pub subnets: Vec<SubnetSpec>,
}

/// An EPG as stored: the declared fields plus its VLAN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Epg {
    pub tenant: ApicName,
    pub app: ApicName,
    pub epg: ApicName,
    /// APIC DN, `uni/tn-{tenant}/ap-{app}/epg-{epg}`.
    pub dn: String,
    pub bridge_domain: ApicName,
    pub physical_domain: ApicName,
    pub vlan_pool: ApicName,
    pub requested_vlan: Option<VlanId>,
    /// The VLAN allocated to this EPG; it changes only when a PUT changes `requested_vlan`.
    pub vlan: VlanId,
    pub encap: Encap,
    pub mode: BindingMode,
    pub immediacy: Immediacy,
    pub managed: bool,
    pub subnets: Vec<SubnetSpec>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Epg {
    /// The declared part, to tell a repeated PUT from a change.
    fn spec(&self) -> EpgSpec {
        EpgSpec {
            bridge_domain: self.bridge_domain.clone(),
            physical_domain: self.physical_domain.clone(),
            vlan_pool: self.vlan_pool.clone(),
            requested_vlan: self.requested_vlan,
            mode: self.mode,
            immediacy: self.immediacy,
            managed: self.managed,
            subnets: self.subnets.clone(),
        }
    }
}

/// Reads the full EPG (row + subnets) in the caller's transaction.
pub(crate) async fn load(conn: &mut PgConnection, key: &EpgKey) -> ApiResult<Option<Epg>> {
    let Some(row) = epgs::get(conn, key).await? else {
        return Ok(None);
    };
    let subnets = subnets::for_epg(conn, row.id).await?;
    Ok(Some(to_epg(
        row,
        subnets.into_iter().map(|s| s.spec).collect(),
    )?))
}

fn to_epg(r: EpgRow, subnets: Vec<SubnetSpec>) -> ApiResult<Epg> {
    let key = EpgKey {
        tenant: ApicName::parse(&r.tenant)?,
        app: ApicName::parse(&r.app)?,
        epg: ApicName::parse(&r.name)?,
    };
    let vlan = r
        .vlan
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("EPG {key} has no VLAN assignment")))?;
    let vlan = VlanId::from_i64(i64::from(vlan))?;
    Ok(Epg {
        dn: key.dn(),
        tenant: key.tenant,
        app: key.app,
        epg: key.epg,
        bridge_domain: ApicName::parse(&r.bridge_domain)?,
        physical_domain: ApicName::parse(&r.physical_domain)?,
        vlan_pool: ApicName::parse(&r.pool)?,
        requested_vlan: r
            .requested_vlan
            .map(|v| VlanId::from_i64(i64::from(v)))
            .transpose()?,
        vlan,
        encap: Encap::from(vlan),
        mode: BindingMode::parse(&r.mode)?,
        immediacy: Immediacy::parse(&r.immediacy)?,
        managed: r.managed,
        subnets,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

/// Parses the three path segments of an EPG.
pub(crate) fn key((tenant, app, epg): (String, String, String)) -> ApiResult<EpgKey> {
    Ok(EpgKey {
        tenant: ApicName::parse(&tenant)?,
        app: ApicName::parse(&app)?,
        epg: ApicName::parse(&epg)?,
    })
}

fn resource(key: &EpgKey) -> String {
    format!("epgs/{key}")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EpgFilter {
    #[param(pattern = r"^[^\x00]*$")]
    pub tenant: Option<String>,
    #[param(pattern = r"^[^\x00]*$")]
    pub app: Option<String>,
    #[param(pattern = r"^[^\x00]*$")]
    pub vlan_pool: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/epgs", impl_for = list_epgs, tag = "epgs", params(Paging, EpgFilter),
    responses((status = 200, body = Page<Epg>)))]
#[actix_web::get("/api/v1/epgs")]
async fn list_epgs(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiQuery(paging): ApiQuery<Paging>,
    ApiQuery(f): ApiQuery<EpgFilter>,
) -> ApiResult<Json<Page<Epg>>> {
    let (after, limit) = paging.resolve()?;
    let mut conn = st.db.acquire().await?;
    let filter = epgs::Filter {
        tenant: f.tenant.as_deref(),
        app: f.app.as_deref(),
        pool: f.vlan_pool.as_deref(),
    };
    let rows = epgs::list(&mut conn, &filter, after, limit + 1).await?;
    // One query for the whole page's subnets, not one per EPG.
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut subnets = subnets::for_epgs(&mut conn, &ids).await?;
    let page = Page::decode(rows, limit, |row| {
        let specs = subnets.remove(&row.id).unwrap_or_default();
        Ok((
            row.id,
            to_epg(row, specs.into_iter().map(|s| s.spec).collect())?,
        ))
    })?;
    Ok(Json(page))
}

#[utoipa::path(get, path = "/api/v1/epgs/{tenant}/{app}/{epg}", impl_for = get_epg, tag = "epgs",
    params(("tenant" = ApicName, Path), ("app" = ApicName, Path), ("epg" = ApicName, Path)),
    responses((status = 200, body = Epg), (status = 404, body = Problem)))]
#[actix_web::get("/api/v1/epgs/{tenant}/{app}/{epg}")]
async fn get_epg(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiPath(path): ApiPath<(String, String, String)>,
) -> ApiResult<Json<Epg>> {
    let key = key(path)?;
    let mut conn = st.db.acquire().await?;
    load(&mut conn, &key)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no EPG {key}")))
}

/// Creates or updates an EPG. On creation it gets one VLAN from its pool (409 when the pool is
/// exhausted); later PUTs keep that VLAN unless they change `requested_vlan`: then the EPG moves
/// to it (the old VLAN goes into quarantine), or 409 says why it cannot (the VLAN is held or
/// quarantined, or attachments use the current one). A PUT that changes nothing writes nothing.
#[utoipa::path(put, path = "/api/v1/epgs/{tenant}/{app}/{epg}", impl_for = put_epg, tag = "epgs",
    params(("tenant" = ApicName, Path), ("app" = ApicName, Path), ("epg" = ApicName, Path)), request_body = EpgSpec,
    responses((status = 200, body = Epg, description = "updated"), (status = 201, body = Epg, description = "created"),
        (status = 409, body = Problem)))]
#[actix_web::put("/api/v1/epgs/{tenant}/{app}/{epg}")]
async fn put_epg(
    auth: Auth<Operator>,
    st: web::Data<AppState>,
    ApiPath(path): ApiPath<(String, String, String)>,
    ApiJson(spec): ApiJson<EpgSpec>,
) -> ApiResult<Put<Epg>> {
    let key = key(path)?;
    validate_subnets(&spec.subnets)?;
    let mut tx = st.db.begin().await?;
    // Pool first, then EPG, then subnets: every writer takes locks in this order.
    let pool_id = pools::lock(&mut tx, spec.vlan_pool.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::Invalid(format!("VLAN pool `{}` does not exist", spec.vlan_pool))
        })?;
    let before = load(&mut tx, &key).await?;
    if let Some(b) = &before {
        if b.vlan_pool != spec.vlan_pool {
            return Err(ApiError::Conflict(format!(
                "EPG {key} takes its VLAN from pool `{}`; delete and re-create it to change pools",
                b.vlan_pool
            )));
        }
        if b.spec() == spec {
            return Ok(Put(false, b.clone()));
        }
    }
    let columns = epgs::EpgColumns {
        bridge_domain: spec.bridge_domain.as_str(),
        physical_domain: spec.physical_domain.as_str(),
        pool_id,
        requested_vlan: spec.requested_vlan.map(|v| i32::from(v.get())),
        mode: spec.mode.as_str(),
        immediacy: spec.immediacy.as_str(),
        managed: spec.managed,
    };
    let (id, created) = epgs::upsert(&mut tx, &key, &columns).await?;
    if created {
        vlan::assign(&mut tx, pool_id, id, &key.to_string(), spec.requested_vlan).await?;
    } else if let (Some(b), Some(want)) = (&before, spec.requested_vlan) {
        // A changed wish is honoured, or refused with the reason; never silently ignored.
        if b.requested_vlan != Some(want) && b.vlan != want {
            let quarantine = st.quarantine.vlan;
            vlan::change(&mut tx, pool_id, id, &key.to_string(), want, quarantine).await?;
        }
    }
    subnets::replace(&mut tx, id, &spec.subnets).await?;
    let after = load(&mut tx, &key).await?.ok_or_else(|| vanished("EPG"))?;
    finish_put(
        tx,
        created,
        auth.actor(),
        "epg.put",
        &resource(&key),
        before.as_ref(),
        after,
    )
    .await
}

/// Deletes an EPG: 409 while attachments or reservations use it; its VLAN goes into quarantine.
#[utoipa::path(delete, path = "/api/v1/epgs/{tenant}/{app}/{epg}", impl_for = delete_epg, tag = "epgs",
    params(("tenant" = ApicName, Path), ("app" = ApicName, Path), ("epg" = ApicName, Path)),
    responses((status = 204, description = "deleted or absent"), (status = 409, body = Problem)))]
#[actix_web::delete("/api/v1/epgs/{tenant}/{app}/{epg}")]
async fn delete_epg(
    auth: Auth<Operator>,
    st: web::Data<AppState>,
    ApiPath(path): ApiPath<(String, String, String)>,
) -> ApiResult<HttpResponse> {
    let key = key(path)?;
    let mut tx = st.db.begin().await?;
    let Some((id, pool_id)) = epgs::ids_of(&mut tx, &key).await? else {
        return Ok(HttpResponse::NoContent().finish());
    };
    // Pool, then subnets, then the EPG row: PUT and reservations never lock in the opposite order.
    vlan::lock_pool(&mut tx, pool_id).await?;
    subnets::lock_for_epg(&mut tx, id).await?;
    let (attachments, reservations) = epgs::lock_and_count_users(&mut tx, id).await?;
    if attachments + reservations > 0 {
        return Err(ApiError::InUse(format!(
            "EPG {key} has {attachments} attachment(s) and {reservations} reservation(s)"
        )));
    }
    let before = load(&mut tx, &key).await?;
    vlan::release(&mut tx, id, st.quarantine.vlan).await?;
    epgs::delete(&mut tx, id).await?;
    audit::record(
        &mut tx,
        auth.actor(),
        "epg.delete",
        &resource(&key),
        before.as_ref(),
        None::<&Epg>,
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

fn validate_subnets(subnets: &[SubnetSpec]) -> ApiResult<()> {
    if subnets.is_empty() {
        return Err(ApiError::Invalid("an EPG needs at least one subnet".into()));
    }
    // In address order an overlap (one CIDR inside another) always shows between neighbours,
    // so the check is O(n log n) however many subnets a body lists.
    let mut by_address: Vec<_> = subnets.iter().map(|s| s.cidr).collect();
    by_address.sort_by_key(|c| (c.network(), c.prefix_len()));
    match by_address.windows(2).find(|w| w[0].overlaps(&w[1])) {
        Some([a, b]) => Err(ApiError::Invalid(format!("subnets {a} and {b} overlap"))),
        _ => Ok(()),
    }
}
