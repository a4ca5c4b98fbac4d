//! The `bind` step: bindings of one EPG that arrive together go to the APIC in one POST
//! (a group commit), correct across replicas and crashes.
//!
//! 100 containers of 10 EPGs on 10 hosts need 100 static path bindings (every EPG on every
//! host's path); posted one attach at a time that is 100 APIC writes. Instead:
//!
//! 1. **Take the references.** In one short transaction the attach upserts the binding rows
//!    of its host's paths (locking them in path order, as `unbind` and the flush do), takes
//!    one reference per path (`binding_refs`, counted in `ref_count` under the row lock) and
//!    commits. A path's first reference leaves the binding `pending` (since `pending_since`).
//!    The upsert (`ON CONFLICT DO UPDATE`) inserts the row again when a linger sweep deleted
//!    it meanwhile, so a reference is never lost to a sweep.
//! 2. **All applied?** Then the step is done: no APIC call (the second container of an EPG on
//!    a host makes no write).
//! 3. **Flush now, or wait?** The EPG's pending bindings are posted now when no other
//!    unfinished attach of the EPG that would add one is still before this point (a job at an
//!    earlier step, or at `bind` without its references yet, one of whose paths has no
//!    binding row of the EPG), or when the oldest pending binding of the EPG has waited
//!    `workflow.binding_batch_window_ms` (so one slow or retrying job never holds the others
//!    back for long). Otherwise the job gives its worker back ([`Outcome::Wait`]: re-queued,
//!    runnable at the window's end, not an attempt); with 8 workers and 100 jobs, waiting in a
//!    worker would block the very jobs it waits for. Attaches that are queued together are
//!    therefore posted together: the last of an EPG to take its references posts them all.
//! 4. **Flush.** Under the EPG's flush lock (an advisory transaction lock keyed by the EPG),
//!    the EPG's pending bindings with references are locked and posted in ONE
//!    `apply_bindings` (the `fvAEPg` with one `fvRsPathAtt` child per path), then marked
//!    `applied`, in the same transaction; the jobs waiting on them are made runnable and this
//!    replica's workers woken. Two replicas never post one binding twice (the second finds
//!    it applied once the first commits), and the sweeper, which takes only bindings without
//!    references and skips locked rows, never removes a binding being posted.
//!
//! Failures: a transient APIC error rolls back (the bindings stay pending) and the flushing
//! job retries with backoff; the others flush at their window's end. A permanent one marks
//! every binding of that POST `faulted` with the APIC's error and wakes their jobs, which all
//! fail with it and undo (dropping their references; a new attach on the path starts over
//! from `pending`). A crash between the POST and the commit leaves the bindings pending: the
//! next flush posts them again, which the APIC takes as a no-op (`status: modified`).

use std::time::Duration;

use uuid::Uuid;
use weft_apic::{Binding, PathDn};

use super::attach::STEPS;
use super::context::Ctx;
use super::{jobs, Outcome, StepError};
use crate::apic::Apic;

/// The step's name in the job log (jobs waiting in it are woken by a flush).
const BIND: &str = "bind";

/// Takes the attachment's references, then waits for, or does, its EPG's flush.
pub(super) async fn bind(ctx: &Ctx<'_>) -> Result<Outcome, StepError> {
    let apic = ctx.apic()?;
    take_references(ctx).await?;
    // After a flush the second round reads its outcome (applied, or faulted by a refusal).
    for _ in 0..2 {
        match own_state(ctx).await? {
            Own::Applied => return Ok(Outcome::Done),
            Own::Faulted { dn, fault } => {
                return Err(StepError::permanent(
                    dn,
                    format!("the APIC refused the POST of the EPG's pending bindings: {fault}"),
                ))
            }
            Own::Pending => {}
        }
        if let Some(wait) = batch_wait(ctx).await? {
            return Ok(Outcome::Wait(wait));
        }
        flush(ctx, apic).await?;
    }
    Ok(Outcome::Wait(Duration::ZERO))
}

/// One reference per host path, under the binding rows' locks; a path's first reference
/// makes its binding pending (a binding refused earlier is tried again).
async fn take_references(ctx: &Ctx<'_>) -> Result<(), StepError> {
    let paths: Vec<String> = ctx.paths.iter().map(ToString::to_string).collect();
    let mut tx = ctx.db().begin().await?;
    let ids = sqlx::query_scalar!(
        "INSERT INTO bindings (epg_id, path_dn, encap, mode, pending_since)
         SELECT $1, p, $3, $4, now() FROM (SELECT DISTINCT unnest($2::text[]) AS p) AS wanted ORDER BY p
         ON CONFLICT (epg_id, path_dn) DO UPDATE SET updated_at = now()
         RETURNING id",
        ctx.epg_id,
        &paths,
        ctx.vlan.encap().to_string(),
        ctx.mode.as_str(),
    )
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query!(
        "WITH taken AS (
             INSERT INTO binding_refs (binding_id, attachment_id) SELECT b, $2 FROM unnest($1::bigint[]) AS b
             ON CONFLICT DO NOTHING RETURNING binding_id)
         UPDATE bindings SET ref_count = ref_count + 1, release_after = NULL, updated_at = now(),
             apic_state = CASE WHEN apic_state = 'faulted' THEN 'pending' ELSE apic_state END,
             pending_since = CASE WHEN apic_state = 'applied' THEN NULL
                                  ELSE COALESCE(pending_since, now()) END
         WHERE id IN (SELECT binding_id FROM taken)",
        &ids,
        ctx.id,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Where the attachment's bindings are.
enum Own {
    Applied,
    Pending,
    /// A POST they were in was refused: the binding's DN and the APIC's error.
    Faulted {
        dn: String,
        fault: String,
    },
}

async fn own_state(ctx: &Ctx<'_>) -> Result<Own, StepError> {
    let rows = sqlx::query!(
        "SELECT b.path_dn, b.apic_state, b.last_fault FROM bindings b
         JOIN binding_refs r ON r.binding_id = b.id WHERE r.attachment_id = $1 ORDER BY b.path_dn",
        ctx.id
    )
    .fetch_all(ctx.db())
    .await?;
    if let Some(r) = rows.iter().find(|r| r.apic_state == "faulted") {
        let dn = ctx
            .paths
            .iter()
            .find(|p| p.to_string() == r.path_dn)
            .map_or_else(|| ctx.epg.dn(), |p| Binding::dn(&ctx.epg, p));
        let fault = r.last_fault.clone().unwrap_or_else(|| "faulted".into());
        return Ok(Own::Faulted { dn, fault });
    }
    Ok(if rows.iter().all(|r| r.apic_state == "applied") {
        Own::Applied
    } else {
        Own::Pending
    })
}

/// `None` when the EPG's pending bindings are to be posted now; otherwise how long to wait
/// at most (until the oldest pending binding's window ends; a flush wakes the job earlier).
async fn batch_wait(ctx: &Ctx<'_>) -> Result<Option<Duration>, StepError> {
    let earlier: Vec<&str> = STEPS
        .iter()
        .map(|s| s.name)
        .take_while(|&n| n != BIND)
        .chain([BIND])
        .collect();
    let row = sqlx::query!(
        r#"SELECT
             (SELECT count(*) FROM jobs j JOIN attachments a ON a.id = j.attachment_id
              WHERE a.epg_id = $1 AND j.attachment_id <> $2 AND j.kind = 'attach'
                AND j.phase = 'forward' AND j.state IN ('queued', 'running') AND j.step = ANY($3)
                AND NOT EXISTS (SELECT 1 FROM binding_refs r WHERE r.attachment_id = j.attachment_id)
                AND EXISTS (SELECT 1 FROM unnest(a.paths) AS p WHERE NOT EXISTS (
                    SELECT 1 FROM bindings b WHERE b.epg_id = $1 AND b.path_dn = p))) AS "adding!",
             (SELECT EXTRACT(EPOCH FROM min(pending_since) + make_interval(secs => $4) - now())::float8
              FROM bindings WHERE epg_id = $1 AND apic_state = 'pending' AND ref_count > 0) AS left_secs"#,
        ctx.epg_id,
        ctx.id,
        &earlier as &[&str],
        ctx.engine.settings.binding_batch_window.as_secs_f64(),
    )
    .fetch_one(ctx.db())
    .await?;
    let left = row.left_secs.unwrap_or(0.0);
    Ok((row.adding > 0 && left > 0.0).then(|| Duration::from_secs_f64(left)))
}

/// Posts the EPG's pending bindings in one request, under its flush lock (see the module
/// doc), and wakes the jobs waiting on them. A permanent APIC error is recorded on every
/// binding of the POST (their jobs fail with it); a transient one is returned for a retry.
async fn flush(ctx: &Ctx<'_>, apic: &Apic) -> Result<(), StepError> {
    let mut tx = ctx.db().begin().await?;
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('weft-binding-batch/' || $1::bigint::text, 0))",
        ctx.epg_id
    )
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query!(
        "SELECT id, path_dn FROM bindings WHERE epg_id = $1 AND apic_state = 'pending' AND ref_count > 0
         ORDER BY path_dn FOR UPDATE",
        ctx.epg_id
    )
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(()); // another job posted them
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let bindings = rows
        .iter()
        .map(|r| {
            PathDn::parse(&r.path_dn)
                .map(|path| Binding {
                    path,
                    encap: ctx.vlan,
                    mode: ctx.mode,
                    immediacy: ctx.immediacy,
                })
                .map_err(|e| StepError::permanent(r.path_dn.clone(), e.0))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fault = match apic.client.apply_bindings(&ctx.epg, &bindings).await {
        Ok(()) => None,
        Err(e) => match StepError::from(e) {
            e if e.is_transient() => return Err(e),
            e => Some(e.to_string()),
        },
    };
    let state = if fault.is_some() {
        "faulted"
    } else {
        "applied"
    };
    sqlx::query!(
        "UPDATE bindings SET apic_state = $2, last_fault = $3, pending_since = NULL,
             checked_at = now(), updated_at = now()
         WHERE id = ANY($1)",
        &ids,
        state,
        fault,
    )
    .execute(&mut *tx)
    .await?;
    let waiting: Vec<Uuid> = sqlx::query_scalar!(
        "SELECT DISTINCT attachment_id FROM binding_refs WHERE binding_id = ANY($1)",
        &ids
    )
    .fetch_all(&mut *tx)
    .await?;
    jobs::wake_waiting(&mut tx, BIND, &waiting).await?;
    tx.commit().await?;
    ctx.engine.wake_all();
    match &fault {
        None => {
            tracing::info!(epg = %ctx.epg, bindings = ids.len(), "posted the EPG's pending bindings in one request")
        }
        Some(f) => {
            tracing::warn!(epg = %ctx.epg, bindings = ids.len(), fault = %f, "the APIC refused the EPG's pending bindings")
        }
    }
    Ok(())
}
