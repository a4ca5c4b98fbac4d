//! The management information tree (MIT) and the write path (POST/DELETE semantics, §4).

use crate::classes::{self, Class};
use crate::dn;
use crate::error::ApicError;
use crate::payload::Node;
use crate::validate;
use std::collections::BTreeMap;

/// One stored managed object.
#[derive(Debug, Clone)]
pub struct Mo {
    pub class: &'static Class,
    pub attrs: BTreeMap<String, String>,
    /// Creation order, used where "first come" decides (encap ownership on a leaf).
    pub seq: u64,
}

/// What a write changed (reported with `rsp-subtree=modified`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub dn: String,
    pub class: &'static str,
    pub status: &'static str,
}

/// Who is writing: the REST API, or the simulator's out-of-band control endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    Api,
    OutOfBand,
}

/// The tree: DN -> object, ordered so that a subtree is a contiguous key range.
#[derive(Debug, Clone, Default)]
pub struct Mit {
    objs: BTreeMap<String, Mo>,
    next_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Default,
    Created,
    Modified,
    CreatedModified,
    Deleted,
}

fn parse_status(v: &str) -> Option<Status> {
    let mut parts: Vec<&str> = v.split(',').map(str::trim).collect();
    parts.sort_unstable();
    match parts.as_slice() {
        [""] => Some(Status::Default),
        ["created"] => Some(Status::Created),
        ["modified"] => Some(Status::Modified),
        ["created", "modified"] => Some(Status::CreatedModified),
        ["deleted"] => Some(Status::Deleted),
        _ => None,
    }
}

impl Mit {
    pub fn get(&self, dn: &str) -> Option<&Mo> {
        self.objs.get(dn)
    }

    pub fn entry(&self, dn: &str) -> Option<(&String, &Mo)> {
        self.objs.get_key_value(dn)
    }

    pub fn contains(&self, dn: &str) -> bool {
        self.objs.contains_key(dn)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Mo)> {
        self.objs.iter()
    }

    /// All descendants of `dn` (not `dn` itself), in DN order.
    pub fn descendants<'a>(&'a self, dn: &str) -> impl Iterator<Item = (&'a String, &'a Mo)> + 'a {
        let prefix = format!("{dn}/");
        self.objs
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
    }

    /// Direct children of `dn`.
    pub fn children<'a>(&'a self, dn: &'a str) -> impl Iterator<Item = (&'a String, &'a Mo)> + 'a {
        self.descendants(dn)
            .filter(move |(k, _)| dn::split(&k[dn.len() + 1..]).is_some_and(|r| r.len() == 1))
    }

    /// Inserts or replaces an object without any checks (topology seeding, faults).
    pub fn put(&mut self, dn: String, class: &'static Class, attrs: BTreeMap<String, String>) {
        self.next_seq += 1;
        let seq = self.objs.get(&dn).map_or(self.next_seq, |m| m.seq);
        self.objs.insert(dn, Mo { class, attrs, seq });
    }

    /// Removes `dn` and its subtree; returns whether it existed.
    pub fn remove_subtree(&mut self, dn: &str) -> bool {
        let doomed: Vec<String> = self.descendants(dn).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            self.objs.remove(&k);
        }
        self.objs.remove(dn).is_some()
    }

    /// Applies one POST body to the URL target `target` (empty for `/api/mo.json`).
    /// All-or-nothing: on error the tree is unchanged.
    pub fn apply(
        &mut self,
        target: &str,
        node: &Node,
        writer: Writer,
    ) -> Result<Vec<Change>, ApicError> {
        let class =
            classes::class(&node.class).ok_or_else(|| ApicError::unknown_class(&node.class))?;
        let target_class = if target.is_empty() {
            None
        } else {
            let chain = dn::resolve(target).map_err(|rn| ApicError::invalid_rn(&rn))?;
            chain.last().map(|(c, _)| *c)
        };
        let root_dn = match (attr_str(node, "dn")?, target_class) {
            (Some(given), _) => {
                if !target.is_empty()
                    && given != target
                    && !given.starts_with(&format!("{target}/"))
                {
                    return Err(ApicError::cannot_contain(&given, target));
                }
                given
            }
            (None, Some(tc)) if tc.name == class.name => target.to_string(),
            (None, Some(tc)) => {
                let rn = child_rn(class, node)?;
                if !class.allows_parent(tc.name) {
                    return Err(ApicError::cannot_contain(&rn, target));
                }
                format!("{target}/{rn}")
            }
            (None, None) => return Err(ApicError::naming_prop_missing(class.name, "dn")),
        };
        let chain = dn::resolve(&root_dn).map_err(|rn| ApicError::invalid_rn(&rn))?;
        if chain.last().map(|(c, _)| c.name) != Some(class.name) {
            let rn = dn::last_rn(&root_dn).unwrap_or(&root_dn).to_string();
            return Err(ApicError::invalid_rn(&rn));
        }
        // One POST is one transaction inside one context root (a tenant, `uni/infra`, a
        // domain...): several children of `uni` at once span context roots (reference §4.2).
        if class.name == "polUni" && node.children.len() > 1 {
            return Err(ApicError::distributed_transaction());
        }
        let mut work = self.clone();
        let mut changes = Vec::new();
        work.apply_node(&root_dn, class, node, writer, &mut changes)?;
        *self = work;
        Ok(changes)
    }

    fn apply_node(
        &mut self,
        dn: &str,
        class: &'static Class,
        node: &Node,
        writer: Writer,
        changes: &mut Vec<Change>,
    ) -> Result<(), ApicError> {
        if !class.writable && writer == Writer::Api {
            return Err(ApicError::read_only(class.name));
        }
        let rn = dn::last_rn(dn).ok_or_else(|| ApicError::invalid_rn(dn))?;
        let naming = dn::match_rn(class, rn).ok_or_else(|| ApicError::invalid_rn(rn))?;
        let mut status = Status::Default;
        let mut given = BTreeMap::new();
        for (key, value) in &node.attrs {
            let value = value.as_str().ok_or_else(ApicError::json_parse)?;
            match key.as_str() {
                "status" => {
                    status = parse_status(value)
                        .ok_or_else(|| ApicError::unknown_value(value, "status", class.name, dn))?
                }
                "dn" if value == dn => {}
                "rn" if value == rn => {}
                "dn" | "rn" => return Err(ApicError::cannot_contain(value, dn)),
                _ => {
                    let def = class
                        .attr(key)
                        .ok_or_else(|| ApicError::unknown_attribute(key, class.name))?;
                    validate::check(class, key, def.kind, dn, value)?;
                    if naming.get(key).is_some_and(|n| n != value) {
                        return Err(ApicError::naming_prop_mismatch(class.name, key));
                    }
                    given.insert(key.clone(), value.to_string());
                }
            }
        }
        for (key, value) in &naming {
            if let Some(def) = class.attr(key) {
                validate::check(class, key, def.kind, dn, value)?;
            }
        }
        if status == Status::Deleted {
            if classes::UNDELETABLE.contains(&class.name) {
                return Err(ApicError::undeletable(dn));
            }
            if self.remove_subtree(dn) {
                changes.push(Change {
                    dn: dn.to_string(),
                    class: class.name,
                    status: "deleted",
                });
            }
            return Ok(());
        }
        let exists = self.contains(dn);
        match (status, exists) {
            (Status::Created, true) => return Err(ApicError::already_exists(dn)),
            // Whether `modified` creates a missing MO is unverified (reference §4.3); refusing
            // it keeps clients from relying on it.
            (Status::Modified, false) => return Err(ApicError::not_found(dn)),
            _ => {}
        }
        if exists {
            let mo = self
                .objs
                .get_mut(dn)
                .ok_or_else(|| ApicError::not_found(dn))?;
            let mut changed = false;
            for (k, v) in given {
                if mo.attrs.get(&k) != Some(&v) {
                    mo.attrs.insert(k, v);
                    changed = true;
                }
            }
            if changed {
                changes.push(Change {
                    dn: dn.to_string(),
                    class: class.name,
                    status: "modified",
                });
            }
        } else {
            if let Some(parent) = dn::parent(dn) {
                if !self.contains(&parent) {
                    return Err(ApicError::not_found(dn));
                }
            }
            let mut attrs: BTreeMap<String, String> = class
                .defaults()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            attrs.extend(naming);
            attrs.extend(given);
            self.put(dn.to_string(), class, attrs);
            changes.push(Change {
                dn: dn.to_string(),
                class: class.name,
                status: "created",
            });
        }
        for child in &node.children {
            let child_class = classes::class(&child.class)
                .ok_or_else(|| ApicError::unknown_class(&child.class))?;
            let child_dn = match attr_str(child, "dn")? {
                Some(d) => d,
                None => format!("{dn}/{}", child_rn(child_class, child)?),
            };
            let child_rn = dn::last_rn(&child_dn).unwrap_or(&child_dn).to_string();
            if dn::parent(&child_dn).as_deref() != Some(dn)
                || !child_class.allows_parent(class.name)
            {
                return Err(ApicError::cannot_contain(&child_rn, dn));
            }
            self.apply_node(&child_dn, child_class, child, writer, changes)?;
        }
        Ok(())
    }
}

fn attr_str(node: &Node, key: &str) -> Result<Option<String>, ApicError> {
    match node.attrs.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(|s| Some(s.to_string()))
            .ok_or_else(ApicError::json_parse),
    }
}

/// The RN of a child given only by naming properties (or an explicit `rn`).
fn child_rn(class: &Class, node: &Node) -> Result<String, ApicError> {
    if let Some(rn) = attr_str(node, "rn")? {
        return Ok(rn);
    }
    let mut props = BTreeMap::new();
    for p in class.naming_props() {
        if let Some(v) = attr_str(node, p)? {
            props.insert(p.to_string(), v);
        }
    }
    dn::format_rn(class, &props).map_err(|p| ApicError::naming_prop_missing(class.name, &p))
}
