//! macvlan (bridge mode) children of `<uplink>.<vlan>` (regular) or of the uplink itself
//! (untagged), created directly inside the container namespace. No host-side interface:
//! the agent recognises its own child by name, kind and MAC.

use std::collections::HashSet;

use async_trait::async_trait;
use netlink_packet_route::link::InfoKind;
use uuid::Uuid;
use weft_agent_api::{AttachmentSpec, Backend as BackendKind, Segment, SegmentMode, VlanId};

use super::{Backend, HostSide};
use crate::config::Naming;
use crate::netlink::{ContainerEnd, Netlink};
use crate::state::DesiredSegment;
use crate::{Error, Result};

pub struct Macvlan {
    nl: Netlink,
}

impl Macvlan {
    pub fn new(nl: Netlink) -> Self {
        Macvlan { nl }
    }

    fn parent_name(vlan: VlanId, seg: &DesiredSegment) -> String {
        match seg.mode {
            SegmentMode::Regular => Naming::sub_interface(&seg.uplink, vlan),
            SegmentMode::Untagged => seg.uplink.clone(),
        }
    }
}

#[async_trait]
impl Backend for Macvlan {
    fn kind(&self) -> BackendKind {
        BackendKind::Macvlan
    }

    async fn ensure_segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<Segment> {
        let uplink = self.nl.require(&seg.uplink).await?;
        if !uplink.up {
            self.nl.set_up(uplink.index).await?;
        }
        if seg.mode == SegmentMode::Regular {
            let name = Naming::sub_interface(&seg.uplink, vlan);
            let sub = self.nl.ensure_vlan(&name, uplink.index, vlan.get()).await?;
            if sub.vlan_id != Some(vlan.get()) {
                return Err(Error::Conflict(format!(
                    "{name} exists but is not an 802.1Q sub-interface for VLAN {vlan}"
                )));
            }
            if !sub.up {
                self.nl.set_up(sub.index).await?;
            }
        }
        self.segment(vlan, seg).await
    }

    async fn segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<Segment> {
        let parent = self.nl.link(&Self::parent_name(vlan, seg)).await?;
        Ok(Segment {
            vlan,
            mode: seg.mode,
            uplink: seg.uplink.clone(),
            bridge: None,
            sub_interface: (seg.mode == SegmentMode::Regular)
                .then(|| Naming::sub_interface(&seg.uplink, vlan)),
            ready: parent.is_some_and(|p| p.up),
        })
    }

    async fn remove_segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<()> {
        match seg.mode {
            // Deleting the sub-interface also deletes any macvlan child left on it.
            SegmentMode::Regular => Ok(self
                .nl
                .delete(&Naming::sub_interface(&seg.uplink, vlan))
                .await?),
            SegmentMode::Untagged => Ok(()),
        }
    }

    async fn plug(
        &self,
        _id: Uuid,
        spec: &AttachmentSpec,
        seg: &DesiredSegment,
        end: &ContainerEnd<'_>,
    ) -> Result<()> {
        let parent = self
            .nl
            .link(&Self::parent_name(spec.vlan, seg))
            .await?
            .ok_or(Error::SegmentMissing(spec.vlan))?;
        Ok(self.nl.add_macvlan(parent.index, end).await?)
    }

    async fn unplug(
        &self,
        _id: Uuid,
        spec: &AttachmentSpec,
        inside: Option<&Netlink>,
    ) -> Result<()> {
        let Some(inside) = inside else { return Ok(()) };
        let ifname = spec.ifname.to_string();
        match inside.link(&ifname).await? {
            Some(l) if l.kind == Some(InfoKind::MacVlan) && l.mac == Some(spec.effective_mac()) => {
                Ok(inside.delete_index(l.index).await?)
            }
            _ => Ok(()),
        }
    }

    /// macvlan children live (and die) with their container namespaces.
    async fn sweep(&self, _keep: &HashSet<Uuid>) -> Result<()> {
        Ok(())
    }

    /// The macvlan child lives in the container; there is nothing on the host to check.
    async fn host_side(&self, _id: Uuid, _spec: &AttachmentSpec) -> Result<HostSide> {
        Ok(HostSide::Ready(None))
    }
}
