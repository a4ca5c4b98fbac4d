//! F0467 faults on static path and leaf bindings (`fvRsPathAtt`, `fvRsNodeAtt`), raised after a
//! successful write the way the fabric raises them (reference §9.1-9.3): `invalid-path`,
//! `invalid-vlan`, `encap-already-in-use` (a VLAN belongs to the first EPG that uses it on a
//! leaf, through either kind of binding).
//! They are placed where the APIC places them (reference §6.6), one per leaf (both leaves of a
//! vPC): a `faultInst` under the leaf's policy element
//! (`topology/pod-P/node-N/local/svc-policyelem-id-0/uni/epp/fv-[<epg>]/node-N/stpathatt-[<port>]/nwissues/fault-F0467`),
//! mirrored by a `faultDelegate` under the EPG (`fd-[<faulted object>]-fault-F0467`); nothing
//! under the binding itself.

use crate::access;
use crate::classes;
use crate::dn;
use crate::tree::Mit;
use crate::validate::parse_vlan;
use std::collections::{BTreeMap, HashMap};

const RULE: &str = "fv-nw-issues-config-failed";

/// Static bindings: on a path (port, vPC, FEX port) and on a whole leaf.
const BINDINGS: &[&str] = &["fvRsPathAtt", "fvRsNodeAtt"];

/// The leaves a path DN lands on (both for a vPC).
pub fn leaves_of(path: &str) -> Vec<String> {
    let Ok(chain) = dn::resolve(path) else {
        return Vec::new();
    };
    for (class, props) in &chain {
        match class.name {
            "fabricProtPathEpCont" => {
                return [props.get("nodeAId"), props.get("nodeBId")]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect()
            }
            "fabricPathEpCont" => return props.get("nodeId").cloned().into_iter().collect(),
            // A static leaf binding (`fvRsNodeAtt`) points at the node itself.
            "fabricNode" => return props.get("id").cloned().into_iter().collect(),
            _ => {}
        }
    }
    Vec::new()
}

fn port_name(path: &str) -> String {
    dn::last_rn(path)
        .and_then(|rn| rn.strip_prefix("pathep-["))
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(path)
        .to_string()
}

/// Whether the EPG's domains' VLAN pools contain `vlan`.
fn vlan_allowed(mit: &Mit, epg: &str, vlan: u16) -> bool {
    mit.children(epg)
        .filter(|(_, m)| m.class.name == "fvRsDomAtt")
        .filter_map(|(_, m)| m.attrs.get("tDn"))
        .filter_map(|dom| mit.get(&format!("{dom}/rsvlanNs")))
        .filter_map(|rs| rs.attrs.get("tDn"))
        .filter(|pool| mit.contains(pool))
        .flat_map(|pool| {
            mit.children(pool)
                .map(|(_, m)| m.clone())
                .collect::<Vec<_>>()
        })
        .filter(|m| m.class.name == "fvnsEncapBlk")
        .any(|blk| {
            let from = blk.attrs.get("from").and_then(|v| parse_vlan(v));
            let to = blk.attrs.get("to").and_then(|v| parse_vlan(v));
            matches!((from, to), (Some(f), Some(t)) if f <= vlan && vlan <= t)
        })
}

fn epg_label(epg: &str) -> String {
    let names: Vec<String> = dn::resolve(epg)
        .map(|c| {
            c.iter()
                .filter_map(|(_, p)| p.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    names.join(":")
}

/// One F0467 a binding raises on one leaf.
struct Raised {
    leaf: String,
    qualifier: &'static str,
    descr: String,
}

/// The faults of one binding, leaf by leaf (a vPC is deployed, or not, on each of its two
/// leaves); `owners` holds who has which VLAN on which leaf, first binding first.
fn check_binding(
    mit: &Mit,
    epg: &str,
    path: &str,
    encap: &str,
    owners: &mut HashMap<(String, u16), String>,
) -> Vec<Raised> {
    let leaves = leaves_of(path);
    let head = |node: &str| {
        format!(
            "Configuration failed for {epg} node {node} {}",
            port_name(path)
        )
    };
    let path_ok = mit.get(path).is_some_and(|m| match m.class.name {
        "fabricPathEp" => true,
        "fabricNode" => m.attrs.get("role").is_some_and(|r| r == "leaf"),
        _ => false,
    });
    if !path_ok {
        let node = leaves.first().map_or("0", String::as_str);
        return vec![Raised {
            leaf: node.to_string(),
            qualifier: "invalid-path",
            descr: format!("{} due to Invalid Path Configuration, debug message: invalid-path: {path} :Path does not exist;", head(node)),
        }];
    }
    let vlan = parse_vlan(encap).filter(|v| vlan_allowed(mit, epg, *v));
    let Some(vlan) = vlan else {
        return leaves.iter().map(|l| Raised {
            leaf: l.clone(),
            qualifier: "invalid-vlan",
            descr: format!("{} due to Invalid VLAN Configuration, debug message: invalid-vlan: {encap} :Either the EpG is not associated with a domain or the domain does not have this vlan assigned to it;", head(l)),
        }).collect();
    };
    let domains: Vec<String> = mit
        .children(epg)
        .filter(|(_, m)| m.class.name == "fvRsDomAtt")
        .filter_map(|(_, m)| m.attrs.get("tDn").cloned())
        .collect();
    let mut raised = Vec::new();
    for leaf in &leaves {
        let carried = access::domains_on(mit, path, leaf);
        if carried.is_some_and(|c| !c.iter().any(|d| domains.contains(d))) {
            raised.push(Raised {
                leaf: leaf.clone(),
                qualifier: "invalid-path",
                descr: format!("{} due to Invalid Path Configuration, debug message: invalid-path: Either the EpG is not associated with a domain or the domain does not have this interface assigned to it;", head(leaf)),
            });
            continue;
        }
        match owners.get(&(leaf.clone(), vlan)).filter(|o| *o != epg) {
            Some(owner) => raised.push(Raised {
                leaf: leaf.clone(),
                qualifier: "encap-already-in-use",
                descr: format!("{} due to Encap Already Used in Another EPG, debug message: encap-already-in-use: Encap ({encap}) is already in use by {};", head(leaf), epg_label(owner)),
            }),
            None => {
                owners.insert((leaf.clone(), vlan), epg.to_string());
            }
        }
    }
    raised
}

/// Recomputes all F0467 faults of static bindings; unchanged faults keep their timestamps.
pub fn recompute(mit: &mut Mit, now: &str) {
    let mut bindings: Vec<(u64, String, String, String)> = mit
        .iter()
        .filter(|(_, m)| BINDINGS.contains(&m.class.name))
        .map(|(d, m)| {
            let attr = |k: &str| m.attrs.get(k).cloned().unwrap_or_default();
            (m.seq, d.clone(), attr("tDn"), attr("encap"))
        })
        .collect();
    bindings.sort();
    let mut owners: HashMap<(String, u16), String> = HashMap::new();
    // fault DN → (EPG, qualifier, descr)
    let mut wanted: BTreeMap<String, (String, &'static str, String)> = BTreeMap::new();
    for (_, binding, path, encap) in bindings {
        let Some(epg) = dn::parent(&binding) else {
            continue;
        };
        for f in check_binding(mit, &epg, &path, &encap, &mut owners) {
            wanted.insert(
                fault_dn(&epg, &path, &f.leaf),
                (epg.clone(), f.qualifier, f.descr),
            );
        }
    }
    let delegates: BTreeMap<String, String> = wanted
        .iter()
        .map(|(fault, (epg, _, _))| (delegate_dn(epg, fault), fault.clone()))
        .collect();
    let stale: Vec<String> = mit
        .iter()
        .filter(|(d, m)| {
            let raised = match m.class.name {
                "faultInst" => Some(d.as_str()),
                "faultDelegate" => delegates.get(*d).map(String::as_str),
                _ => None,
            };
            m.attrs.get("rule").map(String::as_str) == Some(RULE)
                && raised.is_none_or(|f| {
                    wanted
                        .get(f)
                        .is_none_or(|(_, _, descr)| m.attrs.get("descr") != Some(descr))
                })
        })
        .map(|(d, _)| d.clone())
        .collect();
    for d in stale {
        mit.remove_subtree(&d);
    }
    let (Some(inst), Some(delegate)) =
        (classes::class("faultInst"), classes::class("faultDelegate"))
    else {
        return;
    };
    for (fault, (epg, qual, descr)) in wanted {
        if mit.contains(&fault) {
            continue;
        }
        let debug = descr.split("debug message: ").nth(1).unwrap_or_default();
        let mut attrs: BTreeMap<String, String> = [
            ("code", "F0467".to_string()),
            ("severity", "minor".into()),
            ("origSeverity", "minor".into()),
            ("highestSeverity", "minor".into()),
            ("lc", "raised".into()),
            ("cause", "configuration-failed".into()),
            ("changeSet", format!("configQual:{qual}, configSt:failed-to-apply, debugMessage:{debug}, temporaryError:no")),
            ("descr", descr.clone()),
            ("rule", RULE.into()),
            ("type", "config".into()),
            ("created", now.into()),
            ("lastTransition", now.into()),
            ("ack", "no".into()),
            ("delegated", "no".into()),
            ("domain", "tenant".into()),
            ("subject", "management".into()),
            ("occur", "1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        mit.put(fault.clone(), inst, attrs.clone());
        attrs.insert("delegated".into(), "yes".into());
        attrs.insert("affected".into(), dn::parent(&fault).unwrap_or_default());
        mit.put(delegate_dn(&epg, &fault), delegate, attrs);
    }
}

/// Where the leaf raises a binding's fault (reference §6.6): under the policy element of the
/// leaf, `.../uni/epp/fv-[<epg>]/node-N/stpathatt-[<port or bundle>]/nwissues/fault-F0467`.
/// A static leaf binding's fault sits under `.../node-N/nwissues` (own placement: the
/// reference shows only path bindings).
pub(crate) fn fault_dn(epg: &str, path: &str, leaf: &str) -> String {
    let pod = path
        .strip_prefix("topology/pod-")
        .and_then(|r| r.split('/').next())
        .unwrap_or("1");
    let issue = match dn::last_rn(path).and_then(|rn| rn.strip_prefix("pathep-")) {
        Some(name) => format!("/stpathatt-{name}"),
        None => String::new(),
    };
    format!("topology/pod-{pod}/node-{leaf}/local/svc-policyelem-id-0/uni/epp/fv-[{epg}]/node-{leaf}{issue}/nwissues/fault-F0467")
}

/// The mirror of a fault under the EPG, `fd-[<faulted object>]-fault-F0467`.
fn delegate_dn(epg: &str, fault: &str) -> String {
    let affected = dn::parent(fault).unwrap_or_default();
    format!("{epg}/fd-[{affected}]-fault-F0467")
}
