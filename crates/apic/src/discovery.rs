//! Fabric discovery (leaves, bindable paths, vPCs, FEX paths, LLDP neighbours) and the pure
//! matching of a host's uplinks from LLDP against its configured ones.

use crate::client::ApicClient;
use crate::error::ApicError;
use crate::mo::Mo;
use std::collections::{BTreeMap, BTreeSet};
use weft_domain::{split_dn, PathDn, PathKind};

/// A switch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FabricNode {
    pub pod: u16,
    pub id: u16,
    pub name: String,
    /// `leaf`, `spine`, `controller`.
    pub role: String,
    pub model: String,
    pub serial: String,
    /// `fabricSt`: `active`, `inactive`...
    pub state: String,
}

/// A bindable path (`fabricPathEp`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FabricPath {
    pub path: PathDn,
    /// `lagT`: `not-aggregated`, `link` (port-channel) or `node` (vPC).
    pub lag: String,
}

/// What a leaf port sees over LLDP.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct LldpNeighbour {
    pub pod: u16,
    pub node: u16,
    /// The leaf interface (`eth1/7`, or `eth111/1/1` on a FEX).
    pub local_port: String,
    /// The path to bind for this link: the vPC/PC the port belongs to when the leaf says so
    /// (`lldpIf.portDesc`), else the port itself.
    pub uplink: PathDn,
    /// Remote system name (a host's name for hosts running an LLDP agent).
    pub sys_name: String,
    /// Remote port id (the host's interface name).
    pub port_id: String,
    pub mgmt_ip: Option<String>,
}

/// A snapshot of the fabric.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Fabric {
    pub nodes: Vec<FabricNode>,
    pub paths: Vec<FabricPath>,
    pub lldp_neighbours: Vec<LldpNeighbour>,
}

impl Fabric {
    pub fn leaves(&self) -> impl Iterator<Item = &FabricNode> {
        self.nodes.iter().filter(|n| n.role == "leaf")
    }

    pub fn vpcs(&self) -> impl Iterator<Item = &FabricPath> {
        self.paths.iter().filter(|p| p.path.kind() == PathKind::Vpc)
    }

    pub fn fex_paths(&self) -> impl Iterator<Item = &FabricPath> {
        self.paths
            .iter()
            .filter(|p| matches!(p.path.kind(), PathKind::Fex | PathKind::FexVpc))
    }

    pub fn has_path(&self, path: &PathDn) -> bool {
        self.paths.iter().any(|p| &p.path == path)
    }
}

fn num(s: &str, prefix: &str) -> Option<u16> {
    s.strip_prefix(prefix)?.parse().ok()
}

/// Where an LLDP adjacency was seen, from its DN.
struct LldpLocation {
    pod: u16,
    node: u16,
    port: String,
    /// DN of the leaf's `lldpIf` (the first seven RNs), which carries the advertised path.
    if_dn: String,
}

/// `topology/pod-P/node-N/sys/lldp/inst/if-[PORT]/...` -> its [`LldpLocation`].
fn lldp_location(dn: &str) -> Option<LldpLocation> {
    let rns = split_dn(dn)?;
    let pod = num(rns.get(1)?, "pod-")?;
    let node = num(rns.get(2)?, "node-")?;
    let port = rns.get(6)?.strip_prefix("if-[")?.strip_suffix(']')?;
    Some(LldpLocation {
        pod,
        node,
        port: port.to_string(),
        if_dn: rns.get(..7)?.join("/"),
    })
}

fn node_of(mo: &Mo) -> Option<FabricNode> {
    let dn = mo.get("dn")?;
    let rns = split_dn(dn)?;
    let text = |k: &str| mo.get(k).unwrap_or_default().to_string();
    Some(FabricNode {
        pod: num(rns.get(1)?, "pod-")?,
        id: mo.get("id")?.parse().ok()?,
        name: text("name"),
        role: text("role"),
        model: text("model"),
        serial: text("serial"),
        state: text("fabricSt"),
    })
}

impl ApicClient {
    /// Reads nodes, paths and LLDP neighbours (four paginated class queries).
    #[tracing::instrument(skip(self))]
    pub async fn discover(&self) -> Result<Fabric, ApicError> {
        let nodes = self
            .class_all("fabricNode", None)
            .await?
            .iter()
            .filter_map(node_of)
            .collect();
        let paths = self
            .class_all(
                "fabricPathEp",
                Some("not(wcard(fabricPathEp.dn,\"__ui_\"))"),
            )
            .await?
            .iter()
            .filter_map(|m| {
                Some(FabricPath {
                    path: PathDn::parse(m.get("dn")?).ok()?,
                    lag: m.get("lagT").unwrap_or_default().to_string(),
                })
            })
            .collect();
        let advertised: BTreeMap<String, String> = self
            .class_all("lldpIf", None)
            .await?
            .iter()
            .filter_map(|m| Some((m.get("dn")?.to_string(), m.get("portDesc")?.to_string())))
            .collect();
        let lldp_neighbours = self
            .class_all("lldpAdjEp", None)
            .await?
            .iter()
            .filter_map(|m| {
                let at = lldp_location(m.get("dn")?)?;
                let uplink = advertised
                    .get(&at.if_dn)
                    .and_then(|d| PathDn::parse(d).ok())
                    .or_else(|| PathDn::port(at.pod, at.node, &at.port).ok())?;
                Some(LldpNeighbour {
                    pod: at.pod,
                    node: at.node,
                    uplink,
                    local_port: at.port,
                    sys_name: m.get("sysName").unwrap_or_default().to_string(),
                    port_id: m.get("portIdV").unwrap_or_default().to_string(),
                    mgmt_ip: m
                        .get("mgmtIp")
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                })
            })
            .collect();
        Ok(Fabric {
            nodes,
            paths,
            lldp_neighbours,
        })
    }
}

/// Where an uplink came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UplinkSource {
    Configured,
    Lldp,
    /// Configured and confirmed by LLDP.
    Both,
}

/// One uplink path of a host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = HostUplink)]
pub struct Uplink {
    pub path: PathDn,
    /// Host interfaces on this path (configured name, or the LLDP port id).
    pub interfaces: Vec<String>,
    pub source: UplinkSource,
}

/// How configured uplinks and LLDP compare.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum UplinkAgreement {
    /// Neither configured nor seen.
    Unknown,
    /// Only configured (no LLDP neighbour names this host).
    ConfiguredOnly,
    /// Only learned from LLDP.
    LldpOnly,
    Agree,
    /// Both exist and differ: the host must show this instead of trusting either side.
    Conflict {
        configured_only: Vec<PathDn>,
        lldp_only: Vec<PathDn>,
    },
}

/// The uplinks of a host and whether the two sources agree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct UplinkReport {
    pub uplinks: Vec<Uplink>,
    pub agreement: UplinkAgreement,
}

/// Whether an LLDP system name designates `host` (case-insensitive; `host-1.example.com`
/// matches `host-1`).
pub fn names_host(sys_name: &str, host: &str) -> bool {
    let short = |s: &str| s.split('.').next().unwrap_or_default().to_ascii_lowercase();
    sys_name.eq_ignore_ascii_case(host) || (!sys_name.is_empty() && short(sys_name) == short(host))
}

/// Matches a host's uplinks from LLDP neighbours (system name == host name) against its
/// configured `(interface, path)` uplinks. Ports of one vPC collapse into the vPC path.
pub fn match_uplinks(
    host: &str,
    configured: &[(String, PathDn)],
    lldp: &[LldpNeighbour],
) -> UplinkReport {
    let mut seen: BTreeMap<PathDn, BTreeSet<String>> = BTreeMap::new();
    for n in lldp.iter().filter(|n| names_host(&n.sys_name, host)) {
        seen.entry(n.uplink.clone())
            .or_default()
            .insert(n.port_id.clone());
    }
    let mut conf: BTreeMap<PathDn, BTreeSet<String>> = BTreeMap::new();
    for (iface, path) in configured {
        conf.entry(path.clone()).or_default().insert(iface.clone());
    }
    let all: BTreeSet<&PathDn> = seen.keys().chain(conf.keys()).collect();
    let uplinks = all
        .into_iter()
        .map(|p| {
            let (c, l) = (conf.get(p), seen.get(p));
            let source = match (c, l) {
                (Some(_), Some(_)) => UplinkSource::Both,
                (Some(_), None) => UplinkSource::Configured,
                _ => UplinkSource::Lldp,
            };
            let interfaces = c
                .or(l)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            Uplink {
                path: p.clone(),
                interfaces,
                source,
            }
        })
        .collect::<Vec<_>>();
    let only = |s: UplinkSource| {
        uplinks
            .iter()
            .filter(|u| u.source == s)
            .map(|u| u.path.clone())
            .collect::<Vec<_>>()
    };
    let agreement = match (conf.is_empty(), seen.is_empty()) {
        (true, true) => UplinkAgreement::Unknown,
        (false, true) => UplinkAgreement::ConfiguredOnly,
        (true, false) => UplinkAgreement::LldpOnly,
        _ if conf.keys().eq(seen.keys()) => UplinkAgreement::Agree,
        _ => UplinkAgreement::Conflict {
            configured_only: only(UplinkSource::Configured),
            lldp_only: only(UplinkSource::Lldp),
        },
    };
    UplinkReport { uplinks, agreement }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(node: u16, port: &str, uplink: PathDn, sys: &str, port_id: &str) -> LldpNeighbour {
        LldpNeighbour {
            pod: 1,
            node,
            local_port: port.into(),
            uplink,
            sys_name: sys.into(),
            port_id: port_id.into(),
            mgmt_ip: None,
        }
    }

    fn port(node: u16, p: &str) -> PathDn {
        PathDn::port(1, node, p).unwrap()
    }

    fn vpc() -> PathDn {
        PathDn::vpc(1, 101, 102, "host-3_vpc").unwrap()
    }

    fn lldp() -> Vec<LldpNeighbour> {
        let vpc = vpc();
        vec![
            n(
                101,
                "eth1/1",
                port(101, "eth1/1"),
                "host-1.lab.example",
                "eth0",
            ),
            n(101, "eth1/5", vpc.clone(), "host-3", "eth0"),
            n(102, "eth1/5", vpc, "host-3", "eth1"),
        ]
    }

    #[test]
    fn lldp_only_host_gets_uplinks_and_vpc_members_collapse() {
        let r = match_uplinks("host-3", &[], &lldp());
        assert_eq!(r.agreement, UplinkAgreement::LldpOnly);
        assert_eq!(r.uplinks.len(), 1);
        assert_eq!(r.uplinks[0].path, vpc());
        assert_eq!(
            r.uplinks[0].interfaces,
            vec!["eth0".to_string(), "eth1".to_string()]
        );
    }

    #[test]
    fn agreement_and_fqdn_match() {
        let conf = vec![("eth0".to_string(), port(101, "eth1/1"))];
        let r = match_uplinks("HOST-1", &conf, &lldp());
        assert_eq!(r.agreement, UplinkAgreement::Agree);
        assert_eq!(r.uplinks[0].source, UplinkSource::Both);
    }

    #[test]
    fn disagreement_is_a_conflict_naming_both_sides() {
        let conf = vec![("eth0".to_string(), port(104, "eth1/2"))];
        let r = match_uplinks("host-1", &conf, &lldp());
        assert_eq!(
            r.agreement,
            UplinkAgreement::Conflict {
                configured_only: vec![port(104, "eth1/2")],
                lldp_only: vec![port(101, "eth1/1")],
            }
        );
        assert_eq!(r.uplinks.len(), 2);
    }

    #[test]
    fn unknown_and_configured_only() {
        assert_eq!(
            match_uplinks("host-9", &[], &lldp()).agreement,
            UplinkAgreement::Unknown
        );
        let conf = vec![("eth0".to_string(), port(104, "eth1/2"))];
        assert_eq!(
            match_uplinks("host-9", &conf, &lldp()).agreement,
            UplinkAgreement::ConfiguredOnly
        );
        assert!(!names_host("host-10", "host-1"));
    }
}
