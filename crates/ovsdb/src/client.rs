//! OVSDB methods on top of the JSON-RPC connection: `transact` (with the
//! per-operation error checking RFC 7047 section 4.1.3 requires),
//! `get_schema` and `monitor`.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::op::Operation;
use crate::rpc::{describe_error, Connection, Notification};

/// A database-agnostic OVSDB client.
#[derive(Debug)]
pub struct Client {
    conn: Connection,
}

impl Client {
    /// Connects to `unix:<path>` or `tcp:<host>:<port>`; each request fails
    /// after `request_timeout` without an answer.
    pub async fn connect(
        addr: &str,
        request_timeout: Duration,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Notification>)> {
        let (conn, notes) = Connection::connect(addr, request_timeout).await?;
        Ok((Client { conn }, notes))
    }

    /// Runs `ops` atomically in database `db` and returns one result per
    /// operation, or the first operation's (or the commit's) error.
    #[tracing::instrument(level = "debug", skip_all, fields(db = %db, ops = ops.len()))]
    pub async fn transact(&self, db: &str, ops: &[Operation]) -> Result<Vec<Value>> {
        let mut params = vec![json!(db)];
        for op in ops {
            params.push(
                serde_json::to_value(op).map_err(|e| {
                    Error::Protocol(format!("encoding {} operation: {e}", op.name()))
                })?,
            );
        }
        let result = self.conn.call("transact", Value::Array(params)).await?;
        let Value::Array(results) = result else {
            return Err(Error::Protocol(format!(
                "transact result is not an array: {result}"
            )));
        };
        // A failed operation carries "error"; an extra trailing element
        // reports a failure at commit time (e.g. a constraint violation).
        if let Some((index, error)) = results
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.get("error").filter(|e| !e.is_null()).map(|e| (i, e)))
        {
            let op = ops.get(index).map_or("commit", Operation::name).to_owned();
            let mut error = describe_error(error);
            if let Some(details) = results[index].get("details").and_then(Value::as_str) {
                error = format!("{error}: {details}");
            }
            return Err(Error::Transaction { index, op, error });
        }
        if results.len() < ops.len() {
            return Err(Error::Protocol(format!(
                "transact returned {} results for {} operations",
                results.len(),
                ops.len()
            )));
        }
        Ok(results)
    }

    /// The schema of database `db` (RFC 7047 section 4.1.2).
    pub async fn get_schema(&self, db: &str) -> Result<Value> {
        self.conn.call("get_schema", json!([db])).await
    }

    /// Starts a monitor; later changes arrive as `update` notifications
    /// tagged with `monitor_id`. Returns the initial table-updates.
    pub async fn monitor(&self, db: &str, monitor_id: Value, requests: Value) -> Result<Value> {
        self.conn
            .call("monitor", json!([db, monitor_id, requests]))
            .await
    }

    /// Whether the connection is gone (every call would fail).
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
}
