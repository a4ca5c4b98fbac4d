//! The natural key of an EPG: tenant, application profile, EPG name.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{split_dn, ApicName, ParseError};

/// `{tenant}/{app}/{epg}`; its APIC DN is `uni/tn-{tenant}/ap-{app}/epg-{epg}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct EpgKey {
    pub tenant: ApicName,
    pub app: ApicName,
    pub epg: ApicName,
}

impl EpgKey {
    /// Parses the three names.
    pub fn new(tenant: &str, app: &str, epg: &str) -> Result<Self, ParseError> {
        Ok(Self {
            tenant: ApicName::parse(tenant)?,
            app: ApicName::parse(app)?,
            epg: ApicName::parse(epg)?,
        })
    }

    /// The EPG of an EPG DN or of any DN below an EPG (a binding, a fault).
    pub fn from_dn(dn: &str) -> Option<Self> {
        match split_dn(dn)?.as_slice() {
            ["uni", tn, ap, epg, ..] => Self::new(
                tn.strip_prefix("tn-")?,
                ap.strip_prefix("ap-")?,
                epg.strip_prefix("epg-")?,
            )
            .ok(),
            _ => None,
        }
    }

    /// The APIC distinguished name of the EPG.
    pub fn dn(&self) -> String {
        format!("uni/tn-{}/ap-{}/epg-{}", self.tenant, self.app, self.epg)
    }
}

impl fmt::Display for EpgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.app, self.epg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_follows_the_apic_naming() {
        let n = |s| ApicName::parse(s).unwrap();
        let k = EpgKey {
            tenant: n("t1"),
            app: n("ap1"),
            epg: n("web"),
        };
        assert_eq!(k.dn(), "uni/tn-t1/ap-ap1/epg-web");
        assert_eq!(k.to_string(), "t1/ap1/web");
        assert_eq!(EpgKey::new("t1", "ap1", "web"), Ok(k.clone()));
        assert_eq!(
            EpgKey::from_dn(
                "uni/tn-t1/ap-ap1/epg-web/rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/7]]"
            ),
            Some(k)
        );
        assert_eq!(EpgKey::from_dn("uni/tn-t1/ap-ap1"), None);
        assert_eq!(EpgKey::from_dn("uni/tn-t1/ap-ap1/epg-a b"), None);
    }
}
