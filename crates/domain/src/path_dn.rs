//! APIC fabric path DNs (`fabricPathEp`), the `tDn` of a static path binding.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApicName, ParseError};

/// Which leaf (or leaf pair) a path hangs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Nodes {
    /// `paths-101`
    Single(u16),
    /// `protpaths-101-102`, lower node id first.
    Pair(u16, u16),
}

/// The interface part inside `pathep-[...]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Endpoint {
    /// `eth1/7` or a breakout sub-port `eth1/7/2`.
    Port(Vec<u16>),
    /// A port-channel or vPC interface policy group name.
    PolicyGroup(ApicName),
}

/// What a path DN attaches to (reference §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// `paths-{node}/pathep-[eth1/7]`
    Port,
    /// `paths-{node}/pathep-[{ipg}]`
    PortChannel,
    /// `protpaths-{a}-{b}/pathep-[{ipg}]`
    Vpc,
    /// `paths-{node}/extpaths-{fex}/pathep-[...]`, a FEX port or port-channel
    Fex,
    /// `protpaths-{a}-{b}/extprotpaths-{f1}-{f2}/pathep-[{ipg}]`
    FexVpc,
}

/// A path DN for a single port, a port-channel, a vPC, or a FEX port, e.g.
/// `topology/pod-1/paths-101/pathep-[eth1/1]`, `topology/pod-1/protpaths-101-102/pathep-[ipg]`,
/// `topology/pod-1/paths-101/extpaths-110/pathep-[eth1/1]`.
///
/// Only the canonical spelling is accepted (no leading zeros, vPC nodes in ascending order), so
/// `to_string()` returns exactly the parsed input and two equal paths have equal strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathDn {
    pod: u16,
    nodes: Nodes,
    fex: Option<Nodes>,
    endpoint: Endpoint,
}

fn number(s: &str, what: &str) -> Result<u16, ParseError> {
    let ok = !s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit());
    let n = if ok { s.parse::<u16>().ok() } else { None };
    n.ok_or_else(|| {
        ParseError::new(format!(
            "{what} `{s}` is not a positive number without leading zeros"
        ))
    })
}

fn nodes(s: &str, single: &str, pair: &str) -> Result<Option<Nodes>, ParseError> {
    if let Some(rest) = s.strip_prefix(pair) {
        let (a, b) = rest
            .split_once('-')
            .ok_or_else(|| ParseError::new(format!("`{s}` needs two node ids")))?;
        let (a, b) = (number(a, "node id")?, number(b, "node id")?);
        if a >= b {
            return Err(ParseError::new(format!(
                "`{s}`: the lower node id must come first"
            )));
        }
        Ok(Some(Nodes::Pair(a, b)))
    } else if let Some(rest) = s.strip_prefix(single) {
        Ok(Some(Nodes::Single(number(rest, "node id")?)))
    } else {
        Ok(None)
    }
}

fn endpoint(s: &str) -> Result<Endpoint, ParseError> {
    if let Some(port) = s.strip_prefix("eth") {
        let parts = port
            .split('/')
            .map(|p| number(p, "port number"))
            .collect::<Result<Vec<_>, _>>()?;
        if !(2..=3).contains(&parts.len()) {
            return Err(ParseError::new(format!(
                "port `{s}` must be eth<module>/<port>[/<sub-port>]"
            )));
        }
        return Ok(Endpoint::Port(parts));
    }
    Ok(Endpoint::PolicyGroup(ApicName::parse(s)?))
}

impl PathDn {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let err = |why: &str| ParseError::new(format!("path DN `{}` {why}", s.escape_debug()));
        let rest = s
            .strip_prefix("topology/pod-")
            .ok_or_else(|| err("must start with `topology/pod-`"))?;
        let (pod, rest) = rest
            .split_once('/')
            .ok_or_else(|| err("has no path after the pod"))?;
        let pod = number(pod, "pod id")?;
        let (head, ep) = rest
            .split_once("/pathep-[")
            .ok_or_else(|| err("has no `/pathep-[...]`"))?;
        let ep = ep
            .strip_suffix(']')
            .ok_or_else(|| err("must end with `]`"))?;
        let (node_part, fex_part) = match head.split_once('/') {
            Some((n, f)) => (n, Some(f)),
            None => (head, None),
        };
        let leaves = nodes(node_part, "paths-", "protpaths-")?
            .ok_or_else(|| err("needs `paths-<node>` or `protpaths-<n1>-<n2>`"))?;
        let fex = match fex_part {
            None => None,
            Some(f) => {
                let fex = nodes(f, "extpaths-", "extprotpaths-")?
                    .ok_or_else(|| err("has an unknown element between the nodes and `pathep`"))?;
                // A FEX pair only hangs off a leaf pair and a single FEX off a single leaf.
                match (leaves, fex) {
                    (Nodes::Single(_), Nodes::Single(_)) | (Nodes::Pair(..), Nodes::Pair(..)) => {
                        Some(fex)
                    }
                    _ => return Err(err("mixes single and paired nodes/FEX")),
                }
            }
        };
        let endpoint = endpoint(ep)?;
        let dn = Self {
            pod,
            nodes: leaves,
            fex,
            endpoint,
        };
        if dn.to_string() != s {
            return Err(err("is not in canonical form"));
        }
        Ok(dn)
    }

    /// A single leaf port, e.g. `port(1, 101, "eth1/7")`.
    pub fn port(pod: u16, node: u16, port: &str) -> Result<Self, ParseError> {
        Self::parse(&format!("topology/pod-{pod}/paths-{node}/pathep-[{port}]"))
    }

    /// A vPC; the node ids are put in ascending order as the APIC names them.
    pub fn vpc(pod: u16, a: u16, b: u16, ipg: &str) -> Result<Self, ParseError> {
        let (lo, hi) = (a.min(b), a.max(b));
        Self::parse(&format!(
            "topology/pod-{pod}/protpaths-{lo}-{hi}/pathep-[{ipg}]"
        ))
    }

    pub fn pod(&self) -> u16 {
        self.pod
    }

    pub fn kind(&self) -> PathKind {
        match (self.nodes, self.fex, &self.endpoint) {
            (Nodes::Single(_), None, Endpoint::Port(_)) => PathKind::Port,
            (Nodes::Single(_), None, Endpoint::PolicyGroup(_)) => PathKind::PortChannel,
            (Nodes::Pair(..), None, _) => PathKind::Vpc,
            (Nodes::Single(_), Some(_), _) => PathKind::Fex,
            (Nodes::Pair(..), Some(_), _) => PathKind::FexVpc,
        }
    }

    /// The leaf node ids this path is deployed on (both for a vPC).
    pub fn leaves(&self) -> Vec<u16> {
        match self.nodes {
            Nodes::Single(n) => vec![n],
            Nodes::Pair(a, b) => vec![a, b],
        }
    }
}

impl fmt::Display for Nodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Nodes::Single(n) => write!(f, "{n}"),
            Nodes::Pair(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

impl fmt::Display for PathDn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paired = matches!(self.nodes, Nodes::Pair(..));
        let prefix = if paired { "protpaths" } else { "paths" };
        write!(f, "topology/pod-{}/{prefix}-{}", self.pod, self.nodes)?;
        if let Some(fex) = &self.fex {
            let prefix = if paired { "extprotpaths" } else { "extpaths" };
            write!(f, "/{prefix}-{fex}")?;
        }
        match &self.endpoint {
            Endpoint::Port(parts) => {
                let parts: Vec<String> = parts.iter().map(u16::to_string).collect();
                write!(f, "/pathep-[eth{}]", parts.join("/"))
            }
            Endpoint::PolicyGroup(name) => write!(f, "/pathep-[{name}]"),
        }
    }
}

super::string_serde!(
    PathDn,
    "An APIC fabric path DN: port, port-channel, vPC (lower node first) or FEX port, in canonical form (node ids 1-65535 without leading zeros).",
    "topology/pod-1/paths-101/pathep-[eth1/1]",
    pattern = r"^topology/pod-(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])/(?:paths-(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])(?:/extpaths-(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?|protpaths-(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])-(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])(?:/extprotpaths-(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])-(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?)/pathep-\[(?:eth(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])(?:/(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])){1,2}|(?:[a-df-zA-Z0-9_.:-][a-zA-Z0-9_.:-]{0,63}|e(?:[a-su-zA-Z0-9_.:-][a-zA-Z0-9_.:-]{0,62})?|et(?:[a-gi-zA-Z0-9_.:-][a-zA-Z0-9_.:-]{0,61})?))\]$"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_path_form_round_trips_exactly() {
        for s in [
            "topology/pod-1/paths-101/pathep-[eth1/1]",
            "topology/pod-1/paths-101/pathep-[eth1/7/2]",
            "topology/pod-2/paths-1012/pathep-[c01-nas-n06-IfPolGrp]",
            "topology/pod-1/protpaths-101-102/pathep-[ipg]",
            "topology/pod-1/paths-101/extpaths-110/pathep-[eth1/1]",
            "topology/pod-1/paths-101/extpaths-110/pathep-[fex-pc]",
            "topology/pod-1/protpaths-101-102/extprotpaths-110-111/pathep-[ipg]",
        ] {
            let dn = PathDn::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(dn.to_string(), s);
        }
    }

    #[test]
    fn vpc_nodes_must_be_ascending() {
        assert!(PathDn::parse("topology/pod-1/protpaths-102-101/pathep-[ipg]").is_err());
        assert!(PathDn::parse("topology/pod-1/protpaths-101-101/pathep-[ipg]").is_err());
        let dn = PathDn::parse("topology/pod-1/protpaths-101-102/pathep-[ipg]").unwrap();
        assert_eq!(dn.leaves(), vec![101, 102]);
        assert_eq!(dn.kind(), PathKind::Vpc);
        assert_eq!(PathDn::vpc(1, 102, 101, "ipg"), Ok(dn));
    }

    #[test]
    fn kinds_and_constructors() {
        let kind = |s: &str| PathDn::parse(s).map(|p| p.kind());
        assert_eq!(
            kind("topology/pod-1/paths-101/pathep-[eth1/7/2]"),
            Ok(PathKind::Port)
        );
        assert_eq!(
            kind("topology/pod-1/paths-101/pathep-[pc]"),
            Ok(PathKind::PortChannel)
        );
        assert_eq!(
            kind("topology/pod-1/paths-103/extpaths-111/pathep-[eth1/1]"),
            Ok(PathKind::Fex)
        );
        assert_eq!(
            kind("topology/pod-2/protpaths-101-102/extprotpaths-111-112/pathep-[x]"),
            Ok(PathKind::FexVpc)
        );
        let p = PathDn::port(1, 101, "eth1/7").unwrap();
        assert_eq!(p.to_string(), "topology/pod-1/paths-101/pathep-[eth1/7]");
        assert_eq!((p.pod(), p.leaves()), (1, vec![101]));
        assert!(PathDn::port(1, 101, "eth1/7]").is_err());
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"topology/pod-1/paths-101/pathep-[eth1/7]\"");
        assert_eq!(serde_json::from_str::<PathDn>(&json).ok(), Some(p));
        assert!(serde_json::from_str::<PathDn>("\"uni/tn-a\"").is_err());
    }

    #[test]
    fn malformed_or_escaping_paths_are_refused() {
        for bad in [
            "",
            "topology/pod-1/paths-101/pathep-[eth1/1",
            "topology/pod-01/paths-101/pathep-[eth1/1]",
            "topology/pod-1/paths-0101/pathep-[eth1/1]",
            "topology/pod-1/paths-101/pathep-[eth1]",
            "topology/pod-1/paths-101/pathep-[eth1/1/1/1]",
            "topology/pod-1/paths-101/pathep-[ip]g]",
            "topology/pod-1/paths-101/pathep-[a/b]",
            "topology/pod-1/paths-101/pathep-[eth1/1]]",
            "topology/pod-1/paths-101/pathep-[eth1/1]/x",
            "topology/pod-1/nodes-101/pathep-[eth1/1]",
            "topology/pod-1/paths-101/extprotpaths-1-2/pathep-[eth1/1]",
            "topology/pod-1/paths-101/extpaths-110/extpaths-111/pathep-[eth1/1]",
            "uni/tn-a/pathep-[eth1/1]",
            " topology/pod-1/paths-101/pathep-[eth1/1]",
        ] {
            assert!(PathDn::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
