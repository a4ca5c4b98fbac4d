//! Coalesces concurrent port requests into one OVSDB transaction. One
//! `ovs-vsctl add-port` costs 17–27 ms, mostly the per-transaction round trip
//! and ovs-vswitchd reconfiguration; many ports in one transaction cost about
//! 1 ms each. Callers queue requests on a channel; a single task drains
//! everything pending, commits it as one transaction and answers each caller.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::core::Core;
use super::plan::{plan, PortRequest};
use super::Outcome;
use crate::error::{Error, Result};

pub(crate) struct Job {
    pub request: PortRequest,
    pub reply: oneshot::Sender<Result<Outcome>>,
}

/// How often a batch is re-planned when another client changed a bridge
/// between our read and our write.
const CONFLICT_RETRIES: usize = 3;

pub(crate) async fn run(core: Arc<Core>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut deferred: VecDeque<Job> = VecDeque::new();
    loop {
        if deferred.is_empty() {
            match rx.recv().await {
                Some(job) => deferred.push_back(job),
                None => return,
            }
            // Let callers woken at the same moment queue their requests too.
            tokio::task::yield_now().await;
        }
        while let Ok(job) = rx.try_recv() {
            deferred.push_back(job);
        }
        let batch = take_batch(&mut deferred, core.opts.max_batch);
        let span = tracing::debug_span!("port_batch", requests = batch.len());
        execute(&core, batch).instrument(span).await;
    }
}

/// Takes, in arrival order, requests that touch no port an earlier queued
/// request touches, so each port's requests apply in the order they came.
fn take_batch(queue: &mut VecDeque<Job>, max: usize) -> Vec<Job> {
    let mut blocked: HashSet<String> = HashSet::new();
    let mut batch = Vec::new();
    let mut rest = VecDeque::new();
    for job in queue.drain(..) {
        let names: Vec<String> = job.request.port_names().map(str::to_owned).collect();
        let clashes = names.iter().any(|n| blocked.contains(n));
        blocked.extend(names);
        if clashes || batch.len() >= max {
            rest.push_back(job);
        } else {
            batch.push(job);
        }
    }
    *queue = rest;
    batch
}

async fn execute(core: &Core, jobs: Vec<Job>) {
    let requests: Vec<&PortRequest> = jobs.iter().map(|j| &j.request).collect();
    match commit_batch(core, &requests).await {
        Ok(outcomes) => {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let _ = job.reply.send(outcome);
            }
        }
        // The database refused the transaction: retry each request on its own
        // so one bad request fails alone instead of failing its neighbours.
        Err(Error::Transaction { .. }) if jobs.len() > 1 => {
            tracing::debug!("batched transaction refused; retrying requests one by one");
            for job in jobs {
                let outcome = commit_batch(core, &[&job.request])
                    .await
                    .and_then(|mut o| o.pop().unwrap_or(Err(Error::BatcherGone)));
                let _ = job.reply.send(outcome);
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Read, plan, commit (and wait for ovs-vswitchd) one batch.
async fn commit_batch(core: &Core, requests: &[&PortRequest]) -> Result<Vec<Result<Outcome>>> {
    let _writer = core.write_lock.lock().await;
    let opts = &core.opts;
    let wait =
        opts.wait_applied && (opts.wait_for_removals || requests.iter().any(|r| r.ensures()));
    let mut attempt = 0;
    let mut plan = loop {
        attempt += 1;
        let snap = core.snapshot().await?;
        let mut plan = plan(&snap, requests);
        if plan.ops.is_empty() {
            return Ok(plan.outcomes);
        }
        let guards = plan.guards.len();
        let mut ops = std::mem::take(&mut plan.guards);
        ops.append(&mut plan.ops);
        match core.commit(ops, wait).await {
            Ok(()) => break plan,
            Err(Error::Transaction { index, .. })
                if index < guards && attempt < CONFLICT_RETRIES =>
            {
                tracing::debug!(attempt, "bridge changed under us; re-planning");
            }
            Err(e) => return Err(e),
        }
    };
    if wait && !plan.new_ifaces.is_empty() {
        let names: Vec<&str> = plan.new_ifaces.iter().map(|(_, i)| i.as_str()).collect();
        let errors = core.interface_errors(&names).await?;
        for (index, iface) in &plan.new_ifaces {
            if let Some(error) = errors.get(iface) {
                plan.outcomes[*index] = Err(Error::Interface {
                    iface: iface.clone(),
                    error: error.clone(),
                });
            }
        }
    }
    Ok(plan.outcomes)
}
