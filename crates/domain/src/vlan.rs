//! VLAN ids, `vlan-N` encapsulations and inclusive VLAN ranges.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ParseError;

/// An 802.1Q VLAN id usable on an ACI leaf: 1 to 4094.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct VlanId(u16);

super::bounded_schema!(VlanId, 1, 4094, "An 802.1Q VLAN id, 1-4094.");

impl VlanId {
    pub const MIN: u16 = 1;
    pub const MAX: u16 = 4094;

    pub fn new(v: u16) -> Result<Self, ParseError> {
        if (Self::MIN..=Self::MAX).contains(&v) {
            Ok(Self(v))
        } else {
            Err(ParseError::new(format!("VLAN id {v} is outside 1-4094")))
        }
    }

    /// Accepts any integer width coming from the database or a client.
    pub fn from_i64(v: i64) -> Result<Self, ParseError> {
        u16::try_from(v)
            .map_err(|_| ParseError::new(format!("VLAN id {v} is outside 1-4094")))
            .and_then(Self::new)
    }

    pub fn get(self) -> u16 {
        self.0
    }

    /// The APIC encapsulation, `vlan-N`.
    pub fn encap(self) -> Encap {
        Encap(self)
    }
}

impl TryFrom<u16> for VlanId {
    type Error = ParseError;
    fn try_from(v: u16) -> Result<Self, ParseError> {
        Self::new(v)
    }
}

impl From<VlanId> for u16 {
    fn from(v: VlanId) -> u16 {
        v.0
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The APIC spelling of a VLAN encapsulation, `vlan-181`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Encap(VlanId);

impl Encap {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let digits = s
            .strip_prefix("vlan-")
            .ok_or_else(|| ParseError::new(format!("encap `{s}` does not start with `vlan-`")))?;
        // Only canonical decimal (no sign, no leading zero) so the string round-trips.
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ParseError::new(format!(
                "encap `{s}` is not `vlan-<1..4094>`"
            )));
        }
        let n: u16 = digits
            .parse()
            .map_err(|_| ParseError::new(format!("encap `{s}` is not `vlan-<1..4094>`")))?;
        Ok(Self(VlanId::new(n)?))
    }

    pub fn vlan(self) -> VlanId {
        self.0
    }
}

impl From<VlanId> for Encap {
    fn from(v: VlanId) -> Self {
        Self(v)
    }
}

impl fmt::Display for Encap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vlan-{}", self.0)
    }
}

super::string_serde!(
    Encap,
    "An APIC VLAN encapsulation, `vlan-<1..4094>`.",
    "vlan-181"
);

/// An inclusive range of VLAN ids with `first <= last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "RawRange")]
pub struct VlanRange {
    pub first: VlanId,
    pub last: VlanId,
}

#[derive(Deserialize)]
struct RawRange {
    first: VlanId,
    last: VlanId,
}

impl TryFrom<RawRange> for VlanRange {
    type Error = ParseError;
    fn try_from(r: RawRange) -> Result<Self, ParseError> {
        Self::new(r.first, r.last)
    }
}

impl VlanRange {
    pub fn new(first: VlanId, last: VlanId) -> Result<Self, ParseError> {
        if first > last {
            return Err(ParseError::new(format!(
                "VLAN range {first}-{last} has first > last"
            )));
        }
        Ok(Self { first, last })
    }

    pub fn contains(&self, v: VlanId) -> bool {
        self.first <= v && v <= self.last
    }

    pub fn overlaps(&self, other: &VlanRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    pub fn size(&self) -> u32 {
        u32::from(self.last.get()) - u32::from(self.first.get()) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_ids_outside_1_to_4094_are_refused() {
        assert!(VlanId::new(0).is_err());
        assert!(VlanId::new(4095).is_err());
        assert_eq!(VlanId::new(4094).map(VlanId::get), Ok(4094));
        assert!(VlanId::from_i64(-1).is_err());
        assert!(VlanId::from_i64(70000).is_err());
    }

    #[test]
    fn encap_round_trips_and_refuses_non_canonical_forms() {
        let e = Encap::parse("vlan-181").map(|e| e.to_string());
        assert_eq!(e.as_deref(), Ok("vlan-181"));
        for bad in [
            "vlan-0",
            "vlan-4095",
            "vlan-0181",
            "vlan-",
            "vlan--1",
            "VLAN-5",
            "vxlan-5",
            "vlan-+5",
        ] {
            assert!(Encap::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn ranges_must_be_ordered() {
        let a = VlanId::new(10).unwrap();
        let b = VlanId::new(20).unwrap();
        assert!(VlanRange::new(b, a).is_err());
        let r = VlanRange::new(a, b).unwrap();
        assert_eq!(r.size(), 11);
        assert!(r.contains(VlanId::new(15).unwrap()));
        assert!(!r.contains(VlanId::new(21).unwrap()));
    }
}
