//! Client configuration: controllers, credentials, TLS, timeouts, retry and rate limit.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A secret string (password, token): never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

/// Bounded retries with jittered exponential backoff (timeouts, 5xx, 405, HTML pages).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time, with 50-100 % jitter.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // Reference §8.3: start ~4 s, cap ~60 s; aci-go-client defaults to 2-3 retries.
        Self {
            max_attempts: 4,
            base_delay: Duration::from_secs(4),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// Client-side request rate limit (token bucket); the APIC's nginx punishes bursts.
#[derive(Debug, Clone)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 5.0,
            burst: 10,
        }
    }
}

/// Everything the client needs to reach an APIC cluster.
#[derive(Debug, Clone)]
pub struct ApicConfig {
    /// Base URLs of the controllers (`https://apic1.example`), tried in order on failure.
    pub controllers: Vec<String>,
    pub username: String,
    pub password: Secret,
    /// Extra CA certificate (PEM) to trust, for APICs with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification (labs only; off by default).
    pub insecure: bool,
    pub connect_timeout: Duration,
    /// Per request; the APIC's nginx gives up after 90 s.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    pub rate_limit: Option<RateLimit>,
    /// `page-size` of class queries.
    pub page_size: usize,
}

impl ApicConfig {
    /// Defaults for everything but the controllers and credentials.
    pub fn new(
        controllers: Vec<String>,
        username: impl Into<String>,
        password: impl Into<Secret>,
    ) -> Self {
        Self {
            controllers,
            username: username.into(),
            password: password.into(),
            ca_file: None,
            insecure: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(100),
            retry: RetryPolicy::default(),
            rate_limit: Some(RateLimit::default()),
            page_size: 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let c = ApicConfig::new(vec!["https://apic".into()], "admin", "hunter2-very-secret");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
