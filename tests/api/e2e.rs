//! End to end: Weft with apic-sim over HTTP and a real weft-agent process on a "host" that is a
//! private network namespace (its own uplink veth, reached from the test over a management
//! veth), with the Linux-bridge untagged backend or Open vSwitch (a private userspace switch in
//! the host namespace, frames leaving tagged), attaching `ip netns` targets and real Docker
//! containers (`--net=none`, the offline image of scripts/services.sh).
//!
//! Needs root and the agent binary (`WEFT_AGENT_BIN`, set by scripts/test.sh), and for some
//! tests the Docker engine or Open vSwitch; without them the tests print SKIPPED and pass.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use apic_sim::testbed::{start_ovs_in, PrivateOvs};
use futures::FutureExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use weft::startup::Application;
use weft::workflow::Settings;
use weft_agent_api::{AgentClient, Backend, Token};

use crate::helpers::{apic_settings, TestApp};
use weft::config::ApicSettings;

pub(crate) const AGENT_TOKEN: &str = "e2e-agent-token";
/// The sim's LLDP names host-1 on leaf 101 eth1/1; the host's configured uplink agrees.
pub(crate) const HOST1_PATH: &str = "topology/pod-1/paths-101/pathep-[eth1/1]";

pub(crate) fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The agent binary, or None (with a loud SKIPPED) when it or root is missing.
pub(crate) fn agent_bin(test: &str) -> Option<String> {
    let bin = std::env::var("WEFT_AGENT_BIN").ok().or_else(|| {
        let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        Some(format!("{dir}/debug/weft-agent"))
    });
    let root = nix_is_root();
    match bin.filter(|b| std::path::Path::new(b).is_file()) {
        Some(b) if root => Some(b),
        _ => {
            eprintln!("SKIPPED: {test}: needs root and the weft-agent binary (WEFT_AGENT_BIN)");
            None
        }
    }
}

fn nix_is_root() -> bool {
    sh("id -u").trim() == "0"
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A free host number n (1-250): creating namespace `wft-h<n>` claims it, and fails when a
/// test of another process (nextest runs each test in its own) holds that number, so its
/// names and management addresses (`169.254.<n>.0/30`) are never shared.
fn claim_host_number() -> u32 {
    let first = std::process::id() + NEXT.fetch_add(1, Ordering::SeqCst);
    (0..250)
        .map(|k| (first + k) % 250 + 1)
        .find(|n| {
            Command::new("ip")
                .args(["netns", "add", &format!("wft-h{n}")])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("a free wft-h<n> namespace")
}

const DOCKER_SOCKET: &str = "/var/run/docker.sock";
const IMAGE: &str = "weft-test/busybox:local";

/// Whether the Docker engine and the offline test image are there (else a loud SKIPPED).
fn docker_ready(test: &str) -> bool {
    let image = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !std::path::Path::new(DOCKER_SOCKET).exists() || !image {
        eprintln!("SKIPPED: {test}: no Docker engine at {DOCKER_SOCKET} or no {IMAGE}; run eval \"$(scripts/services.sh)\"");
        return false;
    }
    true
}

/// What a test host runs: its agent's backend, and whether the agent follows Docker.
struct HostBuilder {
    backend: Backend,
    /// Weft's port (it listens on every address) and a token of role `agent`: the agent
    /// takes Docker targets and posts container events to Weft over the management veth.
    docker: Option<(u16, String)>,
}

/// A host: namespace `wft-h<n>` with uplink `upl0` (its far end `far0` in `wft-l<n>`, the
/// "leaf", which answers as the EPG's gateway), a management veth to the test, and a
/// weft-agent process listening on it; with Open vSwitch, a private switch in the host
/// namespace. Dropped: the agent is killed, Docker containers removed, the namespaces deleted.
pub(crate) struct Host {
    pub(crate) ns: String,
    leaf: String,
    backend: Backend,
    /// The agent binary and its environment, to start it again.
    bin: String,
    env: Vec<(&'static str, String)>,
    agent: Option<Child>,
    url: String,
    containers: Vec<String>,
    docker: Vec<String>,
    ovs: Option<PrivateOvs>,
}

impl HostBuilder {
    fn ovs(self) -> Self {
        Self {
            backend: Backend::Ovs,
            ..self
        }
    }

    /// Docker targets, with the agent's container events posted to `app`, which must listen
    /// on every address ([`weft_with`]).
    fn docker(self, app: &TestApp) -> Self {
        let port = app.base.rsplit(':').next().unwrap().parse().unwrap();
        Self {
            docker: Some((port, app.agent.clone())),
            ..self
        }
    }

    async fn start(self, bin: &str, gateway: &str) -> Host {
        let n = claim_host_number();
        let (ns, leaf) = (format!("wft-h{n}"), format!("wft-l{n}"));
        sh(&format!(
            "ip netns add {leaf} && ip -n {ns} link set lo up &&
             ip link add wfm{n} type veth peer name mgmt netns {ns} &&
             ip addr add 169.254.{n}.1/30 dev wfm{n} && ip link set wfm{n} up &&
             ip -n {ns} addr add 169.254.{n}.2/30 dev mgmt && ip -n {ns} link set mgmt up &&
             ip -n {ns} link add upl0 type veth peer name far0 netns {leaf} &&
             ip -n {ns} link set upl0 up && ip -n {leaf} link set far0 up &&
             ip -n {leaf} addr add {gateway} dev far0"
        ));
        let ovs = (self.backend == Backend::Ovs).then(|| start_ovs_in(&ns).unwrap());
        let state = std::env::temp_dir().join(format!("weft-e2e-{ns}.json"));
        let _ = std::fs::remove_file(&state);
        let mut env = vec![
            ("WEFT_AGENT_TOKEN", AGENT_TOKEN.to_owned()),
            ("WEFT_AGENT_LISTEN", format!("169.254.{n}.2:9180")),
            ("WEFT_AGENT_UPLINKS", "upl0".into()),
            ("WEFT_AGENT_BACKEND", self.backend.as_str().into()),
            ("WEFT_AGENT_STATE_FILE", state.display().to_string()),
        ];
        if let Some(ovs) = &ovs {
            env.push(("WEFT_AGENT_OVS_DB", ovs.db()));
            env.push(("WEFT_AGENT_OVS_DATAPATH", "netdev".into()));
        }
        match self.docker {
            None => env.push(("WEFT_AGENT_DOCKER_SOCKET", String::new())),
            Some((port, token)) => {
                let events = format!("http://169.254.{n}.1:{port}/api/v1/agent/events");
                env.push(("WEFT_AGENT_DOCKER_SOCKET", DOCKER_SOCKET.into()));
                env.push(("WEFT_AGENT_CENTRAL_URL", events));
                env.push(("WEFT_AGENT_CENTRAL_TOKEN", token));
            }
        }
        let mut host = Host {
            url: format!("http://169.254.{n}.2:9180"),
            ns,
            leaf,
            backend: self.backend,
            bin: bin.to_owned(),
            env,
            agent: None,
            containers: Vec::new(),
            docker: Vec::new(),
            ovs,
        };
        host.start_agent().await;
        host
    }
}

impl Host {
    /// A Linux-bridge host whose agent takes `ip netns` and PID targets.
    fn builder() -> HostBuilder {
        HostBuilder {
            backend: Backend::LinuxBridge,
            docker: None,
        }
    }

    pub(crate) async fn start(bin: &str, gateway: &str) -> Self {
        Self::builder().start(bin, gateway).await
    }

    /// Starts the agent (again) in the host namespace and waits until it answers.
    async fn start_agent(&mut self) {
        let agent = Command::new("ip")
            .args(["netns", "exec", &self.ns, &self.bin])
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.agent = Some(agent);
        for _ in 0..100 {
            if self.client().health().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("weft-agent in {} did not come up", self.ns);
    }

    /// Kills the agent (SIGKILL): its host answers nothing until [`Host::start_agent`].
    fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }

    pub(crate) fn client(&self) -> AgentClient {
        AgentClient::new(self.url.parse().unwrap(), Token::new(AGENT_TOKEN)).unwrap()
    }

    /// A new empty network namespace as a container; returns its path.
    pub(crate) fn container(&mut self) -> String {
        let name = format!("{}-c{}", self.ns, self.containers.len());
        sh(&format!("ip netns add {name}"));
        self.containers.push(name.clone());
        format!("/run/netns/{name}")
    }

    /// A new Docker container (`--net=none`, removed on drop); returns its name.
    fn docker_container(&mut self) -> String {
        let name = format!("{}-d{}", self.ns, uuid::Uuid::new_v4().simple());
        docker_run(&name);
        self.docker.push(name.clone());
        name
    }

    /// The switch of an Open vSwitch host.
    fn ovs(&self) -> &PrivateOvs {
        self.ovs.as_ref().expect("an Open vSwitch host")
    }
}

/// Starts Docker container `name` from the offline image, without a network.
fn docker_run(name: &str) {
    sh(&format!(
        "docker run -d --net=none --name {name} {IMAGE} sleep 3600"
    ));
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill_agent();
        for name in &self.docker {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
        for ns in self.containers.iter().chain([&self.ns, &self.leaf]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The workflow of these tests: a one-second binding linger, a two-second grace for lost
/// containers.
fn settings() -> Settings {
    Settings {
        binding_linger: Duration::from_secs(1),
        lost_grace: Duration::from_secs(2),
        ..Settings::default()
    }
}

/// Weft with apic-sim (EPG t/ap/web on the APIC, VLAN 150, untagged, 10.50.0.0/24) and the
/// workflow [`settings`].
pub(crate) async fn weft(db: PgPool) -> (TestApp, apic_sim::SimHandle) {
    weft_with(db, "127.0.0.1:0", settings()).await
}

/// [`weft`] listening on `listen` (every address, `0.0.0.0:0`, for agents that post container
/// events from their host namespaces), with `settings`.
async fn weft_with(db: PgPool, listen: &str, settings: Settings) -> (TestApp, apic_sim::SimHandle) {
    let sim = apic_sim::spawn(apic_sim::SimConfig::new(
        apic_sim::Topology::example().unwrap(),
    ))
    .await
    .unwrap();
    let apic = apic_settings(&sim.url, "password");
    let app = replica(db.clone(), listen, &apic, settings).await;
    let app = crate::helpers::serve_with_tokens(app, db).await;
    epg_web(&app, &sim).await;
    (app, sim)
}

/// A weft replica on `db` listening on `listen`, talking to the APIC with the client settings
/// `apic`, running the workflow with `settings`.
async fn replica(db: PgPool, listen: &str, apic: &ApicSettings, settings: Settings) -> Application {
    let apic = std::sync::Arc::new(weft::apic::Apic::new(apic).unwrap());
    Application::bind(
        listen.parse().unwrap(),
        db,
        crate::helpers::LONG,
        Some(apic),
    )
    .await
    .unwrap()
    .with_workflow(settings)
}

/// Weft on `db` against `sim` (client settings `apic`), with tokens and the EPG t/ap/web.
pub(crate) async fn weft_on(db: PgPool, sim: &apic_sim::SimHandle, apic: ApicSettings) -> TestApp {
    let app = replica(db.clone(), "127.0.0.1:0", &apic, settings()).await;
    let app = crate::helpers::serve_with_tokens(app, db).await;
    epg_web(&app, sim).await;
    app
}

/// A second replica on the same database and APIC, sharing the tokens of `first`.
pub(crate) async fn second_replica(db: PgPool, apic: &ApicSettings, first: &TestApp) -> TestApp {
    let mut b = crate::helpers::serve(replica(db, "127.0.0.1:0", apic, settings()).await);
    (b.admin, b.operator, b.viewer) = (
        first.admin.clone(),
        first.operator.clone(),
        first.viewer.clone(),
    );
    b
}

/// Pool `p` and EPG t/ap/web (VLAN 150, untagged, 10.50.0.0/24), also on the APIC.
async fn epg_web(app: &TestApp, sim: &apic_sim::SimHandle) {
    app.pool("p", 100, 199).await;
    put_epg(app, sim, "web", 150, "untagged").await;
}

/// EPG t/ap/`name` of pool `p` on `vlan` in `mode`, subnet 10.<vlan - 100>.0.0/24 (gateway
/// .1), also on the APIC.
async fn put_epg(app: &TestApp, sim: &apic_sim::SimHandle, name: &str, vlan: u16, mode: &str) {
    let net = vlan - 100;
    let r = app
        .put(
            &app.operator,
            &format!("/api/v1/epgs/t/ap/{name}"),
            &json!({"bridge_domain": "bd1", "physical_domain": "weft_phys", "vlan_pool": "p",
                "requested_vlan": vlan, "mode": mode,
                "subnets": [{"cidr": format!("10.{net}.0.0/24"), "gateway": format!("10.{net}.0.1"),
                    "reserved": []}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    crate::helpers::inject_epg(sim, name);
}

/// Registers `host` as `host-1` (its agent, token and uplink to `HOST1_PATH`).
pub(crate) async fn register(app: &TestApp, host: &Host) {
    register_as(app, host, "host-1", HOST1_PATH).await;
}

/// Registers `host` as `name` with one uplink on `path`.
async fn register_as(app: &TestApp, host: &Host, name: &str, path: &str) {
    register_at(app, host, &host.url, name, path).await;
}

/// [`register_as`] with the agent's address given (one where nothing listens holds the
/// host's attaches at `validate`).
async fn register_at(app: &TestApp, host: &Host, url: &str, name: &str, path: &str) {
    let r = app
        .put(
            &app.admin,
            &format!("/api/v1/hosts/{name}"),
            &json!({"agent_url": url, "agent_token": AGENT_TOKEN, "backend": host.backend.as_str(),
                    "uplinks": [{"interface": "upl0", "path_dn": path}]}),
        )
        .await;
    assert!(r.status().is_success(), "{:?}", r.text().await);
}

pub(crate) async fn attach(app: &TestApp, id: uuid::Uuid, netns: &str) -> Value {
    attach_to(app, id, json!({"kind": "netns", "path": netns}), "web").await
}

/// Attaches `target` on host-1 to EPG t/ap/`epg`, waiting for the outcome.
async fn attach_to(app: &TestApp, id: uuid::Uuid, target: Value, epg: &str) -> Value {
    let r = app
        .put(
            &app.operator,
            &format!("/api/v1/attachments/{id}?wait=30"),
            &json!({"host": "host-1", "target": target,
                    "epg": {"tenant": "t", "app": "ap", "epg": epg}}),
        )
        .await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// The attachment once `done` holds for it (polled), or a panic showing the last one seen.
async fn eventually(app: &TestApp, id: uuid::Uuid, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/api/v1/attachments/{id}");
    let mut last = Value::Null;
    for _ in 0..150 {
        last = app.get_json(&app.viewer, &path).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("attachment {id} never got there: {last}");
}

/// Polls until attachment `id` is gone (detached).
async fn until_detached(app: &TestApp, id: uuid::Uuid) {
    let path = format!("/api/v1/attachments/{id}");
    for _ in 0..150 {
        if app.get(&app.viewer, &path).await.status() == StatusCode::NOT_FOUND {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("attachment {id} was not detached");
}

/// Docker container `name` has `address` and `mac` on eth0 and a default route via the
/// EPG's gateway 10.50.0.1, which answers.
fn assert_wired_in_docker(name: &str, address: &str, mac: &str) {
    let inside = sh(&format!("docker exec {name} ip addr show eth0"));
    assert!(
        inside.contains(&format!("inet {address}")) && inside.contains(mac),
        "{inside}"
    );
    let route = sh(&format!("docker exec {name} ip route show default"));
    assert!(route.contains("via 10.50.0.1"), "{route}");
    sh(&format!("docker exec {name} ping -c 1 -w 5 10.50.0.1"));
}

pub(crate) fn binding_in_sim(sim: &apic_sim::SimHandle) -> Option<Value> {
    let dn = format!("uni/tn-t/ap-ap/epg-web/rspathAtt-[{HOST1_PATH}]");
    sim.dump()
        .into_iter()
        .find(|mo| mo.to_string().contains(&dn))
        .map(|_| json!(dn))
}

/// Nothing of a failed attach is left: no active lease, no binding row, nothing on the
/// host's agent.
async fn assert_nothing_left(db: &PgPool, host: &Host) {
    let (active, bindings): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ip_leases WHERE state = 'active'), (SELECT count(*) FROM bindings)",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!((active, bindings), (0, 0));
    let state = host.client().state().await.unwrap();
    assert!(
        state.attachments.is_empty() && state.segments.is_empty(),
        "{state:?}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn attach_wires_the_container_binds_once_and_detach_cleans_up_after_the_linger(db: PgPool) {
    let Some(bin) = agent_bin("e2e attach/detach") else {
        return;
    };
    let (app, sim) = weft(db.clone()).await;
    let mut host = Host::start(&bin, "10.50.0.1/24").await;
    register(&app, &host).await;
    let (c1, c2) = (host.container(), host.container());
    sim.reset_counts();

    let id1 = uuid::Uuid::new_v4();
    let a1 = attach(&app, id1, &c1).await;
    assert_eq!(a1["state"], "attached", "{a1}");
    assert_eq!(a1["address"], "10.50.0.2/24");
    assert_eq!(a1["mac"], "02:57:0a:32:00:02");
    assert_eq!(sim.count("mo_post"), 1, "one binding POST");
    assert!(
        sim.count("class_get") > 0,
        "a path without a binding is pre-flighted"
    );
    assert!(binding_in_sim(&sim).is_some(), "the binding is on the APIC");
    let dump = serde_json::to_string(&sim.dump()).unwrap();
    assert!(dump.contains("orchestrator:weft"), "Weft's annotation");
    let state = host.client().state().await.unwrap();
    assert_eq!(state.segments.len(), 1, "{state:?}");
    assert_eq!(state.attachments.len(), 1);
    assert!(state.attachments[0].actual.wired);
    let name1 = c1.trim_start_matches("/run/netns/");
    let addr = sh(&format!("ip -n {name1} -4 -o addr show dev eth0"));
    assert!(addr.contains("10.50.0.2/24"), "{addr}");
    let link = sh(&format!("ip -n {name1} -o link show dev eth0"));
    assert!(link.contains("02:57:0a:32:00:02"), "{link}");
    let route = sh(&format!("ip -n {name1} route show default"));
    assert!(route.contains("via 10.50.0.1"), "{route}");
    sh(&format!("ip netns exec {name1} ping -c 1 -W 2 10.50.0.1"));

    // The second container of the EPG on the host: its binding is applied already, so no
    // APIC request at all (no pre-flight, no POST).
    sim.reset_counts();
    let id2 = uuid::Uuid::new_v4();
    let a2 = attach(&app, id2, &c2).await;
    assert_eq!(a2["state"], "attached", "{a2}");
    assert_eq!(sim.counts().values().sum::<u64>(), 0, "{:?}", sim.counts());
    let bindings = app.get_json(&app.viewer, "/api/v1/bindings").await;
    assert_eq!(bindings["items"][0]["ref_count"], 2, "{bindings}");

    // A binding the APIC refused is pre-flighted and posted again by the next attach.
    sqlx::query("UPDATE bindings SET apic_state = 'faulted', last_fault = 'refused earlier'")
        .execute(&db)
        .await
        .unwrap();
    sim.reset_counts();
    let (c3, id3) = (host.container(), uuid::Uuid::new_v4());
    let a3 = attach(&app, id3, &c3).await;
    assert_eq!(a3["state"], "attached", "{a3}");
    assert!(
        sim.count("class_get") > 0,
        "pre-flighted: {:?}",
        sim.counts()
    );
    assert_eq!(sim.count("mo_post"), 1, "posted again: {:?}", sim.counts());
    let r = app
        .delete(&app.operator, &format!("/api/v1/attachments/{id3}?wait=30"))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Detaching the first keeps the binding; detaching the last removes it after the linger.
    let r = app
        .delete(&app.operator, &format!("/api/v1/attachments/{id1}?wait=30"))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        app.get(&app.viewer, &format!("/api/v1/attachments/{id1}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(binding_in_sim(&sim).is_some(), "still used by the second");
    let r = app
        .delete(&app.operator, &format!("/api/v1/attachments/{id2}?wait=30"))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let bindings = app.get_json(&app.viewer, "/api/v1/bindings").await;
    assert_eq!(bindings["items"][0]["ref_count"], 0, "{bindings}");
    assert!(binding_in_sim(&sim).is_some(), "lingering");
    for _ in 0..50 {
        if binding_in_sim(&sim).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(binding_in_sim(&sim).is_none(), "removed after the linger");
    let state = host.client().state().await.unwrap();
    assert!(
        state.attachments.is_empty() && state.segments.is_empty(),
        "{state:?}"
    );
    let (active,): (i64,) = sqlx::query_as("SELECT count(*) FROM ip_leases WHERE state = 'active'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(active, 0, "both leases quarantined");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_failing_agent_step_or_preflight_leaves_nothing_behind(db: PgPool) {
    let Some(bin) = agent_bin("e2e failures") else {
        return;
    };
    let (app, sim) = weft(db.clone()).await;
    let mut host = Host::start(&bin, "10.50.0.1/24").await;
    register(&app, &host).await;
    let links_before = sh(&format!("ip -n {} -o link", host.ns));

    // The container's eth0 is a link Weft did not make, so the agent refuses to wire it: a
    // permanent error after the binding and the segment were made, so both are undone.
    let container = host.container();
    let name = container.trim_start_matches("/run/netns/");
    sh(&format!(
        "ip -n {name} link add eth0 type veth peer name eth0-peer"
    ));
    let id = uuid::Uuid::new_v4();
    let a = attach(&app, id, &container).await;
    assert_eq!(a["state"], "failed", "{a}");
    let reason = a["last_error"].as_str().unwrap();
    assert!(
        reason.contains("step `wire`") && reason.contains("eth0"),
        "{reason}"
    );
    let op = app
        .get_json(&app.viewer, a["operation"]["href"].as_str().unwrap())
        .await;
    let undone = crate::helpers::undone_steps(&op);
    assert_eq!(
        undone,
        ["wire", "segment", "bind", "preflight", "validate", "lease"],
        "{op}"
    );
    assert_eq!(
        sh(&format!("ip -n {} -o link", host.ns)),
        links_before,
        "no host link left"
    );
    for _ in 0..50 {
        if binding_in_sim(&sim).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        binding_in_sim(&sim).is_none(),
        "the binding left after the linger"
    );
    assert_nothing_left(&db, &host).await;

    // A VLAN outside the physical domain's pool (weft_pool is 100-199): refused by the
    // pre-flight, naming the pool, before anything is bound.
    app.pool("high", 250, 260).await;
    let r = app
        .put(
            &app.operator,
            "/api/v1/epgs/t/ap/high",
            &json!({"bridge_domain": "bd1", "physical_domain": "weft_phys", "vlan_pool": "high",
                "mode": "untagged", "managed": true,
                "subnets": [{"cidr": "10.60.0.0/24", "gateway": "10.60.0.1", "reserved": []}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    sim.reset_counts();
    let r = app
        .put(
            &app.operator,
            &format!("/api/v1/attachments/{}?wait=30", uuid::Uuid::new_v4()),
            &json!({"host": "host-1", "target": {"kind": "netns", "path": host.container()},
                    "epg": {"tenant": "t", "app": "ap", "epg": "high"}}),
        )
        .await;
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["state"], "failed", "{a}");
    let reason = a["last_error"].as_str().unwrap();
    assert!(
        reason.contains("step `preflight`") && reason.contains("weft_pool"),
        "{reason}"
    );
    assert_eq!(sim.count("mo_post"), 0, "nothing was written to the APIC");
    assert_nothing_left(&db, &host).await;
}

/// DELETEs attachment `id` with `?wait=60`: 202, and then it is gone.
pub(crate) async fn detach(app: &TestApp, id: uuid::Uuid) {
    let path = format!("/api/v1/attachments/{id}");
    let r = app.delete(&app.operator, &format!("{path}?wait=60")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = app.get(&app.viewer, &path).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "{id} detached");
}

/// One number of the database.
async fn count(db: &PgPool, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db).await.unwrap();
    n
}

/// What must hold once every job has settled, whatever ran concurrently, crashed or was
/// retried: checked in the database, on the APIC (apic-sim) and on each agent (`hosts` pairs a
/// registered host name with its agent). Returns the number of attached attachments.
/// - a binding's reference count equals its references, and every reference is held by an
///   attached attachment, one per path of its host;
/// - no address is used twice, and every attached attachment has one;
/// - no orphan binding: the bindings marked as Weft's on the APIC are exactly the bindings the
///   database knows (compared once the sweeper has removed those past their linger);
/// - no leaked lease: every active lease (not a reservation's) is an attached attachment's;
/// - each agent has exactly the attached attachments of its host, wired, and nothing unclaimed.
pub(crate) async fn assert_converged(
    db: &PgPool,
    sim: &apic_sim::SimHandle,
    hosts: &[(&str, &Host)],
) -> i64 {
    let unfinished = "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')";
    let lingering = "SELECT count(*) FROM bindings WHERE ref_count = 0";
    for _ in 0..300 {
        if count(db, unfinished).await + count(db, lingering).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(db, unfinished).await, 0, "every job settled");
    assert_eq!(count(db, lingering).await, 0, "unused bindings swept");
    let checks = [
        (
            "bindings whose reference count is not their number of references",
            "SELECT count(*) FROM bindings b
             WHERE ref_count <> (SELECT count(*) FROM binding_refs r WHERE r.binding_id = b.id)",
        ),
        (
            "references not held by an attached attachment",
            "SELECT count(*) FROM binding_refs r WHERE NOT EXISTS
                 (SELECT 1 FROM attachments a WHERE a.id = r.attachment_id AND a.state = 'attached')",
        ),
        (
            "attached attachments without one reference per path",
            "SELECT count(*) FROM attachments a WHERE state = 'attached' AND cardinality(paths)
                 <> (SELECT count(*) FROM binding_refs r WHERE r.attachment_id = a.id)",
        ),
        (
            "attachments in a state other than attached or failed",
            "SELECT count(*) FROM attachments WHERE state NOT IN ('attached', 'failed')",
        ),
        (
            "attached attachments without an address",
            "SELECT count(*) FROM attachments WHERE state = 'attached' AND address IS NULL",
        ),
        (
            "addresses used twice",
            "SELECT count(*) FROM (SELECT address FROM attachments WHERE address IS NOT NULL
                 GROUP BY address HAVING count(*) > 1) d",
        ),
        (
            "leaked leases (active, not a reservation's, no attached attachment with it)",
            "SELECT count(*) FROM ip_leases l WHERE state = 'active' AND reservation IS NULL
                 AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.id = l.attachment_id
                                 AND a.state = 'attached' AND a.address = l.address)",
        ),
    ];
    for (what, sql) in checks {
        assert_eq!(count(db, sql).await, 0, "{what}");
    }

    let (known,): (Vec<String>,) = sqlx::query_as(
        "SELECT coalesce(array_agg(format('uni/tn-%s/ap-%s/epg-%s/rspathAtt-[%s]',
                 e.tenant, e.app, e.name, b.path_dn) ORDER BY 1), '{}')
         FROM bindings b JOIN epgs e ON e.id = b.epg_id WHERE b.apic_state = 'applied'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    let mut on_apic: Vec<String> = sim
        .dump()
        .iter()
        .filter_map(|mo| mo["fvRsPathAtt"]["attributes"].as_object())
        .filter(|a| a["annotation"] == weft_apic::OWNER_ANNOTATION)
        .map(|a| a["dn"].as_str().unwrap().to_owned())
        .collect();
    on_apic.sort();
    assert_eq!(
        on_apic, known,
        "Weft's bindings on the APIC = the database's"
    );

    for (name, host) in hosts {
        let (mut attached,): (Vec<uuid::Uuid>,) = sqlx::query_as(
            "SELECT coalesce(array_agg(a.id), '{}') FROM attachments a JOIN hosts h ON h.id = a.host_id
             WHERE h.name = $1 AND a.state = 'attached'",
        )
        .bind(name)
        .fetch_one(db)
        .await
        .unwrap();
        attached.sort();
        let state = host.client().state().await.unwrap();
        let mut wired: Vec<uuid::Uuid> = state
            .attachments
            .iter()
            .filter(|x| x.actual.wired)
            .map(|x| x.id)
            .collect();
        wired.sort();
        assert_eq!(
            (wired, state.attachments.len(), state.unclaimed.len()),
            (attached.clone(), attached.len(), 0),
            "agent of {name}: exactly the attached attachments, wired, nothing unclaimed"
        );
    }
    count(
        db,
        "SELECT count(*) FROM attachments WHERE state = 'attached'",
    )
    .await
}

#[sqlx::test(migrations = "./migrations")]
async fn fifty_concurrent_attaches_and_detaches_over_two_replicas_leave_counts_equal_to_attachments(
    db: PgPool,
) {
    let Some(bin) = agent_bin("e2e concurrency") else {
        return;
    };
    let (a, sim) = weft(db.clone()).await;
    let b = second_replica(db.clone(), &apic_settings(&sim.url, "password"), &a).await;
    let mut host = Host::start(&bin, "10.50.0.1/24").await;
    register(&a, &host).await;
    sim.reset_counts();
    const N: usize = 25;
    let mut targets = || -> Vec<(uuid::Uuid, String)> {
        (0..N)
            .map(|_| (uuid::Uuid::new_v4(), host.container()))
            .collect()
    };
    let (old, new) = (targets(), targets());
    let replica = |i: usize| if i.is_multiple_of(2) { &a } else { &b };
    let attached = futures::future::join_all(
        old.iter()
            .enumerate()
            .map(|(i, (id, ns))| attach(replica(i), *id, ns)),
    )
    .await;
    assert!(
        attached.iter().all(|x| x["state"] == "attached"),
        "{attached:?}"
    );
    assert_eq!(sim.count("mo_post"), 1, "one binding POST for all of them");

    // 50 operations at once over both replicas: the first 25 detached while 25 more attach.
    let detaches = old
        .iter()
        .enumerate()
        .map(|(i, (id, _))| detach(replica(i + 1), *id));
    let attaches = new
        .iter()
        .enumerate()
        .map(|(i, (id, ns))| attach(replica(i), *id, ns));
    let ((), attached) = futures::future::join(
        futures::future::join_all(detaches).map(drop),
        futures::future::join_all(attaches),
    )
    .await;
    assert!(
        attached.iter().all(|x| x["state"] == "attached"),
        "{attached:?}"
    );
    let live = assert_converged(&db, &sim, &[("host-1", &host)]).await;
    assert_eq!(live, N as i64);
    let (ref_count,): (i32,) = sqlx::query_as("SELECT ref_count FROM bindings")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(ref_count, N as i32, "one binding, held by the 25 new ones");
}

#[sqlx::test(migrations = "./migrations")]
async fn weft_killed_mid_attach_resumes_from_the_log_after_restart(db: PgPool) {
    use crate::binary::{create_token, database_url, free_port, serve, wait_ready, Server};
    let Some(bin) = agent_bin("e2e kill -9") else {
        return;
    };
    // Only `weft serve` processes work on this database: the one killed, then its successor.
    let sim = apic_sim::spawn(apic_sim::SimConfig::new(
        apic_sim::Topology::example().unwrap(),
    ))
    .await
    .unwrap();
    let url = database_url(&db);
    let start = || {
        let listen = format!("127.0.0.1:{}", free_port());
        let child = serve(&url, &listen)
            .env("WEFT_APIC_CONTROLLERS", &sim.url)
            .env("WEFT_APIC_USERNAME", "admin")
            .env("WEFT_APIC_PASSWORD", "password")
            .env("WEFT_WORKFLOW_CLAIM_SECS", "2")
            .env("WEFT_BINDING_LINGER_SECS", "1")
            .env("WEFT_APIC_REQUESTS_PER_SEC", "0")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        (Server(child), format!("http://{listen}"))
    };
    let client = reqwest::Client::new();
    let (mut first, base) = start();
    wait_ready(&client, &base).await;
    let app = TestApp {
        base: base.clone(),
        client: client.clone(),
        admin: create_token(&url, "admin", "kill-admin"),
        operator: create_token(&url, "operator", "kill-operator"),
        viewer: create_token(&url, "viewer", "kill-viewer"),
        agent: String::new(),
    };
    epg_web(&app, &sim).await;
    let mut host = Host::start(&bin, "10.50.0.1/24").await;
    register(&app, &host).await;
    sim.reset_counts();
    const N: usize = 30;
    let targets: Vec<(uuid::Uuid, String)> = (0..N)
        .map(|_| (uuid::Uuid::new_v4(), host.container()))
        .collect();
    let puts = targets.iter().map(|(id, ns)| {
        client
            .put(format!("{base}/api/v1/attachments/{id}"))
            .bearer_auth(&app.operator)
            .json(
                &json!({"host": "host-1", "target": {"kind": "netns", "path": ns},
                          "epg": {"tenant": "t", "app": "ap", "epg": "web"}}),
            )
            .send()
    });
    let created = futures::future::join_all(puts).await;
    assert!(created
        .iter()
        .all(|r| r.as_ref().unwrap().status() == StatusCode::CREATED));
    first.0.kill().unwrap(); // SIGKILL, mid-workflow
    let _ = first.0.wait();

    let (_second, base) = start();
    wait_ready(&client, &base).await;
    let mut settled = 0;
    for _ in 0..300 {
        settled = count(
            &db,
            "SELECT count(*) FROM jobs WHERE state IN ('succeeded', 'failed')",
        )
        .await;
        if settled == N as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(settled, N as i64, "every job settled after the restart");
    let attached = assert_converged(&db, &sim, &[("host-1", &host)]).await;
    assert_eq!(
        attached, N as i64,
        "all attached (the agent and APIC were fine)"
    );
    // The bind step posts under the binding's row lock, so at most one job can be killed
    // between its POST and its commit, and the job that resumes it posts again (harmless).
    let posts = sim.count("mo_post");
    assert!(
        (1..=2).contains(&posts),
        "the binding was posted once (twice when the kill fell after a POST): {posts}"
    );
}

/// Weft listening on every address (agents post container events over their management
/// veth) and a host whose agent follows Docker; None when root, the agent binary or Docker is
/// missing.
async fn docker_setup(
    db: &PgPool,
    test: &str,
    settings: Settings,
) -> Option<(TestApp, apic_sim::SimHandle, Host)> {
    let bin = agent_bin(test)?;
    if !docker_ready(test) {
        return None;
    }
    let (app, sim) = weft_with(db.clone(), "0.0.0.0:0", settings).await;
    let host = Host::builder()
        .docker(&app)
        .start(&bin, "10.50.0.1/24")
        .await;
    register(&app, &host).await;
    Some((app, sim, host))
}

#[sqlx::test(migrations = "./migrations")]
async fn a_docker_container_is_wired_and_rewired_with_its_address_and_mac_after_a_restart(
    db: PgPool,
) {
    let Some((app, _sim, mut host)) = docker_setup(&db, "e2e docker restart", settings()).await
    else {
        return;
    };
    let c = host.docker_container();
    let id = uuid::Uuid::new_v4();
    let a = attach_to(&app, id, json!({"kind": "docker", "container": c}), "web").await;
    assert_eq!(a["state"], "attached", "{a}");
    let (address, mac) = ("10.50.0.2/24", "02:57:0a:32:00:02");
    assert_eq!(a["address"], address);
    assert_eq!(a["mac"], mac);
    assert_wired_in_docker(&c, address, mac);
    // The container's namespace is Docker's, not the host's; the veth's host end is on the
    // segment's bridge in the host namespace.
    let state = host.client().state().await.unwrap();
    let host_end = state.attachments[0].host_ifname.clone().unwrap();
    let bridged = sh(&format!("ip -n {} -o link show master wbr150", host.ns));
    assert!(bridged.contains(&format!(" {host_end}@")), "{bridged}");

    // Stopped: still attached, reported stopped. Started: re-wired by the agent on its own.
    sh(&format!("docker stop -t 0 {c}"));
    let a = eventually(&app, id, |a| a["container_status"] == "stopped").await;
    assert_eq!(a["state"], "attached", "{a}");
    assert!(a["rewired_at"].is_null(), "{a}");
    sh(&format!("docker start {c}"));
    let a = eventually(&app, id, |a| {
        a["container_status"] == "running" && a["rewired_at"].is_string()
    })
    .await;
    assert_eq!(
        (&a["state"], &a["address"], &a["mac"]),
        (&json!("attached"), &json!(address), &json!(mac)),
        "{a}"
    );
    assert_wired_in_docker(&c, address, mac);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_destroyed_docker_container_is_lost_then_released_after_the_grace_unless_recreated(
    db: PgPool,
) {
    // A grace long enough for `docker run` to recreate a container within it.
    let grace = Settings {
        lost_grace: Duration::from_secs(5),
        ..settings()
    };
    let Some((app, _sim, mut host)) = docker_setup(&db, "e2e docker destroy", grace).await else {
        return;
    };
    let (c1, c2) = (host.docker_container(), host.docker_container());
    let (id1, id2) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let a1 = attach_to(&app, id1, json!({"kind": "docker", "container": c1}), "web").await;
    let a2 = attach_to(&app, id2, json!({"kind": "docker", "container": c2}), "web").await;
    assert_eq!(
        (&a1["state"], &a2["state"]),
        (&json!("attached"), &json!("attached"))
    );

    // Removed, then recreated under its name within the grace (as compose does): lost for
    // a moment, then the agent wires the new container with the same address and MAC, and
    // the attachment is kept.
    sh(&format!("docker rm -f {c1}"));
    let lost = eventually(&app, id1, |a| a["state"] == "lost").await;
    assert!(lost["lost_at"].is_string(), "{lost}");
    docker_run(&c1);
    let back = eventually(&app, id1, |a| a["state"] == "attached").await;
    assert!(back["rewired_at"].is_string(), "{back}");
    assert_eq!(
        (&back["address"], &back["mac"]),
        (&a1["address"], &a1["mac"])
    );
    assert_wired_in_docker(&c1, "10.50.0.2/24", "02:57:0a:32:00:02");

    // Removed for good: lost, then detached once the grace has passed.
    sh(&format!("docker rm -f {c2}"));
    eventually(&app, id2, |a| a["state"] == "lost").await;
    // Its lease is quarantined (not reused early: a new attach gets another address), its
    // binding reference dropped.
    until_detached(&app, id2).await;
    let address2 = a2["address"].as_str().unwrap().split('/').next().unwrap();
    let (lease, refs, count): (String, i64, i32) = sqlx::query_as(
        "SELECT (SELECT state FROM ip_leases WHERE host(address) = $1),
                (SELECT count(*) FROM binding_refs), (SELECT ref_count FROM bindings)",
    )
    .bind(address2)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((lease.as_str(), refs, count), ("quarantined", 1, 1));
    let agent = host.client().state().await.unwrap();
    assert_eq!(agent.attachments.len(), 1, "only the recreated one");
    assert_eq!(agent.attachments[0].id, id1);
    let c3 = host.docker_container();
    let a3 = attach_to(
        &app,
        uuid::Uuid::new_v4(),
        json!({"kind": "docker", "container": c3}),
        "web",
    )
    .await;
    assert_eq!(a3["state"], "attached", "{a3}");
    assert_eq!(a3["address"], "10.50.0.4/24", "not {address2}, quarantined");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_container_the_agent_cannot_find_is_a_422_at_put_or_fails_at_validate(db: PgPool) {
    let Some(bin) = agent_bin("e2e missing container") else {
        return;
    };
    // Enough tries of `validate` to outlast the agent's restart below.
    let patient = Settings {
        max_attempts: 50,
        backoff_max: Duration::from_millis(200),
        ..settings()
    };
    let (app, sim) = weft_with(db.clone(), "127.0.0.1:0", patient).await;
    let mut host = Host::start(&bin, "10.50.0.1/24").await;
    register(&app, &host).await;
    sim.reset_counts();
    let missing = format!("/run/netns/{}-gone", host.ns);
    let spec = json!({"host": "host-1", "target": {"kind": "netns", "path": missing},
                      "epg": {"tenant": "t", "app": "ap", "epg": "web"}});
    let nothing_written = || async {
        let (rows, leases, jobs): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM attachments), (SELECT count(*) FROM ip_leases),
                    (SELECT count(*) FROM jobs)",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        (rows, leases, jobs) == (0, 0, 0)
    };

    // The agent answers that there is no such namespace: a 422 naming it, nothing written.
    let id = uuid::Uuid::new_v4();
    let path = format!("/api/v1/attachments/{id}");
    let r = app.put(&app.operator, &path, &spec).await;
    let problem =
        crate::helpers::assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid-input").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("netns:{missing}")) && detail.contains("host-1"),
        "{detail}"
    );
    assert!(nothing_written().await);

    // The agent does not answer at PUT time: accepted, and `validate` (retried until the
    // agent is back) finds no container: failed at validate naming it, before anything was
    // bound or wired; the address quarantined.
    host.kill_agent();
    let r = app.put(&app.operator, &path, &spec).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    host.start_agent().await;
    let r = app
        .put(&app.operator, &format!("{path}?wait=30"), &spec)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["state"], "failed", "{a}");
    let reason = a["last_error"].as_str().unwrap();
    assert!(
        reason.contains("step `validate`")
            && reason.contains(&format!("container netns:{missing}")),
        "{reason}"
    );
    let op = app
        .get_json(&app.viewer, a["operation"]["href"].as_str().unwrap())
        .await;
    assert_eq!(
        crate::helpers::undone_steps(&op),
        ["validate", "lease"],
        "{op}"
    );
    assert_eq!(sim.count("mo_post"), 0, "nothing was written to the APIC");
    assert_nothing_left(&db, &host).await;
}

/// The first frame `filter` matches on `dev` of namespace `ns` while `act` runs, as
/// `tcpdump -e` prints it (link-level header: MACs, 802.1Q tag).
fn capture(ns: &str, dev: &str, filter: &str, act: impl FnOnce()) -> String {
    use std::io::{BufRead, BufReader};
    let mut tcpdump = Command::new("ip")
        .args([
            "netns", "exec", ns, "timeout", "10", "tcpdump", "-l", "-e", "-n",
        ])
        .args(["-c", "1", "-i", dev, filter])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // tcpdump says "listening on <dev>" once it captures (kept open: it writes more there).
    let mut stderr = BufReader::new(tcpdump.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "tcpdump ended");
    }
    act();
    let out = tcpdump.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[sqlx::test(migrations = "./migrations")]
async fn an_ovs_host_tags_the_epg_vlan_on_its_uplink_and_detach_removes_the_ports(db: PgPool) {
    let Some(bin) = agent_bin("e2e ovs") else {
        return;
    };
    if let Some(reason) = apic_sim::testbed::unavailable() {
        eprintln!("SKIPPED: e2e ovs: {reason}");
        return;
    }
    let (app, sim) = weft(db.clone()).await;
    // Regular: frames leave the uplink 802.1Q-tagged with the EPG's VLAN.
    put_epg(&app, &sim, "tagged", 151, "regular").await;
    let mut host = Host::builder().ovs().start(&bin, "10.51.0.1/24").await;
    register(&app, &host).await;
    let (c1, c2) = (host.container(), host.container());
    let (id1, id2) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    for (id, c) in [(id1, &c1), (id2, &c2)] {
        let a = attach_to(&app, id, json!({"kind": "netns", "path": c}), "tagged").await;
        assert_eq!(a["state"], "attached", "{a}");
    }
    let dump = serde_json::to_string(&sim.dump()).unwrap();
    assert!(
        dump.contains("rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/1]]")
            && dump.contains("vlan-151"),
        "the binding of VLAN 151 on the APIC"
    );

    // Each container's port on the switch is an access port of the EPG's VLAN.
    let state = host.client().state().await.unwrap();
    let ports: Vec<String> = state
        .attachments
        .iter()
        .map(|a| a.host_ifname.clone().unwrap())
        .collect();
    assert_eq!(ports.len(), 2, "{state:?}");
    for port in &ports {
        let tag = host.ovs().vsctl(&["get", "port", port, "tag"]).unwrap();
        assert_eq!(tag.trim(), "151", "{port}");
    }
    // The two reach each other across the switch, and what leaves the uplink is tagged.
    let (n1, n2) = (
        c1.trim_start_matches("/run/netns/"),
        c2.trim_start_matches("/run/netns/"),
    );
    sh(&format!("ip netns exec {n1} ping -c 1 -w 5 10.51.0.3"));
    let frame = capture(&host.leaf, "far0", "vlan 151 and arp", || {
        // The gateway on the leaf's untagged address cannot answer: the ARP request is
        // what crosses the uplink.
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                n2,
                "ping",
                "-c",
                "2",
                "-w",
                "2",
                "10.51.0.1",
            ])
            .output();
    });
    assert!(
        frame.contains("vlan 151") && frame.contains("02:57:0a:33:00:03"),
        "{frame}"
    );

    for id in [id1, id2] {
        let r = app
            .delete(&app.operator, &format!("/api/v1/attachments/{id}?wait=30"))
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let left = host.ovs().vsctl(&["list-ports", "br-weft"]).unwrap();
    assert!(ports.iter().all(|p| !left.contains(p.as_str())), "{left}");
    let tagged = host
        .ovs()
        .vsctl(&["--columns=name", "find", "port", "tag=151"])
        .unwrap();
    assert!(tagged.trim().is_empty(), "{tagged}");
    let state = host.client().state().await.unwrap();
    assert!(
        state.attachments.is_empty() && state.segments.is_empty(),
        "{state:?}"
    );
}

mod batch;
