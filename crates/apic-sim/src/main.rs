//! `apic-sim --topology deploy/sim/topology.json --port 8443`

use anyhow::Context;
use apic_sim::{DataPlaneConfig, FaultConfig, HttpLimits, SimConfig, Topology};
use clap::Parser;
use std::time::Duration;

/// An in-memory Cisco APIC speaking the real REST API (plain HTTP).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Topology file (nodes, ports, vPCs, FEXes, LLDP neighbours, seed config).
    #[arg(
        long,
        env = "APIC_SIM_TOPOLOGY",
        default_value = "deploy/sim/topology.json"
    )]
    topology: std::path::PathBuf,
    /// Address to listen on.
    #[arg(long, env = "APIC_SIM_BIND", default_value = "127.0.0.1")]
    bind: String,
    #[arg(long, env = "APIC_SIM_PORT", default_value_t = 8443)]
    port: u16,
    #[arg(long, env = "APIC_SIM_USERNAME", default_value = "admin")]
    username: String,
    /// Password of the simulated user.
    #[arg(
        long,
        env = "APIC_SIM_PASSWORD",
        default_value = "password",
        hide_env_values = true
    )]
    password: String,
    /// Token lifetime (refreshTimeoutSeconds).
    #[arg(long, env = "APIC_SIM_TOKEN_LIFETIME", default_value_t = 600)]
    token_lifetime_secs: u64,
    /// Logins + refreshes per second before throttling (0 disables).
    #[arg(long, env = "APIC_SIM_LOGIN_RATE", default_value_t = 2)]
    login_rate: u32,
    /// Milliseconds a client has to send a complete request head before it is disconnected.
    #[arg(
        long,
        env = "APIC_SIM_CLIENT_REQUEST_TIMEOUT_MS",
        default_value_t = 5000
    )]
    client_request_timeout_ms: u64,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, env = "APIC_SIM_KEEP_ALIVE_SECS", default_value_t = 60)]
    keep_alive_secs: u64,
    /// Open connections per worker thread.
    #[arg(long, env = "APIC_SIM_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Build a real data plane (root): leaf ports as veths on a bridge in a network namespace
    /// of the simulator's own, forwarding only what the deployed bindings allow.
    #[arg(long, env = "APIC_SIM_DATA_PLANE")]
    data_plane: bool,
    /// Name of the data plane's network namespace (must not exist yet).
    #[arg(long, env = "APIC_SIM_DATA_PLANE_NETNS", default_value = "weft-fabric")]
    data_plane_netns: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.topology)
        .with_context(|| format!("reading topology {}", args.topology.display()))?;
    let topology = Topology::from_json(&text)
        .with_context(|| format!("parsing {}", args.topology.display()))?;
    let mut config = SimConfig::new(topology);
    config.username = args.username;
    config.password = args.password;
    config.token_lifetime = Duration::from_secs(args.token_lifetime_secs.max(1));
    config.faults = FaultConfig {
        login_rate_per_sec: (args.login_rate > 0).then_some(args.login_rate),
        ..FaultConfig::default()
    };
    config.http = HttpLimits {
        client_request_timeout: Duration::from_millis(args.client_request_timeout_ms.max(1)),
        keep_alive: Duration::from_secs(args.keep_alive_secs),
        max_connections: args.max_connections.max(1),
    };
    config.data_plane = args.data_plane.then_some(DataPlaneConfig {
        netns: args.data_plane_netns,
    });
    let addr = format!("{}:{}", args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("address of {addr}"))?;
    // Scripts and tests read this line to find the port (`--port 0` picks a free one).
    println!("apic-sim listening on http://{local}");
    tracing::info!(%local, "control endpoints under /_sim/");
    apic_sim::serve(config, listener).await?;
    Ok(())
}
