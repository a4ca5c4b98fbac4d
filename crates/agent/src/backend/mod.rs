//! Host-side technology behind one trait, one file per backend, chosen by configuration
//! (never by `cfg!(test)`).

mod linux_bridge;
mod macvlan;
mod ovs;

use std::collections::HashSet;

use async_trait::async_trait;
use uuid::Uuid;
use weft_agent_api::{AttachmentSpec, Backend as BackendKind, Segment, VlanId};
use weft_ovsdb::{Vswitch, VswitchOptions};

pub use linux_bridge::LinuxBridge;
pub use macvlan::Macvlan;
pub use ovs::Ovs;

use crate::config::{Config, Naming};
use crate::error::ErrorList;
use crate::netlink::{ContainerEnd, Link, Netlink};
use crate::state::DesiredSegment;
use crate::{Error, Result};

#[async_trait]
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// builds the host side of a VLAN segment; repeating it changes nothing.
    async fn ensure_segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<Segment>;
    /// reads a segment from the host; `ready` is false when a piece is missing.
    async fn segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<Segment>;
    /// removes what `ensure_segment` built, attempting every step.
    async fn remove_segment(&self, vlan: VlanId, seg: &DesiredSegment) -> Result<()>;
    /// creates the container's interface (final name, MAC, MTU) inside its namespace and,
    /// where the kernel can do it in the same step, connects it to the segment.
    async fn plug(
        &self,
        id: Uuid,
        spec: &AttachmentSpec,
        seg: &DesiredSegment,
        end: &ContainerEnd<'_>,
    ) -> Result<()>;
    /// connects a plugged attachment to the segment once its container end is configured
    /// and up, for backends that cannot do it while creating it (Open vSwitch: the switch
    /// then meets a port whose link has settled, instead of reconfiguring again for each
    /// later change of it).
    async fn connect(&self, _id: Uuid, _spec: &AttachmentSpec) -> Result<()> {
        Ok(())
    }
    /// removes the attachment's interfaces; `inside` is the container namespace, if it still exists.
    async fn unplug(&self, id: Uuid, spec: &AttachmentSpec, inside: Option<&Netlink>)
        -> Result<()>;
    /// removes host-side objects of ours (by naming scheme or owner mark) that belong to
    /// no attachment in `keep`, e.g. left by a crash mid-attach; never touches others.
    async fn sweep(&self, keep: &HashSet<Uuid>) -> Result<()>;
    /// whether the host side of an attachment is in place.
    async fn host_side(&self, id: Uuid, spec: &AttachmentSpec) -> Result<HostSide>;
}

/// The host side of one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSide {
    /// In place; the host interface, for backends that have one (not macvlan).
    Ready(Option<String>),
    /// Missing or wrong: the attachment must be wired again.
    Missing,
}

impl HostSide {
    fn ready_if(ok: bool, name: String) -> Self {
        if ok {
            HostSide::Ready(Some(name))
        } else {
            HostSide::Missing
        }
    }

    /// The host interface name, when in place.
    pub fn ifname(self) -> Option<String> {
        match self {
            HostSide::Ready(name) => name,
            HostSide::Missing => None,
        }
    }
}

/// Deletes host veths that follow the naming scheme but belong to no kept attachment.
async fn sweep_host_veths(nl: &Netlink, naming: &Naming, keep: &HashSet<Uuid>) -> Result<()> {
    let ours: HashSet<String> = keep.iter().map(|id| naming.host_veth(*id)).collect();
    let mut errors = ErrorList::default();
    for link in nl.links().await? {
        if naming.is_host_veth(&link.name) && !ours.contains(&link.name) {
            tracing::warn!(link = %link.name, "deleting orphaned host veth of ours");
            errors.keep(nl.delete_index(link.index).await);
        }
    }
    errors.into_result()
}

/// Finds the segment's uplink and brings it up; a missing uplink is an error.
async fn uplink_up(nl: &Netlink, seg: &DesiredSegment) -> Result<Link> {
    let mut uplink = nl.require(&seg.uplink).await?;
    if !uplink.up {
        nl.set_up(uplink.index).await?;
        uplink.up = true;
    }
    Ok(uplink)
}

/// Brings the uplink up and, in regular mode, the `<uplink>.<vlan>` sub-interface (refusing
/// a link of that name that is not for this VLAN); returns the link carrying the segment.
async fn ensure_carrier(nl: &Netlink, vlan: VlanId, seg: &DesiredSegment) -> Result<Link> {
    let uplink = uplink_up(nl, seg).await?;
    let Some(name) = seg.sub_interface(vlan) else {
        return Ok(uplink);
    };
    let mut sub = nl.ensure_vlan(&name, uplink.index, vlan.get()).await?;
    if sub.vlan_id != Some(vlan.get()) {
        return Err(Error::Conflict(format!(
            "{name} exists but is not an 802.1Q sub-interface for VLAN {vlan}"
        )));
    }
    if !sub.up {
        nl.set_up_quiet(&sub.name).await?;
        sub.up = true;
    }
    Ok(sub)
}

/// Builds the configured backend on the host's netlink socket.
pub async fn from_config(config: &Config, host: Netlink) -> Result<Box<dyn Backend>> {
    let naming = config.naming.clone();
    Ok(match config.backend {
        BackendKind::LinuxBridge => {
            Box::new(LinuxBridge::new(host, naming, config.mtu.get().into()))
        }
        BackendKind::Macvlan => Box::new(Macvlan::new(host)),
        BackendKind::Ovs => {
            // The agent deletes the veth itself right after removing its port, so the port
            // is dead either way: waiting for ovs-vswitchd to forget it (~15 ms a port on the
            // userspace datapath) would only slow every detach.
            let opts = VswitchOptions {
                wait_for_removals: false,
                ..VswitchOptions::default()
            };
            let vswitch = Vswitch::connect(&config.ovs_db, opts).await?;
            Box::new(Ovs::new(host, vswitch, naming, config.ovs_datapath))
        }
    })
}
