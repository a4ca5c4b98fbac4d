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

/// A string that must not appear in logs or error messages.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

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

/// The validated configuration of one `weft` process.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: Secret,
    pub database_max_connections: u32,
    pub migrate_on_start: bool,
    pub vlan_quarantine: Duration,
    pub ip_quarantine: Duration,
    pub log_format: LogFormat,
    pub log_filter: String,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<String>,
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

const LISTEN: Setting = Setting {
    name: "server.listen",
    env: "WEFT_LISTEN",
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

/// Every setting with its environment variable, for `--help` and the README.
pub const SETTINGS: &[(&str, &str)] = &[
    (LISTEN.name, LISTEN.env),
    (DB_URL.name, DB_URL.env),
    ("database.url_file", "WEFT_DATABASE_URL_FILE"),
    (DB_MAX.name, DB_MAX.env),
    (DB_MIGRATE.name, DB_MIGRATE.env),
    (VLAN_Q.name, VLAN_Q.env),
    (IP_Q.name, IP_Q.env),
    (LOG_FORMAT.name, LOG_FORMAT.env),
    (LOG_FILTER.name, LOG_FILTER.env),
];

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
        let listen = listen_raw.parse().map_err(|e| ConfigError::Invalid {
            setting: LISTEN.name,
            origin: "config".into(),
            message: format!("`{listen_raw}` is not host:port ({e})"),
        })?;
        let database_url = secret(env, &DB_URL, file.database.url, file.database.url_file)?.ok_or(
            ConfigError::Missing {
                setting: DB_URL.name,
                env: DB_URL.env,
            },
        )?;
        if !database_url.expose().starts_with("postgres://")
            && !database_url.expose().starts_with("postgresql://")
        {
            return Err(ConfigError::Invalid {
                setting: DB_URL.name,
                origin: "config".into(),
                message: "must start with postgres:// (value not shown: it may contain a password)"
                    .into(),
            });
        }
        let database_max_connections =
            pick(env, &DB_MAX, file.database.max_connections)?.unwrap_or(10);
        if database_max_connections == 0 {
            return Err(ConfigError::Invalid {
                setting: DB_MAX.name,
                origin: "config".into(),
                message: "must be at least 1".into(),
            });
        }
        let secs = |s: &Setting, v: Option<u64>, default: u64| {
            pick(env, s, v).map(|v| Duration::from_secs(v.unwrap_or(default)))
        };
        Ok(Self {
            listen,
            database_url,
            database_max_connections,
            migrate_on_start: pick(env, &DB_MIGRATE, file.database.migrate_on_start)?
                .unwrap_or(true),
            vlan_quarantine: secs(&VLAN_Q, file.allocation.vlan_quarantine_secs, 3600)?,
            ip_quarantine: secs(&IP_Q, file.allocation.ip_quarantine_secs, 600)?,
            log_format: pick(env, &LOG_FORMAT, file.log.format)?.unwrap_or(LogFormat::Text),
            log_filter: pick(env, &LOG_FILTER, file.log.filter)?.unwrap_or_else(|| "info".into()),
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
    fn unknown_keys_in_the_file_are_refused_by_name() {
        let e = parse("[database]\nurll = \"x\"", &[("X", "y")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("urll"), "{e}");
    }

    #[test]
    fn the_example_config_in_deploy_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/weft.example.toml");
        let env = [("WEFT_DATABASE_URL", "postgres://weft@db/weft")];
        let c = Config::load(Some(&path), &env).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.vlan_quarantine, Duration::from_secs(3600));
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
