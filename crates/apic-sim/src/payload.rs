//! Parsing of POST bodies: `{"<class>":{"attributes":{...},"children":[...]}}`.
//!
//! A custom deserializer keeps key order so that a node whose first tag is not `attributes`
//! is rejected the way the APIC rejects it (reference §3.4 / §4.1).

use crate::error::ApicError;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;

const ATTRS_MISSING: &str = "attributes-missing";

/// One MO of a request body.
#[derive(Debug, Clone)]
pub struct Node {
    pub class: String,
    pub attrs: BTreeMap<String, serde_json::Value>,
    pub children: Vec<Node>,
}

/// Parses a request body into exactly one root node.
pub fn parse(body: &[u8]) -> Result<Node, ApicError> {
    serde_json::from_slice::<Node>(body).map_err(|e| {
        if e.to_string().starts_with(ATTRS_MISSING) {
            ApicError::attributes_missing()
        } else {
            ApicError::json_parse()
        }
    })
}

impl<'de> de::Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with one class name key")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(class) = map.next_key::<String>()? else {
            return Err(de::Error::custom("empty object"));
        };
        let body: Body = map.next_value()?;
        if map.next_key::<String>()?.is_some() {
            return Err(de::Error::custom("more than one root object"));
        }
        Ok(Node {
            class,
            attrs: body.attrs,
            children: body.children,
        })
    }
}

struct Body {
    attrs: BTreeMap<String, serde_json::Value>,
    children: Vec<Node>,
}

impl<'de> de::Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with attributes and children")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let mut attrs = None;
        let mut children = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "attributes" => attrs = Some(map.next_value()?),
                "children" if attrs.is_some() => children = map.next_value::<Children>()?.0,
                _ => return Err(de::Error::custom(ATTRS_MISSING)),
            }
        }
        attrs
            .map(|attrs| Body { attrs, children })
            .ok_or_else(|| de::Error::custom(ATTRS_MISSING))
    }
}

struct Children(Vec<Node>);

impl<'de> de::Deserialize<'de> for Children {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Children;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Children, A::Error> {
                let mut out = Vec::new();
                while let Some(n) = seq.next_element::<Node>()? {
                    out.push(n);
                }
                Ok(Children(out))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_children() {
        let n = parse(br#"{"fvTenant":{"attributes":{"name":"t"},"children":[{"fvAp":{"attributes":{"name":"a"}}}]}}"#).unwrap();
        assert_eq!(n.class, "fvTenant");
        assert_eq!(n.children[0].class, "fvAp");
    }

    #[test]
    fn attributes_must_come_first() {
        let e = parse(br#"{"fvTenant":{"children":[],"attributes":{"name":"t"}}}"#).unwrap_err();
        assert_eq!(e, ApicError::attributes_missing());
        let e = parse(br#"{"fvTenant":{}}"#).unwrap_err();
        assert_eq!(e, ApicError::attributes_missing());
    }

    #[test]
    fn malformed_json() {
        assert_eq!(
            parse(br#"{"fvTenant":{"attributes":{"name":"#).unwrap_err(),
            ApicError::json_parse()
        );
    }
}
