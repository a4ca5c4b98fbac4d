//! Open vSwitch: one integration bridge with the uplink as a trunk; each container's veth
//! host end is an access port with `tag=<vlan>`, written over OVSDB (weft-ovsdb batches
//! concurrent attaches into one transaction).

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use uuid::Uuid;
use weft_agent_api::{AttachmentSpec, Backend as BackendKind, Segment, SegmentMode, VlanId};
use weft_ovsdb::{AccessPort, DatapathType, Vswitch};

use super::{Backend, HostSide};
use crate::config::Naming;
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
            .add_veth(&host, HostPort::Switch, end.mtu, end)
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

    async fn unplug(
        &self,
        id: Uuid,
        _spec: &AttachmentSpec,
        _inside: Option<&Netlink>,
    ) -> Result<()> {
        let host = self.naming.host_veth(id);
        let mut errors = ErrorList::default();
        errors.keep(
            self.vswitch
                .remove_ports(&self.naming.ovs_bridge, &[host.as_str()])
                .await,
        );
        errors.keep(self.nl.delete(&host).await);
        errors.into_result()
    }

    /// Removes access ports marked as ours whose attachment is gone, then stray veths.
    async fn sweep(&self, keep: &HashSet<Uuid>) -> Result<()> {
        let bridge = &self.naming.ovs_bridge;
        let mut errors = ErrorList::default();
        let ports = match self.vswitch.list_ports(bridge).await {
            // No integration bridge yet: no ports of ours either.
            Err(weft_ovsdb::Error::NoBridge(_)) => Some(Vec::new()),
            other => errors.keep(other),
        };
        if let Some(ports) = ports {
            let stale: Vec<String> = ports
                .into_iter()
                .filter(|p| {
                    p.external_ids.get(OWNER_KEY).is_some_and(|owner| {
                        Uuid::parse_str(owner).map_or(true, |id| !keep.contains(&id))
                    })
                })
                .map(|p| p.name)
                .collect();
            if !stale.is_empty() {
                tracing::warn!(ports = ?stale, "removing orphaned OVS ports of ours");
                errors.keep(self.vswitch.remove_ports(bridge, &stale).await);
            }
        }
        errors.keep(super::sweep_host_veths(&self.nl, &self.naming, keep).await);
        errors.into_result()
    }

    async fn host_side(&self, id: Uuid, spec: &AttachmentSpec) -> Result<HostSide> {
        let host = self.naming.host_veth(id);
        if self.nl.link(&host).await?.is_none_or(|l| !l.up) {
            return Ok(HostSide::Missing);
        }
        let port = self.vswitch.port(&self.naming.ovs_bridge, &host).await?;
        let ok = port.is_some_and(|p| p.tag == Some(spec.vlan.get()));
        Ok(HostSide::ready_if(ok, host))
    }
}
