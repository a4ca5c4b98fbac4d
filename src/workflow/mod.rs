//! The workflows that put a container into an EPG and take it out again, driven by a durable
//! job log in Postgres.
//!
//! Read [`attach`] and [`detach`] first: each lists its steps once, in order, with the step
//! functions beside them. This module is the machinery around them: the job log ([`jobs`]),
//! the workers that claim jobs (`FOR UPDATE SKIP LOCKED`, so any number of replicas work side
//! by side), retries with jittered backoff for transient errors, undo in reverse for permanent
//! ones, and the sweeper that removes bindings whose last reference left (after a linger) and
//! detaches containers that are gone (after a grace period).
//!
//! Every step is idempotent: a worker that dies mid-step leaves its claim to run out, and the
//! replica that takes the job over runs that step again.

pub mod attach;
pub mod batch;
pub mod context;
pub mod detach;
pub mod jobs;
pub mod lost;
pub mod reconcile;
pub mod sweep;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sqlx::PgPool;
use tokio::sync::{broadcast, Notify};
use tracing::Instrument;
use uuid::Uuid;

use crate::apic::Apic;
use context::Ctx;
use jobs::{Job, Kind, Phase};

/// How the workers behave (the `[workflow]` settings).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Jobs one replica runs at the same time.
    pub workers: usize,
    /// Tries of one step before a transient error counts as permanent.
    pub max_attempts: u32,
    /// How long an APIC binding outlives its last reference.
    pub binding_linger: Duration,
    /// How long a new binding waits at most for the other attaches of its EPG, so that they
    /// go to the APIC in one POST (see [`batch`]).
    pub binding_batch_window: Duration,
    /// How long a destroyed container's attachment stays `lost` before it is detached.
    pub lost_grace: Duration,
    /// How long a claim on a job lasts without a heartbeat (a crashed replica's jobs resume
    /// after this).
    pub claim: Duration,
    /// First retry delay; doubles per attempt, with jitter, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often an idle worker looks for jobs queued by other replicas.
    pub poll: Duration,
    /// Root CA (PEM) for agents serving HTTPS with private certificates.
    pub agent_ca_pem: Option<Arc<Vec<u8>>>,
    /// The VRF a managed EPG's bridge domain is put on when Weft has to create the BD (it
    /// exists in neither the tenant nor `common`); an existing BD keeps its own.
    pub managed_vrf: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            workers: 8,
            max_attempts: 5,
            binding_linger: Duration::from_secs(30),
            binding_batch_window: Duration::from_millis(200),
            lost_grace: Duration::from_secs(300),
            claim: Duration::from_secs(30),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            poll: Duration::from_millis(500),
            agent_ca_pem: None,
            managed_vrf: "default".into(),
        }
    }
}

/// What a step that did not fail did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The step is done; the job moves on.
    Done,
    /// The step waits for other jobs (its EPG's binding batch): the job gives its worker back
    /// and runs the step again after at most this long, or when they wake it. Not an attempt.
    Wait(Duration),
}

/// Why a step failed. `Transient` is retried (with backoff, up to the bound); `Permanent`
/// starts the undo. `object` names what was at fault (an APIC DN, an agent URL, an address).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{object}: {message}")]
    Transient { object: String, message: String },
    #[error("{object}: {message}")]
    Permanent { object: String, message: String },
}

impl StepError {
    pub fn transient(object: impl Into<String>, message: impl ToString) -> Self {
        Self::Transient {
            object: object.into(),
            message: message.to_string(),
        }
    }

    pub fn permanent(object: impl Into<String>, message: impl ToString) -> Self {
        Self::Permanent {
            object: object.into(),
            message: message.to_string(),
        }
    }

    fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

impl From<sqlx::Error> for StepError {
    fn from(e: sqlx::Error) -> Self {
        Self::transient("database", e)
    }
}

impl From<crate::alloc::AllocError> for StepError {
    fn from(e: crate::alloc::AllocError) -> Self {
        match e {
            crate::alloc::AllocError::Database(e) => e.into(),
            other => Self::permanent("address", other),
        }
    }
}

impl From<weft_apic::ApicError> for StepError {
    fn from(e: weft_apic::ApicError) -> Self {
        if e.is_transient() {
            Self::transient("APIC", e)
        } else {
            let object = match &e {
                weft_apic::ApicError::NotOwned { dn, .. } => dn.clone(),
                weft_apic::ApicError::Api { path, .. } => path.clone(),
                _ => "APIC".into(),
            };
            Self::permanent(object, e)
        }
    }
}

/// How many job ends a slow `?wait=` waiter may fall behind before it re-reads anyway.
const FINISHED_BACKLOG: usize = 1024;

/// The workflow engine of one replica: shared by the HTTP handlers (to wake the workers and
/// wait for jobs) and the workers.
pub struct Engine {
    pub db: PgPool,
    /// For the idle workers' and the sweeper's polling only: the same database without
    /// statement logging, so polling does not flood debug logs with lines of no request.
    poll_db: PgPool,
    pub apic: Option<Arc<Apic>>,
    pub settings: Settings,
    pub ip_quarantine: Duration,
    /// This replica's identity on its claims.
    pub id: Uuid,
    /// Woken when a job is queued here, so a local worker starts at once.
    wake: Notify,
    /// The attachment of every job a local worker lets go of (finished, or waiting for a
    /// retry), for `?wait=`: a waiter wakes for its own attachment only, not for every job.
    finished: broadcast::Sender<Uuid>,
}

impl Engine {
    pub fn new(
        db: PgPool,
        apic: Option<Arc<Apic>>,
        settings: Settings,
        ip_quarantine: Duration,
    ) -> Self {
        let quiet =
            sqlx::ConnectOptions::disable_statement_logging((*db.connect_options()).clone());
        let poll_db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy_with(quiet);
        Self {
            db,
            poll_db,
            apic,
            settings,
            ip_quarantine,
            id: Uuid::new_v4(),
            wake: Notify::new(),
            finished: broadcast::channel(FINISHED_BACKLOG).0,
        }
    }

    /// Attachments whose job a local worker has let go of from now on (see `finished`).
    pub fn finished(&self) -> broadcast::Receiver<Uuid> {
        self.finished.subscribe()
    }

    /// Tells a local worker that a job is ready.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Tells every idle local worker that jobs are ready (a batch woke its waiting jobs).
    pub fn wake_all(&self) {
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    /// Starts the workers and the sweeper; they run until the runtime stops.
    pub fn start(self: &Arc<Self>) {
        for n in 0..self.settings.workers {
            let engine = self.clone();
            tokio::spawn(async move { engine.worker(n).await });
        }
        let engine = self.clone();
        tokio::spawn(async move { sweep::run(engine).await });
    }

    async fn worker(self: Arc<Self>, n: usize) {
        loop {
            match jobs::claim(&self.poll_db, self.id, self.settings.claim).await {
                Ok(Some(job)) => {
                    let span = tracing::info_span!("job", job_id = %job.id, kind = job.kind.as_str(),
                        attachment_id = %job.attachment_id, request_id = %job.request_id.as_deref().unwrap_or(""), worker = n);
                    self.run_job(job).instrument(span).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "claiming a job failed"),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.settings.poll) => {}
            }
        }
    }

    /// Runs a claimed job from the step it is at, until it finishes or waits for a retry.
    async fn run_job(self: &Arc<Self>, mut job: Job) {
        let heartbeat = {
            let (db, id, job_id, claim) = (self.db.clone(), self.id, job.id, self.settings.claim);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(claim / 3).await;
                    if let Err(e) = jobs::extend_claim(&db, job_id, id, claim).await {
                        tracing::warn!(error = %e, "extending the job's claim failed");
                    }
                }
            })
        };
        let outcome = self.drive(&mut job).await;
        heartbeat.abort();
        if let Err(e) = outcome {
            // The database is unreachable: give the job back, to be tried again later.
            tracing::warn!(error = %e, "job interrupted; it resumes from its log");
            let _ = jobs::retry_later(
                &self.db,
                &job,
                self.id,
                self.settings.backoff_max,
                &e.to_string(),
            )
            .await;
        }
        // No receiver (nobody waits) is fine.
        let _ = self.finished.send(job.attachment_id);
        self.wake.notify_one();
    }

    /// The step loop: forward through the kind's steps; on a permanent error (or transient
    /// ones past the bound) backwards through the undo of every step begun so far.
    async fn drive(&self, job: &mut Job) -> Result<(), sqlx::Error> {
        let steps = job.kind.steps();
        loop {
            let Some(step) = job.step else {
                return self.finish(job).await;
            };
            let name = steps[step];
            let ctx = match Ctx::load(self, job).await {
                Ok(Some(ctx)) => ctx,
                // The attachment is gone (a detach finished elsewhere): nothing is left to do.
                Ok(None) => {
                    return jobs::finish(&self.db, job, self.id, "succeeded", None, None).await
                }
                Err(e) => match self.failed_step(job, name, e).await? {
                    true => continue,
                    false => return Ok(()),
                },
            };
            let state = (job.phase == Phase::Forward).then(|| job.kind.state(step));
            jobs::start_step(&self.db, job, name, step, state).await?;
            let result = match job.phase {
                Phase::Forward => job.kind.run(&ctx, name).await,
                Phase::Undo => job.kind.undo(&ctx, name).await.map(|()| Outcome::Done),
            };
            match result {
                Ok(Outcome::Wait(delay)) => {
                    tracing::debug!(
                        step = name,
                        delay_ms = delay.as_millis() as u64,
                        "step waits"
                    );
                    jobs::wait(&self.db, job, self.id, name, delay).await?;
                    return Ok(());
                }
                Ok(Outcome::Done) => {
                    tracing::info!(step = name, phase = job.phase.as_str(), "step done");
                    job.attempts = 0;
                    job.step = match job.phase {
                        Phase::Forward => (step + 1 < steps.len()).then_some(step + 1),
                        Phase::Undo => step.checked_sub(1),
                    };
                    jobs::advance(&self.db, job, self.id, Some(name)).await?;
                }
                Err(e) => {
                    if !self.failed_step(job, name, e).await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// A step failed: retry later, or turn to undo (forward), or give up (undo). True when
    /// the job goes on now (its undo).
    async fn failed_step(
        &self,
        job: &mut Job,
        name: &str,
        e: StepError,
    ) -> Result<bool, sqlx::Error> {
        let reason = format!("step `{name}` failed: {e}");
        jobs::fail_step(&self.db, job, name, &reason).await?;
        job.attempts += 1;
        if e.is_transient() && (job.attempts as u32) < self.settings.max_attempts {
            let delay = self.backoff(job.attempts as u32);
            tracing::warn!(step = name, attempt = job.attempts, delay_ms = delay.as_millis() as u64, error = %e, "transient error; retrying");
            jobs::retry_later(&self.db, job, self.id, delay, &reason).await?;
            return Ok(false);
        }
        tracing::warn!(step = name, phase = job.phase.as_str(), error = %e, "step failed");
        match (job.kind, job.phase) {
            (Kind::Attach, Phase::Forward) => {
                // The attachment keeps its state until the undo is done, then turns `failed`.
                job.phase = Phase::Undo;
                job.attempts = 0;
                job.last_error = Some(reason);
                // The failed step may have done part of its work: its undo runs first.
                jobs::advance(&self.db, job, self.id, None).await?;
                Ok(true)
            }
            _ => {
                let reason = match &job.last_error {
                    Some(first) if job.phase == Phase::Undo => {
                        format!("{first}; cleaning up, {reason}")
                    }
                    _ => reason,
                };
                jobs::finish(
                    &self.db,
                    job,
                    self.id,
                    "failed",
                    Some(&reason),
                    Some("failed"),
                )
                .await?;
                Ok(false)
            }
        }
    }

    /// The job ran out of steps: forward means done, undo means failed-and-cleaned.
    async fn finish(&self, job: &Job) -> Result<(), sqlx::Error> {
        let (state, error, attachment) = match (job.kind, job.phase) {
            (Kind::Attach, Phase::Forward) => ("succeeded", None, Some("attached")),
            // The last step deleted the attachment.
            (Kind::Detach, Phase::Forward) => ("succeeded", None, None),
            (_, Phase::Undo) => (
                "failed",
                Some(job.last_error.as_deref().unwrap_or("undone")),
                Some("failed"),
            ),
        };
        jobs::finish(&self.db, job, self.id, state, error, attachment).await
    }

    /// Exponential backoff with full jitter, so retries of many jobs do not arrive together.
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .settings
            .backoff_base
            .saturating_mul(1 << attempt.min(16))
            .min(self.settings.backoff_max);
        let half = cap / 2;
        half + cap.mul_f64(rand::thread_rng().gen_range(0.0..0.5))
    }
}
