//! The reconciler: keeps the fabric and the hosts true to the database after the attach is
//! done (somebody deletes a binding in the APIC GUI, an agent loses its state, a container is
//! recreated).
//!
//! One replica at a time leads: it holds a Postgres advisory lock ([`LEADER_LOCK`]) on a
//! connection of its own, outside the pool, so the lock goes when the replica (or its
//! connection) dies, and another replica takes it at its next try, within one interval. The
//! leader runs a pass every `reconcile.interval_secs`. A pass on demand (`POST
//! /api/v1/reconcile`) runs on the replica that was asked; passes of all replicas take turns
//! under a second advisory lock ([`RUN_LOCK`]), so two never repair the same thing at once.
//!
//! A pass compares three sides, each read in bulk (its cost grows linearly):
//! - desired: the `bindings` rows (referenced, or within their linger) and the `attached`
//!   attachments without a job in flight;
//! - the APIC: every `fvRsPathAtt` (one paginated class query; Weft's carry its annotation)
//!   and every binding fault delegate (one more);
//! - every agent's `GET /v1/state`, concurrently with a bound.
//!
//! and repairs: missing or wrong bindings are posted again (one POST per EPG), orphans Weft
//! owns removed, missing segments and interfaces re-applied with the same spec the attach
//! sent, agent-side leftovers of attachments that no longer exist removed, containers the
//! agent reports gone put on the `lost` path. An APIC object without Weft's annotation is never
//! changed; when it blocks one of Weft's bindings it is reported as a conflict. Each repair
//! takes the rows the workflow takes (briefly, skipping those a job holds), re-checks them and
//! writes an audit entry whose request id is `reconcile:<run id>`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tracing::Instrument;
use utoipa::ToSchema;
use uuid::Uuid;
use weft_agent_api::{AgentClient, AgentState, Target};
use weft_apic::{
    fault_on, ApicError, Binding, BindingMode, EpgKey, Fault, Immediacy, OwnedBinding, PathDn,
    VlanId,
};

use super::attach::{segment_spec, Wiring};
use super::context::agent_client;
use super::{jobs, lost, Engine};
use crate::db::audit::{self, Actor};
use crate::db::pools;
use crate::domain::VlanRange;

/// How the reconciler runs (the `[reconcile]` settings).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time between the leader's passes, and between other replicas' tries to lead.
    pub interval: Duration,
    /// Agents asked for their state at the same time.
    pub agent_concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            agent_concurrency: 16,
        }
    }
}

/// Held by the leading replica for as long as it leads.
pub const LEADER_LOCK: i64 = 0x7765_6674_7263_0001;
/// Held by the replica running a pass, for the pass.
pub const RUN_LOCK: i64 = 0x7765_6674_7263_0002;
/// Longest wait for another replica's pass to finish before a requested pass gives up.
const RUN_LOCK_WAIT: &str = "60s";
/// Runs kept in `reconcile_runs`.
const HISTORY: i64 = 100;
/// The audit log's actor for every repair.
const ACTOR: &str = "reconciler";

/// Why a pass could not run at all (a source that cannot be read is in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("another replica's reconcile pass did not finish within {RUN_LOCK_WAIT}")]
    Busy,
}

/// What started a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The leader's timer.
    Timer,
    /// `POST /api/v1/reconcile`.
    Request,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Timer => "timer",
            Trigger::Request => "request",
        }
    }
}

/// What a drift item is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// A static path binding (`object` is its DN).
    Binding,
    /// A host's VLAN segment (`object` is `<host>/vlan-<n>`).
    Segment,
    /// An attachment (`object` is its id).
    Attachment,
    /// An interface an agent has for an attachment that no longer exists (`object` is its id).
    AgentLeftover,
    /// A VLAN pool of Weft's with VLANs its EPGs' physical domain lacks (`object` is the pool's
    /// name): an attach to an EPG given one of them would fail pre-flight.
    VlanPool,
}

/// What the pass did about a drift item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Put right.
    Repaired,
    /// The repair was tried and failed (`reason`); the next pass tries again.
    Failed,
    /// Blocked by something Weft does not own (`reason` names it); left alone.
    Conflict,
    /// Recorded, nothing to do (a fault on a binding).
    Reported,
    /// The workflow was working on it during the pass; left to the workflow.
    Skipped,
}

/// One difference found, with what each side had.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Item {
    pub kind: ItemKind,
    pub object: String,
    /// The host, for segments, attachments and leftovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// What differs, in words.
    pub drift: String,
    /// What Weft's database wants (absent: nothing).
    #[schema(value_type = Option<Object>)]
    pub desired: Option<Value>,
    /// What the APIC had (absent: nothing, or not asked).
    #[schema(value_type = Option<Object>)]
    pub apic: Option<Value>,
    /// What the agent had (absent: nothing, or not asked).
    #[schema(value_type = Option<Object>)]
    pub agent: Option<Value>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How much a pass compared.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Checked {
    /// Binding rows in the database.
    pub bindings: u32,
    /// `fvRsPathAtt` objects on the APIC (Weft's and others').
    pub apic_bindings: u32,
    /// Attachments in the database.
    pub attachments: u32,
    /// Hosts whose agent answered.
    pub hosts: u32,
}

/// Drift found and what became of it, per pass (kept for metrics).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Counters {
    pub found: u32,
    pub repaired: u32,
    pub failed: u32,
    pub conflicts: u32,
}

/// A pass without its items: what `/reconcile/runs` lists.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub id: Uuid,
    pub trigger: Trigger,
    /// The replica that ran it.
    pub replica: Uuid,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub checked: Checked,
    pub counters: Counters,
    /// Sources that could not be read (the APIC, an agent): their part was not compared.
    pub errors: Vec<String>,
}

/// A pass's drift report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Report {
    #[serde(flatten)]
    pub run: RunSummary,
    /// Every difference found, in the order handled.
    pub items: Vec<Item>,
}

/// The reconciler of one replica.
pub struct Reconciler {
    pub engine: Arc<Engine>,
    pub settings: Settings,
    leader: AtomicBool,
}

/// A pass in progress.
struct Pass {
    id: Uuid,
    /// `reconcile:<id>`: on the audit entries of its repairs and on its calls to agents.
    request_id: String,
    items: Vec<Item>,
    errors: Vec<String>,
    checked: Checked,
}

impl Pass {
    /// The audit log's actor of a repair, with the pass's request id.
    fn actor(&self) -> Actor<'_> {
        Actor {
            name: ACTOR,
            request_id: Some(&self.request_id),
        }
    }
}

impl Item {
    fn new(kind: ItemKind, object: impl Into<String>, drift: impl Into<String>) -> Self {
        Self {
            kind,
            object: object.into(),
            host: None,
            drift: drift.into(),
            desired: None,
            apic: None,
            agent: None,
            outcome: Outcome::Reported,
            reason: None,
        }
    }

    fn outcome(mut self, outcome: Outcome, reason: Option<String>) -> Self {
        self.outcome = outcome;
        self.reason = reason;
        self
    }
}

/// A binding row as the pass compares it.
struct Wanted {
    id: i64,
    epg: EpgKey,
    path: PathDn,
    encap: VlanId,
    mode: BindingMode,
    immediacy: Immediacy,
    apic_state: String,
    last_fault: Option<String>,
    /// Referenced, or within its linger (a row past it is the sweeper's).
    desired: bool,
}

impl Wanted {
    fn dn(&self) -> String {
        Binding::dn(&self.epg, &self.path)
    }

    fn binding(&self) -> Binding {
        Binding {
            path: self.path.clone(),
            encap: self.encap,
            mode: self.mode,
            immediacy: self.immediacy,
        }
    }
}

fn apic_json(b: &OwnedBinding, owned: bool) -> Value {
    json!({"encap": b.encap.map(|v| v.encap().to_string()), "mode": b.mode.map(BindingMode::as_str),
           "immediacy": b.immediacy.map(Immediacy::as_str), "weft": owned})
}

fn fault_text(faults: &[&Fault]) -> String {
    faults
        .iter()
        .map(|f| {
            let leaf = f.node.map(|n| format!(" on leaf {n}")).unwrap_or_default();
            format!("{}{leaf}: {}", f.code, f.descr)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Reconciler {
    pub fn new(engine: Arc<Engine>, settings: Settings) -> Self {
        Self {
            engine,
            settings,
            leader: AtomicBool::new(false),
        }
    }

    /// Whether this replica leads (runs the timed passes).
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Starts trying to lead; runs until the runtime stops.
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move { me.lead().await });
    }

    /// A connection of its own (not from the pool), named so that an operator sees it in
    /// `pg_stat_activity`, without statement logging.
    async fn connect(&self, role: &str) -> Result<PgConnection, sqlx::Error> {
        let options = (*self.engine.db.connect_options())
            .clone()
            .application_name(&format!("weft-reconcile-{role} {}", self.engine.id))
            .disable_statement_logging();
        PgConnection::connect_with(&options).await
    }

    async fn lead(self: Arc<Self>) {
        let mut first = true;
        loop {
            match self.try_lead().await {
                Ok(Some(conn)) => {
                    tracing::info!(replica = %self.engine.id, "this replica leads the reconciler");
                    self.leader.store(true, Ordering::Relaxed);
                    // A replica that takes over from a dead leader runs at once; one that
                    // starts as the leader waits an interval first.
                    self.while_leader(conn, !first).await;
                    self.leader.store(false, Ordering::Relaxed);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "trying to lead the reconciler failed"),
            }
            first = false;
            tokio::time::sleep(self.settings.interval).await;
        }
    }

    /// The leader's connection holding [`LEADER_LOCK`], or None when another replica leads.
    async fn try_lead(&self) -> Result<Option<PgConnection>, sqlx::Error> {
        let mut conn = self.connect("leader").await?;
        let got = sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "got!""#, LEADER_LOCK)
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(conn))
        } else {
            conn.close().await?;
            Ok(None)
        }
    }

    /// Runs timed passes while the leader's connection lives (the lock lives with it).
    async fn while_leader(&self, mut conn: PgConnection, now: bool) {
        let mut wait = !now;
        loop {
            if wait {
                tokio::time::sleep(self.settings.interval).await;
            }
            wait = true;
            if let Err(e) = conn.ping().await {
                tracing::warn!(error = %e, "lost the reconciler's leader connection; no longer leading");
                return;
            }
            match self.run(Trigger::Timer).await {
                Ok(r) => {
                    let c = &r.run.counters;
                    tracing::info!(run_id = %r.run.id, found = c.found, repaired = c.repaired,
                    failed = c.failed, conflicts = c.conflicts, "reconcile pass done")
                }
                Err(e) => tracing::warn!(error = %e, "reconcile pass failed"),
            }
        }
    }

    /// Runs one pass now (after another replica's pass in progress, if any) and stores its
    /// report.
    pub async fn run(&self, trigger: Trigger) -> Result<Report, ReconcileError> {
        let mut lock = self.connect("run").await?;
        sqlx::query_scalar!(
            r#"SELECT set_config('lock_timeout', $1, false) AS "v!""#,
            RUN_LOCK_WAIT
        )
        .fetch_one(&mut lock)
        .await?;
        let locked = sqlx::query_scalar!(
            r#"SELECT true AS "locked!" FROM pg_advisory_lock($1)"#,
            RUN_LOCK
        )
        .fetch_one(&mut lock)
        .await;
        match locked {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                return Err(ReconcileError::Busy)
            }
            other => other?,
        };
        let id = Uuid::new_v4();
        let span = tracing::info_span!("reconcile", run_id = %id, trigger = trigger.as_str());
        let started_at = Utc::now();
        let mut pass = Pass {
            id,
            request_id: format!("reconcile:{id}"),
            items: Vec::new(),
            errors: Vec::new(),
            checked: Checked::default(),
        };
        let outcome = async {
            self.fabric(&mut pass).await?;
            self.hosts(&mut pass).await
        }
        .instrument(span)
        .await;
        let report = match outcome {
            Ok(()) => self.store(pass, trigger, started_at).await,
            Err(e) => Err(e),
        };
        // Closing the connection releases the run lock (and so does its loss).
        let _ = lock.close().await;
        Ok(report?)
    }

    async fn store(
        &self,
        pass: Pass,
        trigger: Trigger,
        started_at: DateTime<Utc>,
    ) -> Result<Report, sqlx::Error> {
        let count = |o: Outcome| pass.items.iter().filter(|i| i.outcome == o).count() as u32;
        let counters = Counters {
            found: pass.items.len() as u32,
            repaired: count(Outcome::Repaired),
            failed: count(Outcome::Failed),
            conflicts: count(Outcome::Conflict),
        };
        let report = Report {
            run: RunSummary {
                id: pass.id,
                trigger,
                replica: self.engine.id,
                started_at,
                finished_at: Utc::now(),
                checked: pass.checked,
                counters,
                errors: pass.errors,
            },
            items: pass.items,
        };
        let c = &report.run.counters;
        let mut tx = self.engine.db.begin().await?;
        sqlx::query!(
            "INSERT INTO reconcile_runs (id, trigger, replica, started_at, finished_at, found, repaired, failed, conflicts, report)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            report.run.id,
            trigger.as_str(),
            report.run.replica,
            report.run.started_at,
            report.run.finished_at,
            c.found as i32,
            c.repaired as i32,
            c.failed as i32,
            c.conflicts as i32,
            serde_json::to_value(&report).unwrap_or_default(),
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "DELETE FROM reconcile_runs WHERE seq <= (SELECT seq FROM reconcile_runs ORDER BY seq DESC OFFSET $1 LIMIT 1)",
            HISTORY
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(report)
    }

    /// The fabric side: bindings in the database against the APIC's.
    async fn fabric(&self, pass: &mut Pass) -> Result<(), sqlx::Error> {
        let Some(apic) = self.engine.apic.clone() else {
            return Ok(());
        };
        let rows = sqlx::query!(
            r#"SELECT b.id, e.tenant, e.app, e.name, b.path_dn, b.encap, b.mode, e.immediacy,
                   b.apic_state, b.last_fault,
                   (b.ref_count > 0 OR b.release_after > now()) AS "desired!"
               FROM bindings b JOIN epgs e ON e.id = b.epg_id ORDER BY b.id"#
        )
        .fetch_all(&self.engine.db)
        .await?;
        pass.checked.bindings = rows.len() as u32;
        let mut wanted = Vec::with_capacity(rows.len());
        for r in rows {
            let parsed = (|| {
                Some(Wanted {
                    id: r.id,
                    epg: EpgKey::new(&r.tenant, &r.app, &r.name).ok()?,
                    path: PathDn::parse(&r.path_dn).ok()?,
                    encap: weft_apic::Encap::parse(&r.encap).ok()?.vlan(),
                    mode: BindingMode::parse(&r.mode).ok()?,
                    immediacy: Immediacy::parse(&r.immediacy).ok()?,
                    apic_state: r.apic_state.clone(),
                    last_fault: r.last_fault.clone(),
                    desired: r.desired,
                })
            })();
            match parsed {
                Some(w) => wanted.push(w),
                None => tracing::warn!(
                    binding_id = r.id,
                    "skipping a binding row that does not parse"
                ),
            }
        }
        let seen = match apic.client.list_path_bindings().await {
            Ok(seen) => seen,
            Err(e) => {
                pass.errors.push(format!(
                    "APIC: reading the static path bindings failed: {e}"
                ));
                return Ok(());
            }
        };
        pass.checked.apic_bindings = seen.len() as u32;
        let faults = match apic.client.binding_fault_delegates().await {
            Ok(f) => f,
            Err(e) => {
                pass.errors
                    .push(format!("APIC: reading the binding faults failed: {e}"));
                Vec::new()
            }
        };
        let mut faults_of: HashMap<&EpgKey, Vec<(&str, &Fault)>> = HashMap::new();
        for (epg, name, fault) in &faults {
            faults_of
                .entry(epg)
                .or_default()
                .push((name.as_str(), fault));
        }
        let by_dn: HashMap<&str, (&OwnedBinding, bool)> =
            seen.iter().map(|(b, o)| (b.dn.as_str(), (b, *o))).collect();
        // Foreign bindings by (leaf, VLAN): they block one of Weft's of another EPG there.
        let mut foreign: HashMap<(u16, u16), Vec<&OwnedBinding>> = HashMap::new();
        for (b, owned) in &seen {
            if let (false, Some(path), Some(encap)) = (*owned, b.path(), b.encap) {
                for leaf in path.leaves() {
                    foreign.entry((leaf, encap.get())).or_default().push(b);
                }
            }
        }
        let known: HashSet<String> = wanted.iter().map(Wanted::dn).collect();
        let mut to_post: BTreeMap<String, Vec<(&Wanted, Item)>> = BTreeMap::new();
        let mut fault_updates: Vec<(i64, Option<String>)> = Vec::new();
        let mut fine: Vec<i64> = Vec::new();
        for w in wanted
            .iter()
            .filter(|w| w.desired && w.apic_state != "pending")
        {
            let dn = w.dn();
            let mut item = Item::new(ItemKind::Binding, &dn, "");
            item.desired = Some(
                json!({"encap": w.encap.encap().to_string(), "mode": w.mode.as_str(),
                "immediacy": w.immediacy.as_str()}),
            );
            match by_dn.get(dn.as_str()) {
                Some((b, false)) => {
                    item.apic = Some(apic_json(b, false));
                    item.drift = "the path holds a binding without Weft's annotation".into();
                    pass.items.push(item.outcome(
                        Outcome::Conflict,
                        Some(format!("{dn} is not Weft's; it is left alone")),
                    ));
                }
                Some((b, true)) => {
                    item.apic = Some(apic_json(b, true));
                    if b.encap != Some(w.encap) || b.mode != Some(w.mode) {
                        item.drift = "wrong encap or mode on the APIC".into();
                        to_post.entry(w.epg.dn()).or_default().push((w, item));
                        continue;
                    }
                    let on: Vec<&Fault> = faults_of
                        .get(&w.epg)
                        .into_iter()
                        .flatten()
                        .filter(|(name, f)| fault_on(&w.path, name, f.node))
                        .map(|(_, f)| *f)
                        .collect();
                    if on.is_empty() {
                        if w.apic_state == "faulted" {
                            fault_updates.push((w.id, None));
                        } else {
                            fine.push(w.id);
                        }
                        continue;
                    }
                    let text = fault_text(&on);
                    if w.last_fault.as_deref() != Some(text.as_str()) || w.apic_state != "faulted" {
                        fault_updates.push((w.id, Some(text.clone())));
                    }
                    item.drift = "faulted on the APIC".into();
                    pass.items.push(item.outcome(Outcome::Reported, Some(text)));
                }
                None => {
                    let blocker = w
                        .path
                        .leaves()
                        .into_iter()
                        .flat_map(|leaf| foreign.get(&(leaf, w.encap.get())).into_iter().flatten())
                        .find(|b| b.epg != w.epg);
                    item.drift = "missing on the APIC".into();
                    match blocker {
                        Some(b) => pass.items.push(item.outcome(
                            Outcome::Conflict,
                            Some(format!(
                                "{} (not Weft's) uses {} on a leaf of this path",
                                b.dn,
                                w.encap.encap()
                            )),
                        )),
                        None => to_post.entry(w.epg.dn()).or_default().push((w, item)),
                    }
                }
            }
        }
        for (id, fault) in fault_updates {
            sqlx::query!(
                "UPDATE bindings SET apic_state = CASE WHEN $2::text IS NULL THEN 'applied' ELSE 'faulted' END,
                     last_fault = $2, checked_at = now() WHERE id = $1 AND apic_state <> 'pending'",
                id,
                fault
            )
            .execute(&self.engine.db)
            .await?;
        }
        sqlx::query!(
            "UPDATE bindings SET checked_at = now() WHERE id = ANY($1)",
            &fine
        )
        .execute(&self.engine.db)
        .await?;
        for group in to_post.into_values() {
            self.post_group(pass, &apic.client, group).await?;
        }
        let orphans: Vec<&OwnedBinding> = seen
            .iter()
            .filter(|(b, owned)| *owned && !known.contains(&b.dn))
            .map(|(b, _)| b)
            .collect();
        for b in orphans {
            self.remove_orphan(pass, &apic.client, b).await?;
        }
        self.follow_domains(pass, &apic.client).await?;
        self.vlan_pools(pass, &apic.client).await
    }

    /// Pools declared to follow a physical domain get the domain's static VLAN blocks as their
    /// ranges, under the pool's row lock (as a PUT takes it), unless a VLAN an EPG holds would
    /// fall outside them.
    async fn follow_domains(
        &self,
        pass: &mut Pass,
        client: &weft_apic::ApicClient,
    ) -> Result<(), sqlx::Error> {
        let following = {
            let mut conn = self.engine.db.acquire().await?;
            pools::following(&mut conn).await?
        };
        for (name, domain) in following {
            let mut item = Item::new(
                ItemKind::VlanPool,
                &name,
                format!("ranges differ from physical domain {domain}'s blocks"),
            );
            let blocks = match client.domain_vlan_blocks(&domain).await {
                Ok((_, blocks)) => merged(blocks),
                Err(e) => {
                    item.drift = "the followed domain's VLAN blocks cannot be read".into();
                    pass.items
                        .push(item.outcome(Outcome::Failed, Some(e.to_string())));
                    continue;
                }
            };
            let mut tx = self.engine.db.begin().await?;
            let Some(id) = pools::lock(&mut tx, &name).await? else {
                continue;
            };
            let before = pools::get(&mut tx, &name).await?.map(|p| p.ranges);
            if before.as_deref() == Some(blocks.as_slice()) {
                continue;
            }
            item.desired = Some(json!({"follow_domain": domain, "pool_ranges": before}));
            item.apic = Some(json!({"blocks": blocks}));
            if blocks.is_empty() {
                pass.items.push(item.outcome(
                    Outcome::Failed,
                    Some("the domain has no VLAN blocks; the pool keeps its ranges".into()),
                ));
                continue;
            }
            let outside = pools::active_outside(&mut tx, id, &blocks).await?;
            if !outside.is_empty() {
                pass.items.push(item.outcome(
                    Outcome::Failed,
                    Some(format!(
                        "VLANs {outside:?} are held by EPGs and would fall outside the domain's blocks"
                    )),
                ));
                continue;
            }
            pools::set_ranges(&mut tx, id, &blocks).await?;
            audit::record(
                &mut tx,
                pass.actor(),
                "vlan-pool.follow_domain",
                &format!("vlan-pools/{name}"),
                Some(&json!({"ranges": before})),
                Some(&json!({"ranges": blocks})),
            )
            .await?;
            tx.commit().await?;
            pass.items.push(item.outcome(Outcome::Repaired, None));
        }
        Ok(())
    }

    /// Weft's VLAN pools against the static encap blocks of the physical domains their EPGs
    /// use (two reads per domain): reports the VLANs Weft could hand out that a domain lacks.
    async fn vlan_pools(
        &self,
        pass: &mut Pass,
        client: &weft_apic::ApicClient,
    ) -> Result<(), sqlx::Error> {
        let uses = sqlx::query!(
            r#"SELECT DISTINCT p.name, e.physical_domain,
                   ARRAY(SELECT int4range(r.first_vlan, r.last_vlan, '[]')::text FROM vlan_ranges r
                         WHERE r.pool_id = p.id ORDER BY r.first_vlan) AS "ranges!"
               FROM epgs e JOIN vlan_pools p ON p.id = e.pool_id ORDER BY p.name, e.physical_domain"#
        )
        .fetch_all(&self.engine.db)
        .await?;
        let mut domains: HashMap<String, Result<Vec<(u16, u16)>, String>> = HashMap::new();
        for u in uses {
            if !domains.contains_key(&u.physical_domain) {
                let blocks = client
                    .domain_vlan_blocks(&u.physical_domain)
                    .await
                    .map(|(_, b)| b.iter().map(|(f, t)| (f.get(), t.get())).collect())
                    .map_err(|e| e.to_string());
                domains.insert(u.physical_domain.clone(), blocks);
            }
            // int4range's canonical text: `[first,last+1)`.
            let ranges: Vec<(u16, u16)> = u
                .ranges
                .iter()
                .filter_map(|r| {
                    let (f, t) = r.trim_matches(['[', ')']).split_once(',')?;
                    Some((f.parse().ok()?, t.parse::<u16>().ok()?.checked_sub(1)?))
                })
                .collect();
            let text = |rs: &[(u16, u16)]| {
                rs.iter()
                    .map(|(f, t)| {
                        if f == t {
                            f.to_string()
                        } else {
                            format!("{f}-{t}")
                        }
                    })
                    .collect::<Vec<_>>()
            };
            let mut item = Item::new(ItemKind::VlanPool, &u.name, "");
            item.desired =
                Some(json!({"ranges": text(&ranges), "physical_domain": u.physical_domain}));
            match &domains[&u.physical_domain] {
                Err(e) => {
                    item.drift = "the physical domain's VLAN blocks cannot be read".into();
                    pass.items
                        .push(item.outcome(Outcome::Reported, Some(e.clone())));
                }
                Ok(blocks) => {
                    let lacking = uncovered(&ranges, blocks);
                    if lacking.is_empty() {
                        continue;
                    }
                    item.apic = Some(json!({"blocks": text(blocks)}));
                    item.drift = format!(
                        "VLANs {} are not in physical domain {}'s blocks",
                        text(&lacking).join(", "),
                        u.physical_domain
                    );
                    pass.items.push(item.outcome(
                        Outcome::Reported,
                        Some("an attach to an EPG given one of them fails pre-flight".into()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Posts the bindings of one EPG that are missing or wrong, in one POST, under their rows'
    /// locks (rows a job holds are skipped: the workflow is at them).
    async fn post_group(
        &self,
        pass: &mut Pass,
        client: &weft_apic::ApicClient,
        group: Vec<(&Wanted, Item)>,
    ) -> Result<(), sqlx::Error> {
        let ids: Vec<i64> = group.iter().map(|(w, _)| w.id).collect();
        let mut tx = self.engine.db.begin().await?;
        let still: HashSet<i64> = sqlx::query_scalar!(
            "SELECT id FROM bindings WHERE id = ANY($1) AND apic_state <> 'pending'
                 AND (ref_count > 0 OR release_after > now())
             FOR UPDATE SKIP LOCKED",
            &ids
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let (go, skip): (Vec<_>, Vec<_>) =
            group.into_iter().partition(|(w, _)| still.contains(&w.id));
        for (_, item) in skip {
            pass.items.push(item.outcome(
                Outcome::Skipped,
                Some("the workflow was changing this binding".into()),
            ));
        }
        let Some((first, _)) = go.first() else {
            return Ok(());
        };
        let epg = first.epg.clone();
        let bindings: Vec<Binding> = go.iter().map(|(w, _)| w.binding()).collect();
        match client.apply_bindings(&epg, &bindings).await {
            Ok(()) => {
                let done: Vec<i64> = go.iter().map(|(w, _)| w.id).collect();
                sqlx::query!(
                    "UPDATE bindings SET apic_state = 'applied', last_fault = NULL, checked_at = now(), updated_at = now()
                     WHERE id = ANY($1)",
                    &done
                )
                .execute(&mut *tx)
                .await?;
                for (_, item) in &go {
                    audit::record(
                        &mut tx,
                        pass.actor(),
                        "binding.reconcile_apply",
                        &format!("bindings/{}", item.object),
                        item.apic.as_ref(),
                        item.desired.as_ref(),
                    )
                    .await?;
                }
                tx.commit().await?;
                for (_, item) in go {
                    pass.items.push(item.outcome(Outcome::Repaired, None));
                }
            }
            Err(e) => {
                drop(tx);
                let outcome = match e {
                    ApicError::NotOwned { .. } => Outcome::Conflict,
                    _ => Outcome::Failed,
                };
                for (_, item) in go {
                    pass.items.push(item.outcome(outcome, Some(e.to_string())));
                }
            }
        }
        Ok(())
    }

    /// Removes a binding of Weft's the database does not want. A placeholder row taken for
    /// it (when its EPG is Weft's) makes an attach binding that path right now wait for the
    /// removal, then post it afresh; a row already there means it became wanted: left alone.
    async fn remove_orphan(
        &self,
        pass: &mut Pass,
        client: &weft_apic::ApicClient,
        b: &OwnedBinding,
    ) -> Result<(), sqlx::Error> {
        let mut item = Item::new(ItemKind::Binding, &b.dn, "Weft's binding, not wanted");
        item.apic = Some(apic_json(b, true));
        let Some(path) = b.path() else {
            pass.items.push(item.outcome(
                Outcome::Failed,
                Some(format!("its tDn `{}` is no path Weft can name", b.tdn)),
            ));
            return Ok(());
        };
        let mut tx = self.engine.db.begin().await?;
        let epg_id = sqlx::query_scalar!(
            "SELECT id FROM epgs WHERE tenant = $1 AND app = $2 AND name = $3",
            b.epg.tenant.as_str(),
            b.epg.app.as_str(),
            b.epg.epg.as_str(),
        )
        .fetch_optional(&mut *tx)
        .await?;
        let mut placeholder = None;
        if let Some(epg_id) = epg_id {
            placeholder = sqlx::query_scalar!(
                "INSERT INTO bindings (epg_id, path_dn, encap, mode) VALUES ($1, $2, $3, 'regular')
                 ON CONFLICT (epg_id, path_dn) DO NOTHING RETURNING id",
                epg_id,
                path.to_string(),
                b.encap
                    .map_or_else(|| "vlan-1".into(), |v| v.encap().to_string()),
            )
            .fetch_optional(&mut *tx)
            .await?;
            if placeholder.is_none() {
                pass.items.push(item.outcome(
                    Outcome::Skipped,
                    Some("an attach took this binding during the pass".into()),
                ));
                return Ok(());
            }
        }
        match client.delete_binding(&b.epg, &path).await {
            Ok(()) => {
                if let Some(id) = placeholder {
                    sqlx::query!("DELETE FROM bindings WHERE id = $1", id)
                        .execute(&mut *tx)
                        .await?;
                }
                audit::record(
                    &mut tx,
                    pass.actor(),
                    "binding.reconcile_remove",
                    &format!("bindings/{}", b.dn),
                    item.apic.as_ref(),
                    None::<&Value>,
                )
                .await?;
                tx.commit().await?;
                pass.items.push(item.outcome(Outcome::Repaired, None));
            }
            Err(e) => {
                let outcome = match e {
                    ApicError::NotOwned { .. } => Outcome::Conflict,
                    _ => Outcome::Failed,
                };
                pass.items.push(item.outcome(outcome, Some(e.to_string())));
            }
        }
        Ok(())
    }

    /// The host side: every agent's state against the attachments of its host.
    async fn hosts(&self, pass: &mut Pass) -> Result<(), sqlx::Error> {
        let hosts = sqlx::query!("SELECT id, name, agent_url, agent_token FROM hosts ORDER BY id")
            .fetch_all(&self.engine.db)
            .await?;
        let rows = sqlx::query!(
            r#"SELECT a.id, a.host_id, a.state, a.container_status, a.target, a.interface,
                   host(a.address) AS address, a.prefix_len, host(a.gateway) AS gateway, a.vlan,
                   e.mode, h.mtu,
                   EXISTS (SELECT 1 FROM jobs j WHERE j.attachment_id = a.id
                           AND j.state IN ('queued', 'running')) AS "busy!"
               FROM attachments a JOIN epgs e ON e.id = a.epg_id JOIN hosts h ON h.id = a.host_id"#
        )
        .fetch_all(&self.engine.db)
        .await?;
        pass.checked.attachments = rows.len() as u32;
        let mut of_host: HashMap<i64, Vec<_>> = HashMap::new();
        for r in rows {
            of_host.entry(r.host_id).or_default().push(r);
        }
        let rid = pass.request_id.as_str();
        let states: Vec<_> = futures::stream::iter(hosts)
            .map(|h| async move {
                let client = agent_client(
                    &self.engine.settings,
                    &h.name,
                    &h.agent_url,
                    h.agent_token.as_deref(),
                    Some(rid),
                );
                let state = match &client {
                    Ok(c) => c.state().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (h, client, state)
            })
            .buffer_unordered(self.settings.agent_concurrency.max(1))
            .collect()
            .await;
        for (h, client, state) in states {
            let (client, state) = match (client, state) {
                (Ok(c), Ok(s)) => (c, s),
                (_, Err(e)) => {
                    pass.errors.push(format!(
                        "agent of host `{}`: reading its state failed: {e}",
                        h.name
                    ));
                    continue;
                }
                (Err(e), _) => {
                    pass.errors.push(format!("agent of host `{}`: {e}", h.name));
                    continue;
                }
            };
            pass.checked.hosts += 1;
            let mut desired = Vec::new();
            let mut known = HashSet::new();
            for r in of_host.remove(&h.id).unwrap_or_default() {
                known.insert(r.id);
                if r.busy || r.state != "attached" || r.container_status != "running" {
                    continue;
                }
                let parsed = (|| {
                    let addr = |s: Option<String>| s.and_then(|s| s.parse().ok());
                    Some(Desired {
                        id: r.id,
                        target: serde_json::from_value(r.target.clone()).ok()?,
                        interface: r.interface.clone(),
                        address: addr(r.address.clone()),
                        prefix_len: r.prefix_len,
                        gateway: addr(r.gateway.clone()),
                        vlan: VlanId::from_i64(i64::from(r.vlan?)).ok()?,
                        mode: BindingMode::parse(&r.mode).ok()?,
                        mtu: r.mtu,
                    })
                })();
                match parsed {
                    Some(d) => desired.push(d),
                    None => {
                        tracing::warn!(attachment_id = %r.id, "skipping an attachment row that does not parse")
                    }
                }
            }
            let host = HostPass {
                id: h.id,
                name: &h.name,
                client: &client,
                state: &state,
            };
            self.host(pass, &host, &desired, &known).await?;
        }
        Ok(())
    }

    /// One host: segments, then interfaces, then leftovers.
    async fn host(
        &self,
        pass: &mut Pass,
        host: &HostPass<'_>,
        desired: &[Desired],
        known: &HashSet<Uuid>,
    ) -> Result<(), sqlx::Error> {
        let ready: HashSet<VlanId> = host
            .state
            .segments
            .iter()
            .filter(|s| s.ready)
            .map(|s| s.vlan)
            .collect();
        let mut segments_done = HashSet::new();
        // A rebuilt segment is a new bridge or port: the interfaces on it are plugged again.
        let mut rebuilt = HashSet::new();
        for d in desired {
            if ready.contains(&d.vlan) || !segments_done.insert(d.vlan) {
                continue;
            }
            let object = format!("{}/vlan-{}", host.name, d.vlan.get());
            let mut item = Item::new(ItemKind::Segment, &object, "segment missing on the host");
            item.host = Some(host.name.to_string());
            let spec = segment_spec(d.mode);
            item.desired = serde_json::to_value(&spec).ok();
            item.agent = host
                .state
                .segments
                .iter()
                .find(|s| s.vlan == d.vlan)
                .and_then(|s| serde_json::to_value(s).ok());
            match host.client.ensure_segment(d.vlan, &spec).await {
                Ok(seg) => {
                    let mut conn = self.engine.db.acquire().await?;
                    audit::record(
                        &mut conn,
                        pass.actor(),
                        "segment.reconcile_apply",
                        &format!("hosts/{}/segments/{}", host.name, d.vlan.get()),
                        item.agent.as_ref(),
                        Some(&seg),
                    )
                    .await?;
                    pass.items.push(item.outcome(Outcome::Repaired, None));
                    rebuilt.insert(d.vlan);
                }
                Err(e) => pass
                    .items
                    .push(item.outcome(Outcome::Failed, Some(e.to_string()))),
            }
        }
        let theirs: HashMap<Uuid, &weft_agent_api::Attachment> =
            host.state.attachments.iter().map(|a| (a.id, a)).collect();
        for d in desired {
            let had = theirs.get(&d.id).copied();
            let drift = match had {
                None => "the agent has no interface for it".to_string(),
                Some(_) if rebuilt.contains(&d.vlan) => "its segment was rebuilt".to_string(),
                Some(a) if a.actual.wired => continue,
                Some(a) => format!(
                    "not wired: {}",
                    a.actual.detail.as_deref().unwrap_or("unknown")
                ),
            };
            let mut item = Item::new(ItemKind::Attachment, d.id.to_string(), drift);
            item.host = Some(host.name.to_string());
            item.agent = had.and_then(|a| serde_json::to_value(a).ok());
            let item = self.rewire(pass, host, d, item).await?;
            pass.items.push(item);
        }
        let leftovers = host
            .state
            .attachments
            .iter()
            .map(|a| (a.id, a.host_ifname.clone()))
            .chain(
                host.state
                    .unclaimed
                    .iter()
                    .map(|u| (u.attachment, Some(u.host_ifname.clone()))),
            );
        let mut seen = HashSet::new();
        for (id, ifname) in leftovers {
            if known.contains(&id) || !seen.insert(id) {
                continue;
            }
            let mut item = Item::new(
                ItemKind::AgentLeftover,
                id.to_string(),
                "the agent has an interface of an attachment that does not exist",
            );
            item.host = Some(host.name.to_string());
            item.agent = Some(json!({"host_ifname": ifname}));
            let item = self.remove_leftover(pass, host, id, item).await?;
            pass.items.push(item);
        }
        Ok(())
    }

    /// Re-applies an attachment's interface with the spec the attach sent, holding its row
    /// (a detach or re-attach requested meanwhile waits for this call, then runs).
    async fn rewire(
        &self,
        pass: &Pass,
        host: &HostPass<'_>,
        d: &Desired,
        mut item: Item,
    ) -> Result<Item, sqlx::Error> {
        let spec = match (Wiring {
            target: &d.target,
            interface: &d.interface,
            vlan: d.vlan,
            address: d.address,
            prefix_len: d.prefix_len,
            gateway: d.gateway,
            mtu: d.mtu,
        })
        .spec()
        {
            Ok(s) => s,
            Err(e) => return Ok(item.outcome(Outcome::Failed, Some(e))),
        };
        item.desired = serde_json::to_value(&spec).ok();
        let mut tx = self.engine.db.begin().await?;
        let row = sqlx::query!(
            "SELECT state, container_status FROM attachments WHERE id = $1 FOR UPDATE",
            d.id
        )
        .fetch_optional(&mut *tx)
        .await?;
        let settled = row.is_some_and(|r| r.state == "attached" && r.container_status == "running");
        if !settled || jobs::live(&mut tx, d.id).await?.is_some() {
            return Ok(item.outcome(
                Outcome::Skipped,
                Some("the workflow was changing this attachment".into()),
            ));
        }
        match host.client.ensure_attachment(d.id, &spec).await {
            Ok(wired) => {
                audit::record(
                    &mut tx,
                    pass.actor(),
                    "attachment.reconcile_rewire",
                    &format!("attachments/{}", d.id),
                    item.agent.as_ref(),
                    Some(&wired),
                )
                .await?;
                tx.commit().await?;
                Ok(item.outcome(Outcome::Repaired, None))
            }
            Err(e) if target_gone(&e) => {
                let grace = self.engine.settings.lost_grace;
                let marked = lost::mark_lost(&mut tx, d.id, grace, Some(&pass.request_id)).await?;
                audit::record(
                    &mut tx,
                    pass.actor(),
                    "attachment.reconcile_lost",
                    &format!("attachments/{}", d.id),
                    item.agent.as_ref(),
                    Some(&json!({"state": if marked { "lost" } else { "gone" }})),
                )
                .await?;
                tx.commit().await?;
                item.drift = "the container is gone".into();
                Ok(item.outcome(
                    Outcome::Repaired,
                    Some(format!(
                        "lost: released after the grace unless it comes back ({e})"
                    )),
                ))
            }
            Err(e) => Ok(item.outcome(Outcome::Failed, Some(e.to_string()))),
        }
    }

    /// Removes an agent's interface of an attachment that does not exist, unless one with
    /// that id was created meanwhile (its PUT takes the same advisory lock, so it waits).
    async fn remove_leftover(
        &self,
        pass: &Pass,
        host: &HostPass<'_>,
        id: Uuid,
        item: Item,
    ) -> Result<Item, sqlx::Error> {
        let mut tx = self.engine.db.begin().await?;
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            format!("attachment|{id}")
        )
        .execute(&mut *tx)
        .await?;
        let exists = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM attachments WHERE id = $1 AND host_id = $2) AS "e!""#,
            id,
            host.id
        )
        .fetch_one(&mut *tx)
        .await?;
        if exists {
            return Ok(item.outcome(
                Outcome::Skipped,
                Some("an attach of this id began during the pass".into()),
            ));
        }
        match host.client.remove_attachment(id).await {
            Ok(()) => {
                audit::record(
                    &mut tx,
                    pass.actor(),
                    "attachment.reconcile_remove_leftover",
                    &format!("hosts/{}/attachments/{id}", host.name),
                    item.agent.as_ref(),
                    None::<&Value>,
                )
                .await?;
                tx.commit().await?;
                Ok(item.outcome(Outcome::Repaired, None))
            }
            Err(e) => Ok(item.outcome(Outcome::Failed, Some(e.to_string()))),
        }
    }
}

/// A domain's blocks as a pool's ranges: sorted, overlapping or adjacent ones joined.
fn merged(mut blocks: Vec<(VlanId, VlanId)>) -> Vec<VlanRange> {
    blocks.sort();
    let mut out: Vec<VlanRange> = Vec::new();
    for (first, last) in blocks {
        match out.last_mut() {
            Some(r) if first.get() <= r.last.get().saturating_add(1) => {
                r.last = r.last.max(last);
            }
            _ => out.extend(VlanRange::new(first, last).ok()),
        }
    }
    out
}

/// The parts of `ranges` (inclusive VLAN ranges) that no block covers.
fn uncovered(ranges: &[(u16, u16)], blocks: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &(first, last) in ranges {
        for v in first..=last {
            if blocks.iter().any(|&(f, t)| f <= v && v <= t) {
                continue;
            }
            match out.last_mut() {
                Some((_, t)) if *t + 1 == v => *t = v,
                _ => out.push((v, v)),
            }
        }
    }
    out
}

/// An attachment the host should have wired.
struct Desired {
    id: Uuid,
    target: Target,
    interface: String,
    address: Option<std::net::Ipv4Addr>,
    prefix_len: Option<i32>,
    gateway: Option<std::net::Ipv4Addr>,
    vlan: VlanId,
    mode: BindingMode,
    mtu: i32,
}

/// One host in a pass: its agent and what it reported.
struct HostPass<'a> {
    id: i64,
    name: &'a str,
    client: &'a AgentClient,
    state: &'a AgentState,
}

/// The agent refused to wire because the container no longer exists: Docker does not know it,
/// or its namespace file (a netns path, a PID's `/proc` entry) is gone (ENOENT).
fn target_gone(e: &weft_agent_api::ClientError) -> bool {
    let weft_agent_api::ClientError::Api { problem, .. } = e else {
        return false;
    };
    let detail = problem.detail.as_deref().unwrap_or_default();
    match problem.kind.rsplit(':').next() {
        Some("container-not-found") => true,
        Some("netns") => detail.contains("(os error 2)"),
        _ => false,
    }
}
