//! Configuration: an optional TOML file, then `WEFT_*` environment overrides.
//!
//! Every secret (today: the database URL, which may carry a password) can also come from a
//! file named by `<VAR>_FILE`, so it never has to sit in the config file or the process
//! environment. Errors name the setting and the place it came from.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// A string that must not appear in logs or error messages (one type for the database URL,
/// agent tokens and the APIC password).
pub use weft_apic::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("invalid setting `{setting}` (from {origin}): {message}")]
    Invalid {
        setting: &'static str,
        origin: String,
        message: String,
    },
    #[error("missing setting `{setting}`: set it in the config file or in {env} / {env}_FILE")]
    Missing {
        setting: &'static str,
        env: &'static str,
    },
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("`{s}` is not `text` or `json`")),
        }
    }
}

/// How long and how many client connections the HTTP server keeps, so that slow or idle
/// clients cannot hold it (slowloris).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a client has to send a request's complete head; then the connection is closed.
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection stays open.
    pub keep_alive: Duration,
    /// Connections served at once (all worker threads together); more wait in the backlog.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// The validated configuration of one `weft` process.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub http: HttpLimits,
    pub database_url: Secret,
    pub database_max_connections: u32,
    pub migrate_on_start: bool,
    pub vlan_quarantine: Duration,
    pub ip_quarantine: Duration,
    pub log_format: LogFormat,
    pub log_filter: String,
    /// `None` when no APIC is configured: APIC-dependent endpoints then answer 503.
    pub apic: Option<ApicSettings>,
    /// The attach/detach workers and how they talk to agents.
    pub workflow: crate::workflow::Settings,
    /// How often the leading replica reconciles.
    pub reconcile: crate::workflow::reconcile::Settings,
}

/// How to reach the APIC and how long a fabric snapshot stays fresh.
#[derive(Debug, Clone)]
pub struct ApicSettings {
    pub client: weft_apic::ApicConfig,
    /// Age after which the in-memory fabric snapshot (per replica) is re-read on use.
    pub discovery_ttl: Duration,
}

/// The file layout; every field optional so the environment can fill in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    database: DatabaseSection,
    #[serde(default)]
    allocation: AllocationSection,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    apic: ApicSection,
    #[serde(default)]
    workflow: WorkflowSection,
    #[serde(default)]
    reconcile: ReconcileSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileSection {
    interval_secs: Option<u64>,
    agent_concurrency: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowSection {
    workers: Option<usize>,
    max_attempts: Option<u32>,
    binding_linger_secs: Option<u64>,
    binding_batch_window_ms: Option<u64>,
    lost_grace_secs: Option<u64>,
    claim_secs: Option<u64>,
    agent_ca_file: Option<PathBuf>,
    managed_vrf: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<String>,
    header_timeout_secs: Option<u64>,
    keep_alive_secs: Option<u64>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseSection {
    url: Option<String>,
    url_file: Option<PathBuf>,
    max_connections: Option<u32>,
    migrate_on_start: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocationSection {
    vlan_quarantine_secs: Option<u64>,
    ip_quarantine_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    format: Option<LogFormat>,
    filter: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApicSection {
    controllers: Option<Vec<String>>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    insecure: Option<bool>,
    connect_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    max_attempts: Option<u32>,
    requests_per_sec: Option<f64>,
    discovery_ttl_secs: Option<u64>,
}

/// Where configuration values are looked up; the process environment in production, a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// One setting: its dotted name in the file and its environment variable.
struct Setting {
    name: &'static str,
    env: &'static str,
}

impl Setting {
    /// A value of this setting refused after it was read, naming where it came from: the
    /// environment wins over the file (see [`pick`]), so a set variable is the origin.
    fn invalid(&self, env: &dyn Env, message: impl Into<String>) -> ConfigError {
        let file_var = format!("{}_FILE", self.env);
        let origin = if env.var(self.env).is_some() {
            format!("environment variable {}", self.env)
        } else if env.var(&file_var).is_some() {
            format!("environment variable {file_var}")
        } else {
            "the config file".into()
        };
        ConfigError::Invalid {
            setting: self.name,
            origin,
            message: message.into(),
        }
    }

    fn missing(&self) -> ConfigError {
        ConfigError::Missing {
            setting: self.name,
            env: self.env,
        }
    }
}

const LISTEN: Setting = Setting {
    name: "server.listen",
    env: "WEFT_LISTEN",
};
const HEADER_TIMEOUT: Setting = Setting {
    name: "server.header_timeout_secs",
    env: "WEFT_HEADER_TIMEOUT_SECS",
};
const KEEP_ALIVE: Setting = Setting {
    name: "server.keep_alive_secs",
    env: "WEFT_KEEP_ALIVE_SECS",
};
const MAX_CONNECTIONS: Setting = Setting {
    name: "server.max_connections",
    env: "WEFT_MAX_CONNECTIONS",
};
const DB_URL: Setting = Setting {
    name: "database.url",
    env: "WEFT_DATABASE_URL",
};
const DB_MAX: Setting = Setting {
    name: "database.max_connections",
    env: "WEFT_DATABASE_MAX_CONNECTIONS",
};
const DB_MIGRATE: Setting = Setting {
    name: "database.migrate_on_start",
    env: "WEFT_MIGRATE_ON_START",
};
const VLAN_Q: Setting = Setting {
    name: "allocation.vlan_quarantine_secs",
    env: "WEFT_VLAN_QUARANTINE_SECS",
};
const IP_Q: Setting = Setting {
    name: "allocation.ip_quarantine_secs",
    env: "WEFT_IP_QUARANTINE_SECS",
};
const LOG_FORMAT: Setting = Setting {
    name: "log.format",
    env: "WEFT_LOG_FORMAT",
};
const LOG_FILTER: Setting = Setting {
    name: "log.filter",
    env: "WEFT_LOG_FILTER",
};

const APIC_CONTROLLERS: Setting = Setting {
    name: "apic.controllers",
    env: "WEFT_APIC_CONTROLLERS",
};
const APIC_USER: Setting = Setting {
    name: "apic.username",
    env: "WEFT_APIC_USERNAME",
};
const APIC_PASSWORD: Setting = Setting {
    name: "apic.password",
    env: "WEFT_APIC_PASSWORD",
};
const APIC_CA: Setting = Setting {
    name: "apic.ca_file",
    env: "WEFT_APIC_CA_FILE",
};
const APIC_INSECURE: Setting = Setting {
    name: "apic.insecure",
    env: "WEFT_APIC_INSECURE",
};
const APIC_CONNECT: Setting = Setting {
    name: "apic.connect_timeout_secs",
    env: "WEFT_APIC_CONNECT_TIMEOUT_SECS",
};
const APIC_REQUEST: Setting = Setting {
    name: "apic.request_timeout_secs",
    env: "WEFT_APIC_REQUEST_TIMEOUT_SECS",
};
const APIC_ATTEMPTS: Setting = Setting {
    name: "apic.max_attempts",
    env: "WEFT_APIC_MAX_ATTEMPTS",
};
const APIC_RATE: Setting = Setting {
    name: "apic.requests_per_sec",
    env: "WEFT_APIC_REQUESTS_PER_SEC",
};
const APIC_TTL: Setting = Setting {
    name: "apic.discovery_ttl_secs",
    env: "WEFT_APIC_DISCOVERY_TTL_SECS",
};
const WF_WORKERS: Setting = Setting {
    name: "workflow.workers",
    env: "WEFT_WORKFLOW_WORKERS",
};
const WF_ATTEMPTS: Setting = Setting {
    name: "workflow.max_attempts",
    env: "WEFT_WORKFLOW_MAX_ATTEMPTS",
};
const WF_LINGER: Setting = Setting {
    name: "workflow.binding_linger_secs",
    env: "WEFT_BINDING_LINGER_SECS",
};
const WF_BATCH: Setting = Setting {
    name: "workflow.binding_batch_window_ms",
    env: "WEFT_WORKFLOW_BINDING_BATCH_WINDOW_MS",
};
const WF_GRACE: Setting = Setting {
    name: "workflow.lost_grace_secs",
    env: "WEFT_LOST_GRACE_SECS",
};
const WF_CLAIM: Setting = Setting {
    name: "workflow.claim_secs",
    env: "WEFT_WORKFLOW_CLAIM_SECS",
};
const WF_AGENT_CA: Setting = Setting {
    name: "workflow.agent_ca_file",
    env: "WEFT_AGENT_CA_FILE",
};
const WF_VRF: Setting = Setting {
    name: "workflow.managed_vrf",
    env: "WEFT_MANAGED_VRF",
};

const RC_INTERVAL: Setting = Setting {
    name: "reconcile.interval_secs",
    env: "WEFT_RECONCILE_INTERVAL_SECS",
};
const RC_AGENTS: Setting = Setting {
    name: "reconcile.agent_concurrency",
    env: "WEFT_RECONCILE_AGENT_CONCURRENCY",
};

/// Every setting with its environment variable, for `--help` and the README.
pub const SETTINGS: &[(&str, &str)] = &[
    (LISTEN.name, LISTEN.env),
    (HEADER_TIMEOUT.name, HEADER_TIMEOUT.env),
    (KEEP_ALIVE.name, KEEP_ALIVE.env),
    (MAX_CONNECTIONS.name, MAX_CONNECTIONS.env),
    (DB_URL.name, DB_URL.env),
    ("database.url_file", "WEFT_DATABASE_URL_FILE"),
    (DB_MAX.name, DB_MAX.env),
    (DB_MIGRATE.name, DB_MIGRATE.env),
    (VLAN_Q.name, VLAN_Q.env),
    (IP_Q.name, IP_Q.env),
    (LOG_FORMAT.name, LOG_FORMAT.env),
    (LOG_FILTER.name, LOG_FILTER.env),
    (APIC_CONTROLLERS.name, APIC_CONTROLLERS.env),
    (APIC_USER.name, APIC_USER.env),
    (APIC_PASSWORD.name, APIC_PASSWORD.env),
    ("apic.password_file", "WEFT_APIC_PASSWORD_FILE"),
    (APIC_CA.name, APIC_CA.env),
    (APIC_INSECURE.name, APIC_INSECURE.env),
    (APIC_CONNECT.name, APIC_CONNECT.env),
    (APIC_REQUEST.name, APIC_REQUEST.env),
    (APIC_ATTEMPTS.name, APIC_ATTEMPTS.env),
    (APIC_RATE.name, APIC_RATE.env),
    (APIC_TTL.name, APIC_TTL.env),
    (WF_WORKERS.name, WF_WORKERS.env),
    (WF_ATTEMPTS.name, WF_ATTEMPTS.env),
    (WF_LINGER.name, WF_LINGER.env),
    (WF_BATCH.name, WF_BATCH.env),
    (WF_GRACE.name, WF_GRACE.env),
    (WF_CLAIM.name, WF_CLAIM.env),
    (WF_AGENT_CA.name, WF_AGENT_CA.env),
    (WF_VRF.name, WF_VRF.env),
    (RC_INTERVAL.name, RC_INTERVAL.env),
    (RC_AGENTS.name, RC_AGENTS.env),
];

/// The `[reconcile]` section with the environment on top.
fn reconcile_settings(
    env: &dyn Env,
    f: ReconcileSection,
) -> Result<crate::workflow::reconcile::Settings, ConfigError> {
    let mut s = crate::workflow::reconcile::Settings::default();
    if let Some(n) = pick(env, &RC_INTERVAL, f.interval_secs)? {
        if !(1..=86_400).contains(&n) {
            return Err(RC_INTERVAL.invalid(env, "must be 1-86400"));
        }
        s.interval = Duration::from_secs(n);
    }
    if let Some(n) = pick(env, &RC_AGENTS, f.agent_concurrency)? {
        if !(1..=1024).contains(&n) {
            return Err(RC_AGENTS.invalid(env, "must be 1-1024"));
        }
        s.agent_concurrency = n;
    }
    Ok(s)
}

/// The `[workflow]` section with the environment on top. The agents' CA file is read here, so
/// an unreadable one stops the start instead of failing every attach.
fn workflow_settings(
    env: &dyn Env,
    f: WorkflowSection,
) -> Result<crate::workflow::Settings, ConfigError> {
    let mut s = crate::workflow::Settings::default();
    if let Some(n) = pick(env, &WF_WORKERS, f.workers)? {
        if !(1..=256).contains(&n) {
            return Err(WF_WORKERS.invalid(env, "must be 1-256"));
        }
        s.workers = n;
    }
    if let Some(n) = pick(env, &WF_ATTEMPTS, f.max_attempts)? {
        if !(1..=100).contains(&n) {
            return Err(WF_ATTEMPTS.invalid(env, "must be 1-100"));
        }
        s.max_attempts = n;
    }
    let secs = |st: &Setting, v: Option<u64>| pick(env, st, v).map(|v| v.map(Duration::from_secs));
    if let Some(d) = secs(&WF_LINGER, f.binding_linger_secs)? {
        s.binding_linger = d;
    }
    if let Some(ms) = pick(env, &WF_BATCH, f.binding_batch_window_ms)? {
        if ms > 60_000 {
            return Err(WF_BATCH.invalid(env, "must be 0-60000"));
        }
        s.binding_batch_window = Duration::from_millis(ms);
    }
    if let Some(d) = secs(&WF_GRACE, f.lost_grace_secs)? {
        s.lost_grace = d;
    }
    if let Some(d) = secs(&WF_CLAIM, f.claim_secs)? {
        if d.is_zero() {
            return Err(WF_CLAIM.invalid(env, "must be at least 1"));
        }
        s.claim = d;
    }
    let ca = pick(
        env,
        &WF_AGENT_CA,
        f.agent_ca_file.map(|p| p.display().to_string()),
    )?;
    if let Some(path) = ca {
        let pem = std::fs::read(&path)
            .map_err(|e| WF_AGENT_CA.invalid(env, format!("cannot read {path}: {e}")))?;
        s.agent_ca_pem = Some(std::sync::Arc::new(pem));
    }
    if let Some(vrf) = pick(env, &WF_VRF, f.managed_vrf)? {
        s.managed_vrf = weft_domain::ApicName::parse(&vrf)
            .map_err(|e| WF_VRF.invalid(env, e.0))?
            .to_string();
    }
    Ok(s)
}

/// The `[apic]` section with the environment on top; `None` without controllers.
fn apic_settings(env: &dyn Env, f: ApicSection) -> Result<Option<ApicSettings>, ConfigError> {
    let controllers = match env.var(APIC_CONTROLLERS.env) {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect(),
        None => f.controllers.unwrap_or_default(),
    };
    if controllers.is_empty() {
        return Ok(None);
    }
    for (i, c) in controllers.iter().enumerate() {
        let ok = reqwest::Url::parse(c).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.password().is_none()
        });
        if !ok {
            // The value is not shown: it may carry a password.
            return Err(APIC_CONTROLLERS.invalid(
                env,
                format!(
                    "entry {} is not an http(s):// URL with a host and no credentials",
                    i + 1
                ),
            ));
        }
    }
    let username = pick(env, &APIC_USER, f.username)?.ok_or_else(|| APIC_USER.missing())?;
    let password = secret(env, &APIC_PASSWORD, f.password, f.password_file)?
        .ok_or_else(|| APIC_PASSWORD.missing())?;
    let mut client = weft_apic::ApicConfig::new(controllers, username, password);
    client.ca_file =
        pick(env, &APIC_CA, f.ca_file.map(|p| p.display().to_string()))?.map(PathBuf::from);
    client.insecure = pick(env, &APIC_INSECURE, f.insecure)?.unwrap_or(false);
    let secs = |s: &Setting, v: Option<u64>| pick(env, s, v).map(|v| v.map(Duration::from_secs));
    if let Some(t) = secs(&APIC_CONNECT, f.connect_timeout_secs)? {
        client.connect_timeout = t;
    }
    if let Some(t) = secs(&APIC_REQUEST, f.request_timeout_secs)? {
        client.request_timeout = t;
    }
    if let Some(n) = pick(env, &APIC_ATTEMPTS, f.max_attempts)? {
        if n == 0 {
            return Err(APIC_ATTEMPTS.invalid(env, "must be at least 1"));
        }
        client.retry.max_attempts = n;
    }
    if let Some(rate) = pick(env, &APIC_RATE, f.requests_per_sec)? {
        if !(rate.is_finite() && rate >= 0.0) {
            return Err(APIC_RATE.invalid(env, "must be a number of at least 0 (0: no limit)"));
        }
        client.rate_limit = (rate > 0.0).then(|| weft_apic::RateLimit {
            per_second: rate,
            ..weft_apic::RateLimit::default()
        });
    }
    Ok(Some(ApicSettings {
        client,
        discovery_ttl: secs(&APIC_TTL, f.discovery_ttl_secs)?.unwrap_or(Duration::from_secs(300)),
    }))
}

/// Takes the environment value when set, else the file value, parsing env strings as `T`.
fn pick<T: FromStr>(env: &dyn Env, s: &Setting, file: Option<T>) -> Result<Option<T>, ConfigError>
where
    T::Err: fmt::Display,
{
    match env.var(s.env) {
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|e: T::Err| ConfigError::Invalid {
                setting: s.name,
                origin: format!("environment variable {}", s.env),
                message: e.to_string(),
            }),
        None => Ok(file),
    }
}

/// Reads a secret from `<ENV>`, `<ENV>_FILE`, the file's inline value or its `*_file` path.
fn secret(
    env: &dyn Env,
    s: &Setting,
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    let env_file = format!("{}_FILE", s.env);
    let from_file = |path: &Path, origin: String| {
        std::fs::read_to_string(path)
            .map(|v| Some(Secret::new(v.trim_end_matches(['\n', '\r']))))
            .map_err(|e| ConfigError::Invalid {
                setting: s.name,
                origin,
                message: format!("cannot read {}: {e}", path.display()),
            })
    };
    if let Some(v) = env.var(s.env) {
        return Ok(Some(Secret::new(v)));
    }
    if let Some(p) = env.var(&env_file) {
        return from_file(Path::new(&p), format!("environment variable {env_file}"));
    }
    if let Some(v) = inline {
        return Ok(Some(Secret::new(v)));
    }
    match file {
        Some(p) => from_file(&p, format!("{}_file in the config file", s.name)),
        None => Ok(None),
    }
}

impl Config {
    /// Loads `path` (if any) and applies the environment on top.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        let file = match path {
            None => FileConfig::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::ReadFile {
                    path: p.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
                    path: p.to_owned(),
                    message: e.message().to_owned(),
                })?
            }
        };
        Self::from_parts(file, env)
    }

    fn from_parts(file: FileConfig, env: &dyn Env) -> Result<Self, ConfigError> {
        let listen_raw = pick::<String>(env, &LISTEN, file.server.listen)?
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_raw
            .parse()
            .map_err(|e| LISTEN.invalid(env, format!("`{listen_raw}` is not host:port ({e})")))?;
        let database_url = secret(env, &DB_URL, file.database.url, file.database.url_file)?
            .ok_or_else(|| DB_URL.missing())?;
        if !database_url.expose().starts_with("postgres://")
            && !database_url.expose().starts_with("postgresql://")
        {
            return Err(DB_URL.invalid(
                env,
                "must start with postgres:// (value not shown: it may contain a password)",
            ));
        }
        let database_max_connections =
            pick(env, &DB_MAX, file.database.max_connections)?.unwrap_or(10);
        if database_max_connections == 0 {
            return Err(DB_MAX.invalid(env, "must be at least 1"));
        }
        let secs = |s: &Setting, v: Option<u64>, default: u64| {
            pick(env, s, v).map(|v| Duration::from_secs(v.unwrap_or(default)))
        };
        let defaults = HttpLimits::default();
        let http = HttpLimits {
            header_timeout: secs(
                &HEADER_TIMEOUT,
                file.server.header_timeout_secs,
                defaults.header_timeout.as_secs(),
            )?,
            keep_alive: secs(
                &KEEP_ALIVE,
                file.server.keep_alive_secs,
                defaults.keep_alive.as_secs(),
            )?,
            max_connections: pick(env, &MAX_CONNECTIONS, file.server.max_connections)?
                .unwrap_or(defaults.max_connections),
        };
        // Zero would switch the header timeout off (the slowloris hole) or serve nobody.
        if http.header_timeout.is_zero() {
            return Err(HEADER_TIMEOUT.invalid(env, "must be at least 1"));
        }
        if http.max_connections == 0 {
            return Err(MAX_CONNECTIONS.invalid(env, "must be at least 1"));
        }
        Ok(Self {
            listen,
            http,
            database_url,
            database_max_connections,
            migrate_on_start: pick(env, &DB_MIGRATE, file.database.migrate_on_start)?
                .unwrap_or(true),
            vlan_quarantine: secs(&VLAN_Q, file.allocation.vlan_quarantine_secs, 3600)?,
            ip_quarantine: secs(&IP_Q, file.allocation.ip_quarantine_secs, 600)?,
            log_format: pick(env, &LOG_FORMAT, file.log.format)?.unwrap_or(LogFormat::Text),
            log_filter: pick(env, &LOG_FILTER, file.log.filter)?.unwrap_or_else(|| "info".into()),
            apic: apic_settings(env, file.apic)?,
            workflow: workflow_settings(env, file.workflow)?,
            reconcile: reconcile_settings(env, file.reconcile)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(toml_text).map_err(|e| ConfigError::ParseFile {
            path: "t".into(),
            message: e.to_string(),
        })?;
        Config::from_parts(file, env)
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = [
            ("WEFT_LISTEN", "0.0.0.0:9000"),
            ("WEFT_IP_QUARANTINE_SECS", "5"),
        ];
        let c = parse(
            "[database]\nurl = \"postgres://x@h/db\"\n[server]\nlisten = \"127.0.0.1:1\"",
            &env,
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.ip_quarantine, Duration::from_secs(5));
        assert_eq!(c.vlan_quarantine, Duration::from_secs(3600));
    }

    #[test]
    fn errors_name_the_setting_and_never_show_the_database_url() {
        let env = [("WEFT_DATABASE_URL", "mysql://user:hunter2@h/db")];
        let e = parse("", &env).unwrap_err().to_string();
        assert!(e.contains("database.url"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse(
            "",
            &[
                ("WEFT_DATABASE_URL", "postgres://h/db"),
                ("WEFT_VLAN_QUARANTINE_SECS", "soon"),
            ],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("allocation.vlan_quarantine_secs"),
            "{e}"
        );
        let e = parse("", &[("X", "y")]).unwrap_err();
        assert!(e.to_string().contains("WEFT_DATABASE_URL_FILE"), "{e}");
        let e = parse(
            "[server]\nlisten = \"nope\"\n[database]\nurl = \"postgres://h/db\"",
            &[("X", "y")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("server.listen"), "{e}");
    }

    #[test]
    fn the_binding_batch_window_comes_from_file_or_environment_within_a_minute() {
        let db = ("WEFT_DATABASE_URL", "postgres://h/db");
        let window = |c: Config| c.workflow.binding_batch_window;
        assert_eq!(
            window(parse("", &[db]).unwrap()),
            Duration::from_millis(200)
        );
        let file = "[workflow]\nbinding_batch_window_ms = 50";
        assert_eq!(
            window(parse(file, &[db]).unwrap()),
            Duration::from_millis(50)
        );
        let env = ("WEFT_WORKFLOW_BINDING_BATCH_WINDOW_MS", "0");
        assert_eq!(window(parse(file, &[db, env]).unwrap()), Duration::ZERO);
        let e = parse(
            "",
            &[db, ("WEFT_WORKFLOW_BINDING_BATCH_WINDOW_MS", "60001")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("workflow.binding_batch_window_ms"), "{e}");
    }

    #[test]
    fn http_limits_have_defaults_and_come_from_file_or_environment() {
        let db = ("WEFT_DATABASE_URL", "postgres://h/db");
        assert_eq!(parse("", &[db]).unwrap().http, HttpLimits::default());
        let file = "[server]\nheader_timeout_secs = 3\nkeep_alive_secs = 7\nmax_connections = 50";
        let c = parse(file, &[db, ("WEFT_KEEP_ALIVE_SECS", "9")]).unwrap();
        assert_eq!(
            c.http,
            HttpLimits {
                header_timeout: Duration::from_secs(3),
                keep_alive: Duration::from_secs(9),
                max_connections: 50,
            }
        );
        for (var, setting) in [
            ("WEFT_HEADER_TIMEOUT_SECS", "server.header_timeout_secs"),
            ("WEFT_MAX_CONNECTIONS", "server.max_connections"),
        ] {
            let e = parse("", &[db, (var, "0")]).unwrap_err().to_string();
            assert!(e.contains(setting) && e.contains(var), "{e}");
        }
    }

    #[test]
    fn a_refused_value_names_the_place_it_came_from() {
        let db = ("WEFT_DATABASE_URL", "postgres://h/db");
        let e = parse("", &[db, ("WEFT_DATABASE_MAX_CONNECTIONS", "0")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("database.max_connections")
                && e.contains("environment variable WEFT_DATABASE_MAX_CONNECTIONS"),
            "{e}"
        );
        let e = parse("[database]\nmax_connections = 0", &[db])
            .unwrap_err()
            .to_string();
        assert!(e.contains("the config file"), "{e}");
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused_by_name() {
        let e = parse("[database]\nurll = \"x\"", &[("X", "y")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("urll"), "{e}");
    }

    #[test]
    fn the_example_config_in_deploy_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/weft.example.toml");
        let env = [
            ("WEFT_DATABASE_URL", "postgres://weft@db/weft"),
            ("WEFT_APIC_PASSWORD", "from-env"),
        ];
        let c = Config::load(Some(&path), &env).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.vlan_quarantine, Duration::from_secs(3600));
        let apic = c.apic.expect("the example configures an APIC");
        assert_eq!(apic.client.controllers.len(), 2);
        assert_eq!(apic.discovery_ttl, Duration::from_secs(300));
        // Without the environment the example points at a secret file that does not exist here.
        let e = Config::load(Some(&path), &[("X", "y")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("database.url") && e.contains("/etc/weft/database-url"),
            "{e}"
        );
    }

    #[test]
    fn the_apic_request_rate_is_limited_by_default_and_configurable_down_to_none() {
        let apic =
            "[apic]\ncontrollers = [\"http://127.0.0.1:1\"]\nusername = \"u\"\npassword = \"p\"\n";
        let db = ("WEFT_DATABASE_URL", "postgres://h/db");
        let rate = |file: &str, env: &dyn Env| {
            parse(&format!("{apic}{file}"), env)
                .map(|c| c.apic.unwrap().client.rate_limit.map(|l| l.per_second))
                .map_err(|e| e.to_string())
        };
        assert_eq!(rate("", &[db]), Ok(Some(5.0)), "the default");
        assert_eq!(rate("requests_per_sec = 50.0", &[db]), Ok(Some(50.0)));
        let off = [db, ("WEFT_APIC_REQUESTS_PER_SEC", "0")];
        assert_eq!(
            rate("requests_per_sec = 50.0", &off),
            Ok(None),
            "0 is no limit"
        );
        let e = rate("requests_per_sec = -1.0", &[db]).unwrap_err();
        assert!(e.contains("apic.requests_per_sec"), "{e}");
    }

    #[test]
    fn apic_is_optional_and_its_password_comes_from_env_or_file_and_is_never_shown() {
        let db = ("WEFT_DATABASE_URL", "postgres://h/db");
        assert!(parse("", &[db]).unwrap().apic.is_none());
        let file = "[apic]\ncontrollers = [\"https://apic1\", \"https://apic2\"]\nusername = \"weft\"\npassword = \"in-file-pw\"\ndiscovery_ttl_secs = 30";
        let a = parse(file, &[db]).unwrap().apic.unwrap();
        assert_eq!(a.client.controllers.len(), 2);
        assert_eq!(a.client.password.expose(), "in-file-pw");
        assert_eq!(a.discovery_ttl, Duration::from_secs(30));
        assert!(!a.client.insecure);
        let a = parse(file, &[db, ("WEFT_APIC_PASSWORD", "env-pw-sekrit")])
            .unwrap()
            .apic
            .unwrap();
        assert_eq!(a.client.password.expose(), "env-pw-sekrit");
        assert!(!format!("{a:?}").contains("env-pw-sekrit"));

        let dir = std::env::temp_dir().join(format!("weft-apic-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "file-pw-sekrit\n").unwrap();
        let pw = pw.to_string_lossy().into_owned();
        let env = [
            db,
            ("WEFT_APIC_CONTROLLERS", "http://127.0.0.1:1"),
            ("WEFT_APIC_USERNAME", "admin"),
            ("WEFT_APIC_PASSWORD_FILE", pw.as_str()),
        ];
        let a = parse("", &env).unwrap().apic.unwrap();
        assert_eq!(a.client.controllers, vec!["http://127.0.0.1:1".to_string()]);
        assert_eq!(a.client.password.expose(), "file-pw-sekrit");
        std::fs::remove_dir_all(&dir).unwrap();

        let e = parse(
            "[apic]\ncontrollers = [\"https://a\"]\nusername = \"u\"",
            &[db],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("apic.password") && e.contains("WEFT_APIC_PASSWORD"),
            "{e}"
        );
        let e = parse(
            "[apic]\ncontrollers = [\"https://u:pw-in-url@a\"]\nusername = \"u\"\npassword = \"p\"",
            &[db],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("apic.controllers") && !e.contains("pw-in-url"),
            "{e}"
        );
    }

    #[test]
    fn secrets_can_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("weft-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("db-url");
        std::fs::write(&f, "postgres://u:p@h/db\n").unwrap();
        let path = f.to_string_lossy().into_owned();
        let c = parse("", &[("WEFT_DATABASE_URL_FILE", path.as_str())]).unwrap();
        assert_eq!(c.database_url.expose(), "postgres://u:p@h/db");
        assert_eq!(format!("{:?}", c.database_url), "Secret(<redacted>)");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
