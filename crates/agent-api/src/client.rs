//! Typed reqwest client of the agent API, used by the central service.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::{
    AgentState, Attachment, AttachmentSpec, Health, Problem, ResolvedTarget, Segment, SegmentSpec,
    Target, TargetQuery, VlanId,
};

/// Header carrying the caller's request id.
pub const REQUEST_ID: &str = "x-request-id";

/// A bearer token; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Self {
        Token(secret.into())
    }

    /// The secret itself, for the `Authorization` header and constant-time comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a call to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent could not be reached or its answer could not be read (worth retrying).
    #[error("agent at {url} unreachable: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The agent answered with an error document.
    #[error("agent answered {status}: {}", problem.detail.as_deref().unwrap_or(&problem.title))]
    Api {
        status: StatusCode,
        problem: Problem,
    },
    /// The base URL cannot be joined with the API path.
    #[error("invalid agent URL {0}")]
    Url(String),
    /// The root CA given to [`AgentClient::with_root_ca_pem`] holds no usable certificate.
    #[error("invalid root CA PEM: {0}")]
    RootCa(String),
}

impl ClientError {
    /// Whether retrying the same call later may succeed (transport errors and 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Api { status, .. } => status.is_server_error(),
            ClientError::Url(_) | ClientError::RootCa(_) => false,
        }
    }
}

/// A client for one agent.
#[derive(Debug, Clone)]
pub struct AgentClient {
    base: Url,
    token: Token,
    http: reqwest::Client,
    request_id: Option<String>,
}

impl AgentClient {
    /// A client with a 30 s request timeout (attaching is fast; this bounds a hung host).
    pub fn new(base: Url, token: Token) -> Result<Self, ClientError> {
        let http = Self::http_builder()
            .build()
            .map_err(|source| ClientError::Transport {
                url: base.to_string(),
                source,
            })?;
        Ok(Self::with_http(base, token, http))
    }

    /// Like [`AgentClient::new`], also trusting the root CA certificate(s) in `pem`, for
    /// agents serving `https://` with certificates from a private CA. The built-in web
    /// roots stay trusted.
    pub fn with_root_ca_pem(base: Url, token: Token, pem: &[u8]) -> Result<Self, ClientError> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| ClientError::RootCa(e.to_string()))?;
        if certs.is_empty() {
            return Err(ClientError::RootCa("no certificate found".into()));
        }
        // reqwest checks the certificates only here; a bad one is still a RootCa error.
        let http = certs
            .into_iter()
            .fold(Self::http_builder(), |b, cert| b.add_root_certificate(cert))
            .build()
            .map_err(|e| {
                let why = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
                ClientError::RootCa(why)
            })?;
        Ok(Self::with_http(base, token, http))
    }

    fn http_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder().timeout(Duration::from_secs(30))
    }

    /// A client sharing an existing reqwest client (connection pool, timeouts).
    pub fn with_http(base: Url, token: Token, http: reqwest::Client) -> Self {
        AgentClient {
            base,
            token,
            http,
            request_id: None,
        }
    }

    /// A client whose calls carry `x-request-id: <id>`, so the agent's logs of this work
    /// carry the central service's request id.
    pub fn with_request_id(&self, id: impl Into<String>) -> Self {
        AgentClient {
            request_id: Some(id.into()),
            ..self.clone()
        }
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let req = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose());
        match &self.request_id {
            Some(id) => req.header(REQUEST_ID, id),
            None => req,
        }
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, "healthz", None::<&()>).await
    }

    pub async fn state(&self) -> Result<AgentState, ClientError> {
        self.call(Method::GET, "v1/state", None::<&()>).await
    }

    /// Whether the agent finds `target` (a running container, a live PID, an existing
    /// namespace); changes nothing. A missing one is a 422 [`ClientError::Api`].
    pub async fn resolve(&self, target: &Target) -> Result<ResolvedTarget, ClientError> {
        let url = self.url("v1/target")?;
        let req = self
            .request(Method::GET, url.clone())
            .query(&TargetQuery::from(target));
        Self::json(req, &url).await
    }

    pub async fn ensure_segment(
        &self,
        vlan: VlanId,
        spec: &SegmentSpec,
    ) -> Result<Segment, ClientError> {
        self.call(Method::PUT, &format!("v1/segments/{vlan}"), Some(spec))
            .await
    }

    pub async fn remove_segment(&self, vlan: VlanId) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &format!("v1/segments/{vlan}"))
            .await
    }

    pub async fn ensure_attachment(
        &self,
        id: Uuid,
        spec: &AttachmentSpec,
    ) -> Result<Attachment, ClientError> {
        self.call(Method::PUT, &format!("v1/attachments/{id}"), Some(spec))
            .await
    }

    pub async fn remove_attachment(&self, id: Uuid) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &format!("v1/attachments/{id}"))
            .await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = self.url(path)?;
        let mut req = self.request(method, url.clone());
        if let Some(body) = body {
            req = req.json(body);
        }
        Self::json(req, &url).await
    }

    /// Sends `req` and reads its JSON answer.
    async fn json<T: DeserializeOwned>(
        req: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<T, ClientError> {
        let resp = Self::check(req.send().await, url).await?;
        resp.json().await.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })
    }

    async fn call_empty(&self, method: Method, path: &str) -> Result<(), ClientError> {
        let url = self.url(path)?;
        let req = self.request(method, url.clone());
        Self::check(req.send().await, &url).await.map(drop)
    }

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        let mut base = self.base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        base.join(path)
            .map_err(|_| ClientError::Url(self.base.to_string()))
    }

    async fn check(
        sent: Result<reqwest::Response, reqwest::Error>,
        url: &Url,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = sent.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let problem = serde_json::from_str(&text).unwrap_or_else(|_| Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("error").into(),
            status: status.as_u16(),
            detail: Some(text.chars().take(500).collect()),
            errors: Vec::new(),
        });
        Err(ClientError::Api { status, problem })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_is_redacted() {
        let c =
            AgentClient::new("http://127.0.0.1:1/".parse().unwrap(), Token::new("s3cret")).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn a_root_ca_without_a_certificate_is_refused() {
        let base: Url = "https://127.0.0.1:1/".parse().unwrap();
        for pem in [
            &b""[..],
            b"not pem",
            b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
            // Valid PEM, but not a certificate inside.
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let err =
                AgentClient::with_root_ca_pem(base.clone(), Token::new("t"), pem).unwrap_err();
            assert!(matches!(err, ClientError::RootCa(_)), "{err:?}");
            assert!(!err.is_transient());
        }
    }

    #[test]
    fn urls_join_under_a_base_path() {
        let c = AgentClient::new("http://h:9/agent".parse().unwrap(), Token::new("t")).unwrap();
        assert_eq!(
            c.url("v1/state").unwrap().as_str(),
            "http://h:9/agent/v1/state"
        );
    }
}
