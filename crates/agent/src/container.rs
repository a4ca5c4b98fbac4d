//! The container end of an attachment: finding its namespace, configuring it from inside
//! (address, default route, gratuitous ARP) and reading back what the kernel has.

use uuid::Uuid;
use weft_agent_api::{AttachmentActual, AttachmentSpec, Target};

use crate::config::owner_mark;
use crate::docker::Docker;
use crate::netlink::Netlink;
use crate::netns::Netns;
use crate::{Error, Result};

/// The namespace of a target, and the Docker container id when it is one.
pub async fn resolve(target: &Target, docker: Option<&Docker>) -> Result<(Netns, Option<String>)> {
    match target {
        Target::Docker { container } => {
            let docker = docker.ok_or(Error::DockerDisabled)?;
            let running = docker.running(container).await?;
            Ok((Netns::of_pid(running.pid)?, Some(running.id)))
        }
        Target::Pid { pid } => Ok((Netns::of_pid(*pid)?, None)),
        Target::Netns { path } => Ok((Netns::open(path)?, None)),
    }
}

/// Owner mark, address, up (the kernel then sends the gratuitous ARP, see
/// [`Netlink::enable_arp_notify`]) and default route on attachment `id`'s new, still-down
/// interface.
pub async fn configure(inside: &Netlink, id: Uuid, spec: &AttachmentSpec) -> Result<()> {
    let link = inside.require(&spec.ifname.to_string()).await?;
    inside.set_alias(link.index, &owner_mark(id)).await?;
    inside.enable_arp_notify(link.index).await?;
    inside.add_address(link.index, spec.address).await?;
    inside.set_up(link.index).await?;
    if let Some(gw) = spec.gateway {
        inside.add_default_route(link.index, gw).await?;
    }
    Ok(())
}

/// What the kernel shows for the attachment's interface inside the namespace.
pub async fn actual(inside: &Netlink, spec: &AttachmentSpec) -> Result<AttachmentActual> {
    let Some(link) = inside.link(&spec.ifname.to_string()).await? else {
        return Ok(not_wired(format!(
            "no interface {} in the container",
            spec.ifname
        )));
    };
    let addresses = inside.addresses(link.index).await?;
    let mac_ok = link.mac == Some(spec.effective_mac());
    let addr_ok = addresses.contains(&spec.address);
    let detail = match (link.up, mac_ok, addr_ok) {
        (false, _, _) => Some(format!("{} is down", spec.ifname)),
        (_, false, _) => Some(format!("{} has another MAC", spec.ifname)),
        (_, _, false) => Some(format!("{} lacks {}", spec.ifname, spec.address)),
        _ => None,
    };
    Ok(AttachmentActual {
        wired: detail.is_none(),
        mac: link.mac,
        addresses,
        mtu: link.mtu,
        detail,
    })
}

pub fn not_wired(detail: String) -> AttachmentActual {
    AttachmentActual {
        wired: false,
        mac: None,
        addresses: Vec::new(),
        mtu: None,
        detail: Some(detail),
    }
}
