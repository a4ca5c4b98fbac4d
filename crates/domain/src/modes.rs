//! Small closed sets and bounded values: binding mode, deployment immediacy, host backend, MTU,
//! Linux interface names.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ParseError;

/// How the leaf port carries the EPG's VLAN (`fvRsPathAtt.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BindingMode {
    /// Tagged trunk.
    #[default]
    Regular,
    /// Access port, untagged.
    Untagged,
    /// 802.1p.
    Native,
}

/// When the leaf programs the binding (`fvRsPathAtt.instrImedcy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Immediacy {
    Immediate,
    #[default]
    Lazy,
}

/// Which host networking the agent builds for a VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    LinuxBridge,
    Ovs,
    Macvlan,
}

macro_rules! text_enum {
    ($ty:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(ParseError::new(format!(
                        "`{}` is not one of {}", other.escape_debug(), [$($text),+].join(", ")
                    ))),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(BindingMode { Regular => "regular", Untagged => "untagged", Native => "native" });
text_enum!(Immediacy { Immediate => "immediate", Lazy => "lazy" });
text_enum!(Backend { LinuxBridge => "linux-bridge", Ovs => "ovs", Macvlan => "macvlan" });

/// An MTU between the IPv4 minimum (68) and the largest jumbo frame ACI supports (9216).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct Mtu(u16);

super::bounded_schema!(Mtu, 68, 9216, "MTU in bytes, 68-9216.");

impl Mtu {
    /// Plain Ethernet, the default.
    pub const ETHERNET: Mtu = Mtu(1500);

    pub fn new(v: u16) -> Result<Self, ParseError> {
        if (68..=9216).contains(&v) {
            Ok(Self(v))
        } else {
            Err(ParseError::new(format!("MTU {v} is outside 68-9216")))
        }
    }
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<u16> for Mtu {
    type Error = ParseError;
    fn try_from(v: u16) -> Result<Self, ParseError> {
        Self::new(v)
    }
}

impl From<Mtu> for u16 {
    fn from(m: Mtu) -> u16 {
        m.0
    }
}

/// A Linux network interface name: 1-15 bytes, no `/`, whitespace, `:` or control characters,
/// and not `.` or `..` (the kernel's `dev_valid_name`, minus `:` which marks aliases).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InterfaceName(String);

impl InterfaceName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad_char = s
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control() || !c.is_ascii());
        if s.is_empty() || s.len() > 15 || s == "." || s == ".." || bad_char {
            return Err(ParseError::new(format!(
                "`{}` is not a Linux interface name (1-15 ASCII characters, no `/`, `:` or spaces)",
                s.escape_debug()
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

super::string_serde!(
    InterfaceName,
    "A Linux interface name: 1-15 ASCII characters, no `/`, `:` or spaces, not `.` or `..`.",
    "eth0",
    // Printable ASCII but `/` and `:`; the three branches leave out `.` and `..`.
    pattern = r"^(?:[!-\-0-9;-~][!-.0-9;-~]{0,14}|\.[!-\-0-9;-~][!-.0-9;-~]{0,13}|\.\.[!-.0-9;-~]{1,13})$"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_enums_round_trip() {
        for m in [
            BindingMode::Regular,
            BindingMode::Untagged,
            BindingMode::Native,
        ] {
            assert_eq!(BindingMode::parse(m.as_str()), Ok(m));
        }
        for b in [Backend::LinuxBridge, Backend::Ovs, Backend::Macvlan] {
            assert_eq!(Backend::parse(b.as_str()), Ok(b));
        }
        assert_eq!(Immediacy::parse("lazy"), Ok(Immediacy::Lazy));
        assert!(Immediacy::parse("immedate").is_err());
        let json: Result<BindingMode, _> = serde_json::from_str("\"trunk\"");
        assert!(json.is_err());
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        assert!(InterfaceName::parse("eth0").is_ok());
        assert!(InterfaceName::parse("enp0s31f6.100").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "eth0:1", "abcdefghijklmnop"] {
            assert!(InterfaceName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mtu_bounds() {
        assert!(Mtu::new(67).is_err());
        assert!(Mtu::new(9217).is_err());
        assert_eq!(Mtu::new(9000).map(Mtu::get), Ok(9000));
    }
}
