//! `/api/v1/hosts/{name}`: hosts running weft-agent, their backend, MTU and uplinks.

use std::sync::Arc;

use actix_web::web::{self, Json};
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use weft_apic::{match_uplinks, UplinkAgreement};

use super::{finish_delete, finish_put, vanished, ApiJson, ApiPath, ApiQuery, Page, Paging, Put};
use crate::apic::Snapshot;
use crate::auth::{Admin, Auth, Viewer};
use crate::config::Secret;
use crate::db::hosts::{self, HostRow};
use crate::domain::{ApicName, Backend, InterfaceName, Mtu, PathDn};
use crate::error::{ApiError, ApiResult, Problem};
use crate::startup::AppState;

/// Registers this resource's routes (and their documentation).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_hosts)
        .service(get_host)
        .service(put_host)
        .service(delete_host);
}

/// One host interface cabled to the fabric, as configured. How it compares with the APIC's
/// LLDP neighbours is in the host's `effective_uplinks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    pub interface: InterfaceName,
    /// The leaf port (or vPC) the interface is cabled to.
    pub path_dn: PathDn,
}

fn default_mtu() -> Mtu {
    Mtu::ETHERNET
}

/// What a client declares about a host.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Base URL of the host's weft-agent, `http://` or `https://`.
    #[schema(example = "https://host1.example:9180")]
    pub agent_url: String,
    /// Bearer token Weft presents to the agent. Write-only: never returned; omit to keep the stored one.
    #[schema(value_type = Option<String>, write_only)]
    #[serde(default)]
    pub agent_token: Option<Secret>,
    pub backend: Backend,
    #[serde(default = "default_mtu")]
    pub mtu: Mtu,
    #[serde(default)]
    pub uplinks: Vec<Uplink>,
}

/// A host as stored. The agent token is never shown, only whether one is set.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Host {
    pub name: ApicName,
    pub agent_url: String,
    pub agent_token_set: bool,
    pub backend: Backend,
    pub mtu: Mtu,
    pub uplinks: Vec<Uplink>,
    /// Configured uplinks merged with the APIC's LLDP neighbours naming this host (on GET only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub effective_uplinks: Option<EffectiveUplinks>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The uplinks Weft will bind for a host and where each comes from. Where configured uplinks
/// and LLDP disagree the agreement is `conflict` and Weft trusts neither.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EffectiveUplinks {
    pub uplinks: Vec<weft_apic::Uplink>,
    pub agreement: UplinkAgreement,
    /// When the LLDP neighbours were read from the APIC; absent when no APIC is configured,
    /// in which case only configured uplinks count.
    pub lldp_fetched_at: Option<DateTime<Utc>>,
}

impl EffectiveUplinks {
    /// The paths to bind, or why there are none to trust.
    pub fn paths(&self, host: &ApicName) -> ApiResult<Vec<PathDn>> {
        match &self.agreement {
            UplinkAgreement::Conflict {
                configured_only,
                lldp_only,
            } => {
                let list = |v: &[PathDn]| {
                    v.iter()
                        .map(PathDn::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Err(ApiError::UplinkConflict(format!(
                    "host `{host}`: configured uplinks [{}] and LLDP neighbours [{}] disagree; \
                     fix the cabling or the host's uplinks",
                    list(configured_only),
                    list(lldp_only)
                )))
            }
            UplinkAgreement::Unknown => Err(ApiError::Conflict(format!(
                "host `{host}` has no configured uplinks and no LLDP neighbour names it"
            ))),
            _ => Ok(self.uplinks.iter().map(|u| u.path.clone()).collect()),
        }
    }
}

/// The fabric snapshot to read LLDP neighbours from; `None` without an APIC.
async fn lldp_source(st: &AppState) -> ApiResult<Option<Arc<Snapshot>>> {
    Ok(match &st.apic {
        Some(apic) => Some(apic.fabric().await?),
        None => None,
    })
}

/// A host's configured uplinks merged with the LLDP neighbours that name it.
fn effective(host: &Host, snap: Option<&Snapshot>) -> EffectiveUplinks {
    let configured: Vec<(String, PathDn)> = host
        .uplinks
        .iter()
        .map(|u| (u.interface.to_string(), u.path_dn.clone()))
        .collect();
    let lldp = snap
        .map(|s| s.fabric.lldp_neighbours.as_slice())
        .unwrap_or_default();
    let report = match_uplinks(host.name.as_str(), &configured, lldp);
    EffectiveUplinks {
        uplinks: report.uplinks,
        agreement: report.agreement,
        lldp_fetched_at: snap.map(|s| s.fetched_at),
    }
}

/// A stored host, read in the caller's connection or transaction.
async fn read(conn: &mut PgConnection, name: &ApicName) -> ApiResult<Option<Host>> {
    hosts::get(conn, name.as_str())
        .await?
        .map(Host::from_row)
        .transpose()
}

/// A stored host; 404 when absent.
async fn load(st: &AppState, name: &ApicName) -> ApiResult<Host> {
    let mut conn = st.db.acquire().await?;
    read(&mut conn, name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no host `{name}`")))
}

/// The effective uplinks of a stored host (the pre-flight check binds these).
pub(crate) async fn effective_uplinks(
    st: &AppState,
    name: &ApicName,
) -> ApiResult<EffectiveUplinks> {
    let host = load(st, name).await?;
    Ok(effective(&host, lldp_source(st).await?.as_deref()))
}

impl Host {
    fn from_row(r: HostRow) -> ApiResult<Self> {
        let uplinks = serde_json::from_value(r.uplinks)
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("stored uplinks")))?;
        let mtu = u16::try_from(r.mtu).map_err(|e| ApiError::Internal(e.into()))?;
        Ok(Self {
            name: ApicName::parse(&r.name)?,
            agent_url: r.agent_url,
            agent_token_set: r.agent_token_set,
            backend: Backend::parse(&r.backend)?,
            mtu: Mtu::new(mtu)?,
            uplinks,
            effective_uplinks: None,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HostFilter {
    pub backend: Option<Backend>,
}

fn resource(name: &ApicName) -> String {
    format!("hosts/{name}")
}

/// Hosts with their effective uplinks.
#[utoipa::path(get, path = "/api/v1/hosts", impl_for = list_hosts, tag = "hosts", params(Paging, HostFilter),
    responses((status = 200, body = Page<Host>), (status = 503, body = Problem)))]
#[actix_web::get("/api/v1/hosts")]
async fn list_hosts(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiQuery(paging): ApiQuery<Paging>,
    ApiQuery(f): ApiQuery<HostFilter>,
) -> ApiResult<Json<Page<Host>>> {
    let (after, limit) = paging.resolve()?;
    let backend = f.backend;
    let mut conn = st.db.acquire().await?;
    let rows = hosts::list(&mut conn, backend.map(Backend::as_str), after, limit + 1).await?;
    drop(conn);
    let mut page = Page::decode(rows, limit, |r| Ok((r.id, Host::from_row(r)?)))?;
    if !page.items.is_empty() {
        let snap = lldp_source(&st).await?;
        for h in &mut page.items {
            h.effective_uplinks = Some(effective(h, snap.as_deref()));
        }
    }
    Ok(Json(page))
}

/// A host with its effective uplinks (configured and, with an APIC, LLDP).
#[utoipa::path(get, path = "/api/v1/hosts/{name}", impl_for = get_host, tag = "hosts", params(("name" = ApicName, Path)),
    responses((status = 200, body = Host), (status = 404, body = Problem), (status = 503, body = Problem)))]
#[actix_web::get("/api/v1/hosts/{name}")]
async fn get_host(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Host>> {
    let name = ApicName::parse(&name)?;
    let mut host = load(&st, &name).await?;
    host.effective_uplinks = Some(effective(&host, lldp_source(&st).await?.as_deref()));
    Ok(Json(host))
}

/// Creates or replaces a host and its uplinks. A PUT that changes nothing writes nothing.
#[utoipa::path(put, path = "/api/v1/hosts/{name}", impl_for = put_host, tag = "hosts", params(("name" = ApicName, Path)), request_body = HostSpec,
    responses((status = 200, body = Host, description = "replaced"), (status = 201, body = Host, description = "created")))]
#[actix_web::put("/api/v1/hosts/{name}")]
async fn put_host(
    auth: Auth<Admin>,
    st: web::Data<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(mut spec): ApiJson<HostSpec>,
) -> ApiResult<Put<Host>> {
    let name = ApicName::parse(&name)?;
    validate_url(&spec.agent_url)?;
    // In the stored order (by interface, bytewise), so a repeated PUT compares equal.
    spec.uplinks.sort_by(|a, b| a.interface.cmp(&b.interface));
    if let Some(w) = spec
        .uplinks
        .windows(2)
        .find(|w| w[0].interface == w[1].interface)
    {
        return Err(ApiError::Invalid(format!(
            "uplink interface `{}` is listed twice",
            w[0].interface
        )));
    }
    let uplinks: Vec<(String, String)> = spec
        .uplinks
        .iter()
        .map(|u| (u.interface.to_string(), u.path_dn.to_string()))
        .collect();
    let columns = hosts::HostColumns {
        agent_url: &spec.agent_url,
        agent_token: spec.agent_token.as_ref().map(Secret::expose),
        backend: spec.backend.as_str(),
        mtu: i32::from(spec.mtu.get()),
    };
    let mut tx = st.db.begin().await?;
    let before = read(&mut tx, &name).await?;
    if let Some(b) = &before {
        let same = b.agent_url == spec.agent_url
            && b.backend == spec.backend
            && b.mtu == spec.mtu
            && b.uplinks == spec.uplinks;
        // The stored token is only compared (in SQL) when everything else is unchanged.
        let same = same
            && match &spec.agent_token {
                None => true,
                Some(t) => hosts::token_is(&mut tx, name.as_str(), t.expose()).await?,
            };
        if same {
            return Ok(Put(false, b.clone()));
        }
    }
    let created = hosts::upsert(&mut tx, name.as_str(), &columns, &uplinks).await?;
    let after = read(&mut tx, &name)
        .await?
        .ok_or_else(|| vanished("host"))?;
    // The audit entry holds the response shape, which has no token.
    finish_put(
        tx,
        created,
        auth.actor(),
        "host.put",
        &resource(&name),
        before.as_ref(),
        after,
    )
    .await
}

/// Deletes a host; 409 while containers on it are attached. Deleting a missing host is a no-op.
#[utoipa::path(delete, path = "/api/v1/hosts/{name}", impl_for = delete_host, tag = "hosts", params(("name" = ApicName, Path)),
    responses((status = 204, description = "deleted or absent"), (status = 409, body = Problem)))]
#[actix_web::delete("/api/v1/hosts/{name}")]
async fn delete_host(
    auth: Auth<Admin>,
    st: web::Data<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<HttpResponse> {
    let name = ApicName::parse(&name)?;
    let mut tx = st.db.begin().await?;
    let before = read(&mut tx, &name).await?;
    let outcome = hosts::delete(&mut tx, name.as_str()).await?;
    finish_delete(
        tx,
        outcome,
        |n| format!("host `{name}` has {n} attachment(s)"),
        auth.actor(),
        "host.delete",
        &resource(&name),
        before.as_ref(),
    )
    .await
}

fn validate_url(s: &str) -> ApiResult<()> {
    let url = reqwest::Url::parse(s)
        .map_err(|e| ApiError::Invalid(format!("agent_url `{}`: {e}", s.escape_debug())))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ApiError::Invalid(format!(
            "agent_url `{s}` must be an http:// or https:// URL with a host"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::Invalid(
            "agent_url must not carry credentials; use agent_token".into(),
        ));
    }
    Ok(())
}
