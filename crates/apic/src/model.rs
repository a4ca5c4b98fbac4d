//! Typed APIC objects Weft works with: EPGs, VLAN encaps, path DNs, static bindings, faults.

use crate::mo::Mo;
use weft_domain::{BindingMode, Encap, EpgKey, Immediacy, PathDn, VlanId};

/// The ownership marker on everything Weft creates (reference §4.4).
pub const OWNER_ANNOTATION: &str = "orchestrator:weft";

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
    pub fn dn(epg: &EpgKey, path: &PathDn) -> String {
        format!("{}/{}", epg.dn(), Self::rn(path))
    }

    /// The MO Weft posts, marked as Weft's.
    pub fn to_mo(&self) -> Mo {
        Mo::new("fvRsPathAtt")
            .attr("tDn", self.path.to_string())
            .attr("encap", self.encap.encap().to_string())
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
    pub epg: EpgKey,
    /// The raw `tDn`; see [`OwnedBinding::path`].
    pub tdn: String,
    pub encap: Option<VlanId>,
    pub mode: Option<BindingMode>,
    pub immediacy: Option<Immediacy>,
}

impl OwnedBinding {
    pub fn path(&self) -> Option<PathDn> {
        PathDn::parse(&self.tdn).ok()
    }

    pub(crate) fn from_mo(mo: &Mo) -> Option<Self> {
        let dn = mo.get("dn")?.to_string();
        Some(Self {
            epg: EpgKey::from_dn(&dn)?,
            tdn: mo.get("tDn")?.to_string(),
            encap: mo
                .get("encap")
                .and_then(|e| Encap::parse(e).ok())
                .map(Encap::vlan),
            mode: mo.get("mode").and_then(|m| BindingMode::parse(m).ok()),
            immediacy: mo.get("instrImedcy").and_then(|i| Immediacy::parse(i).ok()),
            dn,
        })
    }
}

/// An EPG Weft creates and owns (`managed`), with its BD and physical domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManagedEpg {
    pub epg: EpgKey,
    /// Resolved in the EPG's tenant, then in `common`; created in the tenant when in neither.
    pub bridge_domain: String,
    pub physical_domain: String,
    /// The VRF of the bridge domain when Weft creates it (created too when in neither the
    /// tenant nor `common`); left alone for an existing bridge domain.
    pub vrf: String,
}

/// A fault (`faultInst`, or the `faultDelegate` mirroring it) as Weft reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fault {
    pub dn: String,
    /// The leaf that raised it (a vPC binding can fail on either leaf or both).
    pub node: Option<u16>,
    pub code: String,
    pub severity: String,
    /// `invalid-vlan`, `invalid-path`, `encap-already-in-use`... (from `changeSet`).
    pub qualifier: Option<String>,
    pub descr: String,
}

impl Fault {
    pub(crate) fn from_mo(mo: &Mo, parent_dn: &str, node: Option<u16>) -> Option<Self> {
        let change_set = mo.get("changeSet").unwrap_or_default();
        let qualifier = change_set
            .split(", ")
            .find_map(|p| p.strip_prefix("configQual:"))
            .map(str::to_string);
        Some(Self {
            dn: mo.dn_under(parent_dn)?,
            node,
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
    fn binding_uses_reference_spelling() {
        let b = Binding {
            path: PathDn::port(1, 101, "eth1/7").unwrap(),
            encap: VlanId::new(222).unwrap(),
            mode: BindingMode::Regular,
            immediacy: Immediacy::Immediate,
        };
        let mo = b.to_mo();
        assert_eq!(mo.get("instrImedcy"), Some("immediate"));
        assert_eq!(mo.get("encap"), Some("vlan-222"));
        assert_eq!(mo.get("annotation"), Some("orchestrator:weft"));
        assert_eq!(
            Binding::dn(&EpgKey::new("t", "a", "e").unwrap(), &b.path),
            "uni/tn-t/ap-a/epg-e/rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/7]]"
        );
    }
}
