//! End to end: Weft with apic-sim over HTTP and a real weft-agent process on a "host" that is a
//! private network namespace (its own uplink veth, the Linux-bridge untagged backend, reached
//! from the test over a management veth), attaching `ip netns` targets.
//!
//! Needs root and the agent binary (`WEFT_AGENT_BIN`, set by scripts/test.sh); without them
//! the tests print SKIPPED and pass.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::FutureExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use weft::startup::Application;
use weft::workflow::Settings;
use weft_agent_api::{AgentClient, Token};

use crate::helpers::{apic_settings, TestApp};
use weft::config::ApicSettings;

const AGENT_TOKEN: &str = "e2e-agent-token";
/// The sim's LLDP names host-1 on leaf 101 eth1/1; the host's configured uplink agrees.
const HOST1_PATH: &str = "topology/pod-1/paths-101/pathep-[eth1/1]";

fn sh(cmd: &str) -> String {
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

/// A host: namespace `wft-h<n>` with uplink `upl0` (its far end `far0` in `wft-l<n>`, the
/// "leaf", which answers as the EPG's gateway), a management veth to the test, and a
/// weft-agent process listening on it. Dropped: the agent is killed, the namespaces deleted.
pub(crate) struct Host {
    ns: String,
    leaf: String,
    agent: Child,
    url: String,
    containers: Vec<String>,
}

impl Host {
    pub(crate) async fn start(bin: &str, gateway: &str) -> Self {
        let n = std::process::id() % 200 + NEXT.fetch_add(1, Ordering::SeqCst);
        let (ns, leaf) = (format!("wft-h{n}"), format!("wft-l{n}"));
        sh(&format!(
            "ip netns add {ns} && ip netns add {leaf} && ip -n {ns} link set lo up &&
             ip link add wfm{n} type veth peer name mgmt netns {ns} &&
             ip addr add 169.254.{n}.1/30 dev wfm{n} && ip link set wfm{n} up &&
             ip -n {ns} addr add 169.254.{n}.2/30 dev mgmt && ip -n {ns} link set mgmt up &&
             ip -n {ns} link add upl0 type veth peer name far0 netns {leaf} &&
             ip -n {ns} link set upl0 up && ip -n {leaf} link set far0 up &&
             ip -n {leaf} addr add {gateway} dev far0"
        ));
        let state = std::env::temp_dir().join(format!("weft-e2e-{ns}.json"));
        let _ = std::fs::remove_file(&state);
        let agent = Command::new("ip")
            .args(["netns", "exec", &ns, bin])
            .env("WEFT_AGENT_TOKEN", AGENT_TOKEN)
            .env("WEFT_AGENT_LISTEN", format!("169.254.{n}.2:9180"))
            .env("WEFT_AGENT_UPLINKS", "upl0")
            .env("WEFT_AGENT_BACKEND", "linux-bridge")
            .env("WEFT_AGENT_STATE_FILE", &state)
            .env("WEFT_AGENT_DOCKER_SOCKET", "")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let host = Host {
            url: format!("http://169.254.{n}.2:9180"),
            ns,
            leaf,
            agent,
            containers: Vec::new(),
        };
        for _ in 0..100 {
            if host.client().health().await.is_ok() {
                return host;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("weft-agent in {} did not come up", host.ns);
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
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        for ns in self.containers.iter().chain([&self.ns, &self.leaf]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Weft with apic-sim (EPG t/ap/web on the APIC, VLAN 150, untagged, 10.50.0.0/24), a
/// one-second binding linger and a two-second grace for lost containers.
async fn weft(db: PgPool) -> (TestApp, apic_sim::SimHandle) {
    let sim = apic_sim::spawn(apic_sim::SimConfig::new(
        apic_sim::Topology::example().unwrap(),
    ))
    .await
    .unwrap();
    let app = weft_on(db, &sim, apic_settings(&sim.url, "password")).await;
    (app, sim)
}

/// The workflow settings of these tests: a one-second binding linger and a two-second grace.
fn workflow() -> Settings {
    Settings {
        binding_linger: Duration::from_secs(1),
        lost_grace: Duration::from_secs(2),
        ..Settings::default()
    }
}

/// A weft replica on `db` talking to `sim` with the APIC client settings `apic`.
async fn replica(db: PgPool, apic: &ApicSettings) -> Application {
    let apic = std::sync::Arc::new(weft::apic::Apic::new(apic).unwrap());
    Application::bind(
        "127.0.0.1:0".parse().unwrap(),
        db,
        crate::helpers::LONG,
        Some(apic),
    )
    .await
    .unwrap()
    .with_workflow(workflow())
}

/// Weft on `db` against `sim` (client settings `apic`), with tokens and the EPG t/ap/web.
pub(crate) async fn weft_on(db: PgPool, sim: &apic_sim::SimHandle, apic: ApicSettings) -> TestApp {
    let app = crate::helpers::serve_with_tokens(replica(db.clone(), &apic).await, db).await;
    epg_web(&app, sim).await;
    app
}

/// A second replica on the same database and APIC, sharing the tokens of `first`.
pub(crate) async fn second_replica(db: PgPool, apic: &ApicSettings, first: &TestApp) -> TestApp {
    let mut b = crate::helpers::serve(replica(db, apic).await);
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
    let r = app
        .put(
            &app.operator,
            "/api/v1/epgs/t/ap/web",
            &json!({"bridge_domain": "bd1", "physical_domain": "weft_phys", "vlan_pool": "p",
                "requested_vlan": 150, "mode": "untagged",
                "subnets": [{"cidr": "10.50.0.0/24", "gateway": "10.50.0.1", "reserved": []}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    crate::helpers::inject_epg(sim, "web");
}

/// Registers `host` as `host-1` (its agent, token and uplink to `HOST1_PATH`).
pub(crate) async fn register(app: &TestApp, host: &Host) {
    let r = app
        .put(
            &app.admin,
            "/api/v1/hosts/host-1",
            &json!({"agent_url": host.url, "agent_token": AGENT_TOKEN, "backend": "linux-bridge",
                    "uplinks": [{"interface": "upl0", "path_dn": HOST1_PATH}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

pub(crate) async fn attach(app: &TestApp, id: uuid::Uuid, netns: &str) -> Value {
    let r = app
        .put(
            &app.operator,
            &format!("/api/v1/attachments/{id}?wait=30"),
            &json!({"host": "host-1", "target": {"kind": "netns", "path": netns},
                    "epg": {"tenant": "t", "app": "ap", "epg": "web"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

fn binding_in_sim(sim: &apic_sim::SimHandle) -> Option<Value> {
    let dn = format!("uni/tn-t/ap-ap/epg-web/rspathAtt-[{HOST1_PATH}]");
    sim.dump()
        .into_iter()
        .find(|mo| mo.to_string().contains(&dn))
        .map(|_| json!(dn))
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

    // The second container of the EPG on the host: no APIC write.
    let id2 = uuid::Uuid::new_v4();
    let a2 = attach(&app, id2, &c2).await;
    assert_eq!(a2["state"], "attached", "{a2}");
    assert_eq!(sim.count("mo_post"), 1, "no second POST");
    let bindings = app.get_json(&app.viewer, "/api/v1/bindings").await;
    assert_eq!(bindings["items"][0]["ref_count"], 2, "{bindings}");

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
    let host = Host::start(&bin, "10.50.0.1/24").await;
    register(&app, &host).await;
    let links_before = sh(&format!("ip -n {} -o link", host.ns));

    // The agent cannot wire a namespace that does not exist: a permanent error after the
    // binding and the segment were made, so both are undone.
    let id = uuid::Uuid::new_v4();
    let a = attach(&app, id, "/run/netns/wft-no-such-namespace").await;
    assert_eq!(a["state"], "failed", "{a}");
    let reason = a["last_error"].as_str().unwrap();
    assert!(reason.contains("step `wire`"), "{reason}");
    let op = app
        .get_json(&app.viewer, a["operation"]["href"].as_str().unwrap())
        .await;
    let undone = crate::helpers::undone_steps(&op);
    assert_eq!(
        undone,
        ["wire", "segment", "bind", "preflight", "validate", "lease"],
        "{op}"
    );
    let state = host.client().state().await.unwrap();
    assert!(
        state.attachments.is_empty() && state.segments.is_empty(),
        "{state:?}"
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
    let (active, bindings): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ip_leases WHERE state = 'active'), (SELECT count(*) FROM bindings)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((active, bindings), (0, 0));

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
            &json!({"host": "host-1", "target": {"kind": "netns", "path": "/run/netns/x"},
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
    let state = host.client().state().await.unwrap();
    assert!(
        state.attachments.is_empty() && state.segments.is_empty(),
        "{state:?}"
    );
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

#[sqlx::test(migrations = "./migrations")]
async fn a_destroyed_container_is_lost_then_released_after_the_grace_unless_it_comes_back(
    db: PgPool,
) {
    let Some(bin) = agent_bin("e2e lost containers") else {
        return;
    };
    let (app, _sim) = weft(db.clone()).await;
    let mut host = Host::start(&bin, "10.50.0.1/24").await;
    register(&app, &host).await;
    let (c1, c2) = (host.container(), host.container());
    let (id1, id2) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    assert_eq!(attach(&app, id1, &c1).await["state"], "attached");
    assert_eq!(attach(&app, id2, &c2).await["state"], "attached");
    let event =
        |id: uuid::Uuid, kind: &str| json!({"attachment": id, "container": "c", "kind": kind});
    let post = |body: Value| {
        let app = &app;
        async move {
            let r = app.post(&app.agent, "/api/v1/agent/events", &body).await;
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
        }
    };

    // Stopped: still attached, the container is reported stopped.
    post(event(id1, "died")).await;
    let a1 = app
        .get_json(&app.viewer, &format!("/api/v1/attachments/{id1}"))
        .await;
    assert_eq!(
        (a1["state"].as_str(), a1["container_status"].as_str()),
        (Some("attached"), Some("stopped"))
    );
    // Destroyed: lost; it comes back within the grace (re-wired), so it is kept.
    post(event(id1, "destroyed")).await;
    post(event(id2, "destroyed")).await;
    let a1 = app
        .get_json(&app.viewer, &format!("/api/v1/attachments/{id1}"))
        .await;
    assert_eq!(a1["state"], "lost", "{a1}");
    post(event(id1, "rewired")).await;
    let a1 = app
        .get_json(&app.viewer, &format!("/api/v1/attachments/{id1}"))
        .await;
    assert_eq!(a1["state"], "attached", "{a1}");
    assert!(a1["rewired_at"].is_string());

    // The other stays lost until the grace passes, then is detached: its lease quarantined.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a2 = app
        .get_json(&app.viewer, &format!("/api/v1/attachments/{id2}"))
        .await;
    assert_eq!(a2["state"], "lost", "not before the grace");
    let address = a2["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut gone = false;
    for _ in 0..100 {
        if app
            .get(&app.viewer, &format!("/api/v1/attachments/{id2}"))
            .await
            .status()
            == StatusCode::NOT_FOUND
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "detached after the grace");
    let (state,): (String,) =
        sqlx::query_as("SELECT state FROM ip_leases WHERE host(address) = $1")
            .bind(&address)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(state, "quarantined", "not reused early");
    let agent = host.client().state().await.unwrap();
    assert_eq!(agent.attachments.len(), 1, "only the one that came back");
    assert_eq!(agent.attachments[0].id, id1);
}
