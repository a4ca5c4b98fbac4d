//! The operations Weft's workflows need: managed EPGs, bindings, their faults, reconciliation reads.

use crate::client::ApicClient;
use crate::error::ApicError;
use crate::mo::Mo;
use crate::model::{Binding, Fault, ManagedEpg, OwnedBinding, OWNER_ANNOTATION};
use std::collections::HashSet;
use weft_domain::{EpgKey, PathDn};

/// Fails unless `mo` carries Weft's annotation.
fn require_owned(dn: &str, mo: &Mo) -> Result<(), ApicError> {
    match mo.get("annotation") {
        Some(OWNER_ANNOTATION) => Ok(()),
        other => Err(ApicError::NotOwned {
            dn: dn.to_string(),
            annotation: other.unwrap_or_default().to_string(),
        }),
    }
}

impl ApicClient {
    /// Whether an object `{prefix}{name}` of `class` exists in the tenant or in `common`
    /// (where a relation by name resolves), in one class query.
    async fn resolvable(
        &self,
        tenant_dn: &str,
        class: &str,
        prefix: &str,
        name: &str,
    ) -> Result<bool, ApicError> {
        let filter = format!("eq({class}.name,\"{name}\")");
        let wanted = [
            format!("{tenant_dn}/{prefix}{name}"),
            format!("uni/tn-common/{prefix}{name}"),
        ];
        Ok(self
            .class_all(class, Some(&filter))
            .await?
            .iter()
            .any(|mo| mo.get("dn").is_some_and(|d| wanted.iter().any(|w| w == d))))
    }

    /// Makes sure a `managed` EPG exists with its BD relation and physical-domain association,
    /// in one POST. Tenant and AP are created (and marked as Weft's) only if missing; existing
    /// ones are not modified. An existing EPG must be Weft's. A bridge domain found in neither
    /// the tenant nor `common` is created in the same POST (marked as Weft's, on `m.vrf`, itself
    /// created when missing), so the EPG's `fvRsBd` resolves (reference §10 D).
    #[tracing::instrument(skip(self), fields(epg = %m.epg))]
    pub async fn ensure_epg(&self, m: &ManagedEpg) -> Result<(), ApicError> {
        let epg = &m.epg;
        let tenant_dn = format!("uni/tn-{}", epg.tenant);
        let ap_dn = format!("{tenant_dn}/ap-{}", epg.app);
        let has_tenant = self.get_mo(&tenant_dn, "").await?.is_some();
        let has_ap = has_tenant && self.get_mo(&ap_dn, "").await?.is_some();
        let existing = if has_ap {
            self.get_mo(&epg.dn(), "").await?
        } else {
            None
        };
        if let Some(mo) = &existing {
            require_owned(&epg.dn(), mo)?;
        }
        let mark = |mo: Mo, create: bool| {
            if create {
                mo.attr("annotation", OWNER_ANNOTATION)
            } else {
                mo
            }
        };
        let epg_mo = Mo::new("fvAEPg")
            .attr("name", epg.epg.as_str())
            .attr("annotation", OWNER_ANNOTATION)
            .child(
                Mo::new("fvRsBd")
                    .attr("tnFvBDName", &m.bridge_domain)
                    .attr("annotation", OWNER_ANNOTATION),
            )
            .child(
                Mo::new("fvRsDomAtt")
                    .attr("tDn", format!("uni/phys-{}", m.physical_domain))
                    .attr("instrImedcy", "immediate")
                    .attr("resImedcy", "immediate")
                    .attr("annotation", OWNER_ANNOTATION),
            );
        let ap = mark(Mo::new("fvAp").attr("name", epg.app.as_str()), !has_ap).child(epg_mo);
        let mut tenant = mark(
            Mo::new("fvTenant").attr("name", epg.tenant.as_str()),
            !has_tenant,
        );
        if !self
            .resolvable(&tenant_dn, "fvBD", "BD-", &m.bridge_domain)
            .await?
        {
            if !self.resolvable(&tenant_dn, "fvCtx", "ctx-", &m.vrf).await? {
                tenant = tenant.child(mark(Mo::new("fvCtx").attr("name", &m.vrf), true));
            }
            let bd = Mo::new("fvBD")
                .attr("name", &m.bridge_domain)
                .child(Mo::new("fvRsCtx").attr("tnFvCtxName", &m.vrf));
            tenant = tenant.child(mark(bd, true));
        }
        let tenant = tenant.child(ap);
        self.post_mo("uni", &tenant).await
    }

    /// Fails with `NotOwned` when a binding of `epg` on one of `paths` exists without Weft's
    /// annotation: one DN-scoped class query for the whole batch, never one GET per binding.
    pub(crate) async fn require_bindings_owned(
        &self,
        epg: &EpgKey,
        paths: &[PathDn],
    ) -> Result<(), ApicError> {
        let targets: HashSet<String> = paths.iter().map(|p| Binding::dn(epg, p)).collect();
        for mo in self.class_under(&epg.dn(), "fvRsPathAtt", None).await? {
            let dn = mo.get("dn").unwrap_or_default();
            if targets.contains(dn) {
                require_owned(dn, &mo)?;
            }
        }
        Ok(())
    }

    /// Creates or updates all `bindings` of one EPG in a single POST. The EPG must exist
    /// (`status: modified`), so a missing EPG is an error rather than silently created.
    /// A binding already on one of the paths that is not Weft's (hand-made, another
    /// orchestrator's) refuses the whole batch with `NotOwned` before anything is posted.
    #[tracing::instrument(skip(self, bindings), fields(epg = %epg, count = bindings.len()))]
    pub async fn apply_bindings(
        &self,
        epg: &EpgKey,
        bindings: &[Binding],
    ) -> Result<(), ApicError> {
        if bindings.is_empty() {
            return Ok(());
        }
        let paths: Vec<PathDn> = bindings.iter().map(|b| b.path.clone()).collect();
        self.require_bindings_owned(epg, &paths).await?;
        let root = bindings.iter().fold(
            Mo::new("fvAEPg")
                .attr("dn", epg.dn())
                .attr("status", "modified"),
            |mo, b| mo.child(b.to_mo()),
        );
        self.post_mo(&epg.dn(), &root).await
    }

    /// Removes Weft's bindings of `epg` on `paths` in one POST (the EPG with a child
    /// `status: deleted` per binding, reference §4.5 and §5.4), after one DN-scoped class query: an
    /// absent binding needs nothing, and one that exists without Weft's annotation is never
    /// touched and is returned, so the caller can forget it. Nothing to remove, no POST.
    #[tracing::instrument(skip(self, paths), fields(epg = %epg, count = paths.len()))]
    pub async fn delete_bindings(
        &self,
        epg: &EpgKey,
        paths: &[PathDn],
    ) -> Result<Vec<PathDn>, ApicError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let existing = self.class_under(&epg.dn(), "fvRsPathAtt", None).await?;
        let (mut ours, mut foreign) = (Vec::new(), Vec::new());
        for path in paths {
            let dn = Binding::dn(epg, path);
            match existing.iter().find(|mo| mo.get("dn") == Some(dn.as_str())) {
                None => {}
                Some(mo) if mo.get("annotation") == Some(OWNER_ANNOTATION) => ours.push(path),
                Some(_) => foreign.push(path.clone()),
            }
        }
        if !ours.is_empty() {
            let root = ours.iter().fold(
                Mo::new("fvAEPg")
                    .attr("dn", epg.dn())
                    .attr("status", "modified"),
                |mo, path| {
                    mo.child(
                        Mo::new("fvRsPathAtt")
                            .attr("tDn", path.to_string())
                            .attr("status", "deleted"),
                    )
                },
            );
            self.post_mo(&epg.dn(), &root).await?;
        }
        Ok(foreign)
    }

    /// Removes one binding if it is Weft's; an absent binding is not an error.
    #[tracing::instrument(skip(self), fields(epg = %epg, path = %path))]
    pub async fn delete_binding(&self, epg: &EpgKey, path: &PathDn) -> Result<(), ApicError> {
        let dn = Binding::dn(epg, path);
        match self.get_mo(&dn, "").await? {
            None => Ok(()),
            Some(mo) => {
                require_owned(&dn, &mo)?;
                self.delete_mo(&dn).await
            }
        }
    }

    /// Every static path binding of the fabric (paginated class query), each with whether it
    /// carries Weft's annotation: the reconciler repairs Weft's and reports the others only
    /// when they block one of Weft's.
    pub async fn list_path_bindings(&self) -> Result<Vec<(OwnedBinding, bool)>, ApicError> {
        let mos = self.class_all("fvRsPathAtt", None).await?;
        Ok(mos
            .iter()
            .filter_map(|mo| {
                let owned = mo.get("annotation") == Some(OWNER_ANNOTATION);
                OwnedBinding::from_mo(mo).map(|b| (b, owned))
            })
            .collect())
    }

    /// Every F0467-style binding fault of the fabric (one paginated class query of the
    /// `faultDelegate`s EPGs carry), with the EPG and the path name it names (the part after
    /// `stpathatt-`, e.g. `[eth1/1]`), for matching against bindings with [`fault_on`].
    pub async fn binding_fault_delegates(&self) -> Result<Vec<(EpgKey, String, Fault)>, ApicError> {
        let mos = self.class_all("faultDelegate", None).await?;
        Ok(mos
            .iter()
            .filter_map(|d| {
                let dn = d.get("dn")?;
                let epg = EpgKey::from_dn(dn)?;
                let affected = d.get("affected")?;
                let (node, name) = stpathatt(affected)?;
                Some((
                    epg.clone(),
                    name.to_string(),
                    Fault::from_mo(d, &epg.dn(), Some(node))?,
                ))
            })
            .collect())
    }

    /// Faults raised for one binding (F0467 and friends), one per leaf it failed on. A leaf
    /// raises them in its `epp` tree, not under the binding; each is mirrored by a
    /// `faultDelegate` under the EPG whose `affected` object is the binding's
    /// `.../node-N/stpathatt-[<port or bundle>]/nwissues` (reference §6.6): one read of the
    /// EPG's delegates.
    pub async fn binding_faults(
        &self,
        epg: &EpgKey,
        path: &PathDn,
    ) -> Result<Vec<Fault>, ApicError> {
        let delegates = self
            .mo_query(
                &epg.dn(),
                "query-target=children&target-subtree-class=faultDelegate",
            )
            .await?;
        Ok(delegates
            .iter()
            .filter_map(|d| {
                let (node, name) = stpathatt(d.get("affected")?)?;
                fault_on(path, name, Some(node))
                    .then(|| Fault::from_mo(d, &epg.dn(), Some(node)))
                    .flatten()
            })
            .collect())
    }

    /// Every binding marked `orchestrator:weft`, fabric-wide (paginated class query).
    pub async fn list_owned_bindings(&self) -> Result<Vec<OwnedBinding>, ApicError> {
        let filter = format!("eq(fvRsPathAtt.annotation,\"{OWNER_ANNOTATION}\")");
        let mos = self.class_all("fvRsPathAtt", Some(&filter)).await?;
        Ok(mos
            .iter()
            .filter_map(|mo| {
                let parsed = OwnedBinding::from_mo(mo);
                if parsed.is_none() {
                    tracing::warn!(
                        dn = mo.get("dn").unwrap_or_default(),
                        "skipping unparsable fvRsPathAtt"
                    );
                }
                parsed
            })
            .collect())
    }
}

/// The leaf and path name of a fault's `affected` object
/// `.../node-N/stpathatt-<name>/nwissues`.
fn stpathatt(affected: &str) -> Option<(u16, &str)> {
    let rest = affected.strip_suffix("/nwissues")?;
    let (head, name) = rest.rsplit_once("/stpathatt-")?;
    let node = head.rsplit_once("/node-")?.1.parse().ok()?;
    Some((node, name))
}

/// Whether a fault delegate's path name and leaf (from [`ApicClient::binding_fault_delegates`])
/// concern `path`: same port or bundle name, on one of its leaves.
pub fn fault_on(path: &PathDn, name: &str, node: Option<u16>) -> bool {
    let text = path.to_string();
    let own = text.rsplit_once("/pathep-").map_or("", |(_, n)| n);
    own == name && node.is_some_and(|n| path.leaves().contains(&n))
}
