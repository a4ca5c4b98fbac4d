//! Typed APIC objects Weft works with: EPGs, VLAN encaps, path DNs, static bindings, faults.

use crate::mo::Mo;
use std::fmt;

/// The ownership marker on everything Weft creates (reference §4.4).
pub const OWNER_ANNOTATION: &str = "orchestrator:weft";

/// Splits a DN into RNs; slashes inside `[...]` belong to the RN. `None` if brackets are unbalanced.
pub fn split_dn(dn: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, ch) in dn.char_indices() {
        match ch {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1)?,
            '/' if depth == 0 => {
                out.push(&dn[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    (depth == 0).then(|| {
        out.push(&dn[start..]);
        out
    })
}

fn bracketed<'a>(rn: &'a str, prefix: &str) -> Option<&'a str> {
    rn.strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')
}

/// An EPG: tenant / application profile / EPG name.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct EpgRef {
    pub tenant: String,
    pub app: String,
    pub epg: String,
}

impl EpgRef {
    pub fn new(tenant: &str, app: &str, epg: &str) -> Self {
        Self {
            tenant: tenant.into(),
            app: app.into(),
            epg: epg.into(),
        }
    }

    /// `uni/tn-{t}/ap-{a}/epg-{e}`.
    pub fn dn(&self) -> String {
        format!("uni/tn-{}/ap-{}/epg-{}", self.tenant, self.app, self.epg)
    }

    /// Parses an EPG DN (or any DN below an EPG).
    pub fn from_dn(dn: &str) -> Option<Self> {
        let rns = split_dn(dn)?;
        match rns.as_slice() {
            ["uni", tn, ap, epg, ..] => Some(Self {
                tenant: tn.strip_prefix("tn-")?.into(),
                app: ap.strip_prefix("ap-")?.into(),
                epg: epg.strip_prefix("epg-")?.into(),
            }),
            _ => None,
        }
    }
}

impl fmt::Display for EpgRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dn())
    }
}

/// A VLAN id, 1..=4094.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u16", into = "u16")]
pub struct VlanId(u16);

impl TryFrom<u16> for VlanId {
    type Error = String;
    fn try_from(id: u16) -> Result<Self, String> {
        Self::new(id).ok_or_else(|| format!("VLAN {id} is outside 1..=4094"))
    }
}

impl From<VlanId> for u16 {
    fn from(v: VlanId) -> u16 {
        v.0
    }
}

impl VlanId {
    pub fn new(id: u16) -> Option<Self> {
        (1..=4094).contains(&id).then_some(Self(id))
    }

    pub fn get(self) -> u16 {
        self.0
    }

    /// `vlan-N`.
    pub fn encap(self) -> String {
        format!("vlan-{}", self.0)
    }

    /// Parses `vlan-N`.
    pub fn from_encap(s: &str) -> Option<Self> {
        Self::new(s.strip_prefix("vlan-")?.parse().ok()?)
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vlan-{}", self.0)
    }
}

/// `fvRsPathAtt.mode`: tagged (`regular`), 802.1p (`native`) or access (`untagged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingMode {
    Regular,
    Native,
    Untagged,
}

impl BindingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingMode::Regular => "regular",
            BindingMode::Native => "native",
            BindingMode::Untagged => "untagged",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "regular" => Some(Self::Regular),
            "native" => Some(Self::Native),
            "untagged" => Some(Self::Untagged),
            _ => None,
        }
    }
}

/// `instrImedcy` (one "m"): deploy at once, or when an endpoint is learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Immediacy {
    Immediate,
    Lazy,
}

impl Immediacy {
    pub fn as_str(self) -> &'static str {
        match self {
            Immediacy::Immediate => "immediate",
            Immediacy::Lazy => "lazy",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "immediate" => Some(Self::Immediate),
            "lazy" => Some(Self::Lazy),
            _ => None,
        }
    }
}

/// What a path DN attaches to (reference §5.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathKind {
    /// `paths-{node}/pathep-[eth1/7]`
    Port { node: u32, port: String },
    /// `paths-{node}/pathep-[{ipg}]`
    PortChannel { node: u32, ipg: String },
    /// `protpaths-{a}-{b}/pathep-[{ipg}]`, a < b
    Vpc { nodes: (u32, u32), ipg: String },
    /// `paths-{node}/extpaths-{fex}/pathep-[...]` (a port or a FEX port-channel)
    Fex { node: u32, fex: u32, name: String },
    /// `protpaths-{a}-{b}/extprotpaths-{f1}-{f2}/pathep-[{ipg}]`
    FexVpc {
        nodes: (u32, u32),
        fexes: (u32, u32),
        ipg: String,
    },
}

/// A parsed `fabricPathEp` DN; serialized as the DN string.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct PathDn {
    pub pod: u32,
    pub kind: PathKind,
}

impl TryFrom<String> for PathDn {
    type Error = String;
    fn try_from(dn: String) -> Result<Self, String> {
        Self::parse(&dn).ok_or_else(|| format!("not a fabric path DN: {dn}"))
    }
}

impl From<PathDn> for String {
    fn from(p: PathDn) -> String {
        p.to_string()
    }
}

fn is_port_name(s: &str) -> bool {
    s.strip_prefix("eth").is_some_and(|r| {
        !r.is_empty()
            && r.split('/')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn pair(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl PathDn {
    /// Parses `topology/pod-{p}/...`.
    pub fn parse(dn: &str) -> Option<Self> {
        let rns = split_dn(dn)?;
        let pod = match rns.as_slice() {
            ["topology", pod, ..] => pod.strip_prefix("pod-")?.parse().ok()?,
            _ => return None,
        };
        let kind = match rns[2..] {
            [paths, ep] => {
                let node = paths.strip_prefix("paths-").and_then(|n| n.parse().ok());
                let name = bracketed(ep, "pathep-")?.to_string();
                match (node, paths.strip_prefix("protpaths-")) {
                    (Some(node), _) if is_port_name(&name) => PathKind::Port { node, port: name },
                    (Some(node), _) => PathKind::PortChannel { node, ipg: name },
                    (None, Some(p)) => PathKind::Vpc {
                        nodes: pair(p)?,
                        ipg: name,
                    },
                    _ => return None,
                }
            }
            [paths, ext, ep] => {
                let name = bracketed(ep, "pathep-")?.to_string();
                if let (Some(n), Some(f)) =
                    (paths.strip_prefix("paths-"), ext.strip_prefix("extpaths-"))
                {
                    PathKind::Fex {
                        node: n.parse().ok()?,
                        fex: f.parse().ok()?,
                        name,
                    }
                } else {
                    let nodes = pair(paths.strip_prefix("protpaths-")?)?;
                    let fexes = pair(ext.strip_prefix("extprotpaths-")?)?;
                    PathKind::FexVpc {
                        nodes,
                        fexes,
                        ipg: name,
                    }
                }
            }
            _ => return None,
        };
        Some(Self { pod, kind })
    }

    /// A single leaf port.
    pub fn port(pod: u32, node: u32, port: &str) -> Self {
        Self {
            pod,
            kind: PathKind::Port {
                node,
                port: port.into(),
            },
        }
    }

    /// A vPC; node ids are put in ascending order as the APIC names them.
    pub fn vpc(pod: u32, a: u32, b: u32, ipg: &str) -> Self {
        Self {
            pod,
            kind: PathKind::Vpc {
                nodes: (a.min(b), a.max(b)),
                ipg: ipg.into(),
            },
        }
    }

    /// The leaves this path lands on (both for a vPC).
    pub fn leaves(&self) -> Vec<u32> {
        match &self.kind {
            PathKind::Port { node, .. }
            | PathKind::PortChannel { node, .. }
            | PathKind::Fex { node, .. } => vec![*node],
            PathKind::Vpc { nodes, .. } | PathKind::FexVpc { nodes, .. } => vec![nodes.0, nodes.1],
        }
    }

    pub fn dn(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for PathDn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pod = self.pod;
        match &self.kind {
            PathKind::Port { node, port: n } | PathKind::PortChannel { node, ipg: n } => {
                write!(f, "topology/pod-{pod}/paths-{node}/pathep-[{n}]")
            }
            PathKind::Vpc { nodes: (a, b), ipg } => {
                write!(f, "topology/pod-{pod}/protpaths-{a}-{b}/pathep-[{ipg}]")
            }
            PathKind::Fex { node, fex, name } => write!(
                f,
                "topology/pod-{pod}/paths-{node}/extpaths-{fex}/pathep-[{name}]"
            ),
            PathKind::FexVpc {
                nodes: (a, b),
                fexes: (x, y),
                ipg,
            } => {
                write!(
                    f,
                    "topology/pod-{pod}/protpaths-{a}-{b}/extprotpaths-{x}-{y}/pathep-[{ipg}]"
                )
            }
        }
    }
}

/// One static path binding of an EPG (`fvRsPathAtt`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Binding {
    pub path: PathDn,
    pub encap: VlanId,
    pub mode: BindingMode,
    pub immediacy: Immediacy,
}

impl Binding {
    /// RN under the EPG: `rspathAtt-[{tDn}]`.
    pub fn rn(path: &PathDn) -> String {
        format!("rspathAtt-[{path}]")
    }

    /// DN of the binding of `path` on `epg`.
    pub fn dn(epg: &EpgRef, path: &PathDn) -> String {
        format!("{}/{}", epg.dn(), Self::rn(path))
    }

    /// The MO Weft posts, marked as Weft's.
    pub fn to_mo(&self) -> Mo {
        Mo::new("fvRsPathAtt")
            .attr("tDn", self.path.dn())
            .attr("encap", self.encap.encap())
            .attr("mode", self.mode.as_str())
            .attr("instrImedcy", self.immediacy.as_str())
            .attr("annotation", OWNER_ANNOTATION)
    }
}

/// A Weft-owned binding as read back from the APIC (for reconciliation). Fields stay raw
/// where someone may have edited them by hand, so an unparsable one can still be removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OwnedBinding {
    pub dn: String,
    pub epg: EpgRef,
    /// The raw `tDn`; see [`OwnedBinding::path`].
    pub tdn: String,
    pub encap: Option<VlanId>,
    pub mode: Option<BindingMode>,
    pub immediacy: Option<Immediacy>,
}

impl OwnedBinding {
    pub fn path(&self) -> Option<PathDn> {
        PathDn::parse(&self.tdn)
    }

    pub(crate) fn from_mo(mo: &Mo) -> Option<Self> {
        let dn = mo.get("dn")?.to_string();
        Some(Self {
            epg: EpgRef::from_dn(&dn)?,
            tdn: mo.get("tDn")?.to_string(),
            encap: mo.get("encap").and_then(VlanId::from_encap),
            mode: mo.get("mode").and_then(BindingMode::parse),
            immediacy: mo.get("instrImedcy").and_then(Immediacy::parse),
            dn,
        })
    }
}

/// An EPG Weft creates and owns (`managed`), with its BD and physical domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManagedEpg {
    pub epg: EpgRef,
    pub bridge_domain: String,
    pub physical_domain: String,
}

/// A fault (`faultInst`) as Weft reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fault {
    pub dn: String,
    pub code: String,
    pub severity: String,
    /// `invalid-vlan`, `invalid-path`, `encap-already-in-use`... (from `changeSet`).
    pub qualifier: Option<String>,
    pub descr: String,
}

impl Fault {
    pub(crate) fn from_mo(mo: &Mo, parent_dn: &str) -> Option<Self> {
        let change_set = mo.get("changeSet").unwrap_or_default();
        let qualifier = change_set
            .split(", ")
            .find_map(|p| p.strip_prefix("configQual:"))
            .map(str::to_string);
        Some(Self {
            dn: mo.dn_under(parent_dn)?,
            code: mo.get("code")?.to_string(),
            severity: mo.get("severity").unwrap_or_default().to_string(),
            qualifier,
            descr: mo.get("descr").unwrap_or_default().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_dns_round_trip() {
        for dn in [
            "topology/pod-1/paths-101/pathep-[eth1/7]",
            "topology/pod-1/paths-101/pathep-[eth1/7/2]",
            "topology/pod-1/paths-101/pathep-[pc_ipg]",
            "topology/pod-1/protpaths-101-102/pathep-[host-3_vpc]",
            "topology/pod-1/paths-103/extpaths-111/pathep-[eth1/1]",
            "topology/pod-2/protpaths-101-102/extprotpaths-111-112/pathep-[fexvpc]",
        ] {
            let p = PathDn::parse(dn).unwrap_or_else(|| panic!("{dn}"));
            assert_eq!(p.to_string(), dn);
        }
        let v = PathDn::parse("topology/pod-1/protpaths-101-102/pathep-[x]").unwrap();
        assert_eq!(v.leaves(), vec![101, 102]);
        assert!(matches!(
            PathDn::parse("topology/pod-1/paths-101/pathep-[eth1/7]")
                .unwrap()
                .kind,
            PathKind::Port { .. }
        ));
        assert!(PathDn::parse("uni/tn-a").is_none());
        assert_eq!(PathDn::vpc(1, 102, 101, "x"), v);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, "\"topology/pod-1/protpaths-101-102/pathep-[x]\"");
        assert_eq!(serde_json::from_str::<PathDn>(&json).unwrap(), v);
        assert!(serde_json::from_str::<PathDn>("\"uni/tn-a\"").is_err());
        assert!(serde_json::from_str::<VlanId>("4095").is_err());
        assert_eq!(
            serde_json::to_string(&BindingMode::Untagged).unwrap(),
            "\"untagged\""
        );
    }

    #[test]
    fn binding_uses_reference_spelling() {
        let b = Binding {
            path: PathDn::port(1, 101, "eth1/7"),
            encap: VlanId::new(222).unwrap(),
            mode: BindingMode::Regular,
            immediacy: Immediacy::Immediate,
        };
        let mo = b.to_mo();
        assert_eq!(mo.get("instrImedcy"), Some("immediate"));
        assert_eq!(mo.get("annotation"), Some("orchestrator:weft"));
        assert_eq!(
            Binding::dn(&EpgRef::new("t", "a", "e"), &b.path),
            "uni/tn-t/ap-a/epg-e/rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/7]]"
        );
        assert_eq!(VlanId::new(4095), None);
        assert_eq!(
            EpgRef::from_dn("uni/tn-t/ap-a/epg-e/rspathAtt-[x]"),
            Some(EpgRef::new("t", "a", "e"))
        );
    }
}
