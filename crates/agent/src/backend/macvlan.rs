//! macvlan (bridge mode) children of `<uplink>.<vlan>` (regular) or of the uplink itself
//! (untagged), created directly inside the container namespace. No host-side interface:
//! the agent recognises its own child by its owner mark.

use async_trait::async_trait;
use uuid::Uuid;
use weft_agent_api::{AttachmentSpec, Backend as BackendKind, Segment, VlanId};

use super::{Backend, ContainerIf, HostSide};
use crate::config::owner_of;
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
}

#[async_trait]
impl Backend for Macvlan {
    fn kind(&self) -> BackendKind {
        BackendKind::Macvlan
    }

    async fn ensure_segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<Segment> {
        super::ensure_carrier(&self.nl, vlan, seg).await?;
        self.segment(vlan, seg).await
    }

    async fn segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<Segment> {
        let parent = self.nl.link(&seg.carrier(vlan)).await?;
        Ok(Segment {
            vlan,
            mode: seg.mode,
            uplink: seg.uplink.clone(),
            bridge: None,
            sub_interface: seg.sub_interface(vlan),
            ready: parent.is_some_and(|p| p.up),
        })
    }

    async fn remove_segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<()> {
        // Deleting the sub-interface also deletes any macvlan child left on it.
        match seg.sub_interface(vlan) {
            Some(sub) => Ok(self.nl.delete(&sub).await?),
            None => Ok(()),
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
            .link(&seg.carrier(spec.vlan))
            .await?
            .ok_or(Error::SegmentMissing(spec.vlan))?;
        Ok(self.nl.add_macvlan(parent.index, end).await?)
    }

    /// The child lives in the container: it goes when the namespace does, or here, when it
    /// carries the attachment's mark.
    async fn unplug(&self, id: Uuid, container: Option<ContainerIf<'_>>) -> Result<()> {
        let Some(container) = container else {
            return Ok(());
        };
        match container.netlink.link(container.name).await? {
            Some(l) if owner_of(l.alias.as_deref()) == Some(id) => {
                Ok(container.netlink.delete_index(l.index).await?)
            }
            _ => Ok(()),
        }
    }

    /// The macvlan child lives in the container; there is nothing on the host to check.
    async fn host_side(&self, _id: Uuid, _spec: &AttachmentSpec) -> Result<HostSide> {
        Ok(HostSide::Ready(None))
    }
}
