//! Client errors. None of them carries a password, token or cookie.

/// A failed APIC operation.
#[derive(Debug, thiserror::Error)]
pub enum ApicError {
    /// The APIC answered with an error envelope (never retried when 4xx).
    #[error("APIC rejected {method} {path}: HTTP {status}, code {code}: {text}")]
    Api {
        method: String,
        path: String,
        status: u16,
        code: String,
        text: String,
    },
    /// Login refused (wrong credentials); not retried, to stay clear of login throttling.
    #[error("APIC login as {user} failed: {text}")]
    Auth { user: String, text: String },
    /// No controller gave a usable answer within the retry budget.
    #[error("APIC unavailable for {method} {path} after {attempts} attempts: {last}")]
    Unavailable {
        method: String,
        path: String,
        attempts: u32,
        last: String,
    },
    /// A 200 answer that is not the documented shape.
    #[error("unexpected APIC answer to {path}: {detail}")]
    Protocol { path: String, detail: String },
    /// An object exists but is not marked `orchestrator:weft`; Weft leaves it alone.
    #[error(
        "APIC object {dn} is not owned by weft (annotation {annotation:?}); refusing to change it"
    )]
    NotOwned { dn: String, annotation: String },
    #[error("APIC client configuration: {0}")]
    Config(String),
}

impl ApicError {
    /// The APIC error code (`"102"`, `"400"`...), when the APIC sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApicError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (the APIC was busy or unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, ApicError::Unavailable { .. })
    }
}
