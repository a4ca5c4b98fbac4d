//! The fabric the simulator pretends to be: nodes, ports, vPC pairs, FEXes and LLDP neighbours,
//! read from a JSON file and turned into read-only topology objects (§6), plus optional
//! configuration objects (VLAN pools, domains) posted under `uni` at start.

use crate::classes;
use crate::error::ApicError;
use crate::payload;
use crate::tree::{Mit, Writer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The example topology shipped in `deploy/sim/topology.json`.
pub const EXAMPLE: &str = include_str!("../../../deploy/sim/topology.json");

/// A fabric description.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default = "one")]
    pub pod: u32,
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub vpcs: Vec<VpcSpec>,
    #[serde(default)]
    pub fex: Vec<FexSpec>,
    #[serde(default)]
    pub lldp: Vec<LldpSpec>,
    /// Attachable entity profiles and the domains they carry; ports reach them through the
    /// access policies the simulator builds from `aaep` on nodes, ports and vPCs.
    #[serde(default)]
    pub aaeps: Vec<AaepSpec>,
    /// MO trees posted to `uni` at start (access policies an operator would have made).
    #[serde(default)]
    pub config: Vec<serde_json::Value>,
}

fn one() -> u32 {
    1
}

/// A switch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub id: u32,
    pub name: String,
    /// `leaf` or `spine`.
    pub role: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
    /// Front-panel ports (`eth1/1`), each a bindable single-port path on a leaf.
    #[serde(default)]
    pub ports: Vec<String>,
    /// The AAEP of this leaf's ports; a port with no AAEP carries no domain (F0467
    /// invalid-path for every binding on it).
    #[serde(default)]
    pub aaep: Option<String>,
    /// Per-port AAEPs, overriding `aaep`.
    #[serde(default)]
    pub port_aaeps: BTreeMap<String, String>,
}

/// An attachable entity profile (`infraAttEntityP`) with the physical domains it carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AaepSpec {
    pub name: String,
    #[serde(default)]
    pub domains: Vec<String>,
}

/// A vPC: a pair of leaves and the interface policy group (the `pathep-[...]` name).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcSpec {
    pub name: String,
    pub nodes: [u32; 2],
    /// The member port on each of the two leaves.
    #[serde(default)]
    pub ports: Vec<String>,
    /// The AAEP of the vPC's interface policy group.
    #[serde(default)]
    pub aaep: Option<String>,
}

/// A FEX hanging off a leaf; its ports become `extpaths-{id}` paths.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FexSpec {
    pub id: u32,
    pub leaf: u32,
    pub ports: Vec<String>,
}

/// An LLDP neighbour seen on a leaf port (`port` may be a FEX port `eth{fex}/1/{n}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LldpSpec {
    pub node: u32,
    pub port: String,
    pub sys_name: String,
    pub port_id: String,
    #[serde(default)]
    pub mgmt_ip: Option<String>,
    #[serde(default)]
    pub chassis_mac: Option<String>,
}

/// Why a topology could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("topology JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("topology config object {index} was rejected: {error}")]
    Config { index: usize, error: ApicError },
    #[error("topology refers to unknown node {0}")]
    UnknownNode(u32),
}

impl Topology {
    /// Parses a topology document.
    pub fn from_json(text: &str) -> Result<Self, TopologyError> {
        Ok(serde_json::from_str(text)?)
    }

    /// The example topology of the repository (`deploy/sim/topology.json`).
    pub fn example() -> Result<Self, TopologyError> {
        Self::from_json(EXAMPLE)
    }

    /// Builds the initial tree: `uni`, `uni/infra`, the topology objects and `config`.
    pub fn build(&self) -> Result<Mit, TopologyError> {
        let mut b = Builder {
            mit: Mit::default(),
        };
        b.put("uni", "polUni", &[]);
        b.put("uni/infra", "infraInfra", &[]);
        let pod = format!("topology/pod-{}", self.pod);
        b.put("topology", "fabricTopology", &[]);
        b.put(&pod, "fabricPod", &[("id", self.pod.to_string())]);
        for n in &self.nodes {
            let node = format!("{pod}/node-{}", n.id);
            b.put(
                &node,
                "fabricNode",
                &[
                    ("id", n.id.to_string()),
                    ("name", n.name.clone()),
                    ("role", n.role.clone()),
                    (
                        "serial",
                        n.serial
                            .clone()
                            .unwrap_or_else(|| format!("SIM{:08}", n.id)),
                    ),
                    (
                        "model",
                        n.model.clone().unwrap_or_else(|| "N9K-C93180YC-FX".into()),
                    ),
                    ("version", "n9000-15.2(1g)".into()),
                    ("vendor", "Cisco Systems, Inc".into()),
                    ("fabricSt", "active".into()),
                    ("adSt", "on".into()),
                    ("address", format!("10.0.{}.{}", n.id / 256, n.id % 256)),
                    ("nodeType", "unspecified".into()),
                ],
            );
            b.put(
                &format!("{node}/sys"),
                "topSystem",
                &[
                    ("id", n.id.to_string()),
                    ("name", n.name.clone()),
                    ("role", n.role.clone()),
                    ("address", format!("10.0.{}.{}", n.id / 256, n.id % 256)),
                    ("state", "in-service".into()),
                ],
            );
            b.put(&format!("{node}/sys/lldp"), "lldpEntity", &[]);
            b.put(&format!("{node}/sys/lldp/inst"), "lldpInst", &[]);
            if n.role != "leaf" {
                continue;
            }
            let paths = format!("{pod}/paths-{}", n.id);
            b.put(&paths, "fabricPathEpCont", &[("nodeId", n.id.to_string())]);
            for port in &n.ports {
                b.path(&format!("{paths}/pathep-[{port}]"), port, "not-aggregated");
                b.put(
                    &format!("{node}/sys/phys-[{port}]"),
                    "l1PhysIf",
                    &[
                        ("id", port.clone()),
                        ("adminSt", "up".into()),
                        ("speed", "inherit".into()),
                        ("mtu", "9000".into()),
                        ("portT", "leaf".into()),
                        ("usage", "discovery".into()),
                        ("layer", "Layer2".into()),
                        ("mode", "trunk".into()),
                    ],
                );
                let advertised = self.advertised_path(n.id, port);
                b.put(
                    &format!("{node}/sys/lldp/inst/if-[{port}]"),
                    "lldpIf",
                    &[("id", port.clone()), ("portDesc", advertised)],
                );
            }
        }
        for v in &self.vpcs {
            for id in v.nodes {
                self.leaf(id)?;
            }
            let (a, c) = (v.nodes[0].min(v.nodes[1]), v.nodes[0].max(v.nodes[1]));
            let cont = format!("{pod}/protpaths-{a}-{c}");
            b.put(
                &cont,
                "fabricProtPathEpCont",
                &[("nodeAId", a.to_string()), ("nodeBId", c.to_string())],
            );
            b.path(&format!("{cont}/pathep-[{}]", v.name), &v.name, "node");
        }
        for f in &self.fex {
            self.leaf(f.leaf)?;
            let cont = format!("{pod}/paths-{}/extpaths-{}", f.leaf, f.id);
            b.put(
                &cont,
                "fabricExtPathEpCont",
                &[("nodeId", f.id.to_string())],
            );
            for port in &f.ports {
                b.path(&format!("{cont}/pathep-[{port}]"), port, "not-aggregated");
                let fex_port = format!("eth{}/{}", f.id, port.trim_start_matches("eth"));
                let node = format!("{pod}/node-{}", f.leaf);
                let advertised = format!("{cont}/pathep-[{port}]");
                b.put(
                    &format!("{node}/sys/lldp/inst/if-[{fex_port}]"),
                    "lldpIf",
                    &[("id", fex_port.clone()), ("portDesc", advertised)],
                );
            }
        }
        for (i, l) in self.lldp.iter().enumerate() {
            self.leaf(l.node)?;
            let ifdn = format!("{pod}/node-{}/sys/lldp/inst/if-[{}]", l.node, l.port);
            if !b.mit.contains(&ifdn) {
                b.put(
                    &ifdn,
                    "lldpIf",
                    &[("id", l.port.clone()), ("portDesc", String::new())],
                );
            }
            let mac = l
                .chassis_mac
                .clone()
                .unwrap_or_else(|| format!("52:54:00:00:{:02x}:{:02x}", i / 256, i % 256));
            b.put(
                &format!("{ifdn}/adj-1"),
                "lldpAdjEp",
                &[
                    ("id", "1".into()),
                    ("sysName", l.sys_name.clone()),
                    ("sysDesc", "Linux".into()),
                    ("portIdV", l.port_id.clone()),
                    ("portDesc", l.port_id.clone()),
                    ("chassisIdT", "mac".into()),
                    ("chassisIdV", mac.clone()),
                    ("mgmtIp", l.mgmt_ip.clone().unwrap_or_default()),
                    ("mgmtPortMac", mac),
                    ("capability", "station".into()),
                ],
            );
        }
        self.access_policies(&mut b);
        for (index, obj) in self.config.iter().enumerate() {
            let node = serde_json::to_vec(obj)
                .map_err(TopologyError::Json)
                .and_then(|bytes| {
                    payload::parse(&bytes).map_err(|error| TopologyError::Config { index, error })
                })?;
            b.mit
                .apply("uni", &node, Writer::Api)
                .map_err(|error| TopologyError::Config { index, error })?;
        }
        Ok(b.mit)
    }

    /// The access policies an operator would have made (reference §5.3): AAEPs with their
    /// domains, one access policy group per AAEP, a bundle policy group per vPC, and per leaf
    /// a switch profile and an interface profile with one port selector per port.
    fn access_policies(&self, b: &mut Builder) {
        let infra = "uni/infra";
        let funcprof = format!("{infra}/funcprof");
        b.put(&funcprof, "infraFuncP", &[]);
        for a in &self.aaeps {
            let dn = format!("{infra}/attentp-{}", a.name);
            b.put(&dn, "infraAttEntityP", &[("name", a.name.clone())]);
            for d in &a.domains {
                let t = format!("uni/phys-{d}");
                b.put(&format!("{dn}/rsdomP-[{t}]"), "infraRsDomP", &[("tDn", t)]);
            }
        }
        let attach = |b: &mut Builder, ipg: &str, aaep: &Option<String>| {
            if let Some(a) = aaep {
                b.put(
                    &format!("{ipg}/rsattEntP"),
                    "infraRsAttEntP",
                    &[("tDn", format!("{infra}/attentp-{a}"))],
                );
            }
        };
        for v in &self.vpcs {
            let ipg = format!("{funcprof}/accbundle-{}", v.name);
            b.put(
                &ipg,
                "infraAccBndlGrp",
                &[("name", v.name.clone()), ("lagT", "node".into())],
            );
            attach(b, &ipg, &v.aaep);
        }
        for n in self.nodes.iter().filter(|n| n.role == "leaf") {
            let profile = format!("{infra}/accportprof-{}", n.name);
            let nprof = format!("{infra}/nprof-{}", n.name);
            let leaves = format!("{nprof}/leaves-{}-typ-range", n.name);
            b.put(&nprof, "infraNodeP", &[("name", n.name.clone())]);
            b.put(
                &leaves,
                "infraLeafS",
                &[("name", n.name.clone()), ("type", "range".into())],
            );
            b.put(
                &format!("{leaves}/nodeblk-1"),
                "infraNodeBlk",
                &[
                    ("name", "1".into()),
                    ("from_", n.id.to_string()),
                    ("to_", n.id.to_string()),
                ],
            );
            b.put(
                &format!("{nprof}/rsaccPortP-[{profile}]"),
                "infraRsAccPortP",
                &[("tDn", profile.clone())],
            );
            b.put(&profile, "infraAccPortP", &[("name", n.name.clone())]);
            for port in &n.ports {
                let vpc = self
                    .vpcs
                    .iter()
                    .find(|v| v.nodes.contains(&n.id) && v.ports.contains(port));
                let ipg = match (vpc, n.port_aaeps.get(port).or(n.aaep.as_ref())) {
                    (Some(v), _) => format!("{funcprof}/accbundle-{}", v.name),
                    (None, Some(a)) => {
                        let ipg = format!("{funcprof}/accportgrp-{a}_ipg");
                        b.put(&ipg, "infraAccPortGrp", &[("name", format!("{a}_ipg"))]);
                        attach(b, &ipg, &Some(a.clone()));
                        ipg
                    }
                    (None, None) => continue,
                };
                let Some((card, number)) = card_port(port) else {
                    continue;
                };
                let name = port.replace('/', "_");
                let sel = format!("{profile}/hports-{name}-typ-range");
                b.put(
                    &sel,
                    "infraHPortS",
                    &[("name", name), ("type", "range".into())],
                );
                b.put(
                    &format!("{sel}/portblk-1"),
                    "infraPortBlk",
                    &[
                        ("name", "1".into()),
                        ("fromCard", card.clone()),
                        ("fromPort", number.clone()),
                        ("toCard", card),
                        ("toPort", number),
                    ],
                );
                b.put(
                    &format!("{sel}/rsaccBaseGrp"),
                    "infraRsAccBaseGrp",
                    &[("tDn", ipg)],
                );
            }
        }
    }

    fn leaf(&self, id: u32) -> Result<&NodeSpec, TopologyError> {
        self.nodes
            .iter()
            .find(|n| n.id == id && n.role == "leaf")
            .ok_or(TopologyError::UnknownNode(id))
    }

    /// What a leaf port advertises in LLDP: the vPC path for vPC members, else the port path.
    fn advertised_path(&self, node: u32, port: &str) -> String {
        let pod = self.pod;
        match self
            .vpcs
            .iter()
            .find(|v| v.nodes.contains(&node) && v.ports.iter().any(|p| p == port))
        {
            Some(v) => {
                let (a, c) = (v.nodes[0].min(v.nodes[1]), v.nodes[0].max(v.nodes[1]));
                format!("topology/pod-{pod}/protpaths-{a}-{c}/pathep-[{}]", v.name)
            }
            None => format!("topology/pod-{pod}/paths-{node}/pathep-[{port}]"),
        }
    }
}

/// `eth1/7` → (`1`, `7`).
fn card_port(port: &str) -> Option<(String, String)> {
    let (card, number) = port.strip_prefix("eth")?.split_once('/')?;
    let number = number.split('/').next()?;
    Some((card.to_string(), number.to_string()))
}

struct Builder {
    mit: Mit,
}

impl Builder {
    fn put(&mut self, dn: &str, class: &str, attrs: &[(&str, String)]) {
        if let Some(c) = classes::class(class) {
            let map: BTreeMap<String, String> = attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            self.mit.put(dn.to_string(), c, map);
        }
    }

    fn path(&mut self, dn: &str, name: &str, lag: &str) {
        self.put(
            dn,
            "fabricPathEp",
            &[
                ("name", name.to_string()),
                ("pathT", "leaf".into()),
                ("lagT", lag.into()),
            ],
        );
    }
}
