//! Which physical domains a leaf port may carry, read from the access policies as the fabric
//! reads them (reference §5.3): switch profile (`infraNodeP` with an `infraNodeBlk` holding the
//! leaf) → interface profile (`infraRsAccPortP`) → port selector (`infraHPortS` with an
//! `infraPortBlk` holding the port, or whose group is the vPC's bundle) → policy group
//! (`infraRsAccBaseGrp`) → AAEP (`infraRsAttEntP`) → domains (`infraRsDomP`).

use crate::dn;
use crate::tree::Mit;

/// What a path is on one leaf: a front-panel port or a bundle policy group (PC/vPC).
enum Endpoint {
    Port(u32, u32),
    Bundle(String),
}

fn endpoint(path: &str) -> Option<Endpoint> {
    let chain = dn::resolve(path).ok()?;
    let (class, props) = chain.last()?;
    if class.name != "fabricPathEp" {
        return None;
    }
    let parent = chain.get(chain.len().checked_sub(2)?)?.0.name;
    let name = props.get("name")?;
    match (parent, name.strip_prefix("eth")) {
        // FEX ports hang off FEX profiles, which the simulator does not model.
        ("fabricExtPathEpCont", _) => None,
        ("fabricPathEpCont", Some(port)) => {
            let mut parts = port.split('/').map(|p| p.parse::<u32>().ok());
            Some(Endpoint::Port(parts.next()??, parts.next()??))
        }
        _ => Some(Endpoint::Bundle(name.clone())),
    }
}

fn number(mit: &Mit, dn: &str, prop: &str) -> Option<u32> {
    mit.get(dn)?.attrs.get(prop)?.parse().ok()
}

fn target(mit: &Mit, dn: &str) -> Option<String> {
    mit.get(dn)?.attrs.get("tDn").cloned()
}

/// Port selectors that apply to `leaf`.
fn selectors(mit: &Mit, leaf: u32) -> Vec<String> {
    let blocks = mit.iter().filter(|(d, m)| {
        m.class.name == "infraNodeBlk"
            && number(mit, d, "from_").is_some_and(|f| f <= leaf)
            && number(mit, d, "to_").is_some_and(|t| leaf <= t)
    });
    let profiles: Vec<String> = blocks
        .filter_map(|(d, _)| dn::parent(d).and_then(|s| dn::parent(&s)))
        .flat_map(|nprof| {
            mit.children(&nprof)
                .filter(|(_, m)| m.class.name == "infraRsAccPortP")
                .filter_map(|(_, m)| m.attrs.get("tDn").cloned())
                .collect::<Vec<_>>()
        })
        .collect();
    profiles
        .iter()
        .flat_map(|p| {
            mit.children(p)
                .filter(|(_, m)| m.class.name == "infraHPortS")
                .map(|(d, _)| d.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn covers(mit: &Mit, selector: &str, card: u32, port: u32) -> bool {
    mit.children(selector)
        .filter(|(_, m)| m.class.name == "infraPortBlk")
        .any(|(d, _)| {
            let n = |p| number(mit, d, p);
            let from = (n("fromCard"), n("fromPort"));
            let to = (n("toCard"), n("toPort"));
            matches!((from, to), ((Some(fc), Some(fp)), (Some(tc), Some(tp)))
                if (fc, fp) <= (card, port) && (card, port) <= (tc, tp))
        })
}

/// The domains `path` may carry on `leaf`; `None` where the simulator does not model the
/// access policies (FEX ports, static leaf bindings), so nothing is checked there.
pub fn domains_on(mit: &Mit, path: &str, leaf: &str) -> Option<Vec<String>> {
    let endpoint = endpoint(path)?;
    let leaf: u32 = leaf.parse().ok()?;
    let bundle_dn = |name: &str| format!("uni/infra/funcprof/accbundle-{name}");
    let group = selectors(mit, leaf).into_iter().find_map(|sel| {
        let group = target(mit, &format!("{sel}/rsaccBaseGrp"))?;
        let applies = match &endpoint {
            Endpoint::Port(card, port) => covers(mit, &sel, *card, *port),
            Endpoint::Bundle(name) => group == bundle_dn(name),
        };
        applies.then_some(group)
    });
    let aaep = group
        .and_then(|g| target(mit, &format!("{g}/rsattEntP")))
        .filter(|a| mit.contains(a));
    Some(aaep.map_or_else(Vec::new, |a| {
        mit.children(&a)
            .filter(|(_, m)| m.class.name == "infraRsDomP")
            .filter_map(|(_, m)| m.attrs.get("tDn").cloned())
            .collect()
    }))
}
