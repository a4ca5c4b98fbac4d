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

use crate::config::{owner_of, Config, Naming};
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
    /// refuses (409, changing nothing) when a host-side name attachment `id` needs is
    /// held by another attachment or by something the agent did not make.
    async fn claim(&self, _id: Uuid) -> Result<()> {
        Ok(())
    }
    /// removes attachment `id`'s interfaces, only those carrying its owner mark;
    /// `container` is its interface's namespace and name, if the namespace still exists.
    async fn unplug(&self, id: Uuid, container: Option<ContainerIf<'_>>) -> Result<()>;
    /// removes host-side objects of ours that belong to no attachment in `keep` and can
    /// no longer carry traffic (their container namespace is gone); never touches others.
    async fn sweep(&self, _keep: &HashSet<Uuid>) -> Result<()> {
        Ok(())
    }
    /// host links of ours (naming scheme and owner mark) with their attachment, e.g. to
    /// report those no desired attachment claims. macvlan has none: its interfaces live in
    /// the containers.
    async fn links_of_ours(&self) -> Result<Vec<(Uuid, String)>> {
        Ok(Vec::new())
    }
    /// whether the host side of an attachment is in place.
    async fn host_side(&self, id: Uuid, spec: &AttachmentSpec) -> Result<HostSide>;
}

/// An attachment's interface inside its container namespace.
#[derive(Clone, Copy)]
pub struct ContainerIf<'a> {
    pub netlink: &'a Netlink,
    pub name: &'a str,
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

/// Ok when `link` carries the owner mark of attachment `id`; a conflict naming both
/// otherwise. `what` names the link for the message.
pub fn owned_by(link: &Link, id: Uuid, what: &str) -> Result<()> {
    match owner_of(link.alias.as_deref()) {
        Some(owner) if owner == id => Ok(()),
        Some(owner) => Err(Error::Conflict(format!(
            "{what}, needed by attachment {id}, belongs to attachment {owner}; nothing was changed"
        ))),
        None => Err(Error::Conflict(format!(
            "{what}, needed by attachment {id}, exists and was not made by weft-agent; nothing was changed"
        ))),
    }
}

/// The host veth name of attachment `id`, refused when a link of another owner has it.
async fn claim_host_veth(nl: &Netlink, naming: &Naming, id: Uuid) -> Result<String> {
    let name = naming.host_veth(id);
    if let Some(link) = nl.link(&name).await? {
        owned_by(&link, id, &format!("host link {name}"))?;
    }
    Ok(name)
}

/// The host end of attachment `id`'s veth, if it exists and carries its mark.
async fn own_host_veth(nl: &Netlink, naming: &Naming, id: Uuid) -> Result<Option<Link>> {
    let link = nl.link(&naming.host_veth(id)).await?;
    Ok(link.filter(|l| owner_of(l.alias.as_deref()) == Some(id)))
}

/// Deletes the host end of attachment `id`'s veth (and with it the container end), only
/// if it carries its mark.
async fn delete_host_veth(nl: &Netlink, naming: &Naming, id: Uuid) -> Result<()> {
    match own_host_veth(nl, naming, id).await? {
        Some(link) => Ok(nl.delete_index(link.index).await?),
        None => Ok(()),
    }
}

/// Host veths named by the scheme for the attachment their mark names.
async fn host_veths_of_ours(nl: &Netlink, naming: &Naming) -> Result<Vec<(Uuid, String)>> {
    Ok(nl
        .links()
        .await?
        .into_iter()
        .filter_map(|l| {
            let id = owner_of(l.alias.as_deref())?;
            (naming.is_host_veth(&l.name) && naming.host_veth(id) == l.name).then_some((id, l.name))
        })
        .collect())
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
