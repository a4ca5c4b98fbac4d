//! Read path: `query-target`, `target-subtree-class`, `query-target-filter`, `rsp-subtree*`,
//! `order-by`, `page`/`page-size` (reference §2.3) over the in-memory tree.

use crate::classes::{self, Class};
use crate::dn;
use crate::error::ApicError;
use crate::tree::{Mit, Mo};
use serde_json::{json, Map, Value};

/// A parsed `query-target-filter` expression.
#[derive(Debug, Clone)]
pub enum Filter {
    Cmp {
        op: Op,
        class: String,
        prop: String,
        value: String,
        re: Option<regex::Regex>,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Wcard,
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self) -> ApicError {
        ApicError::bad_filter(self.src)
    }

    fn eat(&mut self, c: char) -> Result<(), ApicError> {
        self.skip_ws();
        if self.src[self.pos..].starts_with(c) {
            self.pos += c.len_utf8();
            Ok(())
        } else {
            Err(self.err())
        }
    }

    fn skip_ws(&mut self) {
        while self.src[self.pos..].starts_with(' ') {
            self.pos += 1;
        }
    }

    fn ident(&mut self) -> &'a str {
        self.skip_ws();
        let rest = &self.src[self.pos..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
            .unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    fn quoted(&mut self) -> Result<String, ApicError> {
        self.eat('"')?;
        let rest = &self.src[self.pos..];
        let end = rest.find('"').ok_or_else(|| self.err())?;
        self.pos += end + 1;
        Ok(rest[..end].to_string())
    }

    fn expr(&mut self) -> Result<Filter, ApicError> {
        let name = self.ident();
        self.eat('(')?;
        let f = match name {
            "and" | "or" => {
                let mut items = vec![self.expr()?];
                loop {
                    self.skip_ws();
                    if self.src[self.pos..].starts_with(',') {
                        self.pos += 1;
                        items.push(self.expr()?);
                    } else {
                        break;
                    }
                }
                if name == "and" {
                    Filter::And(items)
                } else {
                    Filter::Or(items)
                }
            }
            "not" => Filter::Not(Box::new(self.expr()?)),
            _ => {
                let op = match name {
                    "eq" => Op::Eq,
                    "ne" => Op::Ne,
                    "lt" => Op::Lt,
                    "gt" => Op::Gt,
                    "le" => Op::Le,
                    "ge" => Op::Ge,
                    "wcard" => Op::Wcard,
                    _ => return Err(self.err()),
                };
                let (class, prop) = self.ident().split_once('.').ok_or_else(|| self.err())?;
                let c = classes::class(class).ok_or_else(|| ApicError::unknown_class(class))?;
                if !is_prop(c, prop) {
                    return Err(ApicError::filter_prop_unknown(prop, class));
                }
                self.eat(',')?;
                let value = self.quoted()?;
                let re = match op {
                    Op::Wcard => Some(regex::Regex::new(&value).map_err(|_| self.err())?),
                    _ => None,
                };
                Filter::Cmp {
                    op,
                    class: class.to_string(),
                    prop: prop.to_string(),
                    value,
                    re,
                }
            }
        };
        self.eat(')')?;
        Ok(f)
    }
}

fn is_prop(c: &Class, prop: &str) -> bool {
    matches!(prop, "dn" | "rn" | "status") || c.attr(prop).is_some()
}

/// Parses a filter expression.
pub fn parse_filter(src: &str) -> Result<Filter, ApicError> {
    let mut p = Parser { src, pos: 0 };
    let f = p.expr()?;
    p.skip_ws();
    if p.pos == src.len() {
        Ok(f)
    } else {
        Err(ApicError::bad_filter(src))
    }
}

fn prop_value(dn_: &str, mo: &Mo, prop: &str) -> String {
    match prop {
        "dn" => dn_.to_string(),
        "rn" => dn::last_rn(dn_).unwrap_or_default().to_string(),
        _ => mo.attrs.get(prop).cloned().unwrap_or_default(),
    }
}

impl Filter {
    /// Whether the object matches; a condition on another class never matches.
    pub fn matches(&self, dn_: &str, mo: &Mo) -> bool {
        match self {
            Filter::And(v) => v.iter().all(|f| f.matches(dn_, mo)),
            Filter::Or(v) => v.iter().any(|f| f.matches(dn_, mo)),
            Filter::Not(f) => !f.matches(dn_, mo),
            Filter::Cmp {
                op,
                class,
                prop,
                value,
                re,
            } => {
                if mo.class.name != class {
                    return false;
                }
                let actual = prop_value(dn_, mo, prop);
                let ord = match (actual.parse::<f64>(), value.parse::<f64>()) {
                    (Ok(a), Ok(b)) => a.partial_cmp(&b),
                    _ => Some(actual.as_str().cmp(value.as_str())),
                };
                use std::cmp::Ordering::*;
                match op {
                    Op::Eq => actual == *value,
                    Op::Ne => actual != *value,
                    Op::Lt => ord == Some(Less),
                    Op::Gt => ord == Some(Greater),
                    Op::Le => matches!(ord, Some(Less | Equal)),
                    Op::Ge => matches!(ord, Some(Greater | Equal)),
                    Op::Wcard => re.as_ref().is_some_and(|r| r.is_match(&actual)),
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    SelfOnly,
    Children,
    Subtree,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RspSubtree {
    No,
    Children,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PropInclude {
    All,
    NamingOnly,
}

/// Parsed query parameters.
#[derive(Debug, Clone)]
pub struct QueryOpts {
    target: Target,
    target_classes: Option<Vec<String>>,
    filter: Option<Filter>,
    rsp_subtree: RspSubtree,
    rsp_classes: Option<Vec<String>>,
    rsp_filter: Option<Filter>,
    faults: bool,
    props: PropInclude,
    order_by: Option<(String, bool)>,
    page: usize,
    page_size: Option<usize>,
    /// `rsp-subtree=modified` on a write.
    pub modified: bool,
}

fn class_list(param: &str, v: &str) -> Result<Vec<String>, ApicError> {
    let list: Vec<String> = v
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() {
        return Err(ApicError::bad_query_value(param, v));
    }
    for c in &list {
        classes::class(c).ok_or_else(|| ApicError::unknown_class(c))?;
    }
    Ok(list)
}

impl Default for QueryOpts {
    fn default() -> Self {
        QueryOpts {
            target: Target::SelfOnly,
            target_classes: None,
            filter: None,
            rsp_subtree: RspSubtree::No,
            rsp_classes: None,
            rsp_filter: None,
            faults: false,
            props: PropInclude::All,
            order_by: None,
            page: 0,
            page_size: None,
            modified: false,
        }
    }
}

impl QueryOpts {
    /// Options that render the full subtree of each object.
    pub fn full_subtree() -> Self {
        QueryOpts {
            rsp_subtree: RspSubtree::Full,
            ..Self::default()
        }
    }

    /// Parses decoded `(name, value)` pairs.
    pub fn parse(params: &[(String, String)]) -> Result<Self, ApicError> {
        let mut o = QueryOpts::default();
        for (k, v) in params {
            let bad = || ApicError::bad_query_value(k, v);
            match k.as_str() {
                "query-target" => {
                    o.target = match v.as_str() {
                        "self" => Target::SelfOnly,
                        "children" => Target::Children,
                        "subtree" => Target::Subtree,
                        _ => return Err(bad()),
                    }
                }
                "target-subtree-class" => o.target_classes = Some(class_list(k, v)?),
                "query-target-filter" => o.filter = Some(parse_filter(v)?),
                "rsp-subtree" => match v.as_str() {
                    "no" => o.rsp_subtree = RspSubtree::No,
                    "children" => o.rsp_subtree = RspSubtree::Children,
                    "full" => o.rsp_subtree = RspSubtree::Full,
                    "modified" => o.modified = true,
                    _ => return Err(bad()),
                },
                "rsp-subtree-class" => o.rsp_classes = Some(class_list(k, v)?),
                "rsp-subtree-filter" => o.rsp_filter = Some(parse_filter(v)?),
                "rsp-subtree-include" => {
                    for part in v.split(',') {
                        match part {
                            "faults" => o.faults = true,
                            "no-scoped" => {}
                            _ => return Err(bad()),
                        }
                    }
                }
                "rsp-prop-include" => {
                    o.props = match v.as_str() {
                        "all" | "config-only" => PropInclude::All,
                        "naming-only" => PropInclude::NamingOnly,
                        _ => return Err(bad()),
                    }
                }
                "order-by" => {
                    let first = v.split(',').next().unwrap_or_default();
                    let (prop, dir) = first.split_once('|').unwrap_or((first, "asc"));
                    let (_, prop) = prop.split_once('.').ok_or_else(bad)?;
                    let desc = match dir {
                        "asc" => false,
                        "desc" => true,
                        _ => return Err(bad()),
                    };
                    o.order_by = Some((prop.to_string(), desc));
                }
                "page" => o.page = v.parse().map_err(|_| bad())?,
                "page-size" => {
                    o.page_size = Some(v.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?)
                }
                _ => return Err(bad()),
            }
        }
        Ok(o)
    }
}

/// What to read: one DN, or a class (optionally under a DN).
pub enum Scope<'a> {
    Mo(&'a str),
    Class {
        class: &'a str,
        under: Option<&'a str>,
    },
}

/// Runs a read; returns `(totalCount, imdata)`.
pub fn run(
    mit: &Mit,
    scope: Scope,
    o: &QueryOpts,
    max_result: usize,
) -> Result<(usize, Vec<Value>), ApicError> {
    let mut hits: Vec<(&String, &Mo)> = match scope {
        Scope::Mo(target) => {
            dn::resolve(target).map_err(|rn| ApicError::invalid_rn(&rn))?;
            match mit.entry(target) {
                None => Vec::new(),
                Some(me) => match o.target {
                    Target::SelfOnly => vec![me],
                    Target::Children => mit.children(target).collect(),
                    Target::Subtree => std::iter::once(me).chain(mit.descendants(target)).collect(),
                },
            }
        }
        Scope::Class { class, under } => {
            classes::class(class).ok_or_else(|| ApicError::unknown_class(class))?;
            let base: Vec<(&String, &Mo)> = match under {
                Some(scope) => {
                    dn::resolve(scope).map_err(|rn| ApicError::invalid_rn(&rn))?;
                    mit.entry(scope)
                        .into_iter()
                        .chain(mit.descendants(scope))
                        .filter(|(_, m)| m.class.name == class)
                        .collect()
                }
                None => mit.iter().filter(|(_, m)| m.class.name == class).collect(),
            };
            match o.target {
                Target::SelfOnly => base,
                Target::Children => base.iter().flat_map(|(d, _)| mit.children(d)).collect(),
                Target::Subtree => base
                    .iter()
                    .flat_map(|&(d, m)| std::iter::once((d, m)).chain(mit.descendants(d)))
                    .collect(),
            }
        }
    };
    if let Some(list) = &o.target_classes {
        hits.retain(|(_, m)| list.iter().any(|c| c == m.class.name));
    }
    if let Some(f) = &o.filter {
        hits.retain(|(d, m)| f.matches(d, m));
    }
    if let Some((prop, desc)) = &o.order_by {
        hits.sort_by_key(|(d, m)| prop_value(d, m, prop));
        if *desc {
            hits.reverse();
        }
    }
    let total = hits.len();
    let page: Vec<_> = match o.page_size {
        Some(size) => hits
            .into_iter()
            .skip(o.page.saturating_mul(size))
            .take(size)
            .collect(),
        None if total > max_result => return Err(ApicError::too_big()),
        None => hits,
    };
    let imdata = page
        .into_iter()
        .map(|(d, m)| render(mit, d, m, o, true))
        .collect();
    Ok((total, imdata))
}

/// What a relation points at: its `tDn`, or for a relation by name (`fvRsBd`, `fvRsCtx`) the
/// object of that name in the relation's tenant, else in `common` (as the APIC resolves them).
fn relation_target(mit: &Mit, dn_: &str, mo: &Mo) -> Option<String> {
    if !mo.class.name.contains("Rs") {
        return None;
    }
    if let Some(t) = mo.attrs.get("tDn") {
        return Some(t.clone());
    }
    let (prop, prefix) = match mo.class.name {
        "fvRsBd" => ("tnFvBDName", "BD-"),
        "fvRsCtx" => ("tnFvCtxName", "ctx-"),
        _ => return None,
    };
    let name = mo.attrs.get(prop)?;
    let tenant = dn::split(dn_)?.get(..2)?.join("/");
    let local = format!("{tenant}/{prefix}{name}");
    let common = format!("uni/tn-common/{prefix}{name}");
    Some(if !mit.contains(&local) && mit.contains(&common) {
        common
    } else {
        local
    })
}

/// Renders one object; top-level objects carry `dn`, nested children `rn`.
pub fn render(mit: &Mit, dn_: &str, mo: &Mo, o: &QueryOpts, top: bool) -> Value {
    let mut attrs = Map::new();
    let naming = mo.class.naming_props();
    for (k, v) in &mo.attrs {
        if o.props == PropInclude::All || naming.contains(&k.as_str()) {
            attrs.insert(k.clone(), Value::String(v.clone()));
        }
    }
    if let Some(t) = relation_target(mit, dn_, mo) {
        let state = if mit.contains(&t) {
            "formed"
        } else {
            "missing-target"
        };
        if !mo.attrs.contains_key("tDn") {
            attrs.insert("tDn".into(), json!(t));
        }
        attrs.insert("state".into(), json!(state));
    }
    if top {
        attrs.insert("dn".into(), json!(dn_));
    } else {
        attrs.insert("rn".into(), json!(dn::last_rn(dn_).unwrap_or_default()));
    }
    let mut body = Map::new();
    body.insert("attributes".into(), Value::Object(attrs));
    let children: Vec<Value> = mit
        .children(dn_)
        .filter(|(d, c)| {
            let is_fault = matches!(c.class.name, "faultInst" | "faultDelegate");
            let wanted = o.rsp_subtree != RspSubtree::No
                && o.rsp_classes
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|x| x == c.class.name))
                && o.rsp_filter.as_ref().is_none_or(|f| f.matches(d, c));
            wanted || (o.faults && is_fault)
        })
        .map(|(d, c)| {
            if o.rsp_subtree == RspSubtree::Full {
                render(mit, d, c, o, false)
            } else {
                let leaf = QueryOpts {
                    rsp_subtree: RspSubtree::No,
                    faults: false,
                    ..o.clone()
                };
                render(mit, d, c, &leaf, false)
            }
        })
        .collect();
    if !children.is_empty() {
        body.insert("children".into(), Value::Array(children));
    }
    json!({ mo.class.name: body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_filters() {
        let f = parse_filter(r#"and(eq(fvRsPathAtt.encap,"vlan-222"),or(wcard(fvRsPathAtt.tDn,"paths-101/"),ne(fvRsPathAtt.mode,"regular")))"#).unwrap();
        assert!(matches!(f, Filter::And(ref v) if v.len() == 2));
        assert_eq!(
            parse_filter("eq(fvRsPathAtt.instrImmedcy,\"lazy\")")
                .unwrap_err()
                .code,
            "400"
        );
        assert_eq!(
            parse_filter("eq(fvFoo.name,\"x\")").unwrap_err().code,
            "122"
        );
        assert!(parse_filter("eq(fvTenant.name,\"x\"").is_err());
    }
}
