//! Pre-flight: refuse a binding the fabric would reject with F0467, before changing anything.
//! Checks, in order: the EPG exists; its bridge domain resolves (`fvRsBd.state`); it is
//! associated with the physical domain; the domain has a VLAN pool that contains the VLAN;
//! every path exists; each path's leaves reach the domain through their access policies
//! (port → policy group → AAEP → domain); no binding of the EPG on the paths belongs to
//! someone else (`Apic(NotOwned)`, as `apply_bindings` would refuse it); no other EPG uses the
//! VLAN on any of the leaves (by a path binding or a static leaf binding, `fvRsNodeAtt`); no
//! other EPG is untagged/native on the port. Only reads.
//!
//! For a managed EPG (Weft creates it and its domain association with `ensure_epg`) a missing
//! EPG or association is not a failure; the domain, pool, path and leaf checks still run.

use crate::access::AccessPolicies;
use crate::client::ApicClient;
use crate::error::ApicError;
use weft_domain::{BindingMode, Encap, EpgKey, PathDn, VlanId};

/// What is about to be bound.
#[derive(Debug, Clone)]
pub struct PreflightRequest<'a> {
    pub epg: &'a EpgKey,
    pub physical_domain: &'a str,
    pub encap: VlanId,
    pub mode: BindingMode,
    /// Weft creates the EPG and its domain association when absent (`ensure_epg`).
    pub managed: bool,
    pub paths: &'a [PathDn],
}

/// A passed pre-flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreflightReport {
    /// Whether the EPG is already on the APIC (`false` only for a managed EPG still to create).
    pub epg_exists: bool,
}

/// Why a binding would fail; each names the APIC object at fault (a 409 for Weft's API).
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("EPG {epg} does not exist on the APIC")]
    EpgMissing { epg: String },
    #[error("EPG {epg} is not associated with physical domain {domain} (no fvRsDomAtt); the fabric would raise F0467 invalid-vlan")]
    DomainNotAssociated { epg: String, domain: String },
    #[error("EPG {epg} has bridge domain {bd} (fvRsBd state {state:?}), which does not resolve; the EPG would not be deployed")]
    BdUnresolved {
        epg: String,
        /// The BD the relation points at, as the APIC reports it.
        bd: String,
        state: String,
    },
    #[error("physical domain {domain} does not exist")]
    DomainMissing { domain: String },
    #[error("physical domain {domain} has no VLAN pool (infraRsVlanNs)")]
    NoVlanPool { domain: String },
    #[error("VLAN pool {pool} used by {domain} does not exist")]
    VlanPoolMissing { pool: String, domain: String },
    #[error("{encap} is not in VLAN pool {pool}; the fabric would raise F0467 invalid-vlan")]
    VlanNotInPool { encap: String, pool: String },
    #[error("path {path} does not exist in the fabric; the fabric would raise F0467 invalid-path")]
    PathMissing { path: String },
    #[error("path {path} on leaf {leaf} reaches {}, which does not carry physical domain {domain} (no infraRsDomP); the fabric would raise F0467 invalid-path", aaep.as_deref().map_or_else(|| "no AAEP (no port selector, policy group or AAEP)".to_string(), |a| format!("AAEP {a}")))]
    DomainNotOnPath {
        path: String,
        leaf: u16,
        /// The AAEP the port reaches, when it reaches one.
        aaep: Option<String>,
        domain: String,
    },
    #[error("{encap} is already used on leaf {leaf} by binding {binding}; the fabric would raise F0467 encap-already-in-use")]
    EncapInUse {
        encap: String,
        leaf: u16,
        binding: String,
    },
    #[error("port {path} already has an untagged/native EPG: {binding}")]
    NativeInUse { path: String, binding: String },
    #[error(transparent)]
    Apic(#[from] ApicError),
}

impl PreflightError {
    /// DN of the APIC object at fault (`None` for transport errors).
    pub fn object_dn(&self) -> Option<&str> {
        use PreflightError::*;
        match self {
            EpgMissing { epg } | DomainNotAssociated { epg, .. } => Some(epg),
            DomainMissing { domain } | NoVlanPool { domain } => Some(domain),
            VlanPoolMissing { pool, .. } | VlanNotInPool { pool, .. } => Some(pool),
            PathMissing { path } => Some(path),
            BdUnresolved { bd, .. } => Some(bd),
            DomainNotOnPath { aaep, path, .. } => Some(aaep.as_deref().unwrap_or(path)),
            EncapInUse { binding, .. } | NativeInUse { binding, .. } => Some(binding),
            Apic(_) => None,
        }
    }
}

/// The leaves a binding's `tDn` lands on: a path's (both for a vPC), or the node of a static
/// leaf binding (`topology/pod-P/node-N`).
fn target_leaves(tdn: &str) -> Vec<u16> {
    if let Ok(path) = PathDn::parse(tdn) {
        return path.leaves();
    }
    tdn.rsplit_once("/node-")
        .and_then(|(_, n)| n.parse().ok())
        .into_iter()
        .collect()
}

fn or_of(class: &str, prop: &str, values: &[String]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|v| format!("eq({class}.{prop},\"{v}\")"))
        .collect();
    format!("or({})", items.join(","))
}

impl ApicClient {
    /// The static encap blocks of physical domain `name`'s VLAN pool (physDomP →
    /// infraRsVlanNs → fvnsVlanInstP → fvnsEncapBlk), with the pool's DN: two reads.
    pub async fn domain_vlan_blocks(
        &self,
        name: &str,
    ) -> Result<(String, Vec<(VlanId, VlanId)>), PreflightError> {
        let domain = format!("uni/phys-{name}");
        let dom = self
            .get_mo(
                &domain,
                "rsp-subtree=children&rsp-subtree-class=infraRsVlanNs",
            )
            .await?
            .ok_or_else(|| PreflightError::DomainMissing {
                domain: domain.clone(),
            })?;
        let pool = dom
            .children_of("infraRsVlanNs")
            .find_map(|c| c.get("tDn"))
            .ok_or_else(|| PreflightError::NoVlanPool {
                domain: domain.clone(),
            })?
            .to_string();
        let pool_mo = self
            .get_mo(&pool, "rsp-subtree=children&rsp-subtree-class=fvnsEncapBlk")
            .await?
            .ok_or_else(|| PreflightError::VlanPoolMissing {
                pool: pool.clone(),
                domain: domain.clone(),
            })?;
        let blocks = pool_mo
            .children_of("fvnsEncapBlk")
            .filter_map(|b| {
                let vlan = |k| b.get(k).and_then(|e| Encap::parse(e).ok()).map(Encap::vlan);
                Some((vlan("from")?, vlan("to")?))
            })
            .collect();
        Ok((pool, blocks))
    }

    /// Runs every check; `Ok(())` means the binding can be created without an F0467.
    #[tracing::instrument(skip(self, req), fields(epg = %req.epg, encap = %req.encap.encap()))]
    pub async fn preflight(
        &self,
        req: &PreflightRequest<'_>,
    ) -> Result<PreflightReport, PreflightError> {
        let epg_dn = req.epg.dn();
        let domain = format!("uni/phys-{}", req.physical_domain);
        let epg = self
            .get_mo(
                &epg_dn,
                "rsp-subtree=children&rsp-subtree-class=fvRsDomAtt,fvRsBd",
            )
            .await?;
        // Managed or not, an existing EPG must reach its bridge domain (a managed one still to
        // create gets its BD from `ensure_epg`).
        if let Some(rsbd) = epg.as_ref().and_then(|e| e.children_of("fvRsBd").next()) {
            let state = rsbd.get("state").unwrap_or_default();
            if state != "formed" {
                let name = rsbd.get("tnFvBDName").unwrap_or_default();
                return Err(PreflightError::BdUnresolved {
                    epg: epg_dn.clone(),
                    bd: rsbd.get("tDn").map_or_else(
                        || format!("uni/tn-{}/BD-{name}", req.epg.tenant),
                        str::to_string,
                    ),
                    state: state.to_string(),
                });
            }
        }
        let report = PreflightReport {
            epg_exists: epg.is_some(),
        };
        let associated = epg.as_ref().is_some_and(|e| {
            e.children_of("fvRsDomAtt")
                .any(|c| c.get("tDn") == Some(&domain))
        });
        match (epg, associated, req.managed) {
            (_, true, _) | (_, false, true) => {}
            (None, false, false) => return Err(PreflightError::EpgMissing { epg: epg_dn }),
            (Some(_), false, false) => {
                return Err(PreflightError::DomainNotAssociated {
                    epg: epg_dn,
                    domain,
                })
            }
        }
        let (pool, blocks) = self.domain_vlan_blocks(req.physical_domain).await?;
        let in_pool = blocks
            .iter()
            .any(|(f, t)| *f <= req.encap && req.encap <= *t);
        if !in_pool {
            return Err(PreflightError::VlanNotInPool {
                encap: req.encap.encap().to_string(),
                pool,
            });
        }
        if req.paths.is_empty() {
            return Ok(report);
        }
        let dns: Vec<String> = req.paths.iter().map(PathDn::to_string).collect();
        let found = self
            .class_all("fabricPathEp", Some(&or_of("fabricPathEp", "dn", &dns)))
            .await?;
        if let Some(missing) = dns
            .iter()
            .find(|d| !found.iter().any(|m| m.get("dn") == Some(d.as_str())))
        {
            return Err(PreflightError::PathMissing {
                path: missing.clone(),
            });
        }
        let access = AccessPolicies::read(self).await?;
        for path in req.paths {
            if let Some(gap) = access.gap(path, &domain) {
                return Err(PreflightError::DomainNotOnPath {
                    path: path.to_string(),
                    leaf: gap.leaf,
                    aaep: gap.aaep,
                    domain,
                });
            }
        }
        if report.epg_exists {
            self.require_bindings_owned(req.epg, req.paths).await?;
        }
        let ours: Vec<u16> = req.paths.iter().flat_map(PathDn::leaves).collect();
        // Static path bindings and static leaf bindings both hold the VLAN on their leaves.
        for class in ["fvRsPathAtt", "fvRsNodeAtt"] {
            let filter = format!("eq({class}.encap,\"{}\")", req.encap.encap());
            for other in self.class_all(class, Some(&filter)).await? {
                let dn = other.get("dn").unwrap_or_default();
                if EpgKey::from_dn(dn).as_ref() == Some(req.epg) {
                    continue;
                }
                let leaves = other.get("tDn").map(target_leaves).unwrap_or_default();
                if let Some(leaf) = leaves.into_iter().find(|l| ours.contains(l)) {
                    return Err(PreflightError::EncapInUse {
                        encap: req.encap.encap().to_string(),
                        leaf,
                        binding: dn.to_string(),
                    });
                }
            }
        }
        if req.mode != BindingMode::Regular {
            let filter = format!(
                "and({},ne(fvRsPathAtt.mode,\"regular\"))",
                or_of("fvRsPathAtt", "tDn", &dns)
            );
            for other in self.class_all("fvRsPathAtt", Some(&filter)).await? {
                let dn = other.get("dn").unwrap_or_default();
                if EpgKey::from_dn(dn).as_ref() != Some(req.epg) {
                    let path = other.get("tDn").unwrap_or_default().to_string();
                    return Err(PreflightError::NativeInUse {
                        path,
                        binding: dn.to_string(),
                    });
                }
            }
        }
        Ok(report)
    }
}
