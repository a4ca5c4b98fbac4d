//! `weft-lab demo`: the one-command demo (see `scripts/run-local.sh`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};
use weft_lab::demo::{Demo, DemoConfig};

#[derive(Parser)]
#[command(
    name = "weft-lab",
    version,
    about = "A whole Weft installation on one machine (root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Exit 0 when the demo can run here, else print why not and exit 1.
    Check,
    /// apic-sim with its data plane, three hosts with agents, weft, two EPGs, four containers;
    /// runs until SIGINT/SIGTERM, then removes everything it made.
    Demo(DemoArgs),
}

#[derive(Args)]
struct DemoArgs {
    #[arg(long)]
    weft: PathBuf,
    #[arg(long)]
    agent: PathBuf,
    /// Database for weft (created beforehand; run-local.sh drops it afterwards).
    #[arg(long, env = "WEFT_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    #[arg(long, default_value = "wdemo")]
    prefix: String,
    /// The management bridge's network, 198.18.<N>.0/24.
    #[arg(long, default_value_t = 250)]
    mgmt_net: u8,
    /// Check the ping matrix and tear down at once instead of waiting for a signal.
    #[arg(long)]
    exit_after_setup: bool,
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal(term: &mut Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(why) = apic_sim::testbed::unavailable().or_else(weft_lab::docker::unavailable) {
        anyhow::bail!("the demo's data plane cannot run here: {why}");
    }
    let Cmd::Demo(args) = cli.command else {
        return Ok(());
    };
    let config = DemoConfig {
        weft_bin: args.weft,
        agent_bin: args.agent,
        database_url: args.database_url,
        port: args.port,
        prefix: args.prefix,
        mgmt_net: args.mgmt_net,
    };
    let mut term = signal(SignalKind::terminate())?;
    eprintln!("weft-lab: building the demo (fabric, hosts, agents, weft, containers)...");
    let demo = tokio::select! {
        d = Demo::start(&config) => d.context("setting up the demo (everything made so far was removed)")?,
        _ = stop_signal(&mut term) => {
            eprintln!("weft-lab: interrupted; everything made so far was removed");
            return Ok(());
        }
    };
    let checked = tokio::task::block_in_place(|| demo.check());
    if let Err(matrix) = &checked {
        eprintln!("weft-lab: {matrix}");
    }
    println!("{}", demo.instructions());
    if args.exit_after_setup {
        drop(demo);
        return checked.map_err(|_| anyhow::anyhow!("the ping matrix differs from the policy"));
    }
    stop_signal(&mut term).await;
    eprintln!("weft-lab: stopping; removing everything");
    drop(demo);
    Ok(())
}
