//! `POST /api/v1/epgs/{tenant}/{app}/{epg}/preflight`: would the APIC accept static bindings of
//! this EPG's VLAN on these paths? Only reads the APIC; the attach workflow calls the same
//! check before it binds anything.

use actix_web::web::{self, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;
use weft_apic::PreflightRequest;

use super::{epgs, fabric, hosts, ApiJson, ApiPath};
use crate::auth::{Auth, Operator};
use crate::domain::{ApicName, BindingMode, Encap, PathDn};
use crate::error::{ApiError, ApiResult, Problem};
use crate::startup::AppState;

/// Most explicit paths one check takes: they go into one APIC query filter (a host has a
/// handful of uplinks), so a huge list only makes an oversized APIC request.
const MAX_PATHS: usize = 64;

/// Registers this resource's routes (and their documentation).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(preflight);
}

/// Where the EPG would be bound: a host's effective uplinks, or explicit paths.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreflightSpec {
    /// A registered host; its effective uplinks are checked (409 `uplink-conflict` when
    /// configured uplinks and LLDP disagree).
    #[serde(default)]
    pub host: Option<ApicName>,
    /// Explicit fabric paths, instead of `host`; at most 64.
    #[serde(default)]
    pub paths: Option<Vec<PathDn>>,
}

/// A passed check (a failed one is 409 `preflight-failed`): what was checked.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PreflightResult {
    /// `false` for a managed EPG Weft has yet to create on the APIC (then the domain, pool,
    /// path and leaf checks ran without it).
    pub epg_exists: bool,
    /// The EPG's APIC DN.
    pub epg_dn: String,
    pub encap: Encap,
    pub mode: BindingMode,
    pub physical_domain: ApicName,
    pub paths: Vec<PathDn>,
}

/// Checks, without changing the APIC, that the EPG exists there (unless it is `managed`: Weft
/// will create it), is associated with its
/// physical domain, the domain's VLAN pool holds the EPG's VLAN, every path exists, and no other
/// EPG uses the VLAN on those leaves (or is untagged/native on the port). 409
/// `preflight-failed` names the APIC object at fault in `object_dn`.
#[utoipa::path(post, path = "/api/v1/epgs/{tenant}/{app}/{epg}/preflight", impl_for = preflight, tag = "epgs",
    params(("tenant" = ApicName, Path), ("app" = ApicName, Path), ("epg" = ApicName, Path)),
    request_body = PreflightSpec,
    responses((status = 200, body = PreflightResult), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "preflight-failed, uplink-conflict or a host without uplinks"),
        (status = 502, body = Problem), (status = 503, body = Problem)))]
#[actix_web::post("/api/v1/epgs/{tenant}/{app}/{epg}/preflight")]
async fn preflight(
    _auth: Auth<Operator>,
    st: web::Data<AppState>,
    ApiPath(path): ApiPath<(String, String, String)>,
    ApiJson(spec): ApiJson<PreflightSpec>,
) -> ApiResult<Json<PreflightResult>> {
    let key = epgs::key(path)?;
    let apic = fabric::apic(&st)?.clone();
    let paths = match (spec.host, spec.paths) {
        (Some(host), None) => hosts::effective_uplinks(&st, &host).await?.paths(&host)?,
        (None, Some(paths)) if (1..=MAX_PATHS).contains(&paths.len()) => paths,
        _ => {
            return Err(ApiError::Invalid(format!(
                "give exactly one of `host` or `paths` (1 to {MAX_PATHS} paths)"
            )))
        }
    };
    let epg = {
        let mut conn = st.db.acquire().await?;
        epgs::load(&mut conn, &key)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no EPG {key}")))?
    };
    let report = apic
        .client
        .preflight(&PreflightRequest {
            epg: &key,
            physical_domain: epg.physical_domain.as_str(),
            encap: epg.vlan,
            mode: epg.mode,
            managed: epg.managed,
            paths: &paths,
        })
        .await?;
    Ok(Json(PreflightResult {
        epg_exists: report.epg_exists,
        epg_dn: key.dn(),
        encap: epg.encap,
        mode: epg.mode,
        physical_domain: epg.physical_domain,
        paths,
    }))
}
