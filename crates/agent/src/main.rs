//! weft-agent binary: flags and environment → [`Config`], then serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use reqwest::Url;
use tracing_subscriber::EnvFilter;
use weft_agent::agent::Agent;
use weft_agent::config::{Config, HttpLimits, Naming, TlsFiles};
use weft_agent::events::Callback;
use weft_agent_api::{Backend, Mtu, Token};
use weft_ovsdb::DatapathType;

#[derive(Parser)]
#[command(
    version,
    about = "Weft per-host agent: VLAN segments and container wiring"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the agent API (the default).
    Run,
    /// Print the OpenAPI document of the agent API.
    Openapi,
    /// Attach/detach N namespaces with the agent, the kernel alone, an `ip` script and
    /// netavark, in a private network namespace; prints a Markdown table.
    Bench {
        #[arg(long, value_delimiter = ',', default_value = "50,200")]
        sizes: Vec<usize>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Datapath {
    System,
    Netdev,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, env = "WEFT_AGENT_LISTEN", default_value = "0.0.0.0:9180")]
    listen: SocketAddr,
    /// Uplink interfaces, comma separated; the first is the default.
    #[arg(
        long,
        env = "WEFT_AGENT_UPLINKS",
        value_delimiter = ',',
        default_value = "eth0"
    )]
    uplinks: Vec<String>,
    /// linux-bridge, ovs or macvlan.
    #[arg(
        long,
        env = "WEFT_AGENT_BACKEND",
        value_parser = Backend::parse,
        default_value = "linux-bridge"
    )]
    backend: Backend,
    /// Default MTU of container interfaces and bridges, 68-9216.
    #[arg(long, env = "WEFT_AGENT_MTU", value_parser = parse_mtu, default_value = "1500")]
    mtu: Mtu,
    #[arg(long, env = "WEFT_AGENT_BRIDGE_PREFIX", default_value = "wbr")]
    bridge_prefix: String,
    #[arg(long, env = "WEFT_AGENT_VETH_PREFIX", default_value = "wf")]
    veth_prefix: String,
    #[arg(long, env = "WEFT_AGENT_OVS_BRIDGE", default_value = "br-weft")]
    ovs_bridge: String,
    #[arg(
        long,
        env = "WEFT_AGENT_OVS_DB",
        default_value = "unix:/var/run/openvswitch/db.sock"
    )]
    ovs_db: String,
    #[arg(
        long,
        env = "WEFT_AGENT_OVS_DATAPATH",
        value_enum,
        default_value = "system"
    )]
    ovs_datapath: Datapath,
    #[arg(
        long,
        env = "WEFT_AGENT_STATE_FILE",
        default_value = "/var/lib/weft-agent/state.json"
    )]
    state_file: PathBuf,
    /// Docker socket; an empty value turns Docker support off.
    #[arg(
        long,
        env = "WEFT_AGENT_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    docker_socket: String,
    /// File holding the bearer token callers must present (or set WEFT_AGENT_TOKEN).
    #[arg(long, env = "WEFT_AGENT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// URL the agent POSTs container events to.
    #[arg(long, env = "WEFT_AGENT_CENTRAL_URL")]
    central_url: Option<Url>,
    /// File holding the token for the central callback (or set WEFT_AGENT_CENTRAL_TOKEN).
    #[arg(long, env = "WEFT_AGENT_CENTRAL_TOKEN_FILE")]
    central_token_file: Option<PathBuf>,
    /// PEM certificate chain to serve the API over TLS with (needs --tls-key).
    #[arg(long, env = "WEFT_AGENT_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "WEFT_AGENT_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Seconds a client has to send a request's line and headers before it is closed.
    #[arg(long, env = "WEFT_AGENT_REQUEST_HEAD_TIMEOUT", default_value = "5",
        value_parser = clap::value_parser!(u64).range(1..))]
    request_head_timeout: u64,
    /// Seconds an idle connection is kept open for a next request; 0 closes it at once.
    #[arg(long, env = "WEFT_AGENT_KEEP_ALIVE", default_value = "5")]
    keep_alive: u64,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, env = "WEFT_AGENT_MAX_CONNECTIONS", default_value = "256",
        value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
}

/// A secret from `<VAR>` or the file named by a flag; never from a plain flag (it would
/// show in `ps`).
fn secret(var: &str, file: Option<&PathBuf>) -> anyhow::Result<Option<Token>> {
    if let Ok(v) = std::env::var(var) {
        return Ok(Some(Token::new(v.trim())));
    }
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            Ok(Some(Token::new(text.trim())))
        }
        None => Ok(None),
    }
}

fn parse_mtu(s: &str) -> anyhow::Result<Mtu> {
    let n: u16 = s
        .parse()
        .with_context(|| format!("MTU {s:?} is not a number"))?;
    Ok(Mtu::new(n)?)
}

impl RunArgs {
    /// The TLS acceptor, loaded now so a bad file stops the agent before it touches the host.
    fn tls(&self) -> anyhow::Result<Option<rustls::ServerConfig>> {
        let files = TlsFiles::new(self.tls_cert.clone(), self.tls_key.clone())?;
        Ok(files.as_ref().map(weft_agent::tls::acceptor).transpose()?)
    }

    fn into_config(self) -> anyhow::Result<Config> {
        let token = secret("WEFT_AGENT_TOKEN", self.token_file.as_ref())?.context(
            "set WEFT_AGENT_TOKEN or --token-file: the agent API requires a bearer token",
        )?;
        if let Some(url) = &self.central_url {
            // The URL is logged when a callback fails; credentials belong in the token.
            anyhow::ensure!(
                url.username().is_empty() && url.password().is_none(),
                "--central-url must not carry credentials; use WEFT_AGENT_CENTRAL_TOKEN(_FILE)"
            );
        }
        Ok(Config {
            listen: self.listen,
            token,
            uplinks: self.uplinks,
            backend: self.backend,
            naming: Naming {
                bridge_prefix: self.bridge_prefix,
                veth_prefix: self.veth_prefix,
                ovs_bridge: self.ovs_bridge,
            },
            mtu: self.mtu,
            ovs_db: self.ovs_db,
            ovs_datapath: match self.ovs_datapath {
                Datapath::System => DatapathType::System,
                Datapath::Netdev => DatapathType::Netdev,
            },
            state_file: self.state_file,
            docker_socket: (!self.docker_socket.is_empty())
                .then(|| PathBuf::from(self.docker_socket)),
            central_url: self.central_url,
            central_token: secret("WEFT_AGENT_CENTRAL_TOKEN", self.central_token_file.as_ref())?,
            http: HttpLimits {
                request_head_timeout: Duration::from_secs(self.request_head_timeout),
                keep_alive: Duration::from_secs(self.keep_alive),
                max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            },
        })
    }
}

fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Openapi => {
            println!("{}", weft_agent::http::openapi().to_pretty_json()?);
            Ok(())
        }
        // The bench enters its own network namespace before starting a runtime.
        Command::Bench { sizes } => {
            print!("{}", weft_agent::bench::run(&sizes)?);
            Ok(())
        }
        Command::Run => {
            let tls = cli.run.tls()?;
            let config = cli.run.into_config()?;
            tokio::runtime::Runtime::new()?.block_on(run(config, tls))
        }
    }
}

async fn run(config: Config, tls: Option<rustls::ServerConfig>) -> anyhow::Result<()> {
    let listen = config.listen;
    let callback = Callback::new(config.central_url.clone(), config.central_token.clone())
        .context("build the HTTP client for container event callbacks")?;
    let agent = Agent::new(config).await.context("start agent")?;
    if let Err(e) = agent.reapply().await {
        tracing::warn!(error = %e, "re-applying desired state at start-up was incomplete");
    }
    tokio::spawn(weft_agent::events::watch(agent.clone(), callback));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    tracing::info!(%listen, tls = tls.is_some(), "weft-agent serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listen for SIGTERM")?;
    // SIGINT or SIGTERM (systemd, docker stop): finish the requests in flight, then exit.
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    match tls {
        Some(tls) => weft_agent::http::serve_tls(agent, listener, tls, shutdown).await?,
        None => weft_agent::http::serve(agent, listener, shutdown).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        std::env::set_var("WEFT_AGENT_TOKEN", "t");
        let cli = Cli::try_parse_from([&["weft-agent"], args].concat())?;
        cli.run.into_config()
    }

    #[test]
    fn flags_use_the_domain_parsers_and_refuse_credentials_in_the_callback_url() {
        let c = parse(&["--backend", "macvlan", "--mtu", "9000"]).unwrap();
        assert_eq!((c.backend, c.mtu.get()), (Backend::Macvlan, 9000));
        assert!(parse(&["--backend", "vxlan"]).is_err());
        assert!(parse(&["--mtu", "9217"]).is_err());
        assert!(parse(&["--central-url", "http://u:secret@central/cb"]).is_err());
        assert!(parse(&["--central-url", "http://central/cb"]).is_ok());
        assert_eq!(parse(&[]).unwrap().http, HttpLimits::default());
        let c = parse(&["--request-head-timeout", "2", "--keep-alive", "0"]).unwrap();
        assert_eq!(c.http.request_head_timeout, Duration::from_secs(2));
        assert_eq!(c.http.keep_alive, Duration::ZERO);
        assert!(
            parse(&["--request-head-timeout", "0"]).is_err(),
            "0 would mean none"
        );
        assert!(parse(&["--max-connections", "0"]).is_err());
    }

    #[test]
    fn tls_key_without_cert_is_refused_naming_both_settings() {
        let cli = Cli::try_parse_from(["weft-agent", "--tls-key", "/nonexistent/key.pem"]).unwrap();
        let msg = cli.run.tls().expect_err("refused").to_string();
        assert!(
            msg.contains("WEFT_AGENT_TLS_CERT") && msg.contains("WEFT_AGENT_TLS_KEY"),
            "{msg}"
        );
        let cli = Cli::try_parse_from(["weft-agent"]).unwrap();
        assert!(cli.run.tls().unwrap().is_none());
    }
}
