//! Turns a batch of port requests into one transaction, from a snapshot of
//! the database. Pure: no I/O, so the batcher can retry it on a new snapshot.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use super::snapshot::{BridgeRow, Snapshot};
use super::Outcome;
use crate::datum;
use crate::error::{Error, Result};
use crate::op::{Condition, Mutation, Mutator, Operation, Row, WaitUntil};

/// A port as the agent wants it: `tag: None` makes it a trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortSpec {
    pub name: String,
    pub iface: String,
    pub tag: Option<u16>,
    pub external_ids: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub(crate) enum PortChange {
    Ensure(PortSpec),
    Remove(String),
}

/// One caller's request: applied entirely or not at all.
#[derive(Debug, Clone)]
pub(crate) struct PortRequest {
    pub bridge: String,
    pub changes: Vec<PortChange>,
}

impl PortRequest {
    /// Whether the request creates or changes ports (not only removes them).
    pub fn ensures(&self) -> bool {
        self.changes
            .iter()
            .any(|c| matches!(c, PortChange::Ensure(_)))
    }

    /// Interfaces whose rows planning the request reads: those it attaches,
    /// and for a removal the port's own name (ports are usually named like
    /// their interface), so one read almost always covers every row needed.
    pub fn iface_names(&self) -> impl Iterator<Item = &str> {
        self.changes.iter().map(|c| match c {
            PortChange::Ensure(spec) => spec.iface.as_str(),
            PortChange::Remove(name) => name.as_str(),
        })
    }

    pub fn port_names(&self) -> impl Iterator<Item = &str> {
        self.changes.iter().map(|c| match c {
            PortChange::Ensure(spec) => spec.name.as_str(),
            PortChange::Remove(name) => name.as_str(),
        })
    }
}

/// An interface whose attachment by ovs-vswitchd is checked after applying.
#[derive(Debug, Clone)]
pub(crate) struct IfaceCheck {
    /// Index of the request that asked for it.
    pub request: usize,
    pub bridge: String,
    pub iface: String,
    /// For a new port: index in `Plan::ops` of its Port insert (whose result
    /// holds its uuid), so a port that failed can be taken out again.
    pub insert_op: Option<usize>,
}

/// The transaction for a batch and what each request gets if it commits.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// `wait` operations that abort the transaction if a touched bridge's
    /// port set changed since the snapshot; they come first in the transaction.
    pub guards: Vec<Operation>,
    pub ops: Vec<Operation>,
    pub outcomes: Vec<Result<Outcome>>,
    pub checks: Vec<IfaceCheck>,
}

/// One request's share of the transaction, kept apart until the request is
/// known to be valid as a whole.
#[derive(Default)]
struct RequestPlan {
    ops: Vec<Operation>,
    insert: Vec<Value>,
    delete: Vec<Value>,
    /// (interface, index in `ops` of its Port insert if the port is new).
    checks: Vec<(String, Option<usize>)>,
}

#[derive(Default)]
struct BridgeEdit {
    insert: Vec<Value>,
    delete: Vec<Value>,
}

pub(crate) fn plan(snap: &Snapshot, requests: &[&PortRequest]) -> Plan {
    let mut plan = Plan::default();
    let mut edits: BTreeMap<&str, BridgeEdit> = BTreeMap::new();
    let mut next_name = 0usize;
    for (index, request) in requests.iter().enumerate() {
        let mut part = RequestPlan::default();
        let planned = plan_request(snap, request, &mut next_name, &mut part);
        let changes = !(part.ops.is_empty() && part.insert.is_empty() && part.delete.is_empty());
        plan.outcomes.push(planned.map(|()| match changes {
            true => Outcome::Changed,
            false => Outcome::Unchanged,
        }));
        if plan.outcomes[index].is_err() {
            continue;
        }
        let offset = plan.ops.len();
        plan.checks
            .extend(part.checks.into_iter().map(|(iface, op)| IfaceCheck {
                request: index,
                bridge: request.bridge.clone(),
                iface,
                insert_op: op.map(|op| offset + op),
            }));
        plan.ops.append(&mut part.ops);
        let merged = edits.entry(request.bridge.as_str()).or_default();
        merged.insert.append(&mut part.insert);
        merged.delete.append(&mut part.delete);
    }
    for (name, edit) in edits {
        let Some(bridge) = snap.bridges.get(name) else {
            continue;
        };
        if edit.insert.is_empty() && edit.delete.is_empty() {
            continue;
        }
        plan.guards.push(ports_unchanged(bridge));
        let mut mutations = Vec::new();
        if !edit.delete.is_empty() {
            mutations.push(Mutation(
                "ports".into(),
                Mutator::Delete,
                datum::set(edit.delete),
            ));
        }
        if !edit.insert.is_empty() {
            mutations.push(Mutation(
                "ports".into(),
                Mutator::Insert,
                datum::set(edit.insert),
            ));
        }
        plan.ops.push(Operation::Mutate {
            table: "Bridge".into(),
            conditions: vec![by_uuid(&bridge.uuid)],
            mutations,
        });
    }
    plan
}

fn plan_request(
    snap: &Snapshot,
    request: &PortRequest,
    next_name: &mut usize,
    part: &mut RequestPlan,
) -> Result<()> {
    if !snap.bridges.contains_key(&request.bridge) {
        return Err(Error::NoBridge(request.bridge.clone()));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = request.port_names().find(|n| !seen.insert(*n)) {
        return Err(Error::DuplicatePort(dup.to_owned()));
    }
    for change in &request.changes {
        match change {
            PortChange::Ensure(spec) => {
                if let Some(tag) = spec.tag.filter(|t| !(1..=4094).contains(t)) {
                    return Err(Error::InvalidVlan(tag));
                }
                ensure_port(snap, &request.bridge, spec, next_name, part)?;
            }
            PortChange::Remove(name) => {
                if let Some(port) = snap.ports.get(name) {
                    if snap.bridge_of(&port.uuid) == Some(request.bridge.as_str()) {
                        part.delete.push(datum::uuid(&port.uuid));
                    }
                }
            }
        }
    }
    Ok(())
}

fn ensure_port(
    snap: &Snapshot,
    bridge: &str,
    spec: &PortSpec,
    next_name: &mut usize,
    part: &mut RequestPlan,
) -> Result<()> {
    let tag = match spec.tag {
        Some(tag) => json!(tag),
        None => datum::set([]),
    };
    let Some(existing) = snap.ports.get(&spec.name) else {
        let iface_name = format!("iface{next_name}");
        let port_name = format!("port{next_name}");
        *next_name += 1;
        part.ops.push(Operation::Insert {
            table: "Interface".into(),
            row: row([("name", json!(spec.iface))]),
            uuid_name: Some(iface_name.clone()),
        });
        part.checks.push((spec.iface.clone(), Some(part.ops.len())));
        part.ops.push(Operation::Insert {
            table: "Port".into(),
            row: row([
                ("name", json!(spec.name)),
                ("interfaces", datum::named_uuid(&iface_name)),
                ("tag", tag),
                ("external_ids", datum::string_map(&spec.external_ids)),
            ]),
            uuid_name: Some(port_name.clone()),
        });
        part.insert.push(datum::named_uuid(&port_name));
        return Ok(());
    };
    match snap.bridge_of(&existing.uuid) {
        Some(owner) if owner == bridge => {}
        owner => {
            return Err(Error::PortOnOtherBridge {
                port: spec.name.clone(),
                bridge: owner.unwrap_or("(none)").to_owned(),
            })
        }
    }
    let existing_ifaces = snap.iface_names_of(existing);
    if existing_ifaces != [spec.iface.as_str()] {
        return Err(Error::PortInterfaceMismatch {
            port: spec.name.clone(),
            existing: existing_ifaces,
            wanted: spec.iface.clone(),
        });
    }
    let current = snap.port_info(&spec.name, existing);
    if current.error.is_some() {
        // Clearing ovs-vswitchd's error makes it retry the device on the
        // next reconfiguration (e.g. a veth that has been recreated), and
        // the post-apply check reports whether it worked this time.
        for iface in &existing.interfaces {
            part.ops.push(Operation::Update {
                table: "Interface".into(),
                conditions: vec![by_uuid(iface)],
                row: row([("error", datum::set([]))]),
            });
        }
        part.checks.push((spec.iface.clone(), None));
    }
    if current.tag != spec.tag || existing.trunks != 0 || current.external_ids != spec.external_ids
    {
        part.ops.push(Operation::Update {
            table: "Port".into(),
            conditions: vec![by_uuid(&existing.uuid)],
            row: row([
                ("tag", tag),
                ("trunks", datum::set([])),
                ("external_ids", datum::string_map(&spec.external_ids)),
            ]),
        });
    }
    Ok(())
}

pub(crate) fn by_uuid(uuid: &str) -> Condition {
    Condition::eq("_uuid", datum::uuid(uuid))
}

pub(crate) fn row<const N: usize>(columns: [(&str, Value); N]) -> Row {
    columns
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// Aborts the transaction if the bridge's ports differ from the snapshot.
fn ports_unchanged(bridge: &BridgeRow) -> Operation {
    let ports = datum::set(bridge.ports.iter().map(|p| datum::uuid(p)));
    Operation::Wait {
        table: "Bridge".into(),
        conditions: vec![by_uuid(&bridge.uuid)],
        columns: vec!["ports".into()],
        until: WaitUntil::Equal,
        rows: vec![row([("ports", ports)])],
        timeout: Some(0),
    }
}
