//! `/api/v1/fabric`: what the APIC says the fabric looks like (leaves, bindable paths incl. vPC
//! and FEX, LLDP neighbours), from the per-replica snapshot; `refresh` re-reads it.

use std::sync::Arc;

use actix_web::web::{self, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;
use weft_apic::{FabricNode, LldpNeighbour};

use crate::apic::{Apic, Snapshot};
use crate::auth::{Auth, Operator, Viewer};
use crate::domain::{PathDn, PathKind};
use crate::error::{ApiError, ApiResult, Problem};
use crate::startup::AppState;

/// Registers this resource's routes (and their documentation).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(get_fabric).service(refresh_fabric);
}

/// The configured APIC, or the `apic-not-configured` problem.
pub fn apic(st: &AppState) -> ApiResult<&Arc<Apic>> {
    st.apic.as_ref().ok_or(ApiError::ApicNotConfigured)
}

/// A path a binding can use.
#[derive(Debug, Serialize, ToSchema)]
pub struct FabricPathView {
    pub path: PathDn,
    pub kind: PathKind,
    /// The APIC's `lagT`: `not-aggregated`, `link` (port-channel) or `node` (vPC).
    pub lag: String,
}

/// The fabric as last read from the APIC.
#[derive(Debug, Serialize, ToSchema)]
pub struct FabricView {
    /// When this replica read it from the APIC.
    pub fetched_at: DateTime<Utc>,
    pub nodes: Vec<FabricNode>,
    pub paths: Vec<FabricPathView>,
    pub lldp_neighbours: Vec<LldpNeighbour>,
}

impl From<&Snapshot> for FabricView {
    fn from(s: &Snapshot) -> Self {
        Self {
            fetched_at: s.fetched_at,
            nodes: s.fabric.nodes.clone(),
            paths: s
                .fabric
                .paths
                .iter()
                .map(|p| FabricPathView {
                    kind: p.path.kind(),
                    path: p.path.clone(),
                    lag: p.lag.clone(),
                })
                .collect(),
            lldp_neighbours: s.fabric.lldp_neighbours.clone(),
        }
    }
}

/// The cached fabric; read from the APIC when older than `apic.discovery_ttl_secs`.
#[utoipa::path(get, path = "/api/v1/fabric", impl_for = get_fabric, tag = "fabric",
    responses((status = 200, body = FabricView), (status = 502, body = Problem), (status = 503, body = Problem)))]
#[actix_web::get("/api/v1/fabric")]
async fn get_fabric(_auth: Auth<Viewer>, st: web::Data<AppState>) -> ApiResult<Json<FabricView>> {
    let snap = apic(&st)?.fabric().await?;
    Ok(Json(FabricView::from(&*snap)))
}

/// Re-reads the fabric from the APIC now, e.g. after someone changed it by hand.
#[utoipa::path(post, path = "/api/v1/fabric/refresh", impl_for = refresh_fabric, tag = "fabric",
    responses((status = 200, body = FabricView), (status = 502, body = Problem), (status = 503, body = Problem)))]
#[actix_web::post("/api/v1/fabric/refresh")]
async fn refresh_fabric(
    _auth: Auth<Operator>,
    st: web::Data<AppState>,
) -> ApiResult<Json<FabricView>> {
    let snap = apic(&st)?.refresh().await?;
    Ok(Json(FabricView::from(&*snap)))
}
