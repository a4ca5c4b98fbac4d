//! Linux bridge per VLAN: `wbr<vlan>` over the `<uplink>.<vlan>` 802.1Q sub-interface
//! (regular mode) or over the uplink itself (untagged mode); containers get veth pairs.

use async_trait::async_trait;
use netlink_packet_route::link::InfoKind;
use uuid::Uuid;
use weft_agent_api::{AttachmentSpec, Backend as BackendKind, Segment, VlanId};

use super::{Backend, ContainerIf, HostSide};
use crate::config::{owner_mark, Naming};
use crate::error::ErrorList;
use crate::netlink::{ContainerEnd, HostPort, Link, Netlink};
use crate::state::DesiredSegment;
use crate::{Error, Result};

pub struct LinuxBridge {
    nl: Netlink,
    naming: Naming,
    mtu: u32,
}

impl LinuxBridge {
    pub fn new(nl: Netlink, naming: Naming, mtu: u32) -> Self {
        LinuxBridge { nl, naming, mtu }
    }
}

#[async_trait]
impl Backend for LinuxBridge {
    fn kind(&self) -> BackendKind {
        BackendKind::LinuxBridge
    }

    async fn ensure_segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<Segment> {
        let name = self.naming.bridge(vlan);
        if let Some(link) = self.nl.link(&name).await? {
            if link.kind != Some(InfoKind::Bridge) {
                return Err(Error::Conflict(format!(
                    "{name}, the bridge of VLAN {vlan}, exists and is not a bridge; nothing was changed"
                )));
            }
        }
        // The carrier first: a missing uplink must not leave a bridge behind.
        let port = super::ensure_carrier(&self.nl, vlan, seg).await?;
        let bridge = self.nl.ensure_bridge(&name, self.mtu).await?;
        match port.controller {
            Some(c) if c == bridge.index && port.up => {}
            Some(c) if c != bridge.index && c != 0 => {
                return Err(Error::Conflict(format!(
                    "{} is already a port of another bridge (index {c}); one untagged segment per uplink",
                    port.name
                )))
            }
            _ => self.nl.set_controller_up(port.index, bridge.index).await?,
        }
        self.segment(vlan, seg).await
    }

    async fn segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<Segment> {
        let bridge_name = self.naming.bridge(vlan);
        let bridge = self.nl.link(&bridge_name).await?;
        let port = self.nl.link(&seg.carrier(vlan)).await?;
        let ready = match (&bridge, &port) {
            (Some(b), Some(p)) => b.up && p.up && p.controller == Some(b.index),
            _ => false,
        };
        Ok(Segment {
            vlan,
            mode: seg.mode,
            uplink: seg.uplink.clone(),
            bridge: Some(bridge_name),
            sub_interface: seg.sub_interface(vlan),
            ready,
        })
    }

    async fn remove_segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<()> {
        let mut errors = ErrorList::default();
        let bridge_name = self.naming.bridge(vlan);
        match seg.sub_interface(vlan) {
            Some(sub) => {
                errors.keep(self.nl.delete(&sub).await);
            }
            None => {
                // Release the uplink only from our own bridge; never delete the uplink.
                let bridge = errors.keep(self.nl.link(&bridge_name).await).flatten();
                let uplink = errors.keep(self.nl.link(&seg.uplink).await).flatten();
                if let (
                    Some(b),
                    Some(Link {
                        index,
                        controller: Some(c),
                        ..
                    }),
                ) = (bridge, uplink)
                {
                    if c == b.index {
                        errors.keep(self.nl.set_controller_up(index, 0).await);
                    }
                }
            }
        }
        errors.keep(self.nl.delete(&bridge_name).await);
        errors.into_result()
    }

    async fn plug(
        &self,
        id: Uuid,
        spec: &AttachmentSpec,
        _seg: &DesiredSegment,
        end: &ContainerEnd<'_>,
    ) -> Result<()> {
        let bridge = self
            .nl
            .link(&self.naming.bridge(spec.vlan))
            .await?
            .ok_or(Error::SegmentMissing(spec.vlan))?;
        let host = self.naming.host_veth(id);
        Ok(self
            .nl
            .add_veth(
                &host,
                &owner_mark(id),
                HostPort::Bridge(bridge.index),
                end.mtu,
                end,
            )
            .await?)
    }

    async fn claim(&self, id: Uuid) -> Result<()> {
        super::claim_host_veth(&self.nl, &self.naming, id).await?;
        Ok(())
    }

    /// Deleting one end of a veth deletes the other, wherever it is.
    async fn unplug(&self, id: Uuid, _container: Option<ContainerIf<'_>>) -> Result<()> {
        super::delete_host_veth(&self.nl, &self.naming, id).await
    }

    async fn links_of_ours(&self) -> Result<Vec<(Uuid, String)>> {
        super::host_veths_of_ours(&self.nl, &self.naming).await
    }

    async fn host_side(&self, id: Uuid, spec: &AttachmentSpec) -> Result<HostSide> {
        let (Some(veth), Some(bridge)) = (
            super::own_host_veth(&self.nl, &self.naming, id).await?,
            self.nl.link(&self.naming.bridge(spec.vlan)).await?,
        ) else {
            return Ok(HostSide::Missing);
        };
        let ok = veth.up && veth.controller == Some(bridge.index);
        Ok(HostSide::ready_if(ok, veth.name))
    }
}
