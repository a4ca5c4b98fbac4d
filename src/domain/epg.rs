//! The natural key of an EPG: tenant, application profile, EPG name.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApicName;

/// `{tenant}/{app}/{epg}`; its APIC DN is `uni/tn-{tenant}/ap-{app}/epg-{epg}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub struct EpgKey {
    pub tenant: ApicName,
    pub app: ApicName,
    pub epg: ApicName,
}

impl EpgKey {
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
    }
}
