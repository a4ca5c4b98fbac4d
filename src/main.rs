//! The `weft` command line: serve, migrate, openapi, token, bench.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sqlx::postgres::PgConnectOptions;

use weft::auth::Role;
use weft::config::{Config, ProcessEnv, SETTINGS};
use weft::domain::Ipv4Cidr;

#[derive(Parser)]
#[command(name = "weft", version, about = "Puts Linux containers into Cisco ACI EPGs", after_help = settings_help())]
struct Cli {
    /// TOML configuration file; `WEFT_*` environment variables override it.
    #[arg(long, global = true, env = "WEFT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server (applies migrations first when database.migrate_on_start).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Write the OpenAPI document, or with --check fail when the committed one is stale.
    Openapi {
        #[arg(long)]
        check: bool,
        #[arg(long, default_value = weft::openapi::COMMITTED_PATH)]
        output: PathBuf,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Measure allocation, attach and detach speed.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it once; only its hash is stored.
    Create {
        #[arg(long, value_enum)]
        role: Role,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Leases per second through the HTTP API on a throwaway database.
    Alloc {
        #[arg(long, default_value_t = 64)]
        clients: u64,
        #[arg(long, default_value = "10.0.0.0/16")]
        subnet: Ipv4Cidr,
        #[arg(long, default_value_t = 20000)]
        leases: u64,
        /// Spread the leases over this many EPGs (each with its own subnet).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
        epgs: u64,
    },
    /// One reconcile pass over many bindings and attachments (in-process apic-sim, a stand-in
    /// for the agents) on a throwaway database.
    Reconcile {
        #[arg(long, default_value_t = 10000)]
        bindings: u32,
        #[arg(long, default_value_t = 10000)]
        attachments: u32,
        #[arg(long, default_value_t = 100)]
        hosts: u32,
        #[arg(long, default_value_t = 100)]
        epgs: u32,
    },
    /// Attach and detach latency and throughput through the whole workflow: apic-sim and
    /// real weft-agents in network namespaces (root), on a throwaway database.
    Attach {
        /// Attachments made (then detached) one at a time by one client.
        #[arg(long, default_value_t = 50)]
        sequential: usize,
        /// Attachments made (then detached) at once by --clients clients over the hosts.
        #[arg(long, default_value_t = 200)]
        attachments: usize,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=weft::bench::attach::MAX_HOSTS as u64))]
        hosts: u64,
        /// The weft-agent binary (default: next to this one).
        #[arg(long)]
        agent_bin: Option<PathBuf>,
        /// The apic-sim binary (default: next to this one).
        #[arg(long)]
        apic_sim_bin: Option<PathBuf>,
        #[arg(long, default_value = "deploy/sim/topology.json")]
        topology: PathBuf,
        /// The APIC client's rate limit in requests per second, as deployed (0: none).
        #[arg(long, default_value_t = weft_apic::RateLimit::default().per_second)]
        apic_rate: f64,
        /// Jobs the replica runs at once (`workflow.workers`).
        #[arg(long, default_value_t = weft::workflow::Settings::default().workers)]
        workers: usize,
    },
}

/// `name` in the directory of this executable.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    Ok(exe.with_file_name(name))
}

fn settings_help() -> String {
    let mut s = String::from("Settings (config file key / environment variable):\n");
    for (key, env) in SETTINGS {
        s.push_str(&format!("  {key:<36} {env}\n"));
    }
    s
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let load = || Config::load(cli.config.as_deref(), &ProcessEnv);
    match cli.command {
        Command::Openapi { check, output } => openapi(check, &output),
        Command::Serve => serve(load()?).await,
        Command::Migrate => {
            let config = load()?;
            let db = weft::startup::connect(&config)
                .await
                .context("connecting to the database (database.url)")?;
            weft::startup::MIGRATOR
                .run(&db)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Create { role, name },
        } => {
            let config = load()?;
            let db = weft::startup::connect(&config)
                .await
                .context("connecting to the database (database.url)")?;
            let token = weft::auth::create_token(&db, &name, role).await?;
            println!("{token}");
            Ok(())
        }
        Command::Bench { command } => {
            let config = load()?;
            let admin: PgConnectOptions = config
                .database_url
                .expose()
                .parse()
                .context("database.url")?;
            bench(command, &admin).await
        }
    }
}

/// Runs a benchmark next to the database server of `admin` (on a throwaway database).
async fn bench(command: BenchCommand, admin: &PgConnectOptions) -> anyhow::Result<()> {
    match command {
        BenchCommand::Attach {
            sequential,
            attachments,
            clients,
            hosts,
            agent_bin,
            apic_sim_bin,
            topology,
            apic_rate,
            workers,
        } => {
            let b = weft::bench::attach::AttachBench {
                sequential,
                attachments,
                clients,
                hosts: usize::try_from(hosts)?,
                agent_bin: agent_bin.map_or_else(|| sibling("weft-agent"), Ok)?,
                sim_bin: apic_sim_bin.map_or_else(|| sibling("apic-sim"), Ok)?,
                topology,
                apic_rate: (apic_rate > 0.0).then_some(apic_rate),
                workers,
            };
            print!("{}", weft::bench::attach::run(admin, &b).await?);
            match b.apic_rate {
                Some(r) => println!("APIC client rate limit: {r} requests/s"),
                None => println!("APIC client rate limit: none"),
            }
            println!("workflow workers: {}", b.workers);
            Ok(())
        }
        BenchCommand::Reconcile {
            bindings,
            attachments,
            hosts,
            epgs,
        } => {
            let b = weft::bench::ReconcileBench {
                bindings,
                attachments,
                hosts,
                epgs,
            };
            let r = weft::bench::run_reconcile(admin, &b).await?;
            let c = &r.report.run.checked;
            println!(
                "reconcile: {} bindings (APIC: {}), {} attachments on {} hosts, {} EPGs: one pass {:.2} s, peak RSS {} MiB (whole process: weft, apic-sim, stand-in), drift found {}, errors {}",
                c.bindings,
                c.apic_bindings,
                c.attachments,
                c.hosts,
                epgs,
                r.elapsed.as_secs_f64(),
                r.peak_rss_kib / 1024,
                r.report.run.counters.found,
                r.report.run.errors.len()
            );
            Ok(())
        }
        BenchCommand::Alloc {
            clients,
            subnet,
            leases,
            epgs,
        } => {
            let b = weft::bench::AllocBench {
                clients,
                subnet,
                leases,
                epgs,
            };
            let r = weft::bench::run_alloc(admin, &b).await?;
            println!(
                "alloc: {} leases, {} clients, {} EPG(s) from {}: {:.2} s, {:.0} leases/s, {} distinct addresses",
                r.leases,
                clients,
                epgs,
                subnet,
                r.elapsed.as_secs_f64(),
                r.per_second(),
                r.distinct
            );
            Ok(())
        }
    }
}

fn openapi(check: bool, output: &std::path::Path) -> anyhow::Result<()> {
    let doc = weft::openapi::document()?;
    if check {
        let committed = std::fs::read_to_string(output)
            .with_context(|| format!("reading {}", output.display()))?;
        if committed != doc {
            anyhow::bail!(
                "{} is stale: run `weft openapi` and commit the result",
                output.display()
            );
        }
        println!("{} is up to date", output.display());
    } else {
        std::fs::write(output, doc).with_context(|| format!("writing {}", output.display()))?;
        println!("wrote {}", output.display());
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    weft::telemetry::init(config.log_format, &config.log_filter);
    let db = weft::startup::connect(&config)
        .await
        .context("connecting to the database (database.url)")?;
    if config.migrate_on_start {
        weft::startup::MIGRATOR
            .run(&db)
            .await
            .context("applying migrations")?;
    }
    let app = weft::startup::Application::build(&config, db).await?;
    if let Some(a) = &config.apic {
        tracing::info!(controllers = ?a.client.controllers, user = %a.client.username, "APIC configured");
    }
    tracing::info!(address = %app.local_addr()?, "weft listening");
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("weft stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM so in-flight requests can finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
