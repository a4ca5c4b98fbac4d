//! Operations that create, adjust or delete a bridge. A bridge is three rows
//! (Bridge, its internal Port and Interface, named like the bridge) plus a
//! reference from the root Open_vSwitch row; deleting that reference makes
//! ovsdb-server garbage-collect the bridge with all its ports.

use serde_json::json;

use super::plan::{by_uuid, row};
use super::snapshot::Snapshot;
use super::DatapathType;
use crate::datum;
use crate::error::{Error, Result};
use crate::op::{Mutation, Mutator, Operation};

/// Operations making bridge `name` exist with `datapath`; empty if it does.
pub(crate) fn ensure(
    snap: &Snapshot,
    name: &str,
    datapath: DatapathType,
) -> Result<Vec<Operation>> {
    let root = snap.root.as_deref().ok_or(Error::NoRootRow)?;
    if let Some(bridge) = snap.bridges.get(name) {
        if bridge.datapath_type == datapath.as_str() {
            return Ok(vec![]);
        }
        return Ok(vec![Operation::Update {
            table: "Bridge".into(),
            conditions: vec![by_uuid(&bridge.uuid)],
            row: row([("datapath_type", json!(datapath.as_str()))]),
        }]);
    }
    Ok(vec![
        Operation::Insert {
            table: "Interface".into(),
            row: row([("name", json!(name)), ("type", json!("internal"))]),
            uuid_name: Some("iface".into()),
        },
        Operation::Insert {
            table: "Port".into(),
            row: row([
                ("name", json!(name)),
                ("interfaces", datum::named_uuid("iface")),
            ]),
            uuid_name: Some("port".into()),
        },
        Operation::Insert {
            table: "Bridge".into(),
            row: row([
                ("name", json!(name)),
                ("ports", datum::named_uuid("port")),
                ("datapath_type", json!(datapath.as_str())),
            ]),
            uuid_name: Some("bridge".into()),
        },
        Operation::Mutate {
            table: "Open_vSwitch".into(),
            conditions: vec![by_uuid(root)],
            mutations: vec![Mutation(
                "bridges".into(),
                Mutator::Insert,
                datum::set([datum::named_uuid("bridge")]),
            )],
        },
    ])
}

/// Operations removing bridge `name`; empty if it does not exist.
pub(crate) fn delete(snap: &Snapshot, name: &str) -> Result<Vec<Operation>> {
    let (Some(root), Some(bridge)) = (snap.root.as_deref(), snap.bridges.get(name)) else {
        return Ok(vec![]);
    };
    Ok(vec![Operation::Mutate {
        table: "Open_vSwitch".into(),
        conditions: vec![by_uuid(root)],
        mutations: vec![Mutation(
            "bridges".into(),
            Mutator::Delete,
            datum::set([datum::uuid(&bridge.uuid)]),
        )],
    }])
}
