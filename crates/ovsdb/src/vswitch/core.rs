//! The connection plus what every write needs: a lock serialising this
//! client's writers, and a monitor of `Open_vSwitch.cur_cfg` so a commit can
//! wait until ovs-vswitchd has applied it (as `ovs-vsctl` does by default).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Mutex};

use super::snapshot::{rows, select, Scope, Snapshot, DB};
use super::VswitchOptions;
use crate::client::Client;
use crate::datum;
use crate::error::{Error, Result};
use crate::op::{Condition, Mutation, Mutator, Operation};
use crate::rpc::Notification;

const CFG_MONITOR: &str = "weft-cur-cfg";

/// One connection and its `cur_cfg` monitor; replaced as a whole when the
/// connection drops (e.g. ovsdb-server restarted during an upgrade).
struct Session {
    client: Client,
    cur_cfg: watch::Receiver<i64>,
}

impl Session {
    async fn open(addr: &str, opts: &VswitchOptions) -> Result<Self> {
        let (client, notes) = Client::connect(addr, opts.request_timeout).await?;
        let requests = json!({"Open_vSwitch": {"columns": ["cur_cfg"]}});
        let initial = client.monitor(DB, json!(CFG_MONITOR), requests).await?;
        let (tx, cur_cfg) = watch::channel(cur_cfg_of(&initial).unwrap_or(0));
        tokio::spawn(follow_cur_cfg(notes, tx));
        Ok(Session { client, cur_cfg })
    }
}

pub(crate) struct Core {
    addr: String,
    session: Mutex<Option<Arc<Session>>>,
    transacts: AtomicU64,
    /// Held for a whole read-plan-commit cycle so this client's own writes
    /// never race each other (other clients are caught by `wait` guards).
    pub write_lock: Mutex<()>,
    pub opts: VswitchOptions,
}

impl Core {
    pub async fn connect(addr: &str, opts: VswitchOptions) -> Result<Self> {
        let session = Session::open(addr, &opts).await?;
        Ok(Core {
            addr: addr.to_owned(),
            session: Mutex::new(Some(Arc::new(session))),
            transacts: AtomicU64::new(0),
            write_lock: Mutex::new(()),
            opts,
        })
    }

    /// The live session, reconnecting if the previous one was lost.
    async fn session(&self) -> Result<Arc<Session>> {
        let mut slot = self.session.lock().await;
        if let Some(live) = slot.as_ref().filter(|s| !s.client.is_closed()) {
            return Ok(live.clone());
        }
        *slot = None;
        tracing::info!(addr = %self.addr, "connecting to ovsdb-server again");
        let session = Arc::new(Session::open(&self.addr, &self.opts).await?);
        *slot = Some(session.clone());
        Ok(session)
    }

    /// Runs `work` again, on a new connection, if the connection dropped
    /// under it. Safe because every write re-reads and re-plans from scratch.
    /// `work` learns whether it is the retry: the first attempt may have
    /// committed before the drop, so a retry that finds nothing to change
    /// must still wait for ovs-vswitchd (see [`Core::settle`]).
    pub async fn reconnecting<T, F, Fut>(&self, mut work: F) -> Result<T>
    where
        F: FnMut(bool) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match work(false).await {
            Err(Error::Disconnected(reason)) => {
                tracing::warn!(%reason, "OVSDB connection lost; retrying once");
                work(true).await
            }
            other => other,
        }
    }

    /// Waits until ovs-vswitchd has applied everything committed so far
    /// (an empty commit that only bumps `next_cfg`).
    pub async fn settle(&self) -> Result<()> {
        self.commit(vec![], true).await.map(drop)
    }

    /// `transact` requests sent, over all connections.
    pub fn transact_count(&self) -> u64 {
        self.transacts.load(Ordering::Relaxed)
    }

    async fn transact(&self, session: &Session, ops: &[Operation]) -> Result<Vec<Value>> {
        self.transacts.fetch_add(1, Ordering::Relaxed);
        session.client.transact(DB, ops).await
    }

    /// A consistent read of `scope`. Interfaces of the read ports that the
    /// scope did not name are fetched by uuid afterwards: an interface's name
    /// never changes (the column is immutable), so that second read cannot
    /// contradict the first.
    pub async fn snapshot(&self, scope: Scope<'_>) -> Result<Snapshot> {
        let session = self.session().await?;
        let results = self.transact(&session, &Snapshot::query(scope)).await?;
        let mut snap = Snapshot::parse(scope, &results)?;
        let missing = snap.missing_ifaces_query();
        if !missing.is_empty() {
            for result in self.transact(&session, &missing).await? {
                snap.add_ifaces(&result)?;
            }
        }
        Ok(snap)
    }

    /// Commits `ops`. With `wait`, also bumps `next_cfg` in the same
    /// transaction and returns only once ovs-vswitchd reports it applied.
    /// Returns one result per operation in `ops`.
    pub async fn commit(&self, mut ops: Vec<Operation>, wait: bool) -> Result<Vec<Value>> {
        let session = self.session().await?;
        let count = ops.len();
        if !wait {
            return self.transact(&session, &ops).await;
        }
        ops.push(Operation::Mutate {
            table: "Open_vSwitch".into(),
            conditions: vec![],
            mutations: vec![Mutation("next_cfg".into(), Mutator::Add, json!(1))],
        });
        ops.push(select("Open_vSwitch", &["next_cfg"]));
        let mut results = self.transact(&session, &ops).await?;
        let last = results
            .get(ops.len() - 1)
            .ok_or_else(|| Error::Protocol("missing next_cfg select result".into()))?;
        let Some(next_cfg) = rows(last)?.first().and_then(|r| r["next_cfg"].as_i64()) else {
            return Err(Error::NoRootRow);
        };
        self.wait_applied(&session, next_cfg).await?;
        results.truncate(count);
        Ok(results)
    }

    async fn wait_applied(&self, session: &Session, wanted: i64) -> Result<()> {
        let mut rx = session.cur_cfg.clone();
        let timeout = self.opts.apply_timeout;
        let waited = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= wanted))
            .await
            .map(|r| r.is_ok());
        match waited {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Disconnected("cur_cfg monitor ended".into())),
            Err(_) => Err(Error::ApplyTimeout {
                wanted,
                applied: *session.cur_cfg.borrow(),
                timeout,
            }),
        }
    }

    /// ovs-vswitchd's error for each of `ifaces` that it could not attach.
    pub async fn interface_errors(&self, ifaces: &[&str]) -> Result<HashMap<String, String>> {
        let ops: Vec<Operation> = ifaces
            .iter()
            .map(|name| Operation::Select {
                table: "Interface".into(),
                conditions: vec![Condition::eq("name", json!(name))],
                columns: Some(vec!["name".into(), "error".into()]),
            })
            .collect();
        let session = self.session().await?;
        let results = self.transact(&session, &ops).await?;
        let mut errors = HashMap::new();
        for result in &results {
            for row in rows(result)? {
                if let (Some(name), Some(error)) = (
                    row["name"].as_str(),
                    datum::read_optional_string(&row["error"])?,
                ) {
                    errors.insert(name.to_owned(), error);
                }
            }
        }
        Ok(errors)
    }
}

fn cur_cfg_of(table_updates: &Value) -> Option<i64> {
    table_updates
        .get("Open_vSwitch")?
        .as_object()?
        .values()
        .find_map(|row| row.get("new")?.get("cur_cfg")?.as_i64())
}

async fn follow_cur_cfg(mut notes: mpsc::UnboundedReceiver<Notification>, tx: watch::Sender<i64>) {
    while let Some(note) = notes.recv().await {
        let is_ours = note.params.get(0) == Some(&json!(CFG_MONITOR));
        if note.method == "update" && is_ours {
            if let Some(cfg) = note.params.get(1).and_then(cur_cfg_of) {
                tx.send_replace(cfg);
            }
        }
    }
}

/// Default apply timeout, long enough for a loaded userspace datapath.
pub(crate) const DEFAULT_APPLY_TIMEOUT: Duration = Duration::from_secs(10);
