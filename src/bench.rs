//! `weft bench alloc`: address leases per second through the real HTTP API, with many
//! concurrent clients, on a throwaway database; `weft bench attach` ([`attach`]): attach and
//! detach through the whole workflow. Commands, not tests: speed is measured, never asserted.

pub mod attach;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::alloc::Quarantine;
use crate::apic::Apic;
use crate::auth::{create_token, Role};
use crate::domain::Ipv4Cidr;
use crate::startup::{Application, MIGRATOR};

/// Parameters of one run.
#[derive(Debug, Clone)]
pub struct AllocBench {
    pub clients: u64,
    /// Subnet of the first EPG; EPG `i` gets the `i`-th adjacent block of the same size.
    pub subnet: Ipv4Cidr,
    pub leases: u64,
    /// EPGs the leases are spread over round-robin. Allocation serializes per EPG (its subnet
    /// rows are locked), so this shows how throughput scales across EPGs.
    pub epgs: u64,
}

/// What a run measured.
#[derive(Debug)]
pub struct AllocReport {
    pub leases: u64,
    pub elapsed: Duration,
    pub distinct: usize,
}

impl AllocReport {
    pub fn per_second(&self) -> f64 {
        self.leases as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs the benchmark in a fresh database next to the one `admin` points at, then drops it.
pub async fn run_alloc(admin: &PgConnectOptions, b: &AllocBench) -> anyhow::Result<AllocReport> {
    in_throwaway_db(admin, |opts| run_in(opts, b)).await
}

/// Runs `run` on a fresh database next to the one `admin` points at, then drops it.
async fn in_throwaway_db<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    admin: &PgConnectOptions,
    run: impl FnOnce(PgConnectOptions) -> F,
) -> anyhow::Result<T> {
    let db_name = format!("weft_bench_{}", std::process::id());
    let mut maint = admin
        .connect()
        .await
        .context("connecting to the database server")?;
    // Not a checked macro: a database name is an identifier, which cannot be a bind parameter.
    sqlx::query(&format!("CREATE DATABASE {db_name}"))
        .execute(&mut maint)
        .await
        .context("creating the bench database")?;
    let result = run(admin.clone().database(&db_name)).await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .execute(&mut maint)
        .await
        .context("dropping the bench database")?;
    maint.close().await.ok();
    result
}

/// A weft served from this process for a benchmark.
struct Served {
    db: PgPool,
    /// `http://127.0.0.1:<port>/api/v1`
    base: String,
    /// An admin token.
    token: String,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    /// Migrates the database at `opts`, makes an admin token and serves weft on a free port
    /// (no quarantine, so a bench never runs out of addresses), with `apic` and the
    /// workflow's default settings.
    async fn start(opts: PgConnectOptions, apic: Option<Arc<Apic>>) -> anyhow::Result<Self> {
        let db = PgPoolOptions::new()
            .max_connections(32)
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&db).await?;
        let token = create_token(&db, "bench", Role::Admin).await?;
        let quarantine = Quarantine {
            vlan: Duration::ZERO,
            ip: Duration::ZERO,
        };
        let app = Application::bind("127.0.0.1:0".parse()?, db.clone(), quarantine, apic).await?;
        let base = format!("http://{}/api/v1", app.local_addr()?);
        let server = tokio::spawn(app.run_until_stopped(std::future::pending()));
        Ok(Self {
            db,
            base,
            token,
            server,
        })
    }

    async fn stop(self) {
        self.server.abort();
        self.db.close().await;
    }
}

async fn run_in(opts: PgConnectOptions, b: &AllocBench) -> anyhow::Result<AllocReport> {
    let served = Served::start(opts, None).await?;
    let (base, token) = (served.base.clone(), served.token.clone());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(b.clients as usize)
        .build()?;
    let put = |url: String, body: serde_json::Value| {
        client.put(url).bearer_auth(&token).json(&body).send()
    };
    put(
        format!("{base}/vlan-pools/bench"),
        json!({"ranges": [{"first": 100, "last": 199}]}),
    )
    .await?
    .error_for_status()?;
    let block = 1u32 << (32 - u32::from(b.subnet.prefix_len()));
    for e in 0..b.epgs {
        let network = u32::from(b.subnet.network())
            .checked_add(block * e as u32)
            .context("--epgs runs past 255.255.255.255")?;
        let cidr = format!("{}/{}", Ipv4Addr::from(network), b.subnet.prefix_len());
        let epg = json!({"bridge_domain": "bd", "physical_domain": "phys", "vlan_pool": "bench",
            "subnets": [{"cidr": cidr, "gateway": Ipv4Addr::from(network + 1)}]});
        put(format!("{base}/epgs/bench/bench/e{e}"), epg)
            .await?
            .error_for_status()?;
    }

    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..b.clients {
        let (client, token, next, base) =
            (client.clone(), token.clone(), next.clone(), base.clone());
        let (total, epgs) = (b.leases, b.epgs);
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(got);
                }
                let resp = client
                    .put(format!(
                        "{base}/epgs/bench/bench/e{}/reservations/r{i}",
                        i % epgs
                    ))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                let body: serde_json::Value = resp.error_for_status()?.json().await?;
                got.push(body["address"].as_str().unwrap_or_default().to_owned());
            }
        }));
    }
    let mut addresses = HashSet::new();
    for t in tasks {
        addresses.extend(t.await??);
    }
    let elapsed = started.elapsed();
    served.stop().await;
    if addresses.len() as u64 != b.leases {
        bail!(
            "{} leases but only {} distinct addresses",
            b.leases,
            addresses.len()
        );
    }
    Ok(AllocReport {
        leases: b.leases,
        elapsed,
        distinct: addresses.len(),
    })
}
