//! A consistent read of the Open_vSwitch rows the agent manages (root row,
//! bridges, ports, interface names), taken in one `transact` of selects.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::PortInfo;
use crate::datum;
use crate::error::{Error, Result};
use crate::op::{Condition, Operation};

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

/// Which Port and Interface rows a snapshot reads. Bridges and the root row
/// are always read whole; reading every port costs time that grows with the
/// number of ports, so a port change reads only the rows it names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    All,
    /// The ports with these names and the interfaces with these names.
    Named {
        ports: &'a [&'a str],
        ifaces: &'a [&'a str],
    },
}

const PORT_COLUMNS: &[&str] = &[
    "_uuid",
    "name",
    "tag",
    "trunks",
    "interfaces",
    "external_ids",
];
const IFACE_COLUMNS: &[&str] = &["_uuid", "name", "error"];

/// Selects `columns` of the rows of `table` whose `key` equals `value`.
fn select_where(table: &str, key: &str, value: Value, columns: &[&str]) -> Operation {
    Operation::Select {
        table: table.to_owned(),
        conditions: vec![Condition::eq(key, value)],
        columns: Some(columns.iter().map(|c| (*c).to_owned()).collect()),
    }
}

impl Snapshot {
    /// The selects that make up a snapshot of `scope`, to run as one transaction.
    pub fn query(scope: Scope<'_>) -> Vec<Operation> {
        let mut ops = vec![
            select("Open_vSwitch", &["_uuid"]),
            select("Bridge", &["_uuid", "name", "ports", "datapath_type"]),
        ];
        match scope {
            Scope::All => {
                ops.push(select("Port", PORT_COLUMNS));
                ops.push(select("Interface", IFACE_COLUMNS));
            }
            Scope::Named { ports, ifaces } => {
                let port = |n: &&str| select_where("Port", "name", json!(n), PORT_COLUMNS);
                let iface = |n: &&str| select_where("Interface", "name", json!(n), IFACE_COLUMNS);
                ops.extend(ports.iter().map(port));
                ops.extend(ifaces.iter().map(iface));
            }
        }
        ops
    }

    /// Parses the results of [`Snapshot::query`] for the same `scope`.
    pub fn parse(scope: Scope<'_>, results: &[Value]) -> Result<Self> {
        let port_selects = match scope {
            Scope::All => 1,
            Scope::Named { ports, .. } => ports.len(),
        };
        let expected = Self::query(scope).len();
        let ([roots, bridges, rest @ ..], true) = (results, results.len() == expected) else {
            return Err(Error::Protocol(format!(
                "snapshot expects {expected} results, got {}",
                results.len()
            )));
        };
        let (ports, ifaces) = rest.split_at(port_selects);
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
        for result in ports {
            for row in rows(result)? {
                let port = PortRow {
                    uuid: datum::read_uuid(column(row, "_uuid")?)?,
                    tag: datum::read_optional_int(column(row, "tag")?)?,
                    trunks: datum::members(column(row, "trunks")?).len(),
                    interfaces: datum::read_uuid_set(column(row, "interfaces")?)?,
                    external_ids: datum::read_string_map(column(row, "external_ids")?)?,
                };
                snap.ports.insert(string_column(row, "name")?, port);
            }
        }
        for result in ifaces {
            snap.add_ifaces(result)?;
        }
        Ok(snap)
    }

    /// Adds the Interface rows of a select result.
    pub fn add_ifaces(&mut self, result: &Value) -> Result<()> {
        for row in rows(result)? {
            let iface = IfaceRow {
                name: string_column(row, "name")?,
                error: datum::read_optional_string(column(row, "error")?)?,
            };
            self.ifaces
                .insert(datum::read_uuid(column(row, "_uuid")?)?, iface);
        }
        Ok(())
    }

    /// Selects for the interfaces of read ports that were not read with them
    /// (a port whose interface is not named as the caller expected).
    pub fn missing_ifaces_query(&self) -> Vec<Operation> {
        let mut missing: Vec<&String> = self
            .ports
            .values()
            .flat_map(|p| &p.interfaces)
            .filter(|u| !self.ifaces.contains_key(*u))
            .collect();
        missing.sort();
        missing.dedup();
        missing
            .into_iter()
            .map(|u| select_where("Interface", "_uuid", datum::uuid(u), IFACE_COLUMNS))
            .collect()
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
