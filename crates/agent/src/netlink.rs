//! Domain-level rtnetlink operations (kata-style `Netlink` wrapper): the rest of the agent
//! never builds netlink messages. One instance per network namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InetDevConf, InfoData, InfoKind,
    InfoVeth, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::{
    Handle, LinkBridge, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVlan,
    RouteMessageBuilder,
};
use weft_agent_api::MacAddr;

const EEXIST: i32 = libc::EEXIST;
const ENODEV: i32 = libc::ENODEV;
const EAFNOSUPPORT: i32 = libc::EAFNOSUPPORT;

/// A failed netlink request, with what the agent was doing.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct NetlinkError {
    pub op: String,
    #[source]
    pub source: rtnetlink::Error,
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match &self.source {
            rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
            _ => None,
        }
    }
}

pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

trait Context<T> {
    fn op(self, op: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, rtnetlink::Error> {
    fn op(self, op: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| NetlinkError { op: op(), source })
    }
}

/// Treats "already exists" as success: every `ensure`/`add` here is idempotent.
fn exist_ok(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.errno() == Some(EEXIST) => Ok(()),
        other => other,
    }
}

/// A link as the agent cares about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub controller: Option<u32>,
    pub kind: Option<InfoKind>,
    pub vlan_id: Option<u16>,
    /// `ifalias`, where the agent puts the owner mark of the links it makes.
    pub alias: Option<String>,
}

impl From<LinkMessage> for Link {
    fn from(msg: LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            up: msg.header.flags.contains(LinkFlags::Up),
            mtu: None,
            mac: None,
            controller: None,
            kind: None,
            vlan_id: None,
            alias: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Mtu(m) => link.mtu = Some(m),
                LinkAttribute::Controller(c) => link.controller = Some(c),
                LinkAttribute::IfAlias(a) => link.alias = Some(a),
                LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a).ok().map(MacAddr),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => link.kind = Some(k),
                            LinkInfo::Data(InfoData::Vlan(v)) => {
                                link.vlan_id = v.into_iter().find_map(|i| match i {
                                    InfoVlan::Id(id) => Some(id),
                                    _ => None,
                                })
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// How the host end of a new veth joins its segment.
#[derive(Debug, Clone, Copy)]
pub enum HostPort {
    /// Enslaved to this kernel bridge in the creating message.
    Bridge(u32),
    /// Added to Open vSwitch afterwards. Created promiscuous, as ovs-vswitchd would set it:
    /// every flag change of a host link costs ovs-vswitchd a full reconfiguration.
    Switch,
}

/// The far end of a veth pair or a macvlan child, created directly inside the container's
/// namespace under its final name (one request instead of create, move, rename).
pub struct ContainerEnd<'a> {
    pub netns: BorrowedFd<'a>,
    pub name: &'a str,
    pub mac: MacAddr,
    pub mtu: u32,
}

/// rtnetlink handle bound to the namespace its socket was opened in.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a socket in the calling thread's namespace; needs a tokio runtime context.
    pub fn connect() -> std::io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Wraps a handle whose connection is already being driven.
    pub fn from_handle(handle: Handle) -> Self {
        Netlink { handle }
    }

    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await;
        match found {
            Ok(msg) => Ok(msg.map(Link::from)),
            Err(source) => {
                let e = NetlinkError {
                    op: format!("look up link {name}"),
                    source,
                };
                if e.errno() == Some(ENODEV) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Like [`Netlink::link`], but absence is an error.
    pub async fn require(&self, name: &str) -> crate::Result<Link> {
        self.link(name)
            .await?
            .ok_or_else(|| crate::Error::NoSuchLink(name.to_owned()))
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .op(|| "list links".into())?;
        Ok(msgs.into_iter().map(Link::from).collect())
    }

    /// Creates an up bridge (no STP, forward delay 0) unless one of that name exists.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<Link> {
        // `LinkBridge::new` would bring it up in the creating message, before IPv6 is off.
        let msg = LinkMessageBuilder::<LinkBridge>::new(name).mtu(mtu).build();
        self.ensure_link(name, msg).await
    }

    /// Creates an up 802.1Q sub-interface of `parent` unless one of that name exists.
    pub async fn ensure_vlan(&self, name: &str, parent: u32, vlan: u16) -> Result<Link> {
        let msg = LinkVlan::new(name, parent, vlan).build();
        self.ensure_link(name, msg).await
    }

    /// The link called `name`, created from `msg` (down) and brought up quietly when there
    /// is none.
    async fn ensure_link(&self, name: &str, msg: LinkMessage) -> Result<Link> {
        if let Some(link) = self.link(name).await? {
            return Ok(link);
        }
        exist_ok(self.add_link(msg, || format!("create {name}")).await)?;
        self.set_up_quiet(name).await?;
        self.found(name).await
    }

    /// One RTM_NEWLINK.
    async fn add_link(&self, msg: LinkMessage, op: impl FnOnce() -> String) -> Result<()> {
        self.handle.link().add(msg).execute().await.op(op)
    }

    /// One RTM_SETLINK.
    async fn set_link(&self, msg: LinkMessage, op: impl FnOnce() -> String) -> Result<()> {
        self.handle.link().set(msg).execute().await.op(op)
    }

    /// Makes `link` a port of `controller` (0 releases it) and brings it up.
    pub async fn set_controller_up(&self, link: u32, controller: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link)
            .controller(controller)
            .up()
            .build();
        self.set_link(msg, || format!("enslave link {link} to {controller}"))
            .await
    }

    /// Makes the kernel send a gratuitous ARP whenever `link` comes up or changes MAC
    /// (`net.ipv4.conf.<if>.arp_notify`, set over netlink), so the leaf learns the endpoint
    /// at once: no raw packet socket (closing one waits an RCU grace period), no `arping`.
    pub async fn enable_arp_notify(&self, link: u32) -> Result<()> {
        let mut conf = InetDevConf::default();
        conf.arp_notify = 1;
        let af = AfSpecUnspec::Inet(vec![AfSpecInet::DevConfRequest(conf)]);
        let msg = LinkUnspec::new_with_index(link)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![af]))
            .build();
        self.set_link(msg, || format!("enable arp_notify on link {link}"))
            .await
    }

    pub async fn set_up(&self, link: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link).up().build();
        self.set_link(msg, || format!("bring link {link} up")).await
    }

    /// Brings up a link the agent made on the host (bridge, sub-interface, host end of a
    /// veth) without an IPv6 address of its own. It only carries containers' frames; a
    /// link-local address would make it talk into the EPG (duplicate-address detection,
    /// router and multicast-listener messages), and the leaf would learn its MAC as an
    /// endpoint there. `addr_gen_mode none` must be set while the link is still down (the
    /// kernel refuses it in the creating message, and a bridge that comes up first still
    /// gets an address once it has a port); a kernel without IPv6 just skips it.
    pub async fn set_up_quiet(&self, name: &str) -> Result<()> {
        let (no_ipv6, up) = futures::join!(self.no_ipv6(name), self.up_by_name(name));
        no_ipv6?;
        up
    }

    /// `addr_gen_mode none` on `name` (see [`Netlink::set_up_quiet`]); nothing to do on a
    /// kernel without IPv6.
    async fn no_ipv6(&self, name: &str) -> Result<()> {
        let af = AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)]);
        let msg = LinkUnspec::new_with_name(name)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![af]))
            .build();
        match self
            .set_link(msg, || format!("turn off IPv6 addresses on {name}"))
            .await
        {
            Err(e) if e.errno() == Some(EAFNOSUPPORT) => Ok(()),
            other => other,
        }
    }

    async fn up_by_name(&self, name: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_name(name).up().build();
        self.set_link(msg, || format!("bring {name} up")).await
    }

    /// Sets the `ifalias` of `link` (the kernel takes none in the creating message).
    pub async fn set_alias(&self, link: u32, alias: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link)
            .append_extra_attribute(LinkAttribute::IfAlias(alias.to_owned()))
            .build();
        self.set_link(msg, || format!("mark link {link}")).await
    }

    async fn set_alias_by_name(&self, name: &str, alias: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_name(name)
            .append_extra_attribute(LinkAttribute::IfAlias(alias.to_owned()))
            .build();
        self.set_link(msg, || format!("mark {name}")).await
    }

    /// Creates a veth pair in one request, `host` here (joined to its segment as `port`
    /// says) and the peer inside the container namespace under its final name, then marks
    /// `host` with `alias` and brings it up quietly (no IPv6 address of its own).
    pub async fn add_veth(
        &self,
        host: &str,
        alias: &str,
        port: HostPort,
        host_mtu: u32,
        peer: &ContainerEnd<'_>,
    ) -> Result<()> {
        // The peer stays down: veth_open() fails with ENOTCONN until both ends exist,
        // so it is brought up from inside the namespace afterwards.
        let peer_msg = container_end(LinkMessageBuilder::<LinkUnspec>::default(), peer).build();
        let mut msg = LinkVeth::new(host, peer.name).mtu(host_mtu);
        msg = match port {
            HostPort::Bridge(index) => msg.controller(index),
            HostPort::Switch => msg.promiscuous(true),
        };
        let msg = msg
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        // Only a link this request created is marked and brought up: when the name is
        // taken meanwhile, the link that has it is not touched. The three requests then go
        // out together, without waiting for each answer (the kernel handles one socket's
        // requests in order): the link appears and comes up within microseconds, so
        // ovs-vswitchd, which reconfigures every port after each link change it sees, sees
        // them together.
        self.add_link(msg, || format!("create veth {host}")).await?;
        let (marked, no_ipv6, up) = futures::join!(
            self.set_alias_by_name(host, alias),
            self.no_ipv6(host),
            self.up_by_name(host)
        );
        marked?;
        no_ipv6?;
        up
    }

    /// Creates a bridge-mode macvlan child of `parent` directly inside the container namespace
    /// (down, like the veth peer, so the gratuitous ARP goes out when it comes up).
    pub async fn add_macvlan(&self, parent: u32, end: &ContainerEnd<'_>) -> Result<()> {
        let msg = LinkMacVlan::new(end.name, parent, MacVlanMode::Bridge);
        let msg = container_end(msg, end).build();
        self.add_link(msg, || format!("create macvlan {}", end.name))
            .await
    }

    /// Deletes a link by name; a missing link is success.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.link(name).await? {
            Some(link) => self.delete_index(link.index).await,
            None => Ok(()),
        }
    }

    /// Deletes a link by index (one RTM_DELLINK); a missing link is success.
    pub async fn delete_index(&self, index: u32) -> Result<()> {
        let deleted = self.handle.link().del(index).execute().await;
        match deleted.op(|| format!("delete link {index}")) {
            Err(e) if e.errno() == Some(ENODEV) => Ok(()),
            other => other,
        }
    }

    pub async fn add_address(&self, link: u32, addr: Ipv4Net) -> Result<()> {
        let req = self
            .handle
            .address()
            .add(link, IpAddr::V4(addr.addr()), addr.prefix_len());
        exist_ok(req.execute().await.op(|| format!("add address {addr}")))
    }

    pub async fn addresses(&self, link: u32) -> Result<Vec<Ipv4Net>> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link)
            .execute()
            .try_collect()
            .await
            .op(|| format!("list addresses of link {link}"))?;
        let mut out = Vec::new();
        for msg in msgs {
            let prefix = msg.header.prefix_len;
            for attr in msg.attributes {
                if let AddressAttribute::Address(IpAddr::V4(a)) = attr {
                    if let Ok(net) = Ipv4Net::new(a, prefix) {
                        out.push(net);
                    }
                }
            }
        }
        Ok(out)
    }

    pub async fn add_default_route(&self, link: u32, gateway: Ipv4Addr) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(link)
            .gateway(gateway)
            .build();
        exist_ok(
            self.handle
                .route()
                .add(route)
                .execute()
                .await
                .op(|| format!("add default route via {gateway}")),
        )
    }

    async fn found(&self, name: &str) -> Result<Link> {
        self.link(name).await?.ok_or_else(|| NetlinkError {
            op: format!("find {name} right after creating it"),
            source: rtnetlink::Error::RequestFailed,
        })
    }
}

fn container_end<T>(msg: LinkMessageBuilder<T>, end: &ContainerEnd<'_>) -> LinkMessageBuilder<T> {
    msg.name(end.name)
        .setns_by_fd(end.netns.as_raw_fd())
        .address(end.mac.0.to_vec())
        .mtu(end.mtu)
}
