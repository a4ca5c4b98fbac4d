//! Attach: put one container interface into an EPG, fabric side and host side.
//!
//! The steps, in order (each idempotent; the attachment's state while it runs):
//!
//! | step        | does                                                                  | undo |
//! |-------------|-----------------------------------------------------------------------|------|
//! | `lease`     | the attachment's address (its own lease, or its reservation's); the PUT takes it already, so a bad address is a 4xx, and the step confirms it after a crash | lease quarantined |
//! | `validate`  | the host's agent answers and finds the container (read-only)          | - |
//! | `preflight` | the APIC would accept the bindings (F0467 cases); a managed EPG is created | - |
//! | `bind`      | one reference per host path; a path's first reference makes its binding `pending`, and the EPG's pending bindings go to the APIC together in one POST ([`super::batch`]): the step waits (without a worker) for the attaches of the EPG that arrive with it | reference dropped (the binding leaves after the linger when it was the last) |
//! | `segment`   | the agent builds the VLAN segment                                     | segment removed unless another attachment uses it |
//! | `wire`      | the agent wires the container (address, MAC, route, MTU, GARP)       | container unwired |
//!
//! A permanent error (or transient ones past the bound) runs the undo of every step begun,
//! newest first, and the attachment ends `failed` with the step and the object at fault.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sqlx::Postgres;
use weft_agent_api::{
    AttachmentSpec, InterfaceName, MacAddr, Mtu, SegmentMode, SegmentSpec, Target,
};
use weft_apic::{BindingMode, ManagedEpg, PreflightError, PreflightRequest, VlanId};

use super::context::Ctx;
use super::jobs::Step;
use super::{batch, Outcome, StepError};
use crate::alloc::ip;

pub const STEPS: &[Step] = &[
    Step::new("lease", "pending"),
    Step::new("validate", "pending"),
    Step::new("preflight", "binding"),
    Step::new("bind", "binding"),
    Step::new("segment", "wiring"),
    Step::new("wire", "wiring"),
];

pub async fn run(ctx: &Ctx<'_>, step: &str) -> Result<Outcome, StepError> {
    let done = match step {
        "validate" => validate(ctx).await,
        "lease" => lease(ctx).await,
        "preflight" => preflight(ctx).await,
        "bind" => return batch::bind(ctx).await,
        "segment" => segment(ctx).await,
        "wire" => wire(ctx).await,
        other => Err(unknown(other)),
    };
    done.map(|()| Outcome::Done)
}

pub async fn undo(ctx: &Ctx<'_>, step: &str) -> Result<(), StepError> {
    match step {
        "validate" | "preflight" => Ok(()),
        "lease" => release(ctx).await,
        "bind" => unbind(ctx).await,
        "segment" => remove_segment(ctx).await,
        "wire" => unwire(ctx).await,
        other => Err(unknown(other)),
    }
}

fn unknown(step: &str) -> StepError {
    StepError::permanent("job log", format!("unknown step `{step}`"))
}

/// The host has uplinks and its agent finds the container (read-only); an unreachable agent
/// is retried, a missing container fails the attach naming it, before the fabric or the host
/// is changed.
async fn validate(ctx: &Ctx<'_>) -> Result<(), StepError> {
    if ctx.paths.is_empty() {
        return Err(StepError::permanent(
            format!("host `{}`", ctx.host),
            "the host has no uplinks to bind",
        ));
    }
    match ctx.agent()?.resolve(&ctx.target).await {
        Ok(_) => Ok(()),
        Err(e) if container_missing(&e) => Err(StepError::permanent(
            format!("container {} on host `{}`", ctx.target, ctx.host),
            e,
        )),
        Err(e) => Err(ctx.agent_error("finding the container", e)),
    }
}

/// The agent's answer that it cannot find or enter the container (not a failure of its own).
pub fn container_missing(e: &weft_agent_api::ClientError) -> bool {
    matches!(e, weft_agent_api::ClientError::Api { status, .. } if status.as_u16() == 422)
}

/// Leases the address (or takes the reservation's) and records it on the attachment.
async fn lease(ctx: &Ctx<'_>) -> Result<(), StepError> {
    let mut tx = ctx.db().begin().await?;
    let lease = match &ctx.reservation {
        Some(name) => ip::reservation_lease(&mut tx, ctx.epg_id, name)
            .await?
            .ok_or_else(|| {
                StepError::permanent(format!("reservation `{name}`"), "the reservation is gone")
            })?,
        None => ip::lease_attachment(&mut tx, ctx.epg_id, ctx.id, ctx.requested_address).await?,
    };
    record_address(&mut tx, ctx, &lease).await?;
    tx.commit().await?;
    Ok(())
}

/// Stores the leased address on the attachment; another attachment with the same address
/// (through one reservation) is a permanent error.
async fn record_address(
    conn: &mut sqlx::PgConnection,
    ctx: &Ctx<'_>,
    lease: &ip::Lease,
) -> Result<(), StepError> {
    let done = sqlx::query!(
        "UPDATE attachments SET address = $2::text::inet, prefix_len = $3, gateway = $4::text::inet,
             vlan = $5, updated_at = now() WHERE id = $1",
        ctx.id,
        lease.address.to_string(),
        i32::from(lease.subnet.prefix_len()),
        lease.gateway.to_string(),
        i32::from(ctx.vlan.get()),
    )
    .execute(conn)
    .await;
    match done {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StepError::permanent(
            format!("address {}", lease.address),
            "another attachment of this EPG already uses it",
        )),
        other => other.map(drop).map_err(Into::into),
    }
}

/// Would the fabric accept the bindings? A managed EPG missing on the APIC is created first.
/// Skipped (no APIC request) when every binding the attach needs is already `applied` for
/// this EPG with the same encap and mode: the fabric accepted exactly those bindings, and the
/// bind step will post nothing. Any path still to be posted (missing, pending, faulted, or
/// with another encap or mode) is pre-flighted as before.
async fn preflight(ctx: &Ctx<'_>) -> Result<(), StepError> {
    let apic = ctx.apic()?;
    if all_applied(ctx).await? {
        tracing::debug!("every binding is applied already; no pre-flight");
        return Ok(());
    }
    let report = apic
        .client
        .preflight(&PreflightRequest {
            epg: &ctx.epg,
            physical_domain: &ctx.physical_domain,
            encap: ctx.vlan,
            mode: ctx.mode,
            managed: ctx.managed,
            paths: &ctx.paths,
        })
        .await
        .map_err(|e| match e {
            PreflightError::Apic(e) => e.into(),
            other => StepError::permanent(
                other.object_dn().unwrap_or("APIC").to_string(),
                format!("pre-flight: {other}"),
            ),
        })?;
    if ctx.managed && !report.epg_exists {
        apic.client
            .ensure_epg(&ManagedEpg {
                epg: ctx.epg.clone(),
                bridge_domain: ctx.bridge_domain.clone(),
                physical_domain: ctx.physical_domain.clone(),
                vrf: ctx.engine.settings.managed_vrf.clone(),
            })
            .await?;
    }
    Ok(())
}

/// Are the bindings of all the host's paths applied for this EPG with this encap and mode?
async fn all_applied(ctx: &Ctx<'_>) -> Result<bool, StepError> {
    let paths: Vec<String> = ctx.paths.iter().map(ToString::to_string).collect();
    let missing = sqlx::query_scalar!(
        r#"SELECT count(*) AS "missing!" FROM unnest($2::text[]) AS p
           WHERE NOT EXISTS (SELECT 1 FROM bindings b
               WHERE b.epg_id = $1 AND b.path_dn = p AND b.apic_state = 'applied'
                 AND b.encap = $3 AND b.mode = $4)"#,
        ctx.epg_id,
        &paths,
        ctx.vlan.encap().to_string(),
        ctx.mode.as_str(),
    )
    .fetch_one(ctx.db())
    .await?;
    Ok(!paths.is_empty() && missing == 0)
}

/// Drops this attachment's references; a binding left without any is removed from the APIC
/// after the linger (by the sweeper), unless a new attachment takes it again.
pub(super) async fn unbind(ctx: &Ctx<'_>) -> Result<(), StepError> {
    let mut tx = ctx.db().begin().await?;
    let held = sqlx::query_scalar!(
        "SELECT b.id FROM bindings b JOIN binding_refs r ON r.binding_id = b.id
         WHERE r.attachment_id = $1 ORDER BY b.path_dn FOR UPDATE OF b",
        ctx.id
    )
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query!(
        "WITH dropped AS (
             DELETE FROM binding_refs WHERE attachment_id = $1 AND binding_id = ANY($2) RETURNING binding_id)
         UPDATE bindings SET ref_count = ref_count - 1, updated_at = now(),
             release_after = CASE WHEN ref_count = 1 THEN now() + make_interval(secs => $3) END
         WHERE id IN (SELECT binding_id FROM dropped)",
        ctx.id,
        &held,
        ctx.engine.settings.binding_linger.as_secs_f64(),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The segment's mode on the host follows the EPG's binding mode.
fn segment_mode(mode: BindingMode) -> SegmentMode {
    match mode {
        BindingMode::Regular => SegmentMode::Regular,
        BindingMode::Untagged | BindingMode::Native => SegmentMode::Untagged,
    }
}

/// The segment an EPG's VLAN gets on a host (the segment step's and the reconciler's).
pub(crate) fn segment_spec(mode: BindingMode) -> SegmentSpec {
    SegmentSpec {
        mode: segment_mode(mode),
        uplink: None,
    }
}

/// Holds the host's row lock (in the returned transaction) around a change of its segments,
/// across replicas. A removal checks that no other attachment needs the segment and removes
/// it while no attach can ensure it in between: otherwise an attach could ensure the segment
/// just before a detach removed it, and then find none to wire its container onto.
async fn lock_segments(ctx: &Ctx<'_>) -> Result<sqlx::Transaction<'static, Postgres>, StepError> {
    let mut tx = ctx.db().begin().await?;
    sqlx::query!(
        "SELECT id FROM hosts WHERE name = $1 FOR NO KEY UPDATE",
        ctx.host
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(tx)
}

/// The agent builds the host side of the EPG's VLAN.
async fn segment(ctx: &Ctx<'_>) -> Result<(), StepError> {
    let spec = segment_spec(ctx.mode);
    let tx = lock_segments(ctx).await?;
    ctx.agent()?
        .ensure_segment(ctx.vlan, &spec)
        .await
        .map_err(|e| ctx.agent_error(&format!("segment {}", ctx.vlan), e))?;
    tx.commit().await?;
    Ok(())
}

/// Removes the VLAN's segment from the host unless another attachment of the host on that
/// VLAN may still use it (one being attached, attached, or lost and maybe coming back); the
/// agent also refuses (409) while a container is wired to it, and then it stays.
pub(super) async fn remove_segment(ctx: &Ctx<'_>) -> Result<(), StepError> {
    let mut tx = lock_segments(ctx).await?;
    let needed = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM attachments a JOIN hosts h ON h.id = a.host_id
               WHERE h.name = $1 AND a.vlan = $2 AND a.id <> $3
                 AND a.state NOT IN ('failed', 'detaching')) AS "needed!""#,
        ctx.host,
        i32::from(ctx.vlan.get()),
        ctx.id,
    )
    .fetch_one(&mut *tx)
    .await?;
    if needed {
        return Ok(());
    }
    match ctx.agent()?.remove_segment(ctx.vlan).await {
        Ok(()) => {}
        Err(weft_agent_api::ClientError::Api { status, .. }) if status.as_u16() == 409 => {}
        Err(e) => return Err(ctx.agent_error(&format!("segment {}", ctx.vlan), e)),
    }
    tx.commit().await?;
    Ok(())
}

/// What an attachment asks its agent to wire, as stored: the wire step and the reconciler's
/// re-apply send the same spec, so a re-wired container gets the same address and MAC.
pub(crate) struct Wiring<'a> {
    pub target: &'a Target,
    pub interface: &'a str,
    pub vlan: VlanId,
    pub address: Option<Ipv4Addr>,
    pub prefix_len: Option<i32>,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: i32,
}

impl Wiring<'_> {
    /// The agent's spec; an error names the stored value that does not fit.
    pub(crate) fn spec(&self) -> Result<AttachmentSpec, String> {
        let (Some(address), Some(prefix)) = (self.address, self.prefix_len) else {
            return Err("no address was leased".into());
        };
        Ok(AttachmentSpec {
            target: self.target.clone(),
            ifname: InterfaceName::parse(self.interface).map_err(|e| e.0)?,
            vlan: self.vlan,
            address: Ipv4Net::new(address, prefix as u8).map_err(|e| e.to_string())?,
            gateway: self.gateway,
            mac: Some(MacAddr::from_ipv4(address)),
            mtu: Some(
                u16::try_from(self.mtu)
                    .ok()
                    .and_then(|m| Mtu::new(m).ok())
                    .ok_or_else(|| format!("MTU {}", self.mtu))?,
            ),
        })
    }
}

/// The agent wires the container; its MAC is recorded.
async fn wire(ctx: &Ctx<'_>) -> Result<(), StepError> {
    let spec = Wiring {
        target: &ctx.target,
        interface: &ctx.interface,
        vlan: ctx.vlan,
        address: ctx.address,
        prefix_len: ctx.prefix_len,
        gateway: ctx.gateway,
        mtu: ctx.mtu,
    }
    .spec()
    .map_err(|e| StepError::permanent("attachment", e))?;
    let wired = ctx
        .agent()?
        .ensure_attachment(ctx.id, &spec)
        .await
        .map_err(|e| ctx.agent_error("wiring the container", e))?;
    sqlx::query!(
        "UPDATE attachments SET mac = $2, updated_at = now() WHERE id = $1",
        ctx.id,
        wired.spec.effective_mac().to_string(),
    )
    .execute(ctx.db())
    .await?;
    Ok(())
}

/// The agent takes the container's interface away (a missing one is success).
pub(super) async fn unwire(ctx: &Ctx<'_>) -> Result<(), StepError> {
    ctx.agent()?
        .remove_attachment(ctx.id)
        .await
        .map_err(|e| ctx.agent_error("unwiring the container", e))
}

/// Quarantines the attachment's own lease (a reservation keeps its address) and clears it.
pub(super) async fn release(ctx: &Ctx<'_>) -> Result<(), StepError> {
    let mut tx = ctx.db().begin().await?;
    ip::release_attachment(&mut tx, ctx.id, ctx.engine.ip_quarantine).await?;
    sqlx::query!(
        "UPDATE attachments SET address = NULL, prefix_len = NULL, gateway = NULL, mac = NULL,
             updated_at = now() WHERE id = $1",
        ctx.id
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
