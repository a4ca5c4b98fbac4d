//! weft-domain: Weft's value types that cannot hold bad values; every constructor parses,
//! nothing validates later. Shared by the service (`weft`) and the APIC client (`weft-apic`) so
//! a path DN or VLAN means the same thing on both sides.
//!
//! Each type round-trips through its string form exactly, so what a client PUTs is what it GETs
//! back and what Weft sends to the APIC.

mod bearer;
mod cidr;
mod dn;
mod epg;
mod modes;
mod name;
mod path_dn;
mod vlan;

pub use bearer::bearer_token;
pub use cidr::{AddressRange, Ipv4Cidr, SubnetSpec};
pub use dn::split_dn;
pub use epg::EpgKey;
pub use modes::{Backend, BindingMode, Immediacy, InterfaceName, Mtu};
pub use name::ApicName;
pub use path_dn::{PathDn, PathKind};
pub use vlan::{Encap, VlanId, VlanRange};

/// Why a value was refused; the message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Implements `FromStr`, the serde string conversions and an OpenAPI string schema for a type
/// with `parse` and `Display`; `pattern`, when given, is the regular expression `parse` enforces
/// (in the document, so clients and schema-driven tests know it).
macro_rules! string_serde {
    ($ty:ty, $desc:literal, $example:literal) => {
        $crate::string_serde!($ty, $desc, $example, None::<String>);
    };
    ($ty:ty, $desc:literal, $example:literal, pattern = $pattern:literal) => {
        $crate::string_serde!($ty, $desc, $example, Some($pattern));
    };
    ($ty:ty, $desc:literal, $example:literal, $pattern:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($desc))
                    .pattern($pattern)
                    .examples([serde_json::json!($example)])
                    .into()
            }
        }
        impl utoipa::ToSchema for $ty {}
        impl std::str::FromStr for $ty {
            type Err = $crate::ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::parse(s)
            }
        }
        impl TryFrom<String> for $ty {
            type Error = $crate::ParseError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                <$ty>::parse(&s)
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.to_string()
            }
        }
    };
}
pub(crate) use string_serde;

/// An OpenAPI integer schema with bounds for a `u16` newtype.
macro_rules! bounded_schema {
    ($ty:ty, $min:expr, $max:expr, $desc:literal) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Integer)
                    .minimum(Some($min))
                    .maximum(Some($max))
                    .description(Some($desc))
                    .into()
            }
        }
        impl utoipa::ToSchema for $ty {}
    };
}
pub(crate) use bounded_schema;
