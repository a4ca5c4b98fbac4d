//! OVSDB JSON value notation (RFC 7047 section 5.1): building and reading the
//! `["uuid", ..]`, `["named-uuid", ..]`, `["set", ..]` and `["map", ..]` forms.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// A reference to an existing row.
pub fn uuid(uuid: &str) -> Value {
    json!(["uuid", uuid])
}

/// A reference to a row inserted earlier in the same transaction.
pub fn named_uuid(name: &str) -> Value {
    json!(["named-uuid", name])
}

/// A set of atoms (also how an optional column is left empty: `set([])`).
pub fn set(items: impl IntoIterator<Item = Value>) -> Value {
    json!(["set", items.into_iter().collect::<Vec<_>>()])
}

/// A string-to-string map such as `external_ids`.
pub fn string_map(map: &BTreeMap<String, String>) -> Value {
    let pairs: Vec<Value> = map.iter().map(|(k, v)| json!([k, v])).collect();
    json!(["map", pairs])
}

fn malformed(what: &str, value: &Value) -> Error {
    Error::Protocol(format!("malformed {what}: {value}"))
}

/// The members of a set column; a single atom is a one-element set.
pub fn members(value: &Value) -> Vec<&Value> {
    match value.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(items)]) if tag == "set" => items.iter().collect(),
        _ => vec![value],
    }
}

/// The uuid string of a `["uuid", ..]` value.
pub fn read_uuid(value: &Value) -> Result<String> {
    match value.as_array().map(Vec::as_slice) {
        Some([tag, Value::String(u)]) if tag == "uuid" => Ok(u.clone()),
        _ => Err(malformed("uuid", value)),
    }
}

/// The uuids in a set-of-references column.
pub fn read_uuid_set(value: &Value) -> Result<Vec<String>> {
    members(value).into_iter().map(read_uuid).collect()
}

/// An optional integer column (`tag`, `ofport`): an integer or the empty set.
pub fn read_optional_int(value: &Value) -> Result<Option<i64>> {
    if let Some(n) = value.as_i64() {
        return Ok(Some(n));
    }
    match members(value).as_slice() {
        [] => Ok(None),
        [single] => single
            .as_i64()
            .map(Some)
            .ok_or_else(|| malformed("integer", value)),
        _ => Err(malformed("optional integer", value)),
    }
}

/// An optional string column (`error`): a string or the empty set.
pub fn read_optional_string(value: &Value) -> Result<Option<String>> {
    if let Some(s) = value.as_str() {
        return Ok(Some(s.to_owned()));
    }
    match members(value).as_slice() {
        [] => Ok(None),
        _ => Err(malformed("optional string", value)),
    }
}

/// A string-to-string map column.
pub fn read_string_map(value: &Value) -> Result<BTreeMap<String, String>> {
    let pairs = match value.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(pairs)]) if tag == "map" => pairs,
        _ => return Err(malformed("map", value)),
    };
    pairs
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(k), Value::String(v)]) => Ok((k.clone(), v.clone())),
            _ => Err(malformed("string map entry", pair)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_int_reads_value_or_empty_set() {
        assert_eq!(read_optional_int(&json!(181)).unwrap(), Some(181));
        assert_eq!(read_optional_int(&json!(["set", []])).unwrap(), None);
        assert!(read_optional_int(&json!("x")).is_err());
    }

    #[test]
    fn uuid_sets_accept_single_atoms_and_sets() {
        let one = json!(["uuid", "a"]);
        let two = json!(["set", [["uuid", "a"], ["uuid", "b"]]]);
        assert_eq!(read_uuid_set(&one).unwrap(), vec!["a"]);
        assert_eq!(read_uuid_set(&two).unwrap(), vec!["a", "b"]);
        assert!(read_uuid_set(&json!(["named-uuid", "a"])).is_err());
    }

    #[test]
    fn string_maps_round_trip() {
        let map = BTreeMap::from([("weft-attachment".to_owned(), "42".to_owned())]);
        assert_eq!(read_string_map(&string_map(&map)).unwrap(), map);
        assert!(read_string_map(&json!(["map", [[1, 2]]])).is_err());
    }
}
