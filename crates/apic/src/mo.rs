//! The APIC's JSON object shape, `{"<class>":{"attributes":{..},"children":[..]}}`, as a type,
//! so no code builds APIC JSON by hand.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;

/// One managed object with its children. All attribute values are strings, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mo {
    pub class: String,
    pub attributes: BTreeMap<String, String>,
    pub children: Vec<Mo>,
}

impl Mo {
    pub fn new(class: &str) -> Self {
        Self {
            class: class.to_string(),
            attributes: BTreeMap::new(),
            children: Vec::new(),
        }
    }

    /// Adds an attribute (builder style).
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attributes.insert(name.to_string(), value.into());
        self
    }

    /// Adds a child (builder style).
    pub fn child(mut self, child: Mo) -> Self {
        self.children.push(child);
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// The DN: `dn` when present, else `parent/rn`.
    pub fn dn_under(&self, parent: &str) -> Option<String> {
        self.get("dn")
            .map(str::to_string)
            .or_else(|| self.get("rn").map(|rn| format!("{parent}/{rn}")))
    }

    /// Children of one class.
    pub fn children_of<'a>(&'a self, class: &'a str) -> impl Iterator<Item = &'a Mo> + 'a {
        self.children.iter().filter(move |c| c.class == class)
    }

    /// Parses one `imdata` element; non-string attribute values are rejected.
    pub fn from_value(v: &Value) -> Option<Mo> {
        let (class, body) = v.as_object()?.iter().next()?;
        let mut mo = Mo::new(class);
        for (k, val) in body.get("attributes")?.as_object()? {
            mo.attributes.insert(k.clone(), val.as_str()?.to_string());
        }
        if let Some(children) = body.get("children").and_then(Value::as_array) {
            mo.children = children.iter().map(Mo::from_value).collect::<Option<_>>()?;
        }
        Some(mo)
    }
}

impl Serialize for Mo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Body<'a>(&'a Mo);
        impl Serialize for Body<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("attributes", &self.0.attributes)?;
                if !self.0.children.is_empty() {
                    m.serialize_entry("children", &self.0.children)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(&self.class, &Body(self))?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_wire_shape() {
        let mo = Mo::new("fvAEPg")
            .attr("name", "web")
            .child(Mo::new("fvRsBd").attr("tnFvBDName", "bd1"));
        let v = serde_json::to_value(&mo).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"fvAEPg":{"attributes":{"name":"web"},"children":[{"fvRsBd":{"attributes":{"tnFvBDName":"bd1"}}}]}})
        );
        assert_eq!(Mo::from_value(&v), Some(mo));
    }
}
