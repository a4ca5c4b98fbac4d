//! Request, response and error bodies of the agent API.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::{Backend, InterfaceName, Mtu, VlanId};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// An Ethernet MAC address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl utoipa::PartialSchema for MacAddr {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$"))
            .examples(["02:57:0a:00:00:05"])
            .into()
    }
}

impl ToSchema for MacAddr {}

impl MacAddr {
    /// A locally administered unicast MAC derived from an IPv4 address (`02:57:` + the
    /// four address bytes), so a re-created interface gets the same MAC and the fabric's
    /// endpoint table does not churn.
    pub fn from_ipv4(addr: Ipv4Addr) -> Self {
        let [a, b, c, d] = addr.octets();
        MacAddr([0x02, 0x57, a, b, c, d])
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a MAC address like 02:57:0a:00:00:05");
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if out[0] & 1 == 1 {
            return Err(format!("{s:?} is a multicast MAC address"));
        }
        Ok(MacAddr(out))
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// How a segment reaches the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SegmentMode {
    /// Frames leave the uplink tagged with the VLAN (`<uplink>.<vlan>` or an OVS access tag).
    #[default]
    Regular,
    /// Frames leave the uplink untagged; the leaf port is bound untagged (native) for the EPG.
    Untagged,
}

/// Body of `PUT /v1/segments/{vlan}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    #[serde(default)]
    pub mode: SegmentMode,
    /// Uplink interface; the agent's first configured uplink when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
}

/// A segment as found in the kernel (or OVS database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Segment {
    pub vlan: VlanId,
    pub mode: SegmentMode,
    pub uplink: String,
    /// The bridge containers are plugged into (linux-bridge, ovs); absent for macvlan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// The 802.1Q sub-interface `<uplink>.<vlan>` in regular mode (linux-bridge, macvlan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_interface: Option<String>,
    /// Whether every piece of the segment exists and is up.
    pub ready: bool,
}

/// Where the container's network namespace is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// A Docker container, by id or name; re-wired automatically when it restarts.
    Docker { container: String },
    /// Any process; its `/proc/<pid>/ns/net` is used.
    Pid { pid: u32 },
    /// A bind-mounted namespace such as `/run/netns/<name>` (other runtimes).
    Netns { path: String },
}

/// `docker:<name or id>`, `pid:<pid>` or `netns:<path>`: one target in one word, for
/// messages and for the central service's per-host uniqueness key.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Docker { container } => write!(f, "docker:{container}"),
            Target::Pid { pid } => write!(f, "pid:{pid}"),
            Target::Netns { path } => write!(f, "netns:{path}"),
        }
    }
}

/// Query of `GET /v1/target`: exactly one of the three kinds of [`Target`] (a query string
/// cannot carry the tagged JSON form).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TargetQuery {
    /// A Docker container's name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<String>,
    /// A process whose network namespace to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A network-namespace path such as `/run/netns/c1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

impl From<&Target> for TargetQuery {
    fn from(t: &Target) -> Self {
        match t.clone() {
            Target::Docker { container } => TargetQuery {
                docker: Some(container),
                ..Default::default()
            },
            Target::Pid { pid } => TargetQuery {
                pid: Some(pid),
                ..Default::default()
            },
            Target::Netns { path } => TargetQuery {
                netns: Some(path),
                ..Default::default()
            },
        }
    }
}

impl TryFrom<TargetQuery> for Target {
    type Error = String;

    fn try_from(q: TargetQuery) -> Result<Self, String> {
        match q {
            TargetQuery {
                docker: Some(container),
                pid: None,
                netns: None,
            } => Ok(Target::Docker { container }),
            TargetQuery {
                docker: None,
                pid: Some(pid),
                netns: None,
            } => Ok(Target::Pid { pid }),
            TargetQuery {
                docker: None,
                pid: None,
                netns: Some(path),
            } => Ok(Target::Netns { path }),
            _ => Err("give exactly one of `docker`, `pid` and `netns`".into()),
        }
    }
}

/// Response of `GET /v1/target`: the target exists and the agent could enter it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResolvedTarget {
    pub target: Target,
    /// The network namespace the agent would wire, e.g. `/proc/4242/ns/net`.
    pub netns: String,
    /// The Docker container's full id (Docker targets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// `eth0`, the interface name a container's first network conventionally gets.
fn default_ifname() -> InterfaceName {
    InterfaceName::parse("eth0").expect("eth0 is a valid interface name")
}

/// Body of `PUT /v1/attachments/{id}`: one container interface on one VLAN segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentSpec {
    pub target: Target,
    /// Interface name inside the container (`eth1`... for a second EPG).
    #[serde(default = "default_ifname")]
    pub ifname: InterfaceName,
    pub vlan: VlanId,
    /// Address with prefix length, e.g. `10.0.0.5/24`.
    #[schema(value_type = String, example = "10.0.0.5/24")]
    pub address: Ipv4Net,
    /// Default gateway; no default route when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "10.0.0.1")]
    pub gateway: Option<Ipv4Addr>,
    /// MAC of the container interface; derived from the address (`02:57:` + IPv4) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// MTU of the container interface; the agent's configured MTU when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<Mtu>,
}

impl AttachmentSpec {
    /// The MAC the interface gets: the requested one or the one derived from the address.
    pub fn effective_mac(&self) -> MacAddr {
        self.mac
            .unwrap_or_else(|| MacAddr::from_ipv4(self.address.addr()))
    }
}

/// An attachment: what was asked for and what the kernel shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Attachment {
    pub id: Uuid,
    pub spec: AttachmentSpec,
    /// Host-side interface name (veth end), derived from a hash of the id; absent for macvlan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
    pub actual: AttachmentActual,
}

/// The container interface as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttachmentActual {
    /// Whether the interface exists in the target namespace with the requested address and MAC.
    pub wired: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[schema(value_type = Vec<String>)]
    pub addresses: Vec<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Why `wired` is false (namespace gone, interface missing, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A host uplink as found in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Uplink {
    pub name: String,
    pub present: bool,
    pub up: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

/// Versions of the running agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Versions {
    pub agent: String,
    pub api: String,
    pub kernel: String,
}

/// Response of `GET /v1/state`: the host's actual state, read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentState {
    pub backend: Backend,
    pub segments: Vec<Segment>,
    pub attachments: Vec<Attachment>,
    /// Host links of the agent's that no attachment it was given claims.
    #[serde(default)]
    pub unclaimed: Vec<UnclaimedLink>,
    pub uplinks: Vec<Uplink>,
    pub versions: Versions,
}

/// A host link the agent made (its name scheme and owner mark say so) for an attachment
/// it has no record of, e.g. after its state file was lost. The agent leaves it wired:
/// a PUT of the attachment adopts it, a DELETE of it removes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnclaimedLink {
    pub attachment: Uuid,
    pub host_ifname: String,
}

/// Response of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub versions: Versions,
}

/// Body the agent POSTs to the central service when a wired container stops or is removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContainerEvent {
    pub attachment: Uuid,
    pub container: String,
    pub kind: ContainerEventKind,
}

/// What happened to a wired container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContainerEventKind {
    /// The container stopped; its interface is gone until it starts again.
    Died,
    /// The container was removed; the attachment can be released.
    Destroyed,
    /// The container started again and the agent re-wired it.
    Rewired,
}

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem kind, e.g. `urn:weft:agent:segment-missing`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Every failure, when an operation kept going after errors (teardown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_query_names_exactly_one_target() {
        for t in [
            Target::Docker {
                container: "web1".into(),
            },
            Target::Pid { pid: 42 },
            Target::Netns {
                path: "/run/netns/c1".into(),
            },
        ] {
            assert_eq!(Target::try_from(TargetQuery::from(&t)), Ok(t));
        }
        let none = TargetQuery::default();
        let two = TargetQuery {
            pid: Some(1),
            netns: Some("/run/netns/c1".into()),
            ..Default::default()
        };
        assert!(Target::try_from(none).is_err());
        assert!(Target::try_from(two).is_err());
    }

    #[test]
    fn vlan_rejects_reserved_ids() {
        assert!(serde_json::from_str::<VlanId>("0").is_err());
        assert!(serde_json::from_str::<VlanId>("4095").is_err());
        assert_eq!(serde_json::from_str::<VlanId>("181").unwrap().get(), 181);
    }

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let m: MacAddr = "02:57:0a:00:00:05".parse().unwrap();
        assert_eq!(m.to_string(), "02:57:0a:00:00:05");
        assert!("02:57:0a:00:00".parse::<MacAddr>().is_err());
        assert!("02:57:0a:00:00:05:06".parse::<MacAddr>().is_err());
        assert!("01:00:5e:00:00:01".parse::<MacAddr>().is_err());
        assert!("zz:57:0a:00:00:05".parse::<MacAddr>().is_err());
    }

    #[test]
    fn attachment_spec_defaults_ifname_and_derives_mac_from_address() {
        let spec: AttachmentSpec = serde_json::from_value(serde_json::json!({
            "target": {"kind": "docker", "container": "web1"},
            "vlan": 181,
            "address": "10.0.0.5/24",
        }))
        .unwrap();
        assert_eq!(spec.ifname.to_string(), "eth0");
        assert_eq!(spec.effective_mac().to_string(), "02:57:0a:00:00:05");
    }

    #[test]
    fn attachment_spec_refuses_bad_interface_names_and_mtus() {
        let spec = |extra: serde_json::Value| {
            let mut body = serde_json::json!({
                "target": {"kind": "pid", "pid": 1},
                "vlan": 181,
                "address": "10.0.0.5/24",
            });
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value::<AttachmentSpec>(body)
        };
        assert!(spec(serde_json::json!({"ifname": "eth0", "mtu": 9000})).is_ok());
        for bad in ["", "a/b", "eth0:1", "abcdefghijklmnop"] {
            assert!(spec(serde_json::json!({"ifname": bad})).is_err(), "{bad:?}");
        }
        for bad in [67, 9217] {
            assert!(spec(serde_json::json!({"mtu": bad})).is_err(), "{bad}");
        }
    }
}
