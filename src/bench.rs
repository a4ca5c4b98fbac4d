//! `weft bench alloc`: address leases per second through the real HTTP API, with many
//! concurrent clients, on a throwaway database. `weft bench attach` ([`attach`]): attach and
//! detach through the whole workflow. `weft bench reconcile`: one reconcile pass over
//! many bindings and attachments against an in-process apic-sim and a stand-in serving the
//! agents' state. Commands, not tests: speed is measured, never asserted.

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
    scratch_db(admin, |opts| run_in(opts, b)).await
}

/// Runs `bench` on a database created for it next to the one `admin` points at, and drops it
/// afterwards (also when the bench failed).
async fn scratch_db<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    admin: &PgConnectOptions,
    bench: impl FnOnce(PgConnectOptions) -> F,
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
    let result = bench(admin.clone().database(&db_name)).await;
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
    /// workflow's `settings`.
    async fn start(
        opts: PgConnectOptions,
        apic: Option<Arc<Apic>>,
        settings: crate::workflow::Settings,
    ) -> anyhow::Result<Self> {
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
        let app = Application::bind("127.0.0.1:0".parse()?, db.clone(), quarantine, apic)
            .await?
            .with_workflow(settings);
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
    let served = Served::start(opts, None, Default::default()).await?;
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

/// Parameters of `weft bench reconcile`.
#[derive(Debug, Clone)]
pub struct ReconcileBench {
    pub bindings: u32,
    pub attachments: u32,
    pub hosts: u32,
    /// EPGs the bindings and attachments are spread over (one VLAN each).
    pub epgs: u32,
}

/// What a reconcile pass cost.
#[derive(Debug)]
pub struct ReconcileReport {
    pub elapsed: Duration,
    /// Peak resident memory of the whole process (weft, apic-sim and the stand-in) during the
    /// pass, in KiB.
    pub peak_rss_kib: u64,
    pub report: crate::workflow::reconcile::Report,
}

/// Runs two passes (the first warms connections and sessions) on a seeded throwaway database
/// and reports the second.
pub async fn run_reconcile(
    admin: &PgConnectOptions,
    b: &ReconcileBench,
) -> anyhow::Result<ReconcileReport> {
    if b.epgs == 0 || b.hosts == 0 || b.epgs > 3900 {
        bail!("--epgs must be 1-3900 and --hosts at least 1");
    }
    scratch_db(admin, |opts| reconcile_in(opts, b)).await
}

/// A topology with enough leaf ports for `paths` paths, and a domain pool of VLANs 100-3999.
fn bench_topology(paths: u32) -> anyhow::Result<apic_sim::Topology> {
    const PORTS: u32 = 48;
    let leaves: Vec<_> = (0..paths.div_ceil(PORTS).max(1))
        .map(|l| {
            json!({"id": 101 + l, "name": format!("leaf-{}", 101 + l), "role": "leaf",
                   "ports": (1..=PORTS).map(|p| format!("eth1/{p}")).collect::<Vec<_>>(),
                   "aaep": "weft_aaep"})
        })
        .collect();
    let topology = json!({"pod": 1, "nodes": leaves, "vpcs": [], "fex": [], "lldp": [],
        "aaeps": [{"name": "weft_aaep", "domains": ["weft_phys"]}],
        "config": [{"fvTenant": {"attributes": {"name": "common"}}},
            {"infraInfra": {"attributes": {}, "children": [{"fvnsVlanInstP": {"attributes": {"name": "weft_pool", "allocMode": "static"},
                "children": [{"fvnsEncapBlk": {"attributes": {"from": "vlan-100", "to": "vlan-3999", "allocMode": "static"}}}]}}]}},
            {"physDomP": {"attributes": {"name": "weft_phys"}, "children": [{"infraRsVlanNs": {"attributes": {"tDn": "uni/infra/vlanns-[weft_pool]-static"}}}]}}]});
    Ok(apic_sim::Topology::from_json(&topology.to_string())?)
}

fn bench_path(i: u32) -> String {
    format!(
        "topology/pod-1/paths-{}/pathep-[eth1/{}]",
        101 + i / 48,
        1 + i % 48
    )
}

async fn reconcile_in(
    opts: PgConnectOptions,
    b: &ReconcileBench,
) -> anyhow::Result<ReconcileReport> {
    use crate::workflow::reconcile::{Reconciler, Settings as RcSettings, Trigger};
    let db = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(opts)
        .await?;
    MIGRATOR.run(&db).await?;
    let per_epg = b.bindings.div_ceil(b.epgs);
    let paths: Vec<String> = (0..per_epg).map(bench_path).collect();

    // The APIC: every EPG with its bindings, as Weft would have posted them, in one write (the
    // simulator re-derives its faults after each).
    let mut left = b.bindings;
    let epgs: Vec<_> = (0..b.epgs)
        .map(|e| {
            let n = left.min(per_epg);
            left -= n;
            let children: Vec<_> =
                [json!({"fvRsDomAtt": {"attributes": {"tDn": "uni/phys-weft_phys"}}})]
                    .into_iter()
                    .chain(paths[..n as usize].iter().map(|p| {
                        json!({"fvRsPathAtt": {"attributes": {"tDn": p, "encap": format!("vlan-{}", 100 + e),
                            "mode": "regular", "instrImedcy": "immediate", "annotation": weft_apic::OWNER_ANNOTATION}}})
                    }))
                    .collect();
            json!({"fvAEPg": {"attributes": {"name": format!("e{e}")}, "children": children}})
        })
        .collect();
    let sim = apic_sim::spawn(apic_sim::SimConfig::new(bench_topology(per_epg)?)).await?;
    sim.inject(
        "uni",
        &json!({"fvTenant": {"attributes": {"name": "bench"}, "children": [{"fvAp": {"attributes": {"name": "ap"},
            "children": epgs}}]}}),
    )?;

    // The database: the same bindings, and the attachments spread over hosts and EPGs.
    let pool = sqlx::query_scalar!("INSERT INTO vlan_pools (name) VALUES ('bench') RETURNING id")
        .fetch_one(&db)
        .await?;
    sqlx::query!(
        "WITH e AS (
             INSERT INTO epgs (tenant, app, name, bridge_domain, physical_domain, pool_id, mode, immediacy)
             SELECT 'bench', 'ap', 'e' || i, 'bd', 'weft_phys', $1, 'regular', 'immediate'
             FROM generate_series(0, $2 - 1) AS i RETURNING id, name)
         INSERT INTO vlan_assignments (pool_id, vlan, epg_id, epg_key, state)
         SELECT $1, 100 + substr(name, 2)::int, id, 'bench/ap/' || name, 'active' FROM e",
        pool,
        b.epgs as i32,
    )
    .execute(&db)
    .await?;
    sqlx::query!(
        "INSERT INTO bindings (epg_id, path_dn, encap, mode, ref_count, apic_state)
         SELECT e.id, p.path, 'vlan-' || va.vlan, 'regular', 1, 'applied'
         FROM epgs e JOIN vlan_assignments va ON va.epg_id = e.id,
              unnest($1::text[]) WITH ORDINALITY AS p(path, n)
         WHERE p.n <= $2 - (va.vlan - 100) * cardinality($1::text[])",
        &paths,
        b.bindings as i64,
    )
    .execute(&db)
    .await?;
    let agents = StandIn::bind()?;
    sqlx::query!(
        "INSERT INTO hosts (name, agent_url, agent_token, backend, mtu)
         SELECT 'h' || i, $1 || 'h' || i || '/', 'bench', 'linux-bridge', 1500
         FROM generate_series(0, $2 - 1) AS i",
        agents.base,
        b.hosts as i32,
    )
    .execute(&db)
    .await?;
    let rows = sqlx::query!(
        r#"WITH a AS (
               INSERT INTO attachments (id, host_id, epg_id, container, state, target, address, prefix_len, gateway, vlan)
               SELECT gen_random_uuid(), h.id, e.id, 'c' || i, 'attached',
                      jsonb_build_object('kind', 'netns', 'path', '/run/netns/c' || i),
                      '10.0.0.0'::inet + 2 + i / $2, 8, '10.0.0.1'::inet, va.vlan
               FROM generate_series(0, $1 - 1) AS i
               JOIN hosts h ON h.name = 'h' || (i % $3)
               JOIN epgs e ON e.name = 'e' || (i % $2)
               JOIN vlan_assignments va ON va.epg_id = e.id
               RETURNING id, host_id, vlan)
           SELECT a.id, h.name AS host, a.vlan AS "vlan!" FROM a JOIN hosts h ON h.id = a.host_id"#,
        b.attachments as i32,
        b.epgs as i32,
        b.hosts as i32,
    )
    .fetch_all(&db)
    .await?;
    let mut states: std::collections::HashMap<String, Vec<(uuid::Uuid, i32)>> =
        std::collections::HashMap::new();
    for r in rows {
        states.entry(r.host).or_default().push((r.id, r.vlan));
    }
    agents.serve(states)?;

    let settings = crate::config::ApicSettings {
        client: weft_apic::ApicConfig::new(vec![sim.url.clone()], "admin", "password"),
        discovery_ttl: Duration::from_secs(3600),
    };
    let apic = Arc::new(crate::apic::Apic::new(&settings)?);
    let engine = Arc::new(crate::workflow::Engine::new(
        db.clone(),
        Some(apic),
        crate::workflow::Settings::default(),
        Duration::ZERO,
    ));
    let reconciler = Reconciler::new(engine, RcSettings::default());
    reconciler.run(Trigger::Request).await?;
    reset_peak_rss();
    let started = Instant::now();
    let report = reconciler.run(Trigger::Request).await?;
    let elapsed = started.elapsed();
    let peak_rss_kib = peak_rss_kib();
    db.close().await;
    Ok(ReconcileReport {
        elapsed,
        peak_rss_kib,
        report,
    })
}

/// Resets the process's peak RSS (`VmHWM`) so that it measures from now.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A stand-in serving `GET /<host>/v1/state` for many hosts (for scale only: it answers what
/// a healthy agent would, with every attachment wired).
struct StandIn {
    base: String,
    listener: std::net::TcpListener,
}

impl StandIn {
    fn bind() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        Ok(Self {
            base: format!("http://{}/", listener.local_addr()?),
            listener,
        })
    }

    /// Serves each host's state (attachment id and VLAN), rendered once.
    fn serve(
        self,
        hosts: std::collections::HashMap<String, Vec<(uuid::Uuid, i32)>>,
    ) -> anyhow::Result<()> {
        use actix_web::{web, App, HttpResponse, HttpServer};
        let mut bodies = std::collections::HashMap::new();
        for (host, atts) in hosts {
            let vlans: std::collections::BTreeSet<i32> = atts.iter().map(|(_, v)| *v).collect();
            let state = json!({
                "backend": "linux-bridge",
                "segments": vlans.iter().map(|v| json!({"vlan": v, "mode": "regular", "uplink": "eth0", "ready": true})).collect::<Vec<_>>(),
                "attachments": atts.iter().enumerate().map(|(i, (id, v))| json!({"id": id,
                    "spec": {"target": {"kind": "netns", "path": format!("/run/netns/c{i}")}, "vlan": v, "address": "10.0.0.2/8"},
                    "actual": {"wired": true, "addresses": ["10.0.0.2/8"]}})).collect::<Vec<_>>(),
                "unclaimed": [], "uplinks": [],
                "versions": {"agent": "stand-in", "api": "1", "kernel": "-"}});
            bodies.insert(host, web::Bytes::from(state.to_string()));
        }
        let bodies = web::Data::new(bodies);
        let server = HttpServer::new(move || {
            App::new().app_data(bodies.clone()).route(
                "/{host}/v1/state",
                web::get().to(
                    |bodies: web::Data<std::collections::HashMap<String, web::Bytes>>,
                     host: web::Path<String>| async move {
                        match bodies.get(host.as_str()) {
                            Some(b) => HttpResponse::Ok()
                                .content_type("application/json")
                                .body(b.clone()),
                            None => HttpResponse::NotFound().finish(),
                        }
                    },
                ),
            )
        })
        .workers(1)
        .disable_signals()
        .listen(self.listener)?
        .run();
        tokio::spawn(server);
        Ok(())
    }
}
