//! `/api/v1/attachments/{id}`: a container interface in an EPG (the attach and detach
//! workflows, `src/workflow/`), `/api/v1/operations/{id}` (their job log), `/api/v1/bindings`
//! (the APIC bindings Weft manages) and `/api/v1/agent/events` (agents' container events).
//!
//! A PUT checks everything it can before it answers (host, EPG, reservation, address, uplinks,
//! and that the host's agent finds the container: a 4xx that leaves nothing behind), leases
//! the address, and queues the attach in the same transaction; the rest runs in the workflow
//! workers of any replica.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::web::{self, Json};
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;
use weft_agent_api::{ContainerEvent, ContainerEventKind, Target};
use weft_apic::{Binding, PreflightRequest};

use super::{epgs, hosts, ApiJson, ApiPath, ApiQuery, Page, Paging};
use crate::alloc::ip;
use crate::auth::{Agent, Auth, Operator, Viewer};
use crate::db::audit::record;
use crate::domain::{ApicName, EpgKey, InterfaceName, PathDn};
use crate::error::{ApiError, ApiResult, Problem};
use crate::startup::AppState;
use crate::workflow::attach::container_missing;
use crate::workflow::context::agent_client;
use crate::workflow::jobs::{self, Kind};
use crate::workflow::lost;

/// Longest `?wait=` in seconds.
const MAX_WAIT_SECS: u64 = 60;

/// Registers this resource's routes (and their documentation).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_attachments)
        .service(get_attachment)
        .service(put_attachment)
        .service(delete_attachment)
        .service(get_operation)
        .service(list_bindings)
        .service(agent_event);
}

/// An EPG by its natural key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EpgRef {
    pub tenant: ApicName,
    pub app: ApicName,
    pub epg: ApicName,
}

impl EpgRef {
    fn key(&self) -> EpgKey {
        EpgKey {
            tenant: self.tenant.clone(),
            app: self.app.clone(),
            epg: self.epg.clone(),
        }
    }
}

fn eth0() -> InterfaceName {
    InterfaceName::parse("eth0").expect("eth0 is a valid interface name")
}

/// What a client declares: which container interface goes into which EPG on which host.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentSpec {
    /// A registered host.
    pub host: ApicName,
    /// The container: a Docker name or id, a PID, or a network-namespace path.
    pub target: Target,
    pub epg: EpgRef,
    /// The interface inside the container.
    #[serde(default = "eth0")]
    pub interface: InterfaceName,
    /// A wanted address in one of the EPG's subnets (otherwise the lowest free one).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "10.1.0.20")]
    pub address: Option<Ipv4Addr>,
    /// The name of one of the EPG's reservations whose address to use (instead of `address`).
    #[serde(default)]
    pub reservation: Option<ApicName>,
}

/// Where an operation can be read.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OperationLink {
    pub id: Uuid,
    pub href: String,
}

impl OperationLink {
    fn new(id: Uuid) -> Self {
        Self {
            id,
            href: format!("/api/v1/operations/{id}"),
        }
    }
}

/// An attachment as stored: the request and what the workflow made of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Attachment {
    pub id: Uuid,
    pub host: String,
    pub target: Target,
    pub epg: EpgRef,
    pub interface: String,
    pub requested_address: Option<String>,
    pub reservation: Option<String>,
    /// `pending`, `binding`, `wiring`, `attached`, `detaching`, `failed` or `lost`.
    pub state: String,
    /// Why it `failed`: the step and the object at fault.
    pub last_error: Option<String>,
    /// The leased address with its prefix length, e.g. `10.1.0.10/24`.
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub mac: Option<String>,
    pub vlan: Option<i32>,
    /// The fabric paths (leaf ports or vPC) the EPG is bound on for this host.
    pub paths: Vec<String>,
    /// `running`, `stopped` or `gone`, as the host's agent last reported.
    pub container_status: String,
    /// When the agent last re-wired the container after a restart (same address and MAC).
    pub rewired_at: Option<DateTime<Utc>>,
    /// When the container was reported destroyed; it is detached after the grace period.
    pub lost_at: Option<DateTime<Utc>>,
    pub operation: Option<OperationLink>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `query_as!` into [`AttachmentRow`] followed by `$tail` and its arguments (see `select_epgs!`).
macro_rules! select_attachments {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            AttachmentRow,
            r#"SELECT a.seq, a.id, h.name AS host, a.target, e.tenant, e.app, e.name AS epg, a.interface,
                   host(a.requested_address) AS requested_address, a.reservation, a.state, a.last_error,
                   host(a.address) || '/' || a.prefix_len AS address, host(a.gateway) AS gateway, a.mac,
                   a.vlan, a.paths, a.container_status, a.rewired_at, a.lost_at, a.operation_id,
                   a.created_at, a.updated_at
               FROM attachments a JOIN hosts h ON h.id = a.host_id JOIN epgs e ON e.id = a.epg_id "# + $tail
            $(, $arg)*
        )
    };
}

struct AttachmentRow {
    seq: i64,
    id: Uuid,
    host: String,
    target: serde_json::Value,
    tenant: String,
    app: String,
    epg: String,
    interface: String,
    requested_address: Option<String>,
    reservation: Option<String>,
    state: String,
    last_error: Option<String>,
    address: Option<String>,
    gateway: Option<String>,
    mac: Option<String>,
    vlan: Option<i32>,
    paths: Vec<String>,
    container_status: String,
    rewired_at: Option<DateTime<Utc>>,
    lost_at: Option<DateTime<Utc>>,
    operation_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Attachment {
    fn from_row(r: AttachmentRow) -> ApiResult<(i64, Self)> {
        let target = serde_json::from_value(r.target)
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("stored target")))?;
        Ok((
            r.seq,
            Self {
                id: r.id,
                host: r.host,
                target,
                epg: EpgRef {
                    tenant: ApicName::parse(&r.tenant)?,
                    app: ApicName::parse(&r.app)?,
                    epg: ApicName::parse(&r.epg)?,
                },
                interface: r.interface,
                requested_address: r.requested_address,
                reservation: r.reservation,
                state: r.state,
                last_error: r.last_error,
                address: r.address,
                gateway: r.gateway,
                mac: r.mac,
                vlan: r.vlan,
                paths: r.paths,
                container_status: r.container_status,
                rewired_at: r.rewired_at,
                lost_at: r.lost_at,
                operation: r.operation_id.map(OperationLink::new),
                created_at: r.created_at,
                updated_at: r.updated_at,
            },
        ))
    }

    /// Whether the workflow is done with it (no job will change it without a new request).
    fn settled(&self) -> bool {
        matches!(self.state.as_str(), "attached" | "failed" | "lost")
    }
}

async fn read(conn: &mut PgConnection, id: Uuid) -> ApiResult<Option<Attachment>> {
    select_attachments!("WHERE a.id = $1", id)
        .fetch_optional(conn)
        .await?
        .map(|r| Attachment::from_row(r).map(|(_, a)| a))
        .transpose()
}

fn resource(id: Uuid) -> String {
    format!("attachments/{id}")
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PutParams {
    /// Block until the attachment is `attached` or `failed`, at most this many seconds (0-60).
    #[param(minimum = 0, maximum = 60)]
    pub wait: Option<u64>,
    /// Answer the plan (address, APIC objects, agent calls) and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParam {
    /// Block until the work is done, at most this many seconds (0-60).
    #[param(minimum = 0, maximum = 60)]
    pub wait: Option<u64>,
}

fn wait_for(secs: Option<u64>) -> ApiResult<Option<Duration>> {
    match secs {
        Some(s) if s > MAX_WAIT_SECS => Err(ApiError::Invalid(format!(
            "wait {s} is over {MAX_WAIT_SECS} seconds"
        ))),
        other => Ok(other.map(Duration::from_secs)),
    }
}

/// How often a `?wait=` request re-reads an attachment whose job may run on another replica
/// (a local worker wakes it at once).
const WAIT_POLL: Duration = Duration::from_millis(250);

/// Waits until `done` holds for the attachment (or it is gone) or `wait` passes: re-read
/// when a local worker lets go of its job, or every [`WAIT_POLL`].
async fn wait_until(
    st: &AppState,
    id: Uuid,
    wait: Duration,
    done: impl Fn(Option<&Attachment>) -> bool,
) -> ApiResult<Option<Attachment>> {
    let deadline = Instant::now() + wait;
    let mut finished = st.workflow.finished();
    loop {
        let now = {
            let mut conn = st.db.acquire().await?;
            read(&mut conn, id).await?
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if done(now.as_ref()) || left.is_zero() {
            return Ok(now);
        }
        let poll = tokio::time::sleep(left.min(WAIT_POLL));
        tokio::pin!(poll);
        loop {
            tokio::select! {
                ended = finished.recv() => match ended {
                    Ok(other) if other != id => continue,
                    // Ours, or too far behind to know: read again.
                    _ => break,
                },
                _ = &mut poll => break,
            }
        }
    }
}

/// The plan of a dry run: what a PUT would do.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttachPlan {
    /// The address that would be leased, with its prefix length.
    pub address: String,
    pub gateway: String,
    pub vlan: u16,
    /// The EPG on the APIC; `create` only for a managed EPG that is missing.
    pub epg_dn: String,
    pub bindings: Vec<PlannedBinding>,
    /// The agent calls, in order.
    pub agent_calls: Vec<String>,
}

/// One APIC binding the attach would create or reuse.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlannedBinding {
    pub dn: String,
    pub path: String,
    pub encap: String,
    /// `create` (first attachment of the EPG on this path) or `reuse`.
    pub action: String,
}

/// How long a PUT waits for the host's agent to find the container.
const CONTAINER_CHECK: Duration = Duration::from_secs(2);

/// What a PUT checked, before anything was written.
struct Checked {
    host_id: i64,
    agent_url: String,
    agent_token: Option<String>,
    epg: epgs::Epg,
    epg_id: i64,
    paths: Vec<PathDn>,
}

/// Every check a PUT makes before it writes: a 4xx for each bad input.
async fn check(st: &AppState, spec: &AttachmentSpec) -> ApiResult<Checked> {
    if spec.address.is_some() && spec.reservation.is_some() {
        return Err(ApiError::Invalid(
            "give `address` or `reservation`, not both".into(),
        ));
    }
    if st.apic.is_none() {
        return Err(ApiError::ApicNotConfigured);
    }
    let key = spec.epg.key();
    let mut conn = st.db.acquire().await?;
    let host = sqlx::query!(
        "SELECT id, agent_url, agent_token FROM hosts WHERE name = $1",
        spec.host.as_str()
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::Invalid(format!("no host `{}`", spec.host)))?;
    let epg = epgs::load(&mut conn, &key)
        .await?
        .ok_or_else(|| ApiError::Invalid(format!("no EPG {key}")))?;
    let epg_id = crate::db::epgs::get(&mut conn, &key)
        .await?
        .map(|r| r.id)
        .ok_or_else(|| ApiError::Invalid(format!("no EPG {key}")))?;
    if let Some(name) = &spec.reservation {
        ip::reservation_lease(&mut conn, epg_id, name.as_str())
            .await?
            .ok_or_else(|| ApiError::Invalid(format!("EPG {key} has no reservation `{name}`")))?;
    }
    drop(conn);
    let paths = hosts::effective_uplinks(st, &spec.host)
        .await?
        .paths(&spec.host)?;
    if paths.is_empty() {
        return Err(ApiError::Conflict(format!(
            "host `{}` has no uplinks",
            spec.host
        )));
    }
    Ok(Checked {
        host_id: host.id,
        agent_url: host.agent_url,
        agent_token: host.agent_token,
        epg,
        epg_id,
        paths,
    })
}

/// The host's agent finds the container (a read-only call, bounded by [`CONTAINER_CHECK`]),
/// or the PUT is a 422 naming it and nothing is written. Only the agent's own verdict
/// refuses: an agent that is down, slow or failing lets the PUT through, and the attach's
/// `validate` step, which retries, decides.
async fn container_found(
    st: &AppState,
    spec: &AttachmentSpec,
    c: &Checked,
    request_id: Option<&str>,
) -> ApiResult<()> {
    let settings = &st.workflow.settings;
    let token = c.agent_token.as_deref();
    let Ok(client) = agent_client(
        settings,
        spec.host.as_str(),
        &c.agent_url,
        token,
        request_id,
    ) else {
        return Ok(()); // the validate step names what is wrong with the agent's address
    };
    match tokio::time::timeout(CONTAINER_CHECK, client.resolve(&spec.target)).await {
        Ok(Err(e)) if container_missing(&e) => Err(ApiError::Invalid(format!(
            "container {} on host `{}`: {e}",
            spec.target, spec.host
        ))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            tracing::info!(error = %e, host = %spec.host, "the agent did not confirm the container; the attach checks again");
            Ok(())
        }
        Err(_) => {
            tracing::info!(host = %spec.host, "the agent did not answer in time; the attach checks the container again");
            Ok(())
        }
    }
}

/// Makes concurrent PUTs of one attachment id, or of one container interface on a host, take
/// turns until the first commits: the insert and the address update that follows it would
/// otherwise wait on each other's uncommitted index entries (a deadlock).
async fn serialize(tx: &mut PgConnection, id: Uuid, spec: &AttachmentSpec) -> ApiResult<()> {
    let key = format!("{}|{}|{}", spec.host, spec.target, spec.interface);
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), pg_advisory_xact_lock(hashtextextended($2, 0))",
        format!("attachment|{id}"),
        format!("container|{key}"),
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Inserts the attachment and leases its address in `tx`; a 4xx for a taken container
/// interface or address. Used by the PUT and, rolled back, by the dry run.
async fn insert_and_lease(
    tx: &mut PgConnection,
    id: Uuid,
    spec: &AttachmentSpec,
    c: &Checked,
) -> ApiResult<Option<ip::Lease>> {
    let paths: Vec<String> = c.paths.iter().map(ToString::to_string).collect();
    let target = serde_json::to_value(&spec.target).map_err(|e| ApiError::Internal(e.into()))?;
    let inserted = sqlx::query_scalar!(
        "INSERT INTO attachments (id, host_id, epg_id, container, interface, target, requested_address,
             reservation, paths, vlan, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7::text::inet, $8, $9, $10, 'pending')
         ON CONFLICT (id) DO NOTHING RETURNING id",
        id,
        c.host_id,
        c.epg_id,
        spec.target.to_string(),
        spec.interface.to_string(),
        target,
        spec.address.map(|a| a.to_string()),
        spec.reservation.as_ref().map(|r| r.to_string()),
        &paths,
        i32::from(c.epg.vlan.get()),
    )
    .fetch_optional(&mut *tx)
    .await;
    match inserted {
        Ok(Some(_)) => {}
        // A concurrent PUT of the same id created it first.
        Ok(None) => return Ok(None),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::Conflict(format!(
                "{} on host `{}` already has an attachment on interface {}",
                spec.target, spec.host, spec.interface
            )))
        }
        Err(e) => return Err(e.into()),
    }
    let lease = match &spec.reservation {
        Some(name) => ip::reservation_lease(tx, c.epg_id, name.as_str())
            .await?
            .ok_or_else(|| ApiError::Invalid(format!("no reservation `{name}`")))?,
        None => ip::lease_attachment(tx, c.epg_id, id, spec.address).await?,
    };
    let taken = sqlx::query!(
        "UPDATE attachments SET address = $2::text::inet, prefix_len = $3, gateway = $4::text::inet WHERE id = $1",
        id,
        lease.address.to_string(),
        i32::from(lease.subnet.prefix_len()),
        lease.gateway.to_string(),
    )
    .execute(&mut *tx)
    .await;
    match taken {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(ApiError::Conflict(
            format!("address {} is used by another attachment", lease.address),
        )),
        other => other.map(|_| Some(lease)).map_err(Into::into),
    }
}

/// Queues a job of `kind` for the attachment, points the attachment at it in `state`, and
/// audits `action` with the states before and after, in the caller's transaction.
async fn queue(
    tx: &mut PgConnection,
    auth: &Auth<Operator>,
    id: Uuid,
    kind: Kind,
    state: &str,
    action: &str,
    before: Option<&Attachment>,
) -> ApiResult<(Uuid, Attachment)> {
    let job = jobs::enqueue(tx, kind, id, auth.request_id.as_deref(), Duration::ZERO).await?;
    sqlx::query!(
        "UPDATE attachments SET state = $3, operation_id = $2, updated_at = now() WHERE id = $1",
        id,
        job,
        state,
    )
    .execute(&mut *tx)
    .await?;
    let after = read(tx, id)
        .await?
        .ok_or_else(|| super::vanished("attachment"))?;
    record(
        tx,
        auth.actor(),
        action,
        &resource(id),
        before,
        Some(&after),
    )
    .await?;
    Ok((job, after))
}

/// Attaches a container interface to an EPG (create-or-keep): 201 with the attachment and its
/// operation when created, 200 when it exists with the same host, container and EPG (a
/// `failed` one is tried again). 409 when it exists with another host, container or EPG
/// (detach first). `?dry_run=true` answers the plan and changes nothing.
#[utoipa::path(put, path = "/api/v1/attachments/{id}", impl_for = put_attachment, tag = "attachments",
    params(("id" = Uuid, Path), PutParams), request_body = AttachmentSpec,
    responses((status = 200, body = Attachment, description = "exists (or the dry-run plan, AttachPlan)"),
        (status = 201, body = Attachment, description = "created; the attach runs"),
        (status = 409, body = Problem), (status = 503, body = Problem)))]
#[actix_web::put("/api/v1/attachments/{id}")]
async fn put_attachment(
    auth: Auth<Operator>,
    st: web::Data<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<PutParams>,
    ApiJson(spec): ApiJson<AttachmentSpec>,
) -> ApiResult<HttpResponse> {
    let wait = wait_for(params.wait)?;
    if params.dry_run {
        return Ok(HttpResponse::Ok().json(plan(&st, id, &spec).await?));
    }
    {
        let mut conn = st.db.acquire().await?;
        if let Some(existing) = read(&mut conn, id).await? {
            drop(conn);
            return again(&st, &auth, existing, &spec, wait).await;
        }
    }
    let checked = check(&st, &spec).await?;
    container_found(&st, &spec, &checked, auth.request_id.as_deref()).await?;
    let mut tx = st.db.begin().await?;
    serialize(&mut tx, id, &spec).await?;
    if insert_and_lease(&mut tx, id, &spec, &checked)
        .await?
        .is_none()
    {
        drop(tx);
        let mut conn = st.db.acquire().await?;
        let existing = read(&mut conn, id)
            .await?
            .ok_or_else(|| super::vanished("attachment"))?;
        drop(conn);
        return again(&st, &auth, existing, &spec, wait).await;
    }
    let (job, created) = queue(
        &mut tx,
        &auth,
        id,
        Kind::Attach,
        "pending",
        "attachment.put",
        None,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(attachment_id = %id, operation_id = %job, "attach queued");
    st.workflow.wake();
    let now = match wait {
        Some(w) => wait_until(&st, id, w, |a| a.is_none_or(Attachment::settled)).await?,
        None => Some(created.clone()),
    };
    Ok(HttpResponse::Created().json(now.unwrap_or(created)))
}

/// A PUT of an existing id: the same document keeps it (a failed one is attached again),
/// another host, container or EPG is a 409.
async fn again(
    st: &AppState,
    auth: &Auth<Operator>,
    existing: Attachment,
    spec: &AttachmentSpec,
    wait: Option<Duration>,
) -> ApiResult<HttpResponse> {
    let same = existing.host == spec.host.as_str()
        && existing.target == spec.target
        && existing.epg == spec.epg
        && existing.interface == spec.interface.to_string()
        && existing.requested_address == spec.address.map(|a| a.to_string())
        && existing.reservation == spec.reservation.as_ref().map(|r| r.to_string());
    if !same {
        return Err(ApiError::Conflict(format!(
            "attachment {} exists with another host, container, EPG or address; detach it first",
            existing.id
        )));
    }
    let id = existing.id;
    if existing.state == "failed" {
        let mut tx = st.db.begin().await?;
        if jobs::live(&mut tx, id).await?.is_none() {
            let retry = "attachment.retry";
            queue(
                &mut tx,
                auth,
                id,
                Kind::Attach,
                "pending",
                retry,
                Some(&existing),
            )
            .await?;
        }
        tx.commit().await?;
        st.workflow.wake();
    }
    let now = match wait {
        Some(w) => wait_until(st, id, w, |a| a.is_none_or(Attachment::settled)).await?,
        None => {
            let mut conn = st.db.acquire().await?;
            read(&mut conn, id).await?
        }
    };
    Ok(HttpResponse::Ok().json(now.unwrap_or(existing)))
}

/// The dry run: the same checks and lease as a PUT, in a transaction that is rolled back, plus
/// the APIC pre-flight (reads only). Nothing is written anywhere.
async fn plan(st: &AppState, id: Uuid, spec: &AttachmentSpec) -> ApiResult<AttachPlan> {
    let c = check(st, spec).await?;
    let mut tx = st.db.begin().await?;
    serialize(&mut tx, id, spec).await?;
    let lease = insert_and_lease(&mut tx, id, spec, &c)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("attachment {id} exists")))?;
    let paths: Vec<String> = c.paths.iter().map(ToString::to_string).collect();
    let applied = sqlx::query_scalar!(
        "SELECT path_dn FROM bindings WHERE epg_id = $1 AND path_dn = ANY($2) AND apic_state = 'applied'",
        c.epg_id,
        &paths
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.rollback().await?;
    let key = spec.epg.key();
    let apic = st.apic.as_ref().ok_or(ApiError::ApicNotConfigured)?;
    apic.client
        .preflight(&PreflightRequest {
            epg: &key,
            physical_domain: c.epg.physical_domain.as_str(),
            encap: c.epg.vlan,
            mode: c.epg.mode,
            managed: c.epg.managed,
            paths: &c.paths,
        })
        .await?;
    let vlan = c.epg.vlan;
    Ok(AttachPlan {
        address: format!("{}/{}", lease.address, lease.subnet.prefix_len()),
        gateway: lease.gateway.to_string(),
        vlan: vlan.get(),
        epg_dn: key.dn(),
        bindings: c
            .paths
            .iter()
            .map(|p| PlannedBinding {
                dn: Binding::dn(&key, p),
                path: p.to_string(),
                encap: vlan.encap().to_string(),
                action: if applied.contains(&p.to_string()) {
                    "reuse"
                } else {
                    "create"
                }
                .into(),
            })
            .collect(),
        agent_calls: vec![
            format!("PUT /v1/segments/{vlan}"),
            format!("PUT /v1/attachments/{id}"),
        ],
    })
}

/// An attachment with its state, address, MAC, VLAN, paths and operation.
#[utoipa::path(get, path = "/api/v1/attachments/{id}", impl_for = get_attachment, tag = "attachments",
    params(("id" = Uuid, Path)), responses((status = 200, body = Attachment), (status = 404, body = Problem)))]
#[actix_web::get("/api/v1/attachments/{id}")]
async fn get_attachment(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Attachment>> {
    let mut conn = st.db.acquire().await?;
    read(&mut conn, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no attachment {id}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttachmentFilter {
    /// A host name.
    #[param(pattern = r"^[^\x00]*$")]
    pub host: Option<String>,
    /// `tenant/app/epg`.
    #[param(pattern = r"^[a-zA-Z0-9_.:-]{1,64}/[a-zA-Z0-9_.:-]{1,64}/[a-zA-Z0-9_.:-]{1,64}$")]
    pub epg: Option<String>,
    /// An attachment state.
    #[param(pattern = "^(pending|binding|wiring|attached|detaching|failed|lost)$")]
    pub state: Option<String>,
}

const STATES: [&str; 7] = [
    "pending",
    "binding",
    "wiring",
    "attached",
    "detaching",
    "failed",
    "lost",
];

/// Attachments, filtered by host, EPG and state.
#[utoipa::path(get, path = "/api/v1/attachments", impl_for = list_attachments, tag = "attachments",
    params(Paging, AttachmentFilter), responses((status = 200, body = Page<Attachment>)))]
#[actix_web::get("/api/v1/attachments")]
async fn list_attachments(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiQuery(paging): ApiQuery<Paging>,
    ApiQuery(f): ApiQuery<AttachmentFilter>,
) -> ApiResult<Json<Page<Attachment>>> {
    let (after, limit) = paging.resolve()?;
    if let Some(s) = &f.state {
        if !STATES.contains(&s.as_str()) {
            return Err(ApiError::Invalid(format!(
                "state `{s}` is not one of {}",
                STATES.join(", ")
            )));
        }
    }
    let epg = match &f.epg {
        None => None,
        Some(e) => match e.split('/').collect::<Vec<_>>()[..] {
            [t, a, g] => Some(EpgKey::new(t, a, g)?),
            _ => return Err(ApiError::Invalid("epg must be tenant/app/epg".into())),
        },
    };
    let mut conn = st.db.acquire().await?;
    let rows = select_attachments!(
        "WHERE ($1::text IS NULL OR h.name = $1)
           AND ($2::text IS NULL OR (e.tenant = $2 AND e.app = $3 AND e.name = $4))
           AND ($5::text IS NULL OR a.state = $5) AND a.seq > $6 ORDER BY a.seq LIMIT $7",
        f.host,
        epg.as_ref().map(|k| k.tenant.to_string()),
        epg.as_ref().map(|k| k.app.to_string()),
        epg.as_ref().map(|k| k.epg.to_string()),
        f.state,
        after.unwrap_or(0),
        limit + 1,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(Page::decode(rows, limit, Attachment::from_row)?))
}

/// Detaches: 202 with the operation (`?wait=` blocks until it is done), 204 when there is no
/// such attachment. 409 while its attach is still running.
#[utoipa::path(delete, path = "/api/v1/attachments/{id}", impl_for = delete_attachment, tag = "attachments",
    params(("id" = Uuid, Path), WaitParam),
    responses((status = 202, body = Operation), (status = 204, description = "no such attachment"),
        (status = 409, body = Problem)))]
#[actix_web::delete("/api/v1/attachments/{id}")]
async fn delete_attachment(
    auth: Auth<Operator>,
    st: web::Data<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<WaitParam>,
) -> ApiResult<HttpResponse> {
    let wait = wait_for(params.wait)?;
    let mut tx = st.db.begin().await?;
    let locked = sqlx::query_scalar!("SELECT id FROM attachments WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(&mut *tx)
        .await?;
    if locked.is_none() {
        return Ok(HttpResponse::NoContent().finish());
    }
    let job = match jobs::live(&mut tx, id).await? {
        Some((job, Kind::Detach)) => {
            // A lost container's detach waiting out its grace period: now.
            jobs::run_now(&mut tx, job).await?;
            job
        }
        Some((job, Kind::Attach)) => {
            return Err(ApiError::Conflict(format!(
                "attachment {id} is being attached (operation {job}); detach it when that ends"
            )))
        }
        None => {
            let before = read(&mut tx, id).await?;
            let delete = "attachment.delete";
            queue(
                &mut tx,
                &auth,
                id,
                Kind::Detach,
                "detaching",
                delete,
                before.as_ref(),
            )
            .await?
            .0
        }
    };
    tx.commit().await?;
    st.workflow.wake();
    if let Some(w) = wait {
        wait_until(&st, id, w, |a| a.is_none_or(|a| a.state == "failed")).await?;
    }
    let op = load_operation(&st, job).await?;
    Ok(HttpResponse::build(StatusCode::ACCEPTED).json(op))
}

/// One step of an operation as it ran.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OperationStep {
    /// `forward`, or `undo` when a failed attach is being undone.
    pub phase: String,
    pub name: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// An attach or detach: its state, the step it is at, each step's times, attempts and last
/// error, and the request id that started it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    pub id: Uuid,
    /// `attach` or `detach`.
    pub kind: String,
    pub attachment_id: Option<Uuid>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    pub phase: String,
    /// The step to run next (none when finished).
    pub step: Option<String>,
    pub last_error: Option<String>,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The steps in the order they ran.
    pub steps: Vec<OperationStep>,
}

async fn load_operation(st: &AppState, id: Uuid) -> ApiResult<Operation> {
    let mut conn = st.db.acquire().await?;
    let job = sqlx::query!(
        "SELECT id, kind, attachment_id, state, phase, step, last_error, request_id, created_at,
             updated_at, finished_at FROM jobs WHERE id = $1",
        id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no operation {id}")))?;
    let steps = sqlx::query_as!(
        OperationStep,
        "SELECT phase, step AS name, started_at, finished_at, attempts, last_error FROM job_steps
         WHERE job_id = $1 ORDER BY phase = 'undo', CASE WHEN phase = 'undo' THEN -position ELSE position END",
        id
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Operation {
        id: job.id,
        kind: job.kind,
        attachment_id: job.attachment_id,
        state: job.state,
        phase: job.phase,
        step: job.step,
        last_error: job.last_error,
        request_id: job.request_id,
        created_at: job.created_at,
        updated_at: job.updated_at,
        finished_at: job.finished_at,
        steps,
    })
}

/// An attach or detach with each of its steps.
#[utoipa::path(get, path = "/api/v1/operations/{id}", impl_for = get_operation, tag = "attachments",
    params(("id" = Uuid, Path)), responses((status = 200, body = Operation), (status = 404, body = Problem)))]
#[actix_web::get("/api/v1/operations/{id}")]
async fn get_operation(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Operation>> {
    Ok(Json(load_operation(&st, id).await?))
}

/// A static path binding Weft manages.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ManagedBinding {
    pub epg: EpgRef,
    /// The binding's APIC DN.
    pub dn: String,
    pub path: String,
    pub encap: String,
    pub mode: String,
    pub immediacy: String,
    /// Live attachments using it.
    pub ref_count: i32,
    /// `applied`, `pending` or `faulted`.
    pub apic_state: String,
    pub last_fault: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
    /// Without references: when it leaves the APIC (unless an attachment takes it again).
    pub release_after: Option<DateTime<Utc>>,
}

/// Every (EPG, path) binding Weft manages, with its reference count and APIC state.
#[utoipa::path(get, path = "/api/v1/bindings", impl_for = list_bindings, tag = "attachments",
    params(Paging), responses((status = 200, body = Page<ManagedBinding>)))]
#[actix_web::get("/api/v1/bindings")]
async fn list_bindings(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<ManagedBinding>>> {
    let (after, limit) = paging.resolve()?;
    let mut conn = st.db.acquire().await?;
    let rows = sqlx::query!(
        "SELECT b.id, e.tenant, e.app, e.name, b.path_dn, b.encap, b.mode, e.immediacy, b.ref_count,
             b.apic_state, b.last_fault, b.checked_at, b.release_after
         FROM bindings b JOIN epgs e ON e.id = b.epg_id WHERE b.id > $1 ORDER BY b.id LIMIT $2",
        after.unwrap_or(0),
        limit + 1
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(Page::decode(rows, limit, |r| {
        let epg = EpgRef {
            tenant: ApicName::parse(&r.tenant)?,
            app: ApicName::parse(&r.app)?,
            epg: ApicName::parse(&r.name)?,
        };
        let dn = Binding::dn(&epg.key(), &PathDn::parse(&r.path_dn)?);
        Ok((
            r.id,
            ManagedBinding {
                epg,
                dn,
                path: r.path_dn,
                encap: r.encap,
                mode: r.mode,
                immediacy: r.immediacy,
                ref_count: r.ref_count,
                apic_state: r.apic_state,
                last_fault: r.last_fault,
                checked_at: r.checked_at,
                release_after: r.release_after,
            },
        ))
    })?))
}

/// A container event from a host's agent (role `agent`): `died` marks the container stopped;
/// `rewired` marks it running again (the agent re-wired it with the same address and MAC; a
/// `lost` attachment is kept); `destroyed` makes the attachment `lost` and queues its detach
/// after the grace period. Events for unknown attachments are acknowledged and ignored.
#[utoipa::path(post, path = "/api/v1/agent/events", impl_for = agent_event, tag = "attachments",
    request_body = ContainerEvent, responses((status = 204, description = "recorded")))]
#[actix_web::post("/api/v1/agent/events")]
async fn agent_event(
    auth: Auth<Agent>,
    st: web::Data<AppState>,
    ApiJson(event): ApiJson<ContainerEvent>,
) -> ApiResult<HttpResponse> {
    let id = event.attachment;
    let mut tx = st.db.begin().await?;
    let Some(before) = read(&mut tx, id).await? else {
        tracing::info!(attachment_id = %id, "container event for an unknown attachment");
        return Ok(HttpResponse::NoContent().finish());
    };
    match event.kind {
        ContainerEventKind::Died => {
            sqlx::query!(
                "UPDATE attachments SET container_status = 'stopped', updated_at = now() WHERE id = $1",
                id
            )
            .execute(&mut *tx)
            .await?;
        }
        ContainerEventKind::Rewired => {
            if let Some((job, Kind::Detach)) = jobs::live(&mut tx, id).await? {
                if before.state == "lost" && jobs::cancel_queued(&mut tx, job).await? {
                    sqlx::query!(
                        "UPDATE attachments SET state = 'attached', lost_at = NULL WHERE id = $1",
                        id
                    )
                    .execute(&mut *tx)
                    .await?;
                }
            }
            sqlx::query!(
                "UPDATE attachments SET container_status = 'running', rewired_at = now(), updated_at = now() WHERE id = $1",
                id
            )
            .execute(&mut *tx)
            .await?;
        }
        ContainerEventKind::Destroyed => {
            let grace = st.workflow.settings.lost_grace;
            lost::mark_lost(&mut tx, id, grace, auth.request_id.as_deref()).await?;
        }
    }
    let after = read(&mut tx, id).await?;
    let action = format!(
        "attachment.container_{}",
        serde_json::to_value(event.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    );
    record(
        &mut tx,
        auth.actor(),
        &action,
        &resource(id),
        Some(&before),
        after.as_ref(),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
