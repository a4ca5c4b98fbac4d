//! IPv4 subnets of an EPG: the network, its gateway and address ranges kept out of allocation.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ParseError;

/// An IPv4 network in canonical form (`10.1.2.0/24`, host bits zero), prefix length 8 to 30
/// so that it has a network, a broadcast, a gateway and at least one address to hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr(Ipv4Net);

impl Ipv4Cidr {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let net: Ipv4Net = s.parse().map_err(|_| {
            ParseError::new(format!(
                "`{}` is not an IPv4 CIDR like 10.1.2.0/24",
                s.escape_debug()
            ))
        })?;
        if net.network() != net.addr() {
            return Err(ParseError::new(format!(
                "`{s}` has host bits set; did you mean {}?",
                net.trunc()
            )));
        }
        if !(8..=30).contains(&net.prefix_len()) {
            return Err(ParseError::new(format!(
                "`{s}`: prefix length must be 8 to 30"
            )));
        }
        Ok(Self(net))
    }

    pub fn network(&self) -> Ipv4Addr {
        self.0.network()
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        self.0.broadcast()
    }

    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        self.0.contains(&a)
    }

    /// True when `a` is inside and is neither the network nor the broadcast address.
    pub fn is_host(&self, a: Ipv4Addr) -> bool {
        self.contains(a) && a != self.network() && a != self.broadcast()
    }

    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.0.contains(&other.0.network()) || other.0.contains(&self.0.network())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

super::string_serde!(
    Ipv4Cidr,
    "An IPv4 network in canonical form, prefix length 8-30.",
    "10.1.2.0/24"
);

/// An inclusive address range, `first <= last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddressRange {
    #[schema(value_type = String, example = "10.1.2.2")]
    pub first: Ipv4Addr,
    #[schema(value_type = String, example = "10.1.2.9")]
    pub last: Ipv4Addr,
}

impl AddressRange {
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        self.first <= a && a <= self.last
    }
}

/// A subnet of an EPG as a client declares it, checked as a whole: the gateway is a host
/// address of the network, reserved ranges lie inside it and are ordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "RawSubnet")]
pub struct SubnetSpec {
    pub cidr: Ipv4Cidr,
    #[schema(value_type = String, example = "10.1.2.1")]
    pub gateway: Ipv4Addr,
    /// Address ranges never handed out (besides network, broadcast and gateway).
    #[serde(default)]
    pub reserved: Vec<AddressRange>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubnet {
    cidr: Ipv4Cidr,
    gateway: Ipv4Addr,
    #[serde(default)]
    reserved: Vec<AddressRange>,
}

impl TryFrom<RawSubnet> for SubnetSpec {
    type Error = ParseError;
    fn try_from(r: RawSubnet) -> Result<Self, ParseError> {
        Self::new(r.cidr, r.gateway, r.reserved)
    }
}

impl SubnetSpec {
    pub fn new(
        cidr: Ipv4Cidr,
        gateway: Ipv4Addr,
        reserved: Vec<AddressRange>,
    ) -> Result<Self, ParseError> {
        if !cidr.is_host(gateway) {
            return Err(ParseError::new(format!(
                "gateway {gateway} is not a host address of {cidr}"
            )));
        }
        for r in &reserved {
            if r.first > r.last || !cidr.contains(r.first) || !cidr.contains(r.last) {
                return Err(ParseError::new(format!(
                    "reserved range {}-{} must be ordered and inside {cidr}",
                    r.first, r.last
                )));
            }
        }
        Ok(Self {
            cidr,
            gateway,
            reserved,
        })
    }

    /// Whether `a` may be handed to a client: a host address that is neither the gateway nor reserved.
    pub fn is_allocatable(&self, a: Ipv4Addr) -> bool {
        self.cidr.is_host(a) && a != self.gateway && !self.reserved.iter().any(|r| r.contains(a))
    }

    /// The last address of the reserved range holding `a`, if one does: allocation skips past it.
    pub fn reserved_until(&self, a: Ipv4Addr) -> Option<Ipv4Addr> {
        self.reserved
            .iter()
            .filter(|r| r.contains(a))
            .map(|r| r.last)
            .max()
    }

    /// The first and last host addresses (network + 1, broadcast - 1).
    pub fn host_bounds(&self) -> (Ipv4Addr, Ipv4Addr) {
        let first = u32::from(self.cidr.network()) + 1;
        let last = u32::from(self.cidr.broadcast()) - 1;
        (Ipv4Addr::from(first), Ipv4Addr::from(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_must_be_canonical_and_sized() {
        assert!(Ipv4Cidr::parse("10.0.0.0/24").is_ok());
        for bad in [
            "10.0.0.1/24",
            "10.0.0.0/31",
            "10.0.0.0/32",
            "10.0.0.0/7",
            "10.0.0.0",
            "x/24",
            "10.0.0.0/24 ",
        ] {
            assert!(Ipv4Cidr::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn gateway_must_be_a_host_address_inside() {
        let c = Ipv4Cidr::parse("10.0.0.0/24").unwrap();
        assert!(SubnetSpec::new(c, a("10.0.0.1"), vec![]).is_ok());
        for gw in ["10.0.0.0", "10.0.0.255", "10.0.1.1"] {
            assert!(SubnetSpec::new(c, a(gw), vec![]).is_err(), "{gw} accepted");
        }
    }

    #[test]
    fn network_broadcast_gateway_and_reserved_are_not_allocatable() {
        let c = Ipv4Cidr::parse("10.0.0.0/24").unwrap();
        let r = AddressRange {
            first: a("10.0.0.10"),
            last: a("10.0.0.19"),
        };
        let s = SubnetSpec::new(c, a("10.0.0.1"), vec![r]).unwrap();
        for no in [
            "10.0.0.0",
            "10.0.0.1",
            "10.0.0.10",
            "10.0.0.19",
            "10.0.0.255",
            "10.0.1.2",
        ] {
            assert!(!s.is_allocatable(a(no)), "{no}");
        }
        for yes in ["10.0.0.2", "10.0.0.9", "10.0.0.20", "10.0.0.254"] {
            assert!(s.is_allocatable(a(yes)), "{yes}");
        }
        let bad = AddressRange {
            first: a("10.0.0.20"),
            last: a("10.0.0.10"),
        };
        assert!(SubnetSpec::new(c, a("10.0.0.1"), vec![bad]).is_err());
    }
}
