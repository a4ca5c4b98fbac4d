//! A consistent read of the Open_vSwitch rows the agent manages (root row,
//! bridges, ports, interface names), taken in one `transact` of selects.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::PortInfo;
use crate::datum;
use crate::error::{Error, Result};
use crate::op::Operation;

pub(crate) const DB: &str = "Open_vSwitch";

#[derive(Debug, Clone)]
pub(crate) struct BridgeRow {
    pub uuid: String,
    pub ports: Vec<String>,
    pub datapath_type: String,
}

#[derive(Debug, Clone)]
pub(crate) struct PortRow {
    pub uuid: String,
    pub tag: Option<i64>,
    pub trunks: usize,
    pub interfaces: Vec<String>,
    pub external_ids: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub root: Option<String>,
    pub bridges: HashMap<String, BridgeRow>,
    /// By port name (port names are unique in the database).
    pub ports: HashMap<String, PortRow>,
    /// By interface uuid.
    pub ifaces: HashMap<String, IfaceRow>,
}

#[derive(Debug, Clone)]
pub(crate) struct IfaceRow {
    pub name: String,
    /// Why ovs-vswitchd could not attach it, if it could not.
    pub error: Option<String>,
}

/// Selects `columns` of every row of `table`.
pub(crate) fn select(table: &str, columns: &[&str]) -> Operation {
    Operation::Select {
        table: table.to_owned(),
        conditions: vec![],
        columns: Some(columns.iter().map(|c| (*c).to_owned()).collect()),
    }
}

/// The rows of a select result.
pub(crate) fn rows(result: &Value) -> Result<&Vec<Value>> {
    result
        .get("rows")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Protocol(format!("select result without rows: {result}")))
}

fn column<'a>(row: &'a Value, name: &str) -> Result<&'a Value> {
    row.get(name)
        .ok_or_else(|| Error::Protocol(format!("row without column {name}: {row}")))
}

fn string_column(row: &Value, name: &str) -> Result<String> {
    column(row, name)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Protocol(format!("column {name} is not a string: {row}")))
}

impl Snapshot {
    /// The selects that make up a snapshot, to run as one transaction.
    pub fn query() -> Vec<Operation> {
        vec![
            select("Open_vSwitch", &["_uuid"]),
            select("Bridge", &["_uuid", "name", "ports", "datapath_type"]),
            select(
                "Port",
                &[
                    "_uuid",
                    "name",
                    "tag",
                    "trunks",
                    "interfaces",
                    "external_ids",
                ],
            ),
            select("Interface", &["_uuid", "name", "error"]),
        ]
    }

    /// Parses the results of [`Snapshot::query`].
    pub fn parse(results: &[Value]) -> Result<Self> {
        let [roots, bridges, ports, ifaces] = results else {
            return Err(Error::Protocol(format!(
                "snapshot expects 4 results, got {}",
                results.len()
            )));
        };
        let mut snap = Snapshot::default();
        if let Some(root) = rows(roots)?.first() {
            snap.root = Some(datum::read_uuid(column(root, "_uuid")?)?);
        }
        for row in rows(bridges)? {
            let bridge = BridgeRow {
                uuid: datum::read_uuid(column(row, "_uuid")?)?,
                ports: datum::read_uuid_set(column(row, "ports")?)?,
                datapath_type: string_column(row, "datapath_type")?,
            };
            snap.bridges.insert(string_column(row, "name")?, bridge);
        }
        for row in rows(ports)? {
            let port = PortRow {
                uuid: datum::read_uuid(column(row, "_uuid")?)?,
                tag: datum::read_optional_int(column(row, "tag")?)?,
                trunks: datum::members(column(row, "trunks")?).len(),
                interfaces: datum::read_uuid_set(column(row, "interfaces")?)?,
                external_ids: datum::read_string_map(column(row, "external_ids")?)?,
            };
            snap.ports.insert(string_column(row, "name")?, port);
        }
        for row in rows(ifaces)? {
            let iface = IfaceRow {
                name: string_column(row, "name")?,
                error: datum::read_optional_string(column(row, "error")?)?,
            };
            snap.ifaces
                .insert(datum::read_uuid(column(row, "_uuid")?)?, iface);
        }
        Ok(snap)
    }

    /// The bridge a port (by uuid) belongs to, if any.
    pub fn bridge_of(&self, port_uuid: &str) -> Option<&str> {
        self.bridges
            .iter()
            .find(|(_, b)| b.ports.iter().any(|p| p == port_uuid))
            .map(|(name, _)| name.as_str())
    }

    /// Names of a port's interfaces.
    pub fn iface_names_of(&self, port: &PortRow) -> Vec<String> {
        port.interfaces
            .iter()
            .map(|u| {
                self.ifaces
                    .get(u)
                    .map_or_else(|| u.clone(), |i| i.name.clone())
            })
            .collect()
    }

    /// The first error ovs-vswitchd reported on a port's interfaces.
    pub fn iface_error_of(&self, port: &PortRow) -> Option<&str> {
        port.interfaces
            .iter()
            .find_map(|u| self.ifaces.get(u)?.error.as_deref())
    }

    /// The public view of a port row.
    pub fn port_info(&self, name: &str, row: &PortRow) -> PortInfo {
        PortInfo {
            name: name.to_owned(),
            interfaces: self.iface_names_of(row),
            tag: row.tag.and_then(|t| u16::try_from(t).ok()),
            external_ids: row.external_ids.clone(),
            error: self.iface_error_of(row).map(str::to_owned),
        }
    }
}
