//! Attribute value checks driven by `classes::Kind` (codes 120 and 801).

use crate::classes::{Class, Kind};
use crate::error::ApicError;

fn chars_ok(v: &str, min: usize, max: usize, extra: &str) -> bool {
    let n = v.chars().count();
    n >= min
        && n <= max
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// Parses `vlan-N` with N in 1..=4094.
pub fn parse_vlan(v: &str) -> Option<u16> {
    let n: u16 = v.strip_prefix("vlan-")?.parse().ok()?;
    (1..=4094).contains(&n).then_some(n)
}

fn cidr_ok(v: &str) -> bool {
    let Some((ip, len)) = v.split_once('/') else {
        return false;
    };
    ip.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32)
}

/// Checks one value of `class.prop` on the object `dn`.
pub fn check(class: &Class, prop: &str, kind: Kind, dn: &str, v: &str) -> Result<(), ApicError> {
    let ok = match kind {
        Kind::Name => chars_ok(v, 1, 64, "_.:-"),
        Kind::OptName => chars_ok(v, 0, 64, "_.:-"),
        Kind::Alias => chars_ok(v, 0, 63, "_.-"),
        Kind::Descr => chars_ok(v, 0, 128, "\\!#$%()*,-./:;@ _{|}~?&+"),
        Kind::Annotation => chars_ok(v, 0, 128, "_.:-"),
        Kind::Vlan => parse_vlan(v).is_some(),
        Kind::Encap => v == "unknown" || parse_vlan(v).is_some(),
        Kind::Dn => !v.is_empty() && !v.chars().any(char::is_whitespace),
        Kind::Cidr => cidr_ok(v),
        Kind::Text => v.chars().count() <= 512,
        Kind::Number => !v.is_empty() && v.len() <= 6 && v.bytes().all(|b| b.is_ascii_digit()),
        Kind::Enum(values) => {
            return if values.contains(&v) {
                Ok(())
            } else {
                Err(ApicError::unknown_value(v, prop, class.name, dn))
            }
        }
        Kind::EnumList(values) => {
            return if v.is_empty() || v.split(',').all(|p| values.contains(&p.trim())) {
                Ok(())
            } else {
                Err(ApicError::unknown_value(v, prop, class.name, dn))
            }
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ApicError::failed_validation(prop, dn, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::class;

    #[test]
    fn descr_rejects_brackets_with_801() {
        let t = class("fvTenant").unwrap();
        let e = check(
            t,
            "descr",
            Kind::Descr,
            "uni/tn-x",
            "This is an [invalid] description",
        )
        .unwrap_err();
        assert_eq!(e.code, "801");
        assert_eq!(
            e.text,
            "property descr of uni/tn-x failed validation for value 'This is an [invalid] description'"
        );
    }

    #[test]
    fn vlan_range() {
        assert_eq!(parse_vlan("vlan-4094"), Some(4094));
        assert_eq!(parse_vlan("vlan-0"), None);
        assert_eq!(parse_vlan("vlan-4095"), None);
        assert_eq!(parse_vlan("100"), None);
    }
}
