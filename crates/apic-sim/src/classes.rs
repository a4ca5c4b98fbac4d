//! The class table: one row per managed-object class the simulator knows.
//!
//! Everything class-specific (RN pattern, allowed parents, attributes with their validation
//! and defaults, whether the REST API may write it) lives here as data, so that adding a class
//! never means touching the engine.

/// How an attribute value is validated (reference §3.4, §4.4).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `^[a-zA-Z0-9_.:-]{1,64}$` (tenant, AP, EPG, BD, VRF, pool, domain names).
    Name,
    /// Like `Name` but may be empty (relation target names, optional names).
    OptName,
    /// `^[a-zA-Z0-9_.-]{0,63}$`.
    Alias,
    /// `^[a-zA-Z0-9\\!#$%()*,-./:;@ _{|}~?&+]{0,128}$` (no brackets, quotes, `<>=`).
    Descr,
    /// `^[a-zA-Z0-9_.:-]{0,128}$`: `orchestrator:weft` style markers.
    Annotation,
    /// `vlan-N`, N in 1..=4094.
    Vlan,
    /// `vlan-N` or `unknown`.
    Encap,
    /// A distinguished name (non-empty, no whitespace).
    Dn,
    /// An IPv4 address with prefix length, `10.1.1.1/24`.
    Cidr,
    /// One value out of a fixed set (violations are code 120).
    Enum(&'static [&'static str]),
    /// Comma-separated values out of a fixed set.
    EnumList(&'static [&'static str]),
    /// Any printable text up to 512 characters (read-only operational data).
    Text,
    /// A decimal number (node ids, card and port numbers in access policies).
    Number,
}

/// One attribute of a class.
#[derive(Debug)]
pub struct Attr {
    pub name: &'static str,
    pub kind: Kind,
    pub default: Option<&'static str>,
}

/// One managed-object class.
#[derive(Debug)]
pub struct Class {
    pub name: &'static str,
    /// RN pattern: literals plus `{prop}` placeholders filled from naming properties.
    pub rn: &'static str,
    /// Classes this one may be contained in; empty means "root", `*` means any class.
    pub parents: &'static [&'static str],
    pub attrs: &'static [Attr],
    /// Whether `POST`/`DELETE` on `/api/...` may change it (topology and faults are read-only).
    pub writable: bool,
}

impl Class {
    /// The attribute definition named `name`, including the common ones.
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs
            .iter()
            .chain(if self.writable { COMMON } else { &[] }.iter())
            .find(|a| a.name == name)
    }

    /// Naming properties, in RN order.
    pub fn naming_props(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut rest = self.rn;
        while let Some(start) = rest.find('{') {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            out.push(&rest[start + 1..start + len]);
            rest = &rest[start + len + 1..];
        }
        out
    }

    /// Whether `parent` may contain this class.
    pub fn allows_parent(&self, parent: &str) -> bool {
        self.parents.iter().any(|p| *p == parent || *p == "*")
    }

    /// All attributes with defaults, including common ones.
    pub fn defaults(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.attrs
            .iter()
            .chain(if self.writable { COMMON } else { &[] }.iter())
            .filter_map(|a| a.default.map(|d| (a.name, d)))
    }
}

const fn a(name: &'static str, kind: Kind) -> Attr {
    Attr {
        name,
        kind,
        default: None,
    }
}

const fn d(name: &'static str, kind: Kind, default: &'static str) -> Attr {
    Attr {
        name,
        kind,
        default: Some(default),
    }
}

const YES_NO: Kind = Kind::Enum(&["no", "yes"]);
const IMMEDIACY: Kind = Kind::Enum(&["immediate", "lazy"]);
const PRIO: Kind = Kind::Enum(&[
    "unspecified",
    "level1",
    "level2",
    "level3",
    "level4",
    "level5",
    "level6",
]);

/// A fault's attributes (reference §6.6), plus those of the class (`faultDelegate`'s `affected`).
macro_rules! fault_attrs {
    ($($extra:expr),*) => {
        &[
            a("code", Kind::Text),
            a("severity", Kind::Text),
            a("origSeverity", Kind::Text),
            a("highestSeverity", Kind::Text),
            a("lc", Kind::Text),
            a("cause", Kind::Text),
            a("changeSet", Kind::Text),
            a("descr", Kind::Text),
            a("rule", Kind::Text),
            a("type", Kind::Text),
            a("created", Kind::Text),
            a("lastTransition", Kind::Text),
            a("ack", Kind::Text),
            a("delegated", Kind::Text),
            a("domain", Kind::Text),
            a("subject", Kind::Text),
            a("occur", Kind::Text),
            $($extra),*
        ]
    };
}

/// Attributes every configurable class accepts (`status` is handled by the engine).
pub const COMMON: &[Attr] = &[
    d("annotation", Kind::Annotation, ""),
    d("descr", Kind::Descr, ""),
    d("nameAlias", Kind::Alias, ""),
];

/// The class table.
pub const CLASSES: &[Class] = &[
    Class {
        name: "polUni",
        rn: "uni",
        parents: &[],
        attrs: &[],
        writable: true,
    },
    Class {
        name: "infraInfra",
        rn: "infra",
        parents: &["polUni"],
        attrs: &[],
        writable: true,
    },
    Class {
        name: "fvTenant",
        rn: "tn-{name}",
        parents: &["polUni"],
        attrs: &[a("name", Kind::Name)],
        writable: true,
    },
    Class {
        name: "fvAp",
        rn: "ap-{name}",
        parents: &["fvTenant"],
        attrs: &[a("name", Kind::Name), d("prio", PRIO, "unspecified")],
        writable: true,
    },
    Class {
        name: "fvAEPg",
        rn: "epg-{name}",
        parents: &["fvAp"],
        attrs: &[
            a("name", Kind::Name),
            d(
                "pcEnfPref",
                Kind::Enum(&["enforced", "unenforced"]),
                "unenforced",
            ),
            d("prefGrMemb", Kind::Enum(&["include", "exclude"]), "exclude"),
            d("prio", PRIO, "unspecified"),
            d(
                "floodOnEncap",
                Kind::Enum(&["disabled", "enabled"]),
                "disabled",
            ),
            d("fwdCtrl", Kind::Enum(&["none", "proxy-arp"]), "none"),
            d("isAttrBasedEPg", YES_NO, "no"),
            d("shutdown", YES_NO, "no"),
        ],
        writable: true,
    },
    Class {
        name: "fvRsBd",
        rn: "rsbd",
        parents: &["fvAEPg"],
        attrs: &[d("tnFvBDName", Kind::OptName, "")],
        writable: true,
    },
    Class {
        name: "fvBD",
        rn: "BD-{name}",
        parents: &["fvTenant"],
        attrs: &[
            a("name", Kind::Name),
            d("arpFlood", YES_NO, "no"),
            d("unkMacUcastAct", Kind::Enum(&["proxy", "flood"]), "proxy"),
            d("unkMcastAct", Kind::Enum(&["flood", "opt-flood"]), "flood"),
            d(
                "multiDstPktAct",
                Kind::Enum(&["bd-flood", "drop", "encap-flood"]),
                "bd-flood",
            ),
            d("unicastRoute", YES_NO, "yes"),
            d("limitIpLearnToSubnets", YES_NO, "yes"),
            d("ipLearning", YES_NO, "yes"),
            d("mac", Kind::Text, "00:22:BD:F8:19:FF"),
            d("type", Kind::Enum(&["regular", "fc"]), "regular"),
            d("epMoveDetectMode", Kind::Enum(&["", "garp"]), ""),
        ],
        writable: true,
    },
    Class {
        name: "fvCtx",
        rn: "ctx-{name}",
        parents: &["fvTenant"],
        attrs: &[
            a("name", Kind::Name),
            d(
                "pcEnfPref",
                Kind::Enum(&["enforced", "unenforced"]),
                "enforced",
            ),
            d("pcEnfDir", Kind::Enum(&["ingress", "egress"]), "ingress"),
        ],
        writable: true,
    },
    Class {
        name: "fvRsCtx",
        rn: "rsctx",
        parents: &["fvBD"],
        attrs: &[d("tnFvCtxName", Kind::OptName, "")],
        writable: true,
    },
    Class {
        name: "fvSubnet",
        rn: "subnet-[{ip}]",
        parents: &["fvBD", "fvAEPg"],
        attrs: &[
            a("ip", Kind::Cidr),
            d("name", Kind::OptName, ""),
            d(
                "scope",
                Kind::EnumList(&["private", "public", "shared"]),
                "private",
            ),
            d(
                "ctrl",
                Kind::EnumList(&["nd", "no-default-gateway", "querier", "unspecified"]),
                "",
            ),
            d("preferred", YES_NO, "no"),
            d("virtual", YES_NO, "no"),
        ],
        writable: true,
    },
    Class {
        name: "fvRsDomAtt",
        rn: "rsdomAtt-[{tDn}]",
        parents: &["fvAEPg"],
        attrs: &[
            a("tDn", Kind::Dn),
            d("instrImedcy", IMMEDIACY, "lazy"),
            d(
                "resImedcy",
                Kind::Enum(&["immediate", "lazy", "pre-provision"]),
                "lazy",
            ),
            d("encap", Kind::Encap, "unknown"),
            d("primaryEncap", Kind::Encap, "unknown"),
            d("classPref", Kind::Enum(&["encap", "useg"]), "encap"),
            d("encapMode", Kind::Enum(&["auto", "vlan", "vxlan"]), "auto"),
            d("switchingMode", Kind::Enum(&["native", "AVE"]), "native"),
        ],
        writable: true,
    },
    Class {
        name: "fvRsPathAtt",
        rn: "rspathAtt-[{tDn}]",
        parents: &["fvAEPg"],
        attrs: &[
            a("tDn", Kind::Dn),
            a("encap", Kind::Vlan),
            d(
                "mode",
                Kind::Enum(&["regular", "native", "untagged"]),
                "regular",
            ),
            d("instrImedcy", IMMEDIACY, "lazy"),
            d("primaryEncap", Kind::Encap, "unknown"),
        ],
        writable: true,
    },
    Class {
        name: "fvRsNodeAtt",
        rn: "rsnodeAtt-[{tDn}]",
        parents: &["fvAEPg"],
        attrs: &[
            a("tDn", Kind::Dn),
            a("encap", Kind::Vlan),
            d(
                "mode",
                Kind::Enum(&["regular", "native", "untagged"]),
                "regular",
            ),
            d("instrImedcy", IMMEDIACY, "lazy"),
        ],
        writable: true,
    },
    Class {
        name: "physDomP",
        rn: "phys-{name}",
        parents: &["polUni"],
        attrs: &[a("name", Kind::Name)],
        writable: true,
    },
    Class {
        name: "infraRsVlanNs",
        rn: "rsvlanNs",
        parents: &["physDomP"],
        attrs: &[a("tDn", Kind::Dn)],
        writable: true,
    },
    Class {
        name: "fvnsVlanInstP",
        rn: "vlanns-[{name}]-{allocMode}",
        parents: &["infraInfra"],
        attrs: &[
            a("name", Kind::Name),
            a("allocMode", Kind::Enum(&["static", "dynamic"])),
        ],
        writable: true,
    },
    Class {
        name: "fvnsEncapBlk",
        rn: "from-[{from}]-to-[{to}]",
        parents: &["fvnsVlanInstP"],
        attrs: &[
            a("from", Kind::Vlan),
            a("to", Kind::Vlan),
            d(
                "allocMode",
                Kind::Enum(&["inherit", "static", "dynamic"]),
                "inherit",
            ),
            d("role", Kind::Enum(&["external", "internal"]), "external"),
            d("name", Kind::OptName, ""),
        ],
        writable: true,
    },
    // Access policies (reference §5.3): which domains a leaf port may carry.
    Class {
        name: "infraAttEntityP",
        rn: "attentp-{name}",
        parents: &["infraInfra"],
        attrs: &[a("name", Kind::Name)],
        writable: true,
    },
    Class {
        name: "infraRsDomP",
        rn: "rsdomP-[{tDn}]",
        parents: &["infraAttEntityP"],
        attrs: &[a("tDn", Kind::Dn)],
        writable: true,
    },
    Class {
        name: "infraFuncP",
        rn: "funcprof",
        parents: &["infraInfra"],
        attrs: &[],
        writable: true,
    },
    Class {
        name: "infraAccPortGrp",
        rn: "accportgrp-{name}",
        parents: &["infraFuncP"],
        attrs: &[a("name", Kind::Name)],
        writable: true,
    },
    Class {
        name: "infraAccBndlGrp",
        rn: "accbundle-{name}",
        parents: &["infraFuncP"],
        attrs: &[
            a("name", Kind::Name),
            d("lagT", Kind::Enum(&["link", "node"]), "link"),
        ],
        writable: true,
    },
    Class {
        name: "infraRsAttEntP",
        rn: "rsattEntP",
        parents: &["infraAccPortGrp", "infraAccBndlGrp"],
        attrs: &[a("tDn", Kind::Dn)],
        writable: true,
    },
    Class {
        name: "infraAccPortP",
        rn: "accportprof-{name}",
        parents: &["infraInfra"],
        attrs: &[a("name", Kind::Name)],
        writable: true,
    },
    Class {
        name: "infraHPortS",
        rn: "hports-{name}-typ-{type}",
        parents: &["infraAccPortP"],
        attrs: &[
            a("name", Kind::Name),
            a("type", Kind::Enum(&["range", "ALL"])),
        ],
        writable: true,
    },
    Class {
        name: "infraPortBlk",
        rn: "portblk-{name}",
        parents: &["infraHPortS"],
        attrs: &[
            a("name", Kind::Name),
            d("fromCard", Kind::Number, "1"),
            d("fromPort", Kind::Number, "1"),
            d("toCard", Kind::Number, "1"),
            d("toPort", Kind::Number, "1"),
        ],
        writable: true,
    },
    Class {
        name: "infraRsAccBaseGrp",
        rn: "rsaccBaseGrp",
        parents: &["infraHPortS"],
        attrs: &[a("tDn", Kind::Dn)],
        writable: true,
    },
    Class {
        name: "infraNodeP",
        rn: "nprof-{name}",
        parents: &["infraInfra"],
        attrs: &[a("name", Kind::Name)],
        writable: true,
    },
    Class {
        name: "infraLeafS",
        rn: "leaves-{name}-typ-{type}",
        parents: &["infraNodeP"],
        attrs: &[
            a("name", Kind::Name),
            a("type", Kind::Enum(&["range", "ALL"])),
        ],
        writable: true,
    },
    Class {
        name: "infraNodeBlk",
        rn: "nodeblk-{name}",
        parents: &["infraLeafS"],
        attrs: &[
            a("name", Kind::Name),
            a("from_", Kind::Number),
            a("to_", Kind::Number),
        ],
        writable: true,
    },
    Class {
        name: "infraRsAccPortP",
        rn: "rsaccPortP-[{tDn}]",
        parents: &["infraNodeP"],
        attrs: &[a("tDn", Kind::Dn)],
        writable: true,
    },
    Class {
        name: "faultInst",
        rn: "fault-{code}",
        parents: &["*"],
        attrs: fault_attrs!(),
        writable: false,
    },
    Class {
        name: "faultDelegate",
        rn: "fd-[{affected}]-fault-{code}",
        parents: &["*"],
        attrs: fault_attrs!(a("affected", Kind::Text)),
        writable: false,
    },
    Class {
        name: "fabricTopology",
        rn: "topology",
        parents: &[],
        attrs: &[],
        writable: false,
    },
    Class {
        name: "fabricPod",
        rn: "pod-{id}",
        parents: &["fabricTopology"],
        attrs: &[a("id", Kind::Text)],
        writable: false,
    },
    Class {
        name: "fabricNode",
        rn: "node-{id}",
        parents: &["fabricPod"],
        attrs: &[
            a("id", Kind::Text),
            a("name", Kind::Text),
            a("role", Kind::Text),
            a("serial", Kind::Text),
            a("model", Kind::Text),
            a("version", Kind::Text),
            a("vendor", Kind::Text),
            a("fabricSt", Kind::Text),
            a("adSt", Kind::Text),
            a("address", Kind::Text),
            a("nodeType", Kind::Text),
        ],
        writable: false,
    },
    Class {
        name: "topSystem",
        rn: "sys",
        parents: &["fabricNode"],
        attrs: &[
            a("id", Kind::Text),
            a("name", Kind::Text),
            a("role", Kind::Text),
            a("address", Kind::Text),
            a("state", Kind::Text),
            a("serial", Kind::Text),
        ],
        writable: false,
    },
    Class {
        name: "l1PhysIf",
        rn: "phys-[{id}]",
        parents: &["topSystem"],
        attrs: &[
            a("id", Kind::Text),
            a("adminSt", Kind::Text),
            a("speed", Kind::Text),
            a("mtu", Kind::Text),
            a("portT", Kind::Text),
            a("usage", Kind::Text),
            a("descr", Kind::Text),
            a("name", Kind::Text),
            a("layer", Kind::Text),
            a("mode", Kind::Text),
        ],
        writable: false,
    },
    Class {
        name: "lldpEntity",
        rn: "lldp",
        parents: &["topSystem"],
        attrs: &[],
        writable: false,
    },
    Class {
        name: "lldpInst",
        rn: "inst",
        parents: &["lldpEntity"],
        attrs: &[],
        writable: false,
    },
    Class {
        name: "lldpIf",
        rn: "if-[{id}]",
        parents: &["lldpInst"],
        attrs: &[a("id", Kind::Text), a("portDesc", Kind::Text)],
        writable: false,
    },
    Class {
        name: "lldpAdjEp",
        rn: "adj-{id}",
        parents: &["lldpIf"],
        attrs: &[
            a("id", Kind::Text),
            a("sysName", Kind::Text),
            a("sysDesc", Kind::Text),
            a("portIdV", Kind::Text),
            a("portDesc", Kind::Text),
            a("chassisIdT", Kind::Text),
            a("chassisIdV", Kind::Text),
            a("mgmtIp", Kind::Text),
            a("mgmtPortMac", Kind::Text),
            a("capability", Kind::Text),
        ],
        writable: false,
    },
    Class {
        name: "fabricPathEpCont",
        rn: "paths-{nodeId}",
        parents: &["fabricPod"],
        attrs: &[a("nodeId", Kind::Text)],
        writable: false,
    },
    Class {
        name: "fabricProtPathEpCont",
        rn: "protpaths-{nodeAId}-{nodeBId}",
        parents: &["fabricPod"],
        attrs: &[a("nodeAId", Kind::Text), a("nodeBId", Kind::Text)],
        writable: false,
    },
    Class {
        name: "fabricExtPathEpCont",
        rn: "extpaths-{nodeId}",
        parents: &["fabricPathEpCont"],
        attrs: &[a("nodeId", Kind::Text)],
        writable: false,
    },
    Class {
        name: "fabricPathEp",
        rn: "pathep-[{name}]",
        parents: &[
            "fabricPathEpCont",
            "fabricProtPathEpCont",
            "fabricExtPathEpCont",
        ],
        attrs: &[
            a("name", Kind::Text),
            a("pathT", Kind::Text),
            a("lagT", Kind::Text),
            a("descr", Kind::Text),
        ],
        writable: false,
    },
];

/// Containers that exist on every APIC and cannot be deleted.
pub const UNDELETABLE: &[&str] = &["polUni", "infraInfra"];

/// Looks a class up by name.
pub fn class(name: &str) -> Option<&'static Class> {
    CLASSES.iter().find(|c| c.name == name)
}

/// Classes that may appear at the root of the tree (no parent).
pub fn roots() -> impl Iterator<Item = &'static Class> {
    CLASSES.iter().filter(|c| c.parents.is_empty())
}

/// Classes that `parent` may contain.
pub fn children_of(parent: &str) -> impl Iterator<Item = &'static Class> + '_ {
    CLASSES.iter().filter(move |c| c.allows_parent(parent))
}
