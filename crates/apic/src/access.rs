//! Which physical domains a path may carry, resolved from the access policies the way the
//! fabric resolves them (reference §5.3): switch profile (`infraNodeP` whose `infraNodeBlk`
//! holds the leaf) → interface profile (`infraRsAccPortP`) → port selector (`infraHPortS`
//! whose `infraPortBlk` holds the port, or whose group is the PC/vPC bundle named by the path)
//! → policy group (`infraRsAccBaseGrp`) → AAEP (`infraRsAttEntP`) → domains (`infraRsDomP`).
//! A vPC is resolved on each of its two leaves. FEX ports hang off FEX profiles and are not
//! resolved here.

use crate::client::ApicClient;
use crate::error::ApicError;
use crate::mo::Mo;
use std::collections::BTreeMap;
use weft_domain::{PathDn, PathKind};

/// The classes of the chain, read in one subtree query of `uni/infra`.
const CLASSES: &str = "infraNodeBlk,infraRsAccPortP,infraHPortS,infraPortBlk,infraRsAccBaseGrp,infraRsAttEntP,infraAttEntityP,infraRsDomP";

/// What a path is on a leaf.
enum Endpoint {
    Port(u32, u32),
    Bundle(String),
}

/// Where a path's leaf does not reach the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gap {
    pub leaf: u16,
    /// The AAEP the port reaches, if any.
    pub aaep: Option<String>,
}

/// The access policies of the fabric, by DN.
pub(crate) struct AccessPolicies {
    mos: BTreeMap<String, Mo>,
}

fn parent(dn: &str) -> Option<String> {
    let rns = weft_domain::split_dn(dn)?;
    (rns.len() > 1).then(|| rns[..rns.len() - 1].join("/"))
}

fn endpoint(path: &PathDn) -> Option<Endpoint> {
    let text = path.to_string();
    let name = text.rsplit_once("/pathep-[")?.1.strip_suffix(']')?;
    match path.kind() {
        PathKind::Port => {
            let mut parts = name.strip_prefix("eth")?.split('/');
            let mut next = || parts.next()?.parse().ok();
            Some(Endpoint::Port(next()?, next()?))
        }
        PathKind::PortChannel | PathKind::Vpc => Some(Endpoint::Bundle(name.to_string())),
        PathKind::Fex | PathKind::FexVpc => None,
    }
}

impl AccessPolicies {
    /// Reads the chain's objects in one query.
    pub(crate) async fn read(client: &ApicClient) -> Result<Self, ApicError> {
        let query = format!("query-target=subtree&target-subtree-class={CLASSES}");
        let mos = client.mo_query("uni/infra", &query).await?;
        Ok(Self {
            mos: mos
                .into_iter()
                .filter_map(|m| Some((m.get("dn")?.to_string(), m)))
                .collect(),
        })
    }

    fn of_class<'a>(&'a self, class: &'a str) -> impl Iterator<Item = (&'a String, &'a Mo)> + 'a {
        self.mos.iter().filter(move |(_, m)| m.class == class)
    }

    fn children<'a>(
        &'a self,
        dn: &'a str,
        class: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Mo)> + 'a {
        self.of_class(class)
            .filter(move |(d, _)| parent(d).as_deref() == Some(dn))
    }

    fn number(mo: &Mo, prop: &str) -> Option<u32> {
        mo.get(prop)?.parse().ok()
    }

    fn target(&self, dn: &str) -> Option<&str> {
        self.mos.get(dn)?.get("tDn")
    }

    /// The policy group a leaf gives `endpoint`.
    fn group(&self, leaf: u16, endpoint: &Endpoint) -> Option<&str> {
        let leaf = u32::from(leaf);
        let switch_profiles = self.of_class("infraNodeBlk").filter_map(|(d, m)| {
            let inside = Self::number(m, "from_")? <= leaf && leaf <= Self::number(m, "to_")?;
            inside.then(|| parent(d).and_then(|s| parent(&s))).flatten()
        });
        let profiles: Vec<String> = switch_profiles
            .flat_map(|p| {
                self.children(&p, "infraRsAccPortP")
                    .filter_map(|(_, m)| m.get("tDn").map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect();
        let selectors: Vec<&String> = profiles
            .iter()
            .flat_map(|p| self.children(p, "infraHPortS").map(|(sel, _)| sel))
            .collect();
        selectors.into_iter().find_map(|sel| {
            let group = self.target(&format!("{sel}/rsaccBaseGrp"))?;
            let applies = match endpoint {
                Endpoint::Port(card, port) => self.children(sel, "infraPortBlk").any(|(_, b)| {
                    let n = |p| Self::number(b, p);
                    let (from, to) = ((n("fromCard"), n("fromPort")), (n("toCard"), n("toPort")));
                    matches!((from, to), ((Some(fc), Some(fp)), (Some(tc), Some(tp)))
                                if (fc, fp) <= (*card, *port) && (*card, *port) <= (tc, tp))
                }),
                Endpoint::Bundle(name) => group == format!("uni/infra/funcprof/accbundle-{name}"),
            };
            applies.then_some(group)
        })
    }

    /// The first leaf of `path` whose AAEP does not carry `domain` (a `uni/phys-...` DN).
    pub(crate) fn gap(&self, path: &PathDn, domain: &str) -> Option<Gap> {
        let endpoint = endpoint(path)?;
        path.leaves().into_iter().find_map(|leaf| {
            let aaep = self
                .group(leaf, &endpoint)
                .and_then(|g| self.target(&format!("{g}/rsattEntP")))
                .filter(|a| self.mos.contains_key(*a));
            let carries = aaep.is_some_and(|a| {
                self.children(a, "infraRsDomP")
                    .any(|(_, m)| m.get("tDn") == Some(domain))
            });
            (!carries).then(|| Gap {
                leaf,
                aaep: aaep.map(str::to_string),
            })
        })
    }
}
