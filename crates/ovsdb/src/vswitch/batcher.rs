//! Coalesces concurrent port requests into one OVSDB transaction. One
//! `ovs-vsctl add-port` costs 17–27 ms, mostly the per-transaction round trip
//! and ovs-vswitchd reconfiguration; many ports in one transaction cost about
//! 1 ms each. Callers queue requests on a channel; a single task drains
//! everything pending, commits it as one transaction and answers each caller.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::core::Core;
use super::plan::{plan, PortRequest};
use super::snapshot::Scope;
use super::Outcome;
use crate::datum;
use crate::error::{Error, Result};
use crate::op::{Condition, Mutation, Mutator, Operation};

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
        let batch = take_batch(&mut deferred, core.opts.max_batch.max(1));
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
    match core
        .reconnecting(|retry| commit_batch(core, &requests, retry))
        .await
    {
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
                let alone = [&job.request];
                let outcome = core
                    .reconnecting(|retry| commit_batch(core, &alone, retry))
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

/// Read, plan, commit (and wait for ovs-vswitchd) one batch; `retry` says a
/// previous attempt may have committed it before the connection dropped.
async fn commit_batch(
    core: &Core,
    requests: &[&PortRequest],
    retry: bool,
) -> Result<Vec<Result<Outcome>>> {
    let _writer = core.write_lock.lock().await;
    let opts = &core.opts;
    let wait =
        opts.wait_applied && (opts.wait_for_removals || requests.iter().any(|r| r.ensures()));
    let mut ports = BTreeSet::new();
    let mut ifaces = BTreeSet::new();
    for request in requests {
        ports.extend(request.port_names());
        ifaces.extend(request.iface_names());
    }
    let ports: Vec<&str> = ports.into_iter().collect();
    let ifaces: Vec<&str> = ifaces.into_iter().collect();
    let scope = Scope::Named {
        ports: &ports,
        ifaces: &ifaces,
    };
    let mut attempt = 0;
    let (mut plan, results, guards) = loop {
        attempt += 1;
        let snap = core.snapshot(scope).await?;
        let mut plan = plan(&snap, requests);
        if plan.ops.is_empty() {
            if retry && wait {
                core.settle().await?;
            }
            return Ok(plan.outcomes);
        }
        let guards = plan.guards.len();
        let mut ops = std::mem::take(&mut plan.guards);
        ops.append(&mut plan.ops);
        match core.commit(ops, wait).await {
            Ok(results) => break (plan, results, guards),
            Err(Error::Transaction { index, .. })
                if index < guards && attempt < CONFLICT_RETRIES =>
            {
                tracing::debug!(attempt, "bridge changed under us; re-planning");
            }
            Err(e) => return Err(e),
        }
    };
    if wait && !plan.checks.is_empty() {
        let names: Vec<&str> = plan.checks.iter().map(|c| c.iface.as_str()).collect();
        let errors = core.interface_errors(&names).await?;
        let mut failed_new_ports: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for check in &plan.checks {
            let Some(error) = errors.get(&check.iface) else {
                continue;
            };
            plan.outcomes[check.request] = Err(Error::Interface {
                iface: check.iface.clone(),
                error: error.clone(),
            });
            let uuid = check
                .insert_op
                .and_then(|op| results.get(guards + op)?.get("uuid").cloned());
            if let Some(uuid) = uuid {
                failed_new_ports
                    .entry(&check.bridge)
                    .or_default()
                    .push(uuid);
            }
        }
        remove_failed(core, failed_new_ports).await?;
    }
    Ok(plan.outcomes)
}

/// Takes ports ovs-vswitchd could not attach back out, so a failed request
/// leaves nothing behind and a retry starts from scratch.
async fn remove_failed(core: &Core, ports: BTreeMap<&str, Vec<Value>>) -> Result<()> {
    let ops: Vec<Operation> = ports
        .into_iter()
        .map(|(bridge, uuids)| Operation::Mutate {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", json!(bridge))],
            mutations: vec![Mutation("ports".into(), Mutator::Delete, datum::set(uuids))],
        })
        .collect();
    if !ops.is_empty() {
        core.commit(ops, false).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vswitch::plan::{PortChange, PortSpec};

    fn job(change: PortChange) -> Job {
        let (reply, _) = oneshot::channel();
        let request = PortRequest {
            bridge: "br".into(),
            changes: vec![change],
        };
        Job { request, reply }
    }

    fn add(name: &str) -> PortChange {
        PortChange::Ensure(PortSpec {
            name: name.into(),
            iface: name.into(),
            tag: Some(10),
            external_ids: Default::default(),
        })
    }

    fn names(jobs: &[Job]) -> Vec<String> {
        jobs.iter()
            .map(|j| match &j.request.changes[0] {
                PortChange::Ensure(s) => format!("+{}", s.name),
                PortChange::Remove(n) => format!("-{n}"),
            })
            .collect()
    }

    #[test]
    fn requests_for_the_same_port_stay_in_arrival_order() {
        let mut queue: VecDeque<Job> = [
            job(add("p1")),
            job(PortChange::Remove("p1".into())),
            job(add("p2")),
            job(add("p1")),
            job(add("p3")),
        ]
        .into_iter()
        .collect();
        let batch = take_batch(&mut queue, 10);
        assert_eq!(names(&batch), ["+p1", "+p2", "+p3"]);
        let rest: Vec<Job> = queue.drain(..).collect();
        assert_eq!(names(&rest), ["-p1", "+p1"]);
    }

    #[test]
    fn batches_are_capped() {
        let mut queue: VecDeque<Job> = (0..5).map(|i| job(add(&format!("p{i}")))).collect();
        assert_eq!(take_batch(&mut queue, 2).len(), 2);
        assert_eq!(queue.len(), 3);
    }
}
