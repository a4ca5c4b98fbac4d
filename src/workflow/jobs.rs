//! The durable job log: one row per attach or detach (`jobs`), one per step it ran
//! (`job_steps`). A worker claims a runnable job with `FOR UPDATE SKIP LOCKED` and holds it
//! for a bounded time that its heartbeat extends; a crashed worker's claim runs out and any
//! replica resumes the job at the step it had reached. Every write of a worker names its
//! claim, so a worker that lost its claim can no longer move the job.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::context::Ctx;
use super::{attach, detach, Outcome, StepError};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Attach,
    Detach,
}

/// One step of a workflow: its name (in the job log) and the attachment's state while it runs.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub name: &'static str,
    pub state: &'static str,
}

impl Step {
    pub const fn new(name: &'static str, state: &'static str) -> Self {
        Self { name, state }
    }
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Attach => "attach",
            Kind::Detach => "detach",
        }
    }

    fn parse(s: &str) -> Result<Self, sqlx::Error> {
        match s {
            "attach" => Ok(Kind::Attach),
            "detach" => Ok(Kind::Detach),
            other => Err(decode_error(format!("job kind `{other}`"))),
        }
    }

    fn list(self) -> &'static [Step] {
        match self {
            Kind::Attach => attach::STEPS,
            Kind::Detach => detach::STEPS,
        }
    }

    /// The step names, in order.
    pub fn steps(self) -> Vec<&'static str> {
        self.list().iter().map(|s| s.name).collect()
    }

    /// The attachment's state while step `i` runs.
    pub fn state(self, i: usize) -> &'static str {
        self.list()[i].state
    }

    pub async fn run(self, ctx: &Ctx<'_>, step: &str) -> Result<Outcome, StepError> {
        match self {
            Kind::Attach => attach::run(ctx, step).await,
            Kind::Detach => detach::run(ctx, step).await.map(|()| Outcome::Done),
        }
    }

    pub async fn undo(self, ctx: &Ctx<'_>, step: &str) -> Result<(), StepError> {
        match self {
            Kind::Attach => attach::undo(ctx, step).await,
            // A detach is itself the undo; it is never reversed.
            Kind::Detach => Ok(()),
        }
    }
}

/// Going through the steps, or back through their undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Forward,
    Undo,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Undo => "undo",
        }
    }
}

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub kind: Kind,
    pub attachment_id: Uuid,
    pub phase: Phase,
    /// Index of the step to run next; `None` when every step is done.
    pub step: Option<usize>,
    /// Failed tries of the current step.
    pub attempts: i32,
    pub request_id: Option<String>,
    /// Why the attach turned to undo (kept for the final reason).
    pub last_error: Option<String>,
}

fn decode_error(what: String) -> sqlx::Error {
    sqlx::Error::Decode(format!("unknown {what} in the job log").into())
}

/// The claim was taken over by another worker (ours ran out): stop touching the job.
fn claim_lost() -> sqlx::Error {
    sqlx::Error::Protocol("the job's claim was lost to another worker".into())
}

/// Queues a job for an attachment, inside the caller's transaction; `delay` postpones it.
pub async fn enqueue(
    conn: &mut PgConnection,
    kind: Kind,
    attachment_id: Uuid,
    request_id: Option<&str>,
    delay: Duration,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query!(
        "INSERT INTO jobs (id, kind, attachment_id, step, request_id, run_after)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
        id,
        kind.as_str(),
        attachment_id,
        kind.list()[0].name,
        request_id,
        delay.as_secs_f64(),
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// The unfinished job of an attachment, with its kind.
pub async fn live(
    conn: &mut PgConnection,
    attachment_id: Uuid,
) -> Result<Option<(Uuid, Kind)>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT id, kind FROM jobs WHERE attachment_id = $1 AND state IN ('queued', 'running')",
        attachment_id
    )
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok((r.id, Kind::parse(&r.kind)?))).transpose()
}

/// Makes a queued job runnable now (a DELETE of a `lost` attachment in its grace period).
pub async fn run_now(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE jobs SET run_after = now() WHERE id = $1 AND state = 'queued'",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Cancels a job no worker has started (a `lost` container came back).
pub async fn cancel_queued(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let n = sqlx::query!(
        "UPDATE jobs SET state = 'cancelled', finished_at = now(), updated_at = now()
         WHERE id = $1 AND state = 'queued' AND attempts = 0 AND step = 'unwire'",
        id
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Claims the oldest runnable job: a queued one whose time has come, or a running one whose
/// claim ran out (its worker died).
pub async fn claim(db: &PgPool, me: Uuid, hold: Duration) -> Result<Option<Job>, sqlx::Error> {
    let row = sqlx::query!(
        r#"UPDATE jobs SET state = 'running', claimed_by = $1,
               claimed_until = now() + make_interval(secs => $2), updated_at = now()
           WHERE id = (SELECT id FROM jobs
                       WHERE (state = 'queued' AND run_after <= now())
                          OR (state = 'running' AND claimed_until < now())
                       ORDER BY run_after LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING id, kind, attachment_id AS "attachment_id!", phase, step, attempts,
               request_id, last_error"#,
        me,
        hold.as_secs_f64(),
    )
    .fetch_optional(db)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let kind = Kind::parse(&r.kind)?;
    let phase = match r.phase.as_str() {
        "forward" => Phase::Forward,
        "undo" => Phase::Undo,
        other => return Err(decode_error(format!("job phase `{other}`"))),
    };
    let step = match r.step {
        None => None,
        Some(name) => Some(
            kind.list()
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| decode_error(format!("{} step `{name}`", kind.as_str())))?,
        ),
    };
    Ok(Some(Job {
        id: r.id,
        kind,
        attachment_id: r.attachment_id,
        phase,
        step,
        attempts: r.attempts,
        request_id: r.request_id,
        last_error: r.last_error,
    }))
}

/// The heartbeat: keeps the claim while the worker is alive.
pub async fn extend_claim(
    db: &PgPool,
    job: Uuid,
    me: Uuid,
    hold: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE jobs SET claimed_until = now() + make_interval(secs => $3)
         WHERE id = $1 AND claimed_by = $2 AND state = 'running'",
        job,
        me,
        hold.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok(())
}

fn step_name(job: &Job) -> Option<&'static str> {
    job.step.map(|i| job.kind.list()[i].name)
}

/// Records where the job is (step, phase, attempts, first error) after a step; `done` names
/// the step that just ended well, marked finished in the same statement, so the log never
/// shows the step done without the job past it, or the reverse.
pub async fn advance(
    db: &PgPool,
    job: &Job,
    me: Uuid,
    done: Option<&str>,
) -> Result<(), sqlx::Error> {
    let n = sqlx::query!(
        "WITH done AS (
             UPDATE job_steps SET finished_at = now()
             WHERE $7::text IS NOT NULL AND job_id = $1 AND phase = $4 AND step = $7)
         UPDATE jobs SET step = $3, phase = $4, attempts = $5, last_error = $6, updated_at = now()
         WHERE id = $1 AND claimed_by = $2",
        job.id,
        me,
        step_name(job),
        job.phase.as_str(),
        job.attempts,
        job.last_error,
        done,
    )
    .execute(db)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(claim_lost());
    }
    Ok(())
}

/// Gives the job back until `delay` has passed (a transient error).
pub async fn retry_later(
    db: &PgPool,
    job: &Job,
    me: Uuid,
    delay: Duration,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE jobs SET state = 'queued', claimed_by = NULL, claimed_until = NULL, attempts = $3,
             run_after = now() + make_interval(secs => $4), last_error = $5, updated_at = now()
         WHERE id = $1 AND claimed_by = $2",
        job.id,
        me,
        job.attempts,
        delay.as_secs_f64(),
        error,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Gives the job back while its step waits for other jobs (see [`Outcome::Wait`]): runnable
/// again after `delay` or when woken earlier, with its attempts unchanged, and the step marked
/// waiting so that running it again does not count as another attempt.
pub async fn wait(
    db: &PgPool,
    job: &Job,
    me: Uuid,
    step: &str,
    delay: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH step AS (
             UPDATE job_steps SET waiting = true WHERE job_id = $1 AND phase = $3 AND step = $4)
         UPDATE jobs SET state = 'queued', claimed_by = NULL, claimed_until = NULL,
             run_after = now() + make_interval(secs => $5), updated_at = now()
         WHERE id = $1 AND claimed_by = $2",
        job.id,
        me,
        job.phase.as_str(),
        step,
        delay.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Makes the jobs waiting at `step` for one of `attachments` runnable now (their EPG's
/// binding batch was posted, or refused).
pub async fn wake_waiting(
    conn: &mut PgConnection,
    step: &str,
    attachments: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE jobs SET run_after = now(), updated_at = now()
         WHERE attachment_id = ANY($1) AND state = 'queued' AND step = $2 AND run_after > now()",
        attachments,
        step,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends the job (`succeeded` or `failed`, with the reason) and, in the same statement, moves
/// its attachment to `attachment_state` when given, so no request sees a settled attachment
/// whose job still runs.
pub async fn finish(
    db: &PgPool,
    job: &Job,
    me: Uuid,
    state: &str,
    error: Option<&str>,
    attachment_state: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH att AS (
             UPDATE attachments SET state = $5, updated_at = now(),
                 last_error = CASE WHEN $5 = 'attached' THEN NULL ELSE COALESCE($4, last_error) END
             WHERE id = $6 AND $5::text IS NOT NULL AND EXISTS (
                 SELECT 1 FROM jobs WHERE id = $1 AND claimed_by = $2))
         UPDATE jobs SET state = $3, step = NULL, last_error = COALESCE($4, last_error),
             claimed_by = NULL, claimed_until = NULL, finished_at = now(), updated_at = now()
         WHERE id = $1 AND claimed_by = $2",
        job.id,
        me,
        state,
        error,
        attachment_state,
        job.attachment_id,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A step begins (again): one more attempt, unless it comes back from waiting; in the same
/// statement the attachment moves to `state` when given (a forward step's state).
pub async fn start_step(
    db: &PgPool,
    job: &Job,
    name: &str,
    position: usize,
    state: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH att AS (
             UPDATE attachments SET state = $5, updated_at = now()
             WHERE id = $6 AND $5::text IS NOT NULL AND state <> $5)
         INSERT INTO job_steps (job_id, phase, step, position, attempts) VALUES ($1, $2, $3, $4, 1)
         ON CONFLICT (job_id, phase, step) DO UPDATE
             SET attempts = job_steps.attempts + CASE WHEN job_steps.waiting THEN 0 ELSE 1 END,
                 waiting = false, finished_at = NULL",
        job.id,
        job.phase.as_str(),
        name,
        position as i32,
        state,
        job.attachment_id,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A step failed with `error`.
pub async fn fail_step(db: &PgPool, job: &Job, name: &str, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE job_steps SET last_error = $4 WHERE job_id = $1 AND phase = $2 AND step = $3",
        job.id,
        job.phase.as_str(),
        name,
        error,
    )
    .execute(db)
    .await?;
    Ok(())
}
