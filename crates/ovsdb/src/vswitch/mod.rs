//! The typed Open_vSwitch API the Weft agent uses: an integration bridge,
//! a trunk uplink and VLAN access ports, with concurrent port changes
//! batched into single transactions.

mod batcher;
mod bridge;
mod core;
mod plan;
mod snapshot;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use self::core::Core;
use self::plan::{PortChange, PortRequest, PortSpec};
use self::snapshot::Scope;
use crate::error::{Error, Result};

/// Which datapath a bridge uses: `system` (kernel module, production) or
/// `netdev` (userspace, where the kernel module is missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatapathType {
    System,
    Netdev,
}

impl DatapathType {
    pub fn as_str(self) -> &'static str {
        match self {
            DatapathType::System => "system",
            DatapathType::Netdev => "netdev",
        }
    }
}

/// Whether a call had to change the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Changed,
}

/// An access port: untagged frames from `iface` enter VLAN `tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPort {
    /// Port name (unique across all bridges).
    pub name: String,
    /// Existing network device to attach (e.g. the host end of a veth).
    pub iface: String,
    /// VLAN id, 1..=4094.
    pub tag: u16,
    /// Marks the port as ours, e.g. `weft-attachment=<id>`, so it can be
    /// recognised after a restart.
    pub external_ids: BTreeMap<String, String>,
}

/// A port as found on a bridge (including the bridge's own internal port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub name: String,
    pub interfaces: Vec<String>,
    /// `None` for a trunk (or the bridge's internal port).
    pub tag: Option<u16>,
    pub external_ids: BTreeMap<String, String>,
    /// Why ovs-vswitchd could not attach the port's interface (e.g. the
    /// device is gone), if it could not.
    pub error: Option<String>,
}

/// Tunables; the defaults suit the agent.
#[derive(Debug, Clone)]
pub struct VswitchOptions {
    /// Return from writes only after ovs-vswitchd applied them (`cur_cfg`
    /// caught up with the `next_cfg` the write set), like `ovs-vsctl`.
    pub wait_applied: bool,
    /// Whether a batch that only removes ports also waits for ovs-vswitchd
    /// (with `wait_applied`). Deleting a port takes ovs-vswitchd's userspace
    /// datapath ~15 ms per port, so a caller that deletes the device itself
    /// anyway may prefer not to wait.
    pub wait_for_removals: bool,
    /// How long to wait for ovs-vswitchd to apply a write.
    pub apply_timeout: Duration,
    /// How long to wait for ovsdb-server to answer one request.
    pub request_timeout: Duration,
    /// Most port requests coalesced into one transaction.
    pub max_batch: usize,
}

impl Default for VswitchOptions {
    fn default() -> Self {
        VswitchOptions {
            wait_applied: true,
            wait_for_removals: true,
            apply_timeout: core::DEFAULT_APPLY_TIMEOUT,
            request_timeout: Duration::from_secs(30),
            max_batch: 256,
        }
    }
}

/// A cheap-to-clone handle on one OVSDB connection to the Open_vSwitch
/// database. The connection and batcher stop when the last clone drops.
#[derive(Clone)]
pub struct Vswitch {
    core: Arc<Core>,
    jobs: mpsc::UnboundedSender<batcher::Job>,
}

impl std::fmt::Debug for Vswitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vswitch")
            .field("opts", &self.core.opts)
            .finish_non_exhaustive()
    }
}

impl Vswitch {
    /// Connects to ovsdb-server at `unix:<path>` (or `tcp:<host>:<port>`).
    #[tracing::instrument(level = "debug", skip(opts))]
    pub async fn connect(addr: &str, opts: VswitchOptions) -> Result<Self> {
        let core = Arc::new(Core::connect(addr, opts).await?);
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(batcher::run(core.clone(), rx));
        Ok(Vswitch { core, jobs })
    }

    /// How many `transact` requests this handle has sent (to see batching
    /// at work in tests and benchmarks).
    pub fn transact_count(&self) -> u64 {
        self.core.transact_count()
    }

    /// Makes bridge `name` exist with `datapath`; fixes the datapath type of
    /// an existing bridge.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn ensure_bridge(&self, name: &str, datapath: DatapathType) -> Result<Outcome> {
        self.write_alone(|snap| bridge::ensure(snap, name, datapath))
            .await
    }

    /// Deletes bridge `name` and all its ports; succeeds if it is absent.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn delete_bridge(&self, name: &str) -> Result<Outcome> {
        self.write_alone(|snap| bridge::delete(snap, name)).await
    }

    /// Makes `uplink` a port of `bridge` carrying every VLAN tagged (no
    /// `tag`, no `trunks` restriction).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn ensure_trunk_port(&self, bridge: &str, uplink: &str) -> Result<Outcome> {
        let spec = PortSpec {
            name: uplink.to_owned(),
            iface: uplink.to_owned(),
            tag: None,
            external_ids: BTreeMap::new(),
        };
        self.submit(bridge, vec![PortChange::Ensure(spec)]).await
    }

    /// Makes every port in `ports` exist on `bridge` exactly as given (tag
    /// and external_ids are corrected if they differ), all or none.
    #[tracing::instrument(level = "debug", skip_all, fields(bridge = %bridge, ports = ports.len()))]
    pub async fn ensure_access_ports(&self, bridge: &str, ports: &[AccessPort]) -> Result<Outcome> {
        let changes = ports
            .iter()
            .map(|p| {
                PortChange::Ensure(PortSpec {
                    name: p.name.clone(),
                    iface: p.iface.clone(),
                    tag: Some(p.tag),
                    external_ids: p.external_ids.clone(),
                })
            })
            .collect();
        self.submit(bridge, changes).await
    }

    /// Removes the named ports from `bridge`; names not on it are ignored.
    #[tracing::instrument(level = "debug", skip_all, fields(bridge = %bridge, ports = names.len()))]
    pub async fn remove_ports<S: AsRef<str>>(&self, bridge: &str, names: &[S]) -> Result<Outcome> {
        let changes = names
            .iter()
            .map(|n| PortChange::Remove(n.as_ref().to_owned()))
            .collect();
        self.submit(bridge, changes).await
    }

    /// Every port of `bridge`, sorted by name.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn list_ports(&self, bridge: &str) -> Result<Vec<PortInfo>> {
        let snap = self
            .core
            .reconnecting(|_| self.core.snapshot(Scope::All))
            .await?;
        let row = snap
            .bridges
            .get(bridge)
            .ok_or_else(|| Error::NoBridge(bridge.to_owned()))?;
        let mut ports: Vec<PortInfo> = snap
            .ports
            .iter()
            .filter(|(_, p)| row.ports.contains(&p.uuid))
            .map(|(name, p)| snap.port_info(name, p))
            .collect();
        ports.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ports)
    }

    /// Port `name` if it is on `bridge`. Unlike [`Vswitch::list_ports`] it
    /// reads only that port's rows, so its cost does not grow with the
    /// number of ports.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn port(&self, bridge: &str, name: &str) -> Result<Option<PortInfo>> {
        // Callers usually name the interface like the port; any other
        // interface is fetched by uuid.
        let names = [name];
        let scope = Scope::Named {
            ports: &names,
            ifaces: &names,
        };
        let snap = self
            .core
            .reconnecting(|_| self.core.snapshot(scope))
            .await?;
        let row = snap
            .bridges
            .get(bridge)
            .ok_or_else(|| Error::NoBridge(bridge.to_owned()))?;
        Ok(snap
            .ports
            .get(name)
            .filter(|p| row.ports.contains(&p.uuid))
            .map(|p| snap.port_info(name, p)))
    }

    async fn submit(&self, bridge: &str, changes: Vec<PortChange>) -> Result<Outcome> {
        if changes.is_empty() {
            return Ok(Outcome::Unchanged);
        }
        let (reply, answer) = oneshot::channel();
        let request = PortRequest {
            bridge: bridge.to_owned(),
            changes,
        };
        self.jobs
            .send(batcher::Job { request, reply })
            .map_err(|_| Error::BatcherGone)?;
        answer.await.map_err(|_| Error::BatcherGone)?
    }

    /// Read, plan and commit a non-batched write under the write lock.
    async fn write_alone(
        &self,
        plan: impl Fn(&snapshot::Snapshot) -> Result<Vec<crate::op::Operation>>,
    ) -> Result<Outcome> {
        let _writer = self.core.write_lock.lock().await;
        let plan = &plan;
        self.core
            .reconnecting(|retry| async move {
                let snap = self.core.snapshot(Scope::All).await?;
                let ops = plan(&snap)?;
                if ops.is_empty() {
                    if retry && self.core.opts.wait_applied {
                        self.core.settle().await?;
                    }
                    return Ok(Outcome::Unchanged);
                }
                self.core.commit(ops, self.core.opts.wait_applied).await?;
                Ok(Outcome::Changed)
            })
            .await
    }
}
