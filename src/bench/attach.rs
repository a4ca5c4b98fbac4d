//! `weft bench attach`: attach and detach through the real API and the whole workflow (job
//! log, lease, pre-flight, binding, agent segment and wiring), with weft served from this
//! process on a throwaway database, apic-sim (its binary, no injected latency) as the APIC,
//! and real weft-agent processes, one per simulated host, each in its own network namespace
//! (Linux bridge, untagged) wiring `ip netns` targets. Needs root for the namespaces.
//!
//! Three phases: one client attaching then detaching one container at a time (latency without
//! contention), then many clients attaching at once across the hosts, then detaching them at
//! once (throughput and latency under load). A request's latency is its `PUT`/`DELETE` with
//! `?wait=60`, answered when the attachment is `attached` (or gone). Where the time goes is
//! read from the job log afterwards: each step's duration, and the time from the request's
//! transaction (the job's `created_at`) to its first step.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use super::{scratch_db, Served};
use crate::apic::Apic;
use crate::config::ApicSettings;

/// Leaf ports the simulated hosts are cabled to: none has an LLDP neighbour or belongs to a
/// vPC in the example topology, and all carry the `weft_phys` domain.
const PORTS: [(u16, &str); 10] = [
    (103, "eth1/1"),
    (103, "eth1/2"),
    (103, "eth1/3"),
    (103, "eth1/4"),
    (103, "eth1/5"),
    (103, "eth1/6"),
    (103, "eth1/7"),
    (103, "eth1/8"),
    (104, "eth1/3"),
    (104, "eth1/4"),
];

/// The most hosts a run can have (one leaf port each).
pub const MAX_HOSTS: usize = PORTS.len();

/// Parameters of one run.
#[derive(Debug, Clone)]
pub struct AttachBench {
    /// Attachments made one at a time by one client, then detached likewise.
    pub sequential: usize,
    /// Attachments made at once by `clients` clients, spread over the hosts.
    pub attachments: usize,
    pub clients: usize,
    pub hosts: usize,
    pub agent_bin: PathBuf,
    pub sim_bin: PathBuf,
    pub topology: PathBuf,
    /// The APIC client's request rate limit (requests per second); `None` is no limit.
    pub apic_rate: Option<f64>,
    /// Jobs the replica runs at once (`workflow.workers`).
    pub workers: usize,
}

/// Latencies of one phase.
#[derive(Debug)]
pub struct Phase {
    pub name: String,
    pub clients: usize,
    pub wall: Duration,
    /// Sorted.
    pub latencies: Vec<Duration>,
    /// APIC requests during the phase, by kind (apic-sim's counters).
    pub apic: BTreeMap<String, u64>,
}

impl Phase {
    fn percentile(&self, p: f64) -> Duration {
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.latencies[rank.clamp(1, n) - 1]
    }
}

/// One step of the job log: how long it took (median and p95) over the run.
#[derive(Debug)]
pub struct StepTime {
    pub kind: String,
    pub step: String,
    pub runs: i64,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

/// What a run measured.
#[derive(Debug)]
pub struct AttachReport {
    pub hosts: usize,
    pub phases: Vec<Phase>,
    pub steps: Vec<StepTime>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl fmt::Display for AttachReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "weft bench attach: weft in-process, apic-sim (no injected latency), {} real weft-agent(s) in network namespaces (linux-bridge, untagged), ip netns targets",
            self.hosts
        )?;
        writeln!(
            f,
            "{:<34} {:>5} {:>7} {:>9} {:>8} {:>8} {:>8} {:>12}",
            "phase", "ops", "clients", "ops/s", "p50 ms", "p95 ms", "p99 ms", "APIC req/op"
        )?;
        for p in &self.phases {
            let n = p.latencies.len();
            let apic: u64 = p.apic.values().sum();
            writeln!(
                f,
                "{:<34} {:>5} {:>7} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>12.2}",
                p.name,
                n,
                p.clients,
                n as f64 / p.wall.as_secs_f64(),
                ms(p.percentile(50.0)),
                ms(p.percentile(95.0)),
                ms(p.percentile(99.0)),
                apic as f64 / n.max(1) as f64,
            )?;
            let kinds: Vec<String> = p.apic.iter().map(|(k, v)| format!("{k} {v}")).collect();
            writeln!(f, "{:<34} APIC requests: {}", "", kinds.join(", "))?;
        }
        writeln!(
            f,
            "where the time goes (job log; `queued` = from the request's transaction to the first step: its own work, then the wait for a worker):"
        )?;
        writeln!(
            f,
            "{:<8} {:<10} {:>6} {:>8} {:>8}",
            "job", "step", "runs", "p50 ms", "p95 ms"
        )?;
        for s in &self.steps {
            writeln!(
                f,
                "{:<8} {:<10} {:>6} {:>8.1} {:>8.1}",
                s.kind, s.step, s.runs, s.p50_ms, s.p95_ms
            )?;
        }
        Ok(())
    }
}

/// Runs the benchmark on a fresh database next to the one `admin` points at, then drops it.
pub async fn run(admin: &PgConnectOptions, b: &AttachBench) -> anyhow::Result<AttachReport> {
    ensure!(
        nix_root(),
        "weft bench attach needs root: it runs real weft-agent processes in network namespaces"
    );
    ensure!(
        (1..=MAX_HOSTS).contains(&b.hosts),
        "--hosts must be 1 to {MAX_HOSTS}"
    );
    for bin in [&b.agent_bin, &b.sim_bin] {
        ensure!(
            bin.is_file(),
            "{} not found (build it first)",
            bin.display()
        );
    }
    let sim = Sim::start(&b.sim_bin, &b.topology)?;
    let tag = std::process::id() % 10_000;
    let mut hosts = Vec::new();
    for i in 0..b.hosts {
        hosts.push(Host::start(tag, i, &b.agent_bin)?);
    }
    for h in &hosts {
        h.ready().await?;
    }
    scratch_db(admin, |opts| run_in(opts, b, &sim, &mut hosts)).await
}

fn nix_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

async fn run_in(
    opts: PgConnectOptions,
    b: &AttachBench,
    sim: &Sim,
    hosts: &mut [Host],
) -> anyhow::Result<AttachReport> {
    let mut client_config = weft_apic::ApicConfig::new(vec![sim.url.clone()], "admin", "password");
    client_config.rate_limit = b.apic_rate.map(|per_second| weft_apic::RateLimit {
        per_second,
        ..weft_apic::RateLimit::default()
    });
    let apic = Apic::new(&ApicSettings {
        client: client_config,
        discovery_ttl: Duration::from_secs(300),
    })?;
    let workflow = crate::workflow::Settings {
        workers: b.workers,
        ..Default::default()
    };
    let served = Served::start(opts, Some(Arc::new(apic)), workflow).await?;
    let api = Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(b.clients.max(1))
            .build()?,
        base: served.base.clone(),
        token: served.token.clone(),
    };
    setup(&api, sim, hosts).await?;

    let mut phases = Vec::new();
    let n = hosts.len();
    let one: Vec<Target> = (0..b.sequential)
        .map(|i| hosts[i % n].target(i))
        .collect::<anyhow::Result<_>>()?;
    phases.push(phase(&api, sim, "attach, one at a time", 1, &one, Op::Attach).await?);
    phases.push(phase(&api, sim, "detach, one at a time", 1, &one, Op::Detach).await?);
    let many: Vec<Target> = (0..b.attachments)
        .map(|i| hosts[i % n].target(b.sequential + i))
        .collect::<anyhow::Result<_>>()?;
    let name = format!("attach, at once over {n} host(s)");
    phases.push(phase(&api, sim, &name, b.clients, &many, Op::Attach).await?);
    let name = format!("detach, at once over {n} host(s)");
    phases.push(phase(&api, sim, &name, b.clients, &many, Op::Detach).await?);

    let steps = step_times(&served.db).await?;
    served.stop().await;
    Ok(AttachReport {
        hosts: n,
        phases,
        steps,
    })
}

/// The step durations of every job of the run, and each job's wait for a worker.
async fn step_times(db: &sqlx::PgPool) -> anyhow::Result<Vec<StepTime>> {
    let rows = sqlx::query!(
        r#"WITH d AS (
               SELECT j.kind, s.step, s.position, s.phase,
                      extract(epoch FROM s.finished_at - s.started_at) * 1000 AS ms
               FROM job_steps s JOIN jobs j ON j.id = s.job_id WHERE s.finished_at IS NOT NULL
               UNION ALL
               SELECT j.kind, 'queued', -1, 'forward',
                      extract(epoch FROM min(s.started_at) - j.created_at) * 1000
               FROM jobs j JOIN job_steps s ON s.job_id = j.id GROUP BY j.id, j.kind, j.created_at)
           SELECT kind AS "kind!", step AS "step!", count(*) AS "runs!",
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS "p50!",
                  percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS "p95!"
           FROM d WHERE phase = 'forward' GROUP BY kind, step, position ORDER BY kind, position"#
    )
    .fetch_all(db)
    .await
    .context("reading the job log")?;
    Ok(rows
        .into_iter()
        .map(|r| StepTime {
            kind: r.kind,
            step: r.step,
            runs: r.runs,
            p50_ms: r.p50,
            p95_ms: r.p95,
        })
        .collect())
}

/// The weft API as the bench's clients use it.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// Sends a request with the admin token; its status and JSON body (if any).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await?;
        let status = r.status();
        let text = r.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let (status, body) = self.send(reqwest::Method::PUT, path, Some(body)).await?;
        ensure!(status.is_success(), "PUT {path}: {status} {body}");
        Ok(body)
    }
}

/// Pool, EPG (also on the APIC, as an admin would have made it) and the hosts.
async fn setup(api: &Api, sim: &Sim, hosts: &[Host]) -> anyhow::Result<()> {
    api.put(
        "/vlan-pools/bench",
        &json!({"ranges": [{"first": 100, "last": 199}]}),
    )
    .await?;
    api.put(
        "/epgs/bench/app/web",
        &json!({"bridge_domain": "bd1", "physical_domain": "weft_phys", "vlan_pool": "bench",
                "requested_vlan": 150, "mode": "untagged",
                "subnets": [{"cidr": "10.200.0.0/16", "gateway": "10.200.0.1", "reserved": []}]}),
    )
    .await?;
    sim.post(
        "/_sim/mo/uni.json",
        &json!({"fvTenant": {"attributes": {"name": "bench"}, "children": [{"fvAp": {"attributes": {"name": "app"}, "children": [
            {"fvAEPg": {"attributes": {"name": "web"}, "children": [
                {"fvRsDomAtt": {"attributes": {"tDn": "uni/phys-weft_phys"}}}]}}]}}]}}),
    )
    .await?;
    for (h, (leaf, port)) in hosts.iter().zip(PORTS) {
        api.put(
            &format!("/hosts/{}", h.name),
            &json!({"agent_url": h.url, "agent_token": h.token, "backend": "linux-bridge",
                    "uplinks": [{"interface": "upl0",
                                 "path_dn": format!("topology/pod-1/paths-{leaf}/pathep-[{port}]")}]}),
        )
        .await?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Op {
    Attach,
    Detach,
}

/// One container interface to attach: its id, host and network namespace.
struct Target {
    id: Uuid,
    host: String,
    netns: String,
}

/// Runs `op` on every target with `clients` concurrent clients; each request waits for the
/// outcome, and an attach that does not end `attached` (or a detach that leaves the
/// attachment) fails the run.
async fn phase(
    api: &Api,
    sim: &Sim,
    name: &str,
    clients: usize,
    targets: &[Target],
    op: Op,
) -> anyhow::Result<Phase> {
    let before = sim.counts().await?;
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let client = || async {
        let mut latencies = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(t) = targets.get(i) else {
                return Ok::<_, anyhow::Error>(latencies);
            };
            let path = format!("/attachments/{}", t.id);
            let begun = Instant::now();
            match op {
                Op::Attach => {
                    let a = api
                        .put(
                            &format!("{path}?wait=60"),
                            &json!({"host": t.host, "target": {"kind": "netns", "path": t.netns},
                                    "epg": {"tenant": "bench", "app": "app", "epg": "web"}}),
                        )
                        .await?;
                    latencies.push(begun.elapsed());
                    ensure!(a["state"] == "attached", "attach {}: {a}", t.id);
                }
                Op::Detach => {
                    let (status, body) = api
                        .send(reqwest::Method::DELETE, &format!("{path}?wait=60"), None)
                        .await?;
                    latencies.push(begun.elapsed());
                    ensure!(status.is_success(), "DELETE {path}: {status} {body}");
                    let (status, _) = api.send(reqwest::Method::GET, &path, None).await?;
                    ensure!(
                        status == reqwest::StatusCode::NOT_FOUND,
                        "detach {}: still there ({status})",
                        t.id
                    );
                }
            }
        }
    };
    let results = futures::future::join_all((0..clients.max(1)).map(|_| client())).await;
    let wall = started.elapsed();
    let mut latencies = Vec::new();
    for r in results {
        latencies.extend(r?);
    }
    latencies.sort();
    let after = sim.counts().await?;
    let apic = after
        .into_iter()
        .map(|(k, v)| {
            let d = v.saturating_sub(before.get(&k).copied().unwrap_or(0));
            (k, d)
        })
        .filter(|(_, d)| *d > 0)
        .collect();
    Ok(Phase {
        name: name.to_owned(),
        clients: clients.max(1),
        wall,
        latencies,
        apic,
    })
}

/// Runs `script` with `sh -c`; fails with its stderr.
fn sh(script: &str) -> anyhow::Result<()> {
    let out = Command::new("sh").arg("-c").arg(script).output()?;
    ensure!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// apic-sim as a child process on a free port; killed on drop.
struct Sim {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Sim {
    fn start(bin: &std::path::Path, topology: &std::path::Path) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .arg("--topology")
            .arg(topology)
            .args(["--port", "0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        let Some(url) = line.trim().strip_prefix("apic-sim listening on ") else {
            let _ = child.kill();
            bail!("apic-sim did not start (topology {})", topology.display());
        };
        Ok(Self {
            url: url.to_owned(),
            child,
            http: reqwest::Client::new(),
        })
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await?;
        ensure!(r.status().is_success(), "apic-sim {path}: {}", r.status());
        Ok(())
    }

    /// Requests received so far, by kind.
    async fn counts(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        Ok(self
            .http
            .get(format!("{}/_sim/requests", self.url))
            .send()
            .await?
            .json()
            .await?)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A simulated host: network namespace `wfb<tag>h<i>` with an uplink veth, reached over a
/// management veth (100.64.<i>.0/30), and a weft-agent process listening in it. Its targets
/// are namespaces `wfb<tag>h<i>c<n>`. Dropped: the agent is killed and every namespace and
/// state file removed.
struct Host {
    name: String,
    ns: String,
    url: String,
    token: String,
    agent: Child,
    state: PathBuf,
    targets: Vec<String>,
}

impl Host {
    fn start(tag: u32, i: usize, bin: &std::path::Path) -> anyhow::Result<Self> {
        let ns = format!("wfb{tag}h{i}");
        let mgmt = format!("wfb{tag}m{i}");
        sh(&format!(
            "ip netns add {ns} && ip -n {ns} link set lo up &&
             ip link add {mgmt} type veth peer name mgmt netns {ns} &&
             ip addr add 100.64.{i}.1/30 dev {mgmt} && ip link set {mgmt} up &&
             ip -n {ns} addr add 100.64.{i}.2/30 dev mgmt && ip -n {ns} link set mgmt up &&
             ip -n {ns} link add upl0 type veth peer name far0 &&
             ip -n {ns} link set upl0 up && ip -n {ns} link set far0 up"
        ))?;
        let state = std::env::temp_dir().join(format!("weft-bench-{ns}.json"));
        let _ = std::fs::remove_file(&state);
        let token = Uuid::new_v4().to_string();
        let agent = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(bin)
            .env("WEFT_AGENT_TOKEN", &token)
            .env("WEFT_AGENT_LISTEN", format!("100.64.{i}.2:9180"))
            .env("WEFT_AGENT_UPLINKS", "upl0")
            .env("WEFT_AGENT_BACKEND", "linux-bridge")
            .env("WEFT_AGENT_STATE_FILE", &state)
            .env("WEFT_AGENT_DOCKER_SOCKET", "")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            name: format!("bench-{i}"),
            url: format!("http://100.64.{i}.2:9180"),
            ns,
            token,
            agent,
            state,
            targets: Vec::new(),
        })
    }

    /// Waits until the agent answers its health check.
    async fn ready(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("weft-agent in {} did not come up", self.ns)
    }

    /// A new empty network namespace on this host, as the `n`-th container.
    fn target(&mut self, n: usize) -> anyhow::Result<Target> {
        let name = format!("{}c{n}", self.ns);
        sh(&format!("ip netns add {name}"))?;
        self.targets.push(name.clone());
        Ok(Target {
            id: Uuid::new_v4(),
            host: self.name.clone(),
            netns: format!("/run/netns/{name}"),
        })
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        for ns in self.targets.iter().chain([&self.ns]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_file(&self.state);
    }
}
