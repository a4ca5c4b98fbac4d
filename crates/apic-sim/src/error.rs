//! The APIC error envelope: HTTP status plus `imdata[0].error.attributes.{code,text}`.
//! Texts follow `reference/apic-api.md` §3.4 verbatim where the reference quotes them; where
//! it only gives the code or a fragment (103 "already exists", read-only classes, bad query
//! parameters, missing naming properties) the wording is ours and marked "own wording".

use serde_json::json;

/// `{"totalCount":"N","imdata":[...]}`, in the APIC's key order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Envelope {
    #[serde(rename = "totalCount")]
    pub total_count: String,
    pub imdata: Vec<serde_json::Value>,
}

impl Envelope {
    pub fn new(imdata: Vec<serde_json::Value>, total: usize) -> Self {
        Self {
            total_count: total.to_string(),
            imdata,
        }
    }
}

/// An error as the APIC reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP {status} code {code}: {text}")]
pub struct ApicError {
    pub status: u16,
    pub code: String,
    pub text: String,
}

impl ApicError {
    fn new(status: u16, code: &str, text: String) -> Self {
        Self {
            status,
            code: code.to_string(),
            text,
        }
    }

    pub fn bad_login() -> Self {
        Self::new(
            401,
            "401",
            "Username or password is incorrect - FAILED local authentication".into(),
        )
    }

    pub fn token_timeout() -> Self {
        Self::new(
            403,
            "403",
            "Token was invalid (Error: Token timeout)".into(),
        )
    }

    pub fn attributes_missing() -> Self {
        Self::new(
            400,
            "400",
            "invalid data at line '1'. Attributes are missing, tag 'attributes' must be specified first, before any other tag".into(),
        )
    }

    pub fn json_parse() -> Self {
        Self::new(
            400,
            "400",
            "JSON parsing failed - incomplete attribute value at line: 1".into(),
        )
    }

    pub fn unknown_attribute(attr: &str, class: &str) -> Self {
        Self::new(
            400,
            "400",
            format!("unknown attribute '{attr}' in element '{class}'"),
        )
    }

    pub fn unknown_class(class: &str) -> Self {
        Self::new(400, "122", format!("unknown managed object class {class}"))
    }

    pub fn failed_validation(prop: &str, dn: &str, value: &str) -> Self {
        Self::new(
            400,
            "801",
            format!("property {prop} of {dn} failed validation for value '{value}'"),
        )
    }

    pub fn unknown_value(value: &str, prop: &str, class: &str, dn: &str) -> Self {
        Self::new(
            400,
            "120",
            format!(
                "unknown property value {value}, , name {prop}, class {class} [(Dn0)] Dn0={dn}, "
            ),
        )
    }

    pub fn invalid_rn(rn: &str) -> Self {
        Self::new(400, "104", format!("Invalid RN {rn}"))
    }

    pub fn cannot_contain(child_rn: &str, parent_dn: &str) -> Self {
        Self::new(
            400,
            "400",
            format!(
                "Invalid request. Can not contain child '{child_rn}' under parent '{parent_dn}'"
            ),
        )
    }

    /// Own wording (the reference gives no verbatim text).
    pub fn already_exists(dn: &str) -> Self {
        Self::new(
            400,
            "103",
            format!("Request failed, object already exists: {dn}"),
        )
    }

    pub fn not_found(dn: &str) -> Self {
        Self::new(
            400,
            "102",
            format!("configured object ((Dn0)) not found Dn0={dn}, "),
        )
    }

    pub fn naming_prop_mismatch(class: &str, prop: &str) -> Self {
        Self::new(
            400,
            "400",
            format!("Create-only and naming props cannot be modified after creation, class={class}, prop={prop}"),
        )
    }

    /// Own wording (the reference gives no verbatim text).
    pub fn naming_prop_missing(class: &str, prop: &str) -> Self {
        Self::new(
            400,
            "400",
            format!("Invalid request. Naming property '{prop}' of class {class} must be specified"),
        )
    }

    /// Own wording (the reference gives no verbatim text).
    pub fn read_only(class: &str) -> Self {
        Self::new(
            400,
            "400",
            format!(
                "Invalid request. Objects of class {class} cannot be created, modified or deleted"
            ),
        )
    }

    pub fn bad_filter(filter: &str) -> Self {
        Self::new(400, "400", format!("Incorrect filter format for {filter}"))
    }

    /// Own wording (the reference gives no verbatim text).
    pub fn filter_prop_unknown(prop: &str, class: &str) -> Self {
        Self::new(
            400,
            "400",
            format!("Invalid filter: property {prop} not found in class {class}"),
        )
    }

    /// Own wording (the reference gives no verbatim text).
    pub fn bad_query_value(param: &str, value: &str) -> Self {
        Self::new(
            400,
            "400",
            format!("Invalid value {value} for query parameter {param}"),
        )
    }

    pub fn too_big() -> Self {
        Self::new(
            400,
            "400",
            "Unable to process the query, result dataset is too big".into(),
        )
    }

    pub fn unresolved(what: &str) -> Self {
        Self::new(
            400,
            "400",
            format!("Request failed, unresolved class for {what}"),
        )
    }

    pub fn distributed_transaction() -> Self {
        Self::new(
            400,
            "400",
            "Failed to update multiple items in a single operation - request requires distributed transaction. Please modify request to process each item individually".into(),
        )
    }

    pub fn undeletable(dn: &str) -> Self {
        Self::new(400, "1", format!("{dn} cannot be deleted."))
    }

    /// The envelope body.
    pub fn body(&self) -> Envelope {
        Envelope::new(
            vec![json!({"error":{"attributes":{"code":self.code,"text":self.text}}})],
            1,
        )
    }
}
