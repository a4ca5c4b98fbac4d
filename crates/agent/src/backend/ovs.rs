//! Open vSwitch: one integration bridge with the uplink as a trunk; each container's veth
//! host end is an access port with `tag=<vlan>`, written over OVSDB (weft-ovsdb batches
//! concurrent attaches into one transaction).

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use uuid::Uuid;
use weft_agent_api::{AttachmentSpec, Backend as BackendKind, Segment, SegmentMode, VlanId};
use weft_ovsdb::{AccessPort, DatapathType, PortInfo, Vswitch};

use super::{Backend, ContainerIf, HostSide};
use crate::config::{owner_mark, Naming};
use crate::error::ErrorList;
use crate::netlink::{ContainerEnd, HostPort, Netlink};
use crate::state::DesiredSegment;
use crate::{Error, Result};

/// external_ids key marking ports the agent owns.
const OWNER_KEY: &str = "weft-attachment";

pub struct Ovs {
    nl: Netlink,
    vswitch: Vswitch,
    naming: Naming,
    datapath: DatapathType,
}

impl Ovs {
    pub fn new(nl: Netlink, vswitch: Vswitch, naming: Naming, datapath: DatapathType) -> Self {
        Ovs {
            nl,
            vswitch,
            naming,
            datapath,
        }
    }
}

#[async_trait]
impl Backend for Ovs {
    fn kind(&self) -> BackendKind {
        BackendKind::Ovs
    }

    async fn ensure_segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<Segment> {
        if seg.mode != SegmentMode::Regular {
            return Err(Error::Invalid(
                "the ovs backend tags every VLAN on the uplink trunk; use mode regular".into(),
            ));
        }
        super::uplink_up(&self.nl, seg).await?;
        let bridge = &self.naming.ovs_bridge;
        self.vswitch.ensure_bridge(bridge, self.datapath).await?;
        self.vswitch.ensure_trunk_port(bridge, &seg.uplink).await?;
        self.segment(vlan, seg).await
    }

    async fn segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<Segment> {
        let bridge = &self.naming.ovs_bridge;
        let ready = match self.vswitch.list_ports(bridge).await {
            Ok(ports) => ports
                .iter()
                .any(|p| p.name == seg.uplink && p.tag.is_none()),
            Err(_) => false,
        };
        Ok(Segment {
            vlan,
            mode: seg.mode,
            uplink: seg.uplink.clone(),
            bridge: Some(bridge.clone()),
            sub_interface: None,
            ready,
        })
    }

    async fn remove_segment(&self, _vlan: VlanId, _seg: &DesiredSegment) -> Result<()> {
        // The trunk carries every VLAN: other segments still use it, and an idle trunk
        // port costs nothing. Access ports leave with their attachments.
        Ok(())
    }

    async fn plug(
        &self,
        id: Uuid,
        _spec: &AttachmentSpec,
        _seg: &DesiredSegment,
        end: &ContainerEnd<'_>,
    ) -> Result<()> {
        let host = self.naming.host_veth(id);
        self.nl
            .add_veth(&host, &owner_mark(id), HostPort::Switch, end.mtu, end)
            .await?;
        Ok(())
    }

    async fn connect(&self, id: Uuid, spec: &AttachmentSpec) -> Result<()> {
        let host = self.naming.host_veth(id);
        let port = AccessPort {
            name: host.clone(),
            iface: host,
            tag: spec.vlan.get(),
            external_ids: BTreeMap::from([(OWNER_KEY.to_owned(), id.to_string())]),
        };
        self.vswitch
            .ensure_access_ports(&self.naming.ovs_bridge, &[port])
            .await?;
        Ok(())
    }

    /// The link, and a switch port of that name, must be free or this attachment's.
    async fn claim(&self, id: Uuid) -> Result<()> {
        let name = super::claim_host_veth(&self.nl, &self.naming, id).await?;
        match self.port_of_name(&name).await? {
            Some(port) if owner(&port) != Some(id) => Err(Error::Conflict(format!(
                "switch port {name}, needed by attachment {id}, belongs to {}; nothing was changed",
                owner(&port).map_or("a port weft-agent did not make".into(), |o| {
                    format!("attachment {o}")
                })
            ))),
            _ => Ok(()),
        }
    }

    /// Removes the port and the veth, each only when it carries this attachment's mark.
    async fn unplug(&self, id: Uuid, _container: Option<ContainerIf<'_>>) -> Result<()> {
        let host = self.naming.host_veth(id);
        let mut errors = ErrorList::default();
        if let Some(Some(port)) = errors.keep(self.port_of_name(&host).await) {
            if owner(&port) == Some(id) {
                errors.keep(
                    self.vswitch
                        .remove_ports(&self.naming.ovs_bridge, &[host.as_str()])
                        .await,
                );
            }
        }
        errors.keep(super::delete_host_veth(&self.nl, &self.naming, id).await);
        errors.into_result()
    }

    /// Removes access ports marked as ours whose attachment is gone and whose device went
    /// with its container's namespace. A port whose veth still exists stays: its container
    /// may still be using it (see [`Backend::links_of_ours`]).
    async fn sweep(&self, keep: &HashSet<Uuid>) -> Result<()> {
        let ports = match self.vswitch.list_ports(&self.naming.ovs_bridge).await {
            // No integration bridge yet: no ports of ours either.
            Err(weft_ovsdb::Error::NoBridge(_)) => return Ok(()),
            other => other?,
        };
        let links: HashSet<String> = self.nl.links().await?.into_iter().map(|l| l.name).collect();
        let dead: Vec<String> = ports
            .into_iter()
            .filter(|p| {
                p.external_ids.contains_key(OWNER_KEY)
                    && owner(p).is_none_or(|id| !keep.contains(&id))
                    && !links.contains(&p.name)
            })
            .map(|p| p.name)
            .collect();
        if !dead.is_empty() {
            tracing::warn!(ports = ?dead, "removing OVS ports of ours whose device is gone");
            self.vswitch
                .remove_ports(&self.naming.ovs_bridge, &dead)
                .await?;
        }
        Ok(())
    }

    async fn links_of_ours(&self) -> Result<Vec<(Uuid, String)>> {
        super::host_veths_of_ours(&self.nl, &self.naming).await
    }

    async fn host_side(&self, id: Uuid, spec: &AttachmentSpec) -> Result<HostSide> {
        let link = super::own_host_veth(&self.nl, &self.naming, id).await?;
        let Some(link) = link.filter(|l| l.up) else {
            return Ok(HostSide::Missing);
        };
        let port = self
            .vswitch
            .port(&self.naming.ovs_bridge, &link.name)
            .await?;
        let ok = port.is_some_and(|p| p.tag == Some(spec.vlan.get()) && owner(&p) == Some(id));
        Ok(HostSide::ready_if(ok, link.name))
    }
}

impl Ovs {
    /// The port called `name` on the integration bridge; none while there is no bridge.
    async fn port_of_name(&self, name: &str) -> Result<Option<PortInfo>> {
        match self.vswitch.port(&self.naming.ovs_bridge, name).await {
            Err(weft_ovsdb::Error::NoBridge(_)) => Ok(None),
            other => Ok(other?),
        }
    }
}

/// The attachment a switch port is marked with.
fn owner(port: &PortInfo) -> Option<Uuid> {
    Uuid::parse_str(port.external_ids.get(OWNER_KEY)?).ok()
}
