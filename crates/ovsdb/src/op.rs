//! Transaction operations (RFC 7047 section 5.2) as typed values that
//! serialise to the exact JSON ovsdb-server expects.

use serde::Serialize;
use serde_json::{Map, Value};

/// A row: column name to OVSDB JSON value.
pub type Row = Map<String, Value>;

/// One operation of a `transact` request.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Operation {
    Insert {
        table: String,
        row: Row,
        /// Lets later operations in the same transaction refer to the new row.
        #[serde(rename = "uuid-name", skip_serializing_if = "Option::is_none")]
        uuid_name: Option<String>,
    },
    Select {
        table: String,
        #[serde(rename = "where")]
        conditions: Vec<Condition>,
        #[serde(skip_serializing_if = "Option::is_none")]
        columns: Option<Vec<String>>,
    },
    Update {
        table: String,
        #[serde(rename = "where")]
        conditions: Vec<Condition>,
        row: Row,
    },
    Mutate {
        table: String,
        #[serde(rename = "where")]
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    },
    Delete {
        table: String,
        #[serde(rename = "where")]
        conditions: Vec<Condition>,
    },
    /// Aborts the transaction unless the selected rows equal (or differ from)
    /// `rows`; used as an optimistic-concurrency guard with `timeout: 0`.
    Wait {
        table: String,
        #[serde(rename = "where")]
        conditions: Vec<Condition>,
        columns: Vec<String>,
        until: WaitUntil,
        rows: Vec<Row>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout: Option<u64>,
    },
}

impl Operation {
    /// The operation's name as it appears on the wire, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Insert { .. } => "insert",
            Operation::Select { .. } => "select",
            Operation::Update { .. } => "update",
            Operation::Mutate { .. } => "mutate",
            Operation::Delete { .. } => "delete",
            Operation::Wait { .. } => "wait",
        }
    }
}

/// Condition for `wait` operations.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum WaitUntil {
    #[serde(rename = "==")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
}

/// `[column, function, value]` in a `where` clause.
#[derive(Debug, Clone, Serialize)]
pub struct Condition(pub String, pub Function, pub Value);

impl Condition {
    /// `column == value`.
    pub fn eq(column: &str, value: Value) -> Self {
        Condition(column.to_owned(), Function::Equal, value)
    }
}

/// Comparison functions of a condition.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Function {
    #[serde(rename = "==")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
    #[serde(rename = "<")]
    Less,
    #[serde(rename = "<=")]
    LessOrEqual,
    #[serde(rename = ">")]
    Greater,
    #[serde(rename = ">=")]
    GreaterOrEqual,
    #[serde(rename = "includes")]
    Includes,
    #[serde(rename = "excludes")]
    Excludes,
}

/// `[column, mutator, value]` in a `mutate` operation.
#[derive(Debug, Clone, Serialize)]
pub struct Mutation(pub String, pub Mutator, pub Value);

/// Mutators of a mutation.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Mutator {
    #[serde(rename = "+=")]
    Add,
    #[serde(rename = "-=")]
    Subtract,
    #[serde(rename = "insert")]
    Insert,
    #[serde(rename = "delete")]
    Delete,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operations_serialise_to_rfc7047_json() {
        let mut row = Row::new();
        row.insert("name".into(), json!("p1"));
        let insert = Operation::Insert {
            table: "Port".into(),
            row,
            uuid_name: Some("port0".into()),
        };
        assert_eq!(
            serde_json::to_value(&insert).unwrap(),
            json!({"op": "insert", "table": "Port", "row": {"name": "p1"}, "uuid-name": "port0"})
        );
        let mutate = Operation::Mutate {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", json!("br0"))],
            mutations: vec![Mutation(
                "ports".into(),
                Mutator::Insert,
                json!(["named-uuid", "port0"]),
            )],
        };
        assert_eq!(
            serde_json::to_value(&mutate).unwrap(),
            json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", "br0"]],
                   "mutations": [["ports", "insert", ["named-uuid", "port0"]]]})
        );
    }

    #[test]
    fn wait_select_update_and_delete_serialise_to_rfc7047_json() {
        let by_name = || vec![Condition::eq("name", json!("p1"))];
        let mut row = Row::new();
        row.insert("tag".into(), json!(["set", []]));
        let ops = [
            Operation::Wait {
                table: "Bridge".into(),
                conditions: by_name(),
                columns: vec!["ports".into()],
                until: WaitUntil::Equal,
                rows: vec![row.clone()],
                timeout: Some(0),
            },
            Operation::Select {
                table: "Port".into(),
                conditions: vec![],
                columns: None,
            },
            Operation::Update {
                table: "Port".into(),
                conditions: by_name(),
                row,
            },
            Operation::Delete {
                table: "Port".into(),
                conditions: by_name(),
            },
        ];
        assert_eq!(
            serde_json::to_value(ops).unwrap(),
            json!([
                {"op": "wait", "table": "Bridge", "where": [["name", "==", "p1"]],
                 "columns": ["ports"], "until": "==", "rows": [{"tag": ["set", []]}], "timeout": 0},
                {"op": "select", "table": "Port", "where": []},
                {"op": "update", "table": "Port", "where": [["name", "==", "p1"]],
                 "row": {"tag": ["set", []]}},
                {"op": "delete", "table": "Port", "where": [["name", "==", "p1"]]}
            ])
        );
    }
}
