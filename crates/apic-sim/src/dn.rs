//! Distinguished names: bracket-aware splitting and RN pattern matching.
//!
//! A DN is a `/`-separated list of RNs, but slashes inside `[...]` belong to the RN
//! (`rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/7]]`), and brackets nest.

use crate::classes::{self, Class};
use std::collections::BTreeMap;

/// Splits a DN into its RNs; `None` when brackets are unbalanced or an RN is empty.
pub fn split(dn: &str) -> Option<Vec<&str>> {
    weft_domain::split_dn(dn).filter(|rns| rns.iter().all(|rn| !rn.is_empty()))
}

/// The parent DN (`None` for a root).
pub fn parent(dn: &str) -> Option<String> {
    let rns = split(dn)?;
    (rns.len() > 1).then(|| rns[..rns.len() - 1].join("/"))
}

/// The last RN of a DN.
pub fn last_rn(dn: &str) -> Option<&str> {
    split(dn)?.pop()
}

enum Piece<'a> {
    Lit(&'a str),
    Prop(&'a str),
}

fn pieces(pattern: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest.find('}').unwrap_or(rest.len() - 1);
                out.push(Piece::Prop(&rest[1..end]));
                rest = &rest[end + 1..];
            }
            Some(i) => {
                out.push(Piece::Lit(&rest[..i]));
                rest = &rest[i..];
            }
            None => {
                out.push(Piece::Lit(rest));
                rest = "";
            }
        }
    }
    out
}

/// Finds where literal `lit` next occurs in `s` outside brackets opened inside `s`.
fn find_at_depth0(s: &str, lit: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, ch) in s.char_indices() {
        if depth == 0 && s[i..].starts_with(lit) {
            return Some(i);
        }
        match ch {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Matches an RN against a class's pattern, returning the naming properties.
pub fn match_rn(class: &Class, rn: &str) -> Option<BTreeMap<String, String>> {
    let pieces = pieces(class.rn);
    let mut props = BTreeMap::new();
    let mut rest = rn;
    for (i, piece) in pieces.iter().enumerate() {
        match piece {
            Piece::Lit(lit) => rest = rest.strip_prefix(lit)?,
            Piece::Prop(name) => {
                let value = match pieces.get(i + 1) {
                    Some(Piece::Lit(next)) => {
                        let at = find_at_depth0(rest, next)?;
                        let v = &rest[..at];
                        rest = &rest[at..];
                        v
                    }
                    _ => std::mem::take(&mut rest),
                };
                if value.is_empty() {
                    return None;
                }
                props.insert((*name).to_string(), value.to_string());
            }
        }
    }
    rest.is_empty().then_some(props)
}

/// Builds an RN from naming properties; `Err(prop)` names a missing one.
pub fn format_rn(class: &Class, props: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    for piece in pieces(class.rn) {
        match piece {
            Piece::Lit(lit) => out.push_str(lit),
            Piece::Prop(name) => match props.get(name).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(v),
                None => return Err(name.to_string()),
            },
        }
    }
    Ok(out)
}

/// One resolved RN: its class and naming properties.
pub type Resolved = (&'static Class, BTreeMap<String, String>);

/// Resolves the class of every RN along a DN; `Err(rn)` names the first RN that does not parse.
pub fn resolve(dn: &str) -> Result<Vec<Resolved>, String> {
    let rns = split(dn).ok_or_else(|| dn.to_string())?;
    let mut out: Vec<Resolved> = Vec::new();
    for rn in rns {
        let found = match out.last() {
            None => classes::roots().find_map(|c| match_rn(c, rn).map(|p| (c, p))),
            Some((parent, _)) => {
                classes::children_of(parent.name).find_map(|c| match_rn(c, rn).map(|p| (c, p)))
            }
        };
        out.push(found.ok_or_else(|| rn.to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_nested_brackets() {
        let dn = "uni/tn-t/ap-a/epg-e/rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/7]]";
        let rns = split(dn).unwrap();
        assert_eq!(rns.len(), 5);
        assert_eq!(
            rns[4],
            "rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/7]]"
        );
        assert!(split("uni/tn-[x").is_none());
    }

    #[test]
    fn resolves_classes_and_naming_props() {
        let r = resolve("uni/infra/vlanns-[pool1]-static/from-[vlan-100]-to-[vlan-199]").unwrap();
        let names: Vec<_> = r.iter().map(|(c, _)| c.name).collect();
        assert_eq!(
            names,
            ["polUni", "infraInfra", "fvnsVlanInstP", "fvnsEncapBlk"]
        );
        assert_eq!(r[2].1["name"], "pool1");
        assert_eq!(r[2].1["allocMode"], "static");
        assert_eq!(r[3].1["to"], "vlan-199");
        let p = resolve("topology/pod-1/protpaths-101-102/pathep-[vpc_a]").unwrap();
        assert_eq!(p[2].1["nodeAId"], "101");
        assert_eq!(p[2].1["nodeBId"], "102");
        assert_eq!(resolve("uni/tn-a/bogus-x").unwrap_err(), "bogus-x");
    }

    #[test]
    fn formats_rn_round_trip() {
        let c = classes::class("fvRsPathAtt").unwrap();
        let rn = "rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/7]]";
        let props = match_rn(c, rn).unwrap();
        assert_eq!(props["tDn"], "topology/pod-1/paths-101/pathep-[eth1/7]");
        assert_eq!(format_rn(c, &props).unwrap(), rn);
    }
}
