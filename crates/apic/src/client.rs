//! The session and transport: one shared login per controller set, refresh before expiry,
//! a re-login on every token error (at most `max_attempts` per call), failover across
//! controllers, bounded jittered retries for transient failures (never for 4xx), and a
//! client-side rate limit.

use crate::config::{ApicConfig, Secret};
use crate::error::ApicError;
use crate::mo::Mo;
use crate::rate::TokenBucket;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tracing::Instrument;

struct Token {
    value: Secret,
    obtained: Instant,
    /// `refreshTimeoutSeconds`: idle lifetime; refreshed at half of it.
    lifetime: Duration,
    /// When the login (not the last refresh) happened, and how long refreshes can extend it.
    session_start: Instant,
    max_lifetime: Duration,
}

impl Token {
    fn needs_refresh(&self) -> bool {
        self.obtained.elapsed() >= self.lifetime / 2
    }

    /// Refreshing cannot outlive `maximumLifetimeSeconds`, and an expired token cannot be
    /// refreshed (the APIC answers 403): log in afresh instead of wasting a round trip.
    fn needs_login(&self) -> bool {
        self.obtained.elapsed() >= self.lifetime
            || self.session_start.elapsed() >= self.max_lifetime.saturating_sub(self.lifetime)
    }
}

struct Session {
    /// Index of the controller in use.
    active: usize,
    token: Option<Token>,
}

/// The outcome of one HTTP exchange.
enum Attempt {
    Ok(Value),
    /// 403 / 401 on an authenticated request: the token is gone.
    TokenInvalid(ApicError),
    /// Worth retrying: timeouts, connection errors (`connect`), 5xx, 405, non-JSON pages.
    Transient {
        reason: String,
        connect: bool,
    },
    Fatal(ApicError),
}

/// A typed APIC client; cheap to share behind an `Arc`, all methods take `&self`.
pub struct ApicClient {
    pub(crate) config: ApicConfig,
    http: reqwest::Client,
    session: Mutex<Session>,
    limiter: Option<Mutex<TokenBucket>>,
}

impl std::fmt::Debug for ApicClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApicClient")
            .field("controllers", &self.config.controllers)
            .finish_non_exhaustive()
    }
}

/// Percent-encodes a query value the way APIC clients do: only what HTTP needs (§2.2).
pub fn query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            ' ' => out.push_str("%20"),
            '+' => out.push_str("%2B"),
            '&' => out.push_str("%26"),
            '#' => out.push_str("%23"),
            '%' => out.push_str("%25"),
            '"' => out.push_str("%22"),
            c => out.push(c),
        }
    }
    out
}

fn backoff(policy: &crate::config::RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(policy.max_delay);
    capped.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

fn error_of(method: &Method, path: &str, status: u16, body: &Value) -> ApicError {
    let a = &body["imdata"][0]["error"]["attributes"];
    ApicError::Api {
        method: method.to_string(),
        path: path.to_string(),
        status,
        code: a["code"].as_str().unwrap_or_default().to_string(),
        text: a["text"].as_str().unwrap_or_default().to_string(),
    }
}

fn parse_session(v: &Value) -> Option<Token> {
    let first = &v["imdata"][0];
    let attrs = first
        .get("aaaLogin")
        .or_else(|| first.get("aaaRefresh"))?
        .get("attributes")?;
    let token = attrs.get("token")?.as_str()?;
    let secs = |name: &str, default: u64| {
        let n = attrs
            .get(name)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok());
        Duration::from_secs(n.unwrap_or(default))
    };
    let now = Instant::now();
    Some(Token {
        value: Secret::new(token),
        obtained: now,
        lifetime: secs("refreshTimeoutSeconds", 300),
        session_start: now,
        max_lifetime: secs("maximumLifetimeSeconds", 86_400),
    })
}

impl ApicClient {
    /// Builds the client (TLS settings, timeouts); does not contact the APIC yet.
    pub fn new(mut config: ApicConfig) -> Result<Self, ApicError> {
        if config.controllers.is_empty() {
            return Err(ApicError::Config(
                "at least one controller URL is required".into(),
            ));
        }
        for c in &mut config.controllers {
            while c.ends_with('/') {
                c.pop();
            }
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .danger_accept_invalid_certs(config.insecure);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                ApicError::Config(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                ApicError::Config(format!("CA file {} is not PEM: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| ApicError::Config(format!("HTTP client: {e}")))?;
        let limiter = config
            .rate_limit
            .as_ref()
            .map(|l| Mutex::new(TokenBucket::new(l, Instant::now())));
        Ok(Self {
            config,
            http,
            session: Mutex::new(Session {
                active: 0,
                token: None,
            }),
            limiter,
        })
    }

    /// Waits for this request's turn under the rate limit. Callers pace before they take the
    /// session token, so a request never waits its turn holding a token that dies meanwhile.
    async fn pace(&self) {
        if let Some(l) = &self.limiter {
            let wait = l.lock().await.reserve(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// One HTTP exchange, sent at once (the caller has paced it).
    async fn send_once(
        &self,
        idx: usize,
        method: &Method,
        path: &str,
        body: Option<&str>,
        token: Option<&Secret>,
    ) -> Attempt {
        let url = format!("{}{path}", self.config.controllers[idx]);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = token {
            req = req.header(
                reqwest::header::COOKIE,
                format!("APIC-cookie={}", t.expose()),
            );
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let connect = e.is_connect();
                // reqwest errors name the URL (DNs only, no credentials: those are in headers/body).
                return Attempt::Transient {
                    reason: format!("controller {idx}: {e}"),
                    connect,
                };
            }
        };
        let status = resp.status().as_u16();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                return Attempt::Transient {
                    reason: format!("reading body: {e}"),
                    connect: false,
                }
            }
        };
        let Ok(json) = serde_json::from_str::<Value>(&text) else {
            return Attempt::Transient {
                reason: format!("HTTP {status} with a non-JSON body (overloaded APIC?)"),
                connect: false,
            };
        };
        match status {
            200 => Attempt::Ok(json),
            401 | 403 if token.is_some() => {
                Attempt::TokenInvalid(error_of(method, path, status, &json))
            }
            405 | 500..=599 => Attempt::Transient {
                reason: format!("HTTP {status}"),
                connect: false,
            },
            _ => Attempt::Fatal(error_of(method, path, status, &json)),
        }
    }

    fn unavailable(method: &Method, path: &str, attempts: u32, last: String) -> ApicError {
        ApicError::Unavailable {
            method: method.to_string(),
            path: path.to_string(),
            attempts,
            last,
        }
    }

    /// Whether to wait before the next attempt: always, except right after failing over.
    fn should_wait(&self, connect: bool, attempt: u32) -> bool {
        !connect || (attempt as usize).is_multiple_of(self.config.controllers.len())
    }

    async fn login_locked(&self, s: &mut Session) -> Result<(), ApicError> {
        let user = &self.config.username;
        let body = json!({"aaaUser": {"attributes": {"name": user, "pwd": self.config.password.expose()}}}).to_string();
        let max = self.config.retry.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=max {
            let idx = s.active;
            tracing::debug!(controller = idx, attempt, "apic login");
            self.pace().await;
            match self
                .send_once(idx, &Method::POST, "/api/aaaLogin.json", Some(&body), None)
                .await
            {
                Attempt::Ok(v) => {
                    let token = parse_session(&v).ok_or_else(|| ApicError::Protocol {
                        path: "/api/aaaLogin.json".into(),
                        detail: "no aaaLogin token in the answer".into(),
                    })?;
                    s.token = Some(token);
                    return Ok(());
                }
                Attempt::Fatal(ApicError::Api {
                    status: 401, text, ..
                })
                | Attempt::TokenInvalid(ApicError::Api { text, .. }) => {
                    return Err(ApicError::Auth {
                        user: user.clone(),
                        text,
                    })
                }
                Attempt::Fatal(e) | Attempt::TokenInvalid(e) => return Err(e),
                Attempt::Transient { reason, connect } => {
                    tracing::warn!(controller = idx, attempt, %reason, "apic login failed, retrying");
                    if connect {
                        s.active = (idx + 1) % self.config.controllers.len();
                    }
                    last = reason;
                    if attempt < max && self.should_wait(connect, attempt) {
                        tokio::time::sleep(backoff(&self.config.retry, attempt)).await;
                    }
                }
            }
        }
        Err(Self::unavailable(
            &Method::POST,
            "/api/aaaLogin.json",
            max,
            last,
        ))
    }

    /// A valid token, logging in or refreshing (at half its lifetime) as needed.
    async fn token(&self) -> Result<(usize, Secret), ApicError> {
        let mut s = self.session.lock().await;
        enum Need {
            Login,
            Refresh(Secret, Instant),
            Nothing,
        }
        let need = match s.token.as_ref() {
            None => Need::Login,
            Some(t) if t.needs_login() => Need::Login,
            Some(t) if t.needs_refresh() => Need::Refresh(t.value.clone(), t.session_start),
            Some(_) => Need::Nothing,
        };
        match need {
            Need::Login => self.login_locked(&mut s).await?,
            Need::Nothing => {}
            Need::Refresh(old, started) => {
                self.pace().await;
                let refreshed = match self
                    .send_once(
                        s.active,
                        &Method::GET,
                        "/api/aaaRefresh.json",
                        None,
                        Some(&old),
                    )
                    .await
                {
                    Attempt::Ok(v) => parse_session(&v),
                    _ => None,
                };
                match refreshed {
                    Some(t) => {
                        tracing::debug!("apic session refreshed");
                        s.token = Some(Token {
                            session_start: started,
                            ..t
                        });
                    }
                    None => self.login_locked(&mut s).await?,
                }
            }
        }
        let token =
            s.token
                .as_ref()
                .map(|t| t.value.clone())
                .ok_or_else(|| ApicError::Protocol {
                    path: "/api/aaaLogin.json".into(),
                    detail: "no session after login".into(),
                })?;
        Ok((s.active, token))
    }

    /// Forgets `token` unless someone already replaced it.
    async fn drop_token(&self, token: &Secret) {
        let mut s = self.session.lock().await;
        if s.token.as_ref().is_some_and(|t| &t.value == token) {
            s.token = None;
        }
    }

    /// Moves off controller `idx` after a connection failure.
    async fn fail_over(&self, idx: usize) {
        let mut s = self.session.lock().await;
        if s.active == idx {
            s.active = (idx + 1) % self.config.controllers.len();
            s.token = None;
            tracing::warn!(from = idx, to = s.active, "apic controller failover");
        }
    }

    /// One API call with session handling and retries; returns the JSON envelope.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Value, ApicError> {
        let span = tracing::debug_span!("apic", %method, path);
        async {
            let max = self.config.retry.max_attempts.max(1);
            let (mut attempt, mut relogins, mut last) = (0, 0, String::new());
            while attempt < max {
                attempt += 1;
                self.pace().await;
                let (idx, token) = self.token().await?;
                match self
                    .send_once(idx, &method, path, body.as_deref(), Some(&token))
                    .await
                {
                    Attempt::Ok(v) => return Ok(v),
                    // Every token that expires while the call waits out overload pages costs
                    // one login, not the call: a rejection does not use up a transient
                    // attempt. Bounded all the same, so an APIC that rejects every fresh
                    // token fails the call instead of looping.
                    Attempt::TokenInvalid(_) if relogins < max => {
                        relogins += 1;
                        tracing::info!(relogins, "apic token rejected, logging in again");
                        attempt -= 1;
                        self.drop_token(&token).await;
                    }
                    Attempt::TokenInvalid(e) | Attempt::Fatal(e) => return Err(e),
                    Attempt::Transient { reason, connect } => {
                        tracing::warn!(attempt, %reason, "apic request failed, retrying");
                        if connect {
                            self.fail_over(idx).await;
                        }
                        last = reason;
                        if attempt < max && self.should_wait(connect, attempt) {
                            tokio::time::sleep(backoff(&self.config.retry, attempt)).await;
                        }
                    }
                }
            }
            Err(Self::unavailable(&method, path, max, last))
        }
        .instrument(span)
        .await
    }

    /// Logs in now (otherwise the first request does).
    pub async fn login(&self) -> Result<(), ApicError> {
        let mut s = self.session.lock().await;
        self.login_locked(&mut s).await
    }

    /// Ends the session (on shutdown), freeing it on the APIC.
    pub async fn logout(&self) -> Result<(), ApicError> {
        let mut s = self.session.lock().await;
        let Some(t) = s.token.take() else {
            return Ok(());
        };
        let body = json!({"aaaUser": {"attributes": {"name": self.config.username}}}).to_string();
        self.pace().await;
        match self
            .send_once(
                s.active,
                &Method::POST,
                "/api/aaaLogout.json",
                Some(&body),
                Some(&t.value),
            )
            .await
        {
            Attempt::Ok(_) | Attempt::TokenInvalid(_) => Ok(()),
            Attempt::Fatal(e) => Err(e),
            Attempt::Transient { reason, .. } => Err(Self::unavailable(
                &Method::POST,
                "/api/aaaLogout.json",
                1,
                reason,
            )),
        }
    }

    fn imdata(path: &str, v: &Value) -> Result<(usize, Vec<Mo>), ApicError> {
        let protocol = |detail: &str| ApicError::Protocol {
            path: path.to_string(),
            detail: detail.to_string(),
        };
        let items = v["imdata"]
            .as_array()
            .ok_or_else(|| protocol("no imdata"))?;
        let mos = items
            .iter()
            .map(Mo::from_value)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| protocol("malformed object"))?;
        let total = v["totalCount"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(mos.len());
        Ok((total, mos))
    }

    /// `GET /api/mo/<dn>.json?<query>`: the object, or `None` if absent.
    pub async fn get_mo(&self, dn: &str, query: &str) -> Result<Option<Mo>, ApicError> {
        Ok(self.mo_query(dn, query).await?.into_iter().next())
    }

    /// `GET /api/mo/<dn>.json?<query>`: every object of the answer (`query-target=subtree`...).
    pub async fn mo_query(&self, dn: &str, query: &str) -> Result<Vec<Mo>, ApicError> {
        let path = if query.is_empty() {
            format!("/api/mo/{dn}.json")
        } else {
            format!("/api/mo/{dn}.json?{query}")
        };
        let v = self.call(Method::GET, &path, None).await?;
        Ok(Self::imdata(&path, &v)?.1)
    }

    /// All objects of `class` matching `filter` (a `query-target-filter`), page by page.
    pub async fn class_all(&self, class: &str, filter: Option<&str>) -> Result<Vec<Mo>, ApicError> {
        self.class_query("", class, filter).await
    }

    /// Objects of `class` in the subtree of `scope` (a DN-scoped class query), page by page.
    pub async fn class_under(
        &self,
        scope: &str,
        class: &str,
        filter: Option<&str>,
    ) -> Result<Vec<Mo>, ApicError> {
        self.class_query(&format!("{scope}/"), class, filter).await
    }

    /// `prefix` is empty or a scope DN followed by `/`.
    async fn class_query(
        &self,
        prefix: &str,
        class: &str,
        filter: Option<&str>,
    ) -> Result<Vec<Mo>, ApicError> {
        let size = self.config.page_size.max(1);
        let mut out = Vec::new();
        for page in 0.. {
            let mut path = format!(
                "/api/node/class/{prefix}{class}.json?order-by={class}.dn|asc&page={page}&page-size={size}"
            );
            if let Some(f) = filter {
                path.push_str("&query-target-filter=");
                path.push_str(&query_value(f));
            }
            let v = self.call(Method::GET, &path, None).await?;
            let (total, mos) = Self::imdata(&path, &v)?;
            let got = mos.len();
            out.extend(mos);
            if got < size || out.len() >= total {
                break;
            }
        }
        Ok(out)
    }

    /// `POST /api/mo/<target>.json` with `mo` as the root.
    pub async fn post_mo(&self, target: &str, mo: &Mo) -> Result<(), ApicError> {
        let body = serde_json::to_string(mo).map_err(|e| ApicError::Protocol {
            path: target.into(),
            detail: e.to_string(),
        })?;
        self.call(Method::POST, &format!("/api/mo/{target}.json"), Some(body))
            .await
            .map(drop)
    }

    /// `DELETE /api/mo/<dn>.json` (absent objects are fine).
    pub async fn delete_mo(&self, dn: &str) -> Result<(), ApicError> {
        self.call(Method::DELETE, &format!("/api/mo/{dn}.json"), None)
            .await
            .map(drop)
    }
}
