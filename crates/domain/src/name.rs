//! Names of APIC objects (tenant, application profile, EPG, bridge domain, domain, pool).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ParseError;

/// A name that satisfies the APIC rule `^[a-zA-Z0-9_.:-]{1,64}$` (reference/apic-api.md §4.4).
///
/// Weft uses the same rule for its own names (hosts, reservations) because they may end up
/// inside a DN or a URL path; `/`, `[`, `]` and spaces can therefore never escape a DN.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApicName(String);

impl ApicName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(ParseError::new(format!(
                "name must be 1 to {} characters long, got {}",
                Self::MAX_LEN,
                s.chars().count()
            )));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_.:-".contains(*c)))
        {
            return Err(ParseError::new(format!(
                "name `{}` contains `{}`; allowed are letters, digits and `_ . : -`",
                s.escape_debug(),
                bad.escape_debug()
            )));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

super::string_serde!(
    ApicName,
    "An APIC object name: 1-64 of letters, digits and `_ . : -`.",
    "web",
    pattern = "^[a-zA-Z0-9_.:-]{1,64}$"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_apic_character_set() {
        for ok in ["web", "T1_prod.v2:a-b", &"a".repeat(64)] {
            assert!(ApicName::parse(ok).is_ok(), "{ok} refused");
        }
    }

    #[test]
    fn refuses_characters_that_could_escape_a_dn() {
        for bad in [
            "",
            "a/b",
            "a]b",
            "a[b",
            "a b",
            "tn-x\n",
            "é",
            "a\"b",
            &"a".repeat(65),
        ] {
            assert!(ApicName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
