//! Bindings of one EPG that arrive together go to the APIC in one POST
//! (`src/workflow/batch.rs`), end to end with real agents.
//!
//! "Arriving together" is made exact rather than raced against the clock: the PUTs go to a
//! `front` replica that runs no workers, so every job is queued before any of them runs; then
//! a second replica on the same database runs them. Its batch window is long, so only the
//! deterministic rule (no other attach of the EPG still to add a binding) makes a flush: the
//! POST counts asserted here do not depend on timing.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use weft::startup::Application;
use weft::workflow::Settings;

use super::{agent_bin, epg_web, put_epg, register_as, register_at, Host};
use crate::helpers::{apic_settings, serve, serve_with_tokens, TestApp, LONG};

/// Replica `front` (no workers) with apic-sim and EPG t/ap/web (VLAN 150, untagged).
async fn front(db: &PgPool) -> (TestApp, apic_sim::SimHandle) {
    let sim = apic_sim::spawn(apic_sim::SimConfig::new(
        apic_sim::Topology::example().unwrap(),
    ))
    .await
    .unwrap();
    let settings = Settings {
        workers: 0,
        ..Settings::default()
    };
    let app = serve_with_tokens(replica(db, &sim).await.with_workflow(settings), db.clone()).await;
    epg_web(&app, &sim).await;
    (app, sim)
}

/// A replica whose APIC client has no request rate limit: the sim needs no protection, and
/// at the default 5 requests a second the pre-flight reads of 100 attaches take over a minute.
async fn replica(db: &PgPool, sim: &apic_sim::SimHandle) -> Application {
    let mut settings = apic_settings(&sim.url, "password");
    settings.client.rate_limit = None;
    let apic = std::sync::Arc::new(weft::apic::Apic::new(&settings).unwrap());
    Application::bind("127.0.0.1:0".parse().unwrap(), db.clone(), LONG, Some(apic))
        .await
        .unwrap()
}

/// The replica that runs the queued jobs: a batch window no test waits for, a short linger.
fn worker_settings() -> Settings {
    Settings {
        binding_batch_window: Duration::from_secs(60),
        binding_linger: Duration::from_secs(1),
        ..Settings::default()
    }
}

async fn workers(db: &PgPool, sim: &apic_sim::SimHandle, front: &TestApp) -> TestApp {
    workers_with(db, sim, front, worker_settings()).await
}

async fn workers_with(
    db: &PgPool,
    sim: &apic_sim::SimHandle,
    front: &TestApp,
    settings: Settings,
) -> TestApp {
    let mut app = serve(replica(db, sim).await.with_workflow(settings));
    (app.admin, app.operator, app.viewer) = (
        front.admin.clone(),
        front.operator.clone(),
        front.viewer.clone(),
    );
    app
}

/// Queues the attach of `netns` on `host` to EPG t/ap/`epg` (no wait).
async fn queue(app: &TestApp, id: uuid::Uuid, host: &str, netns: &str, epg: &str) {
    let r = app
        .put(
            &app.operator,
            &format!("/api/v1/attachments/{id}"),
            &json!({"host": host, "target": {"kind": "netns", "path": netns},
                    "epg": {"tenant": "t", "app": "ap", "epg": epg}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
}

/// Polls until no job is unfinished (at most a minute; then it says where they are).
async fn settle(db: &PgPool) {
    for _ in 0..600 {
        let (open,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")
                .fetch_one(db)
                .await
                .unwrap();
        if open == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (open,): (Option<String>,) = sqlx::query_as(
        "SELECT string_agg(format('%s %s at %s, %s attempts: %s', state, phase, step, attempts, last_error), E'\n')
         FROM jobs WHERE state IN ('queued', 'running')",
    )
    .fetch_one(db)
    .await
    .unwrap();
    panic!(
        "jobs still unfinished after a minute:\n{}",
        open.unwrap_or_default()
    );
}

/// The `fvRsPathAtt` objects on the sim carrying Weft's annotation.
fn weft_bindings_in_sim(sim: &apic_sim::SimHandle) -> Vec<Value> {
    sim.dump()
        .into_iter()
        .filter_map(|mo| mo.get("fvRsPathAtt").cloned())
        .filter(|b| b["attributes"]["annotation"] == "orchestrator:weft")
        .collect()
}

fn path(leaf: u16, port: &str) -> String {
    format!("topology/pod-1/paths-{leaf}/pathep-[{port}]")
}

#[sqlx::test(migrations = "./migrations")]
async fn two_attaches_of_one_epg_on_two_hosts_arriving_together_make_one_post(db: PgPool) {
    let Some(bin) = agent_bin("e2e binding batch") else {
        return;
    };
    let (front, sim) = front(&db).await;
    let mut hosts = Vec::new();
    for (name, port) in [("batch-a", "eth1/2"), ("batch-b", "eth1/3")] {
        let host = Host::start(&bin, "10.50.0.1/24").await;
        register_as(&front, &host, name, &path(101, port)).await;
        hosts.push((name, host));
    }
    let ids = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
    for (id, (name, host)) in ids.iter().zip(&mut hosts) {
        let netns = host.container();
        queue(&front, *id, name, &netns, "web").await;
    }
    sim.reset_counts();
    let app = workers(&db, &sim, &front).await;
    settle(&db).await;

    for id in ids {
        let a = app
            .get_json(&app.viewer, &format!("/api/v1/attachments/{id}"))
            .await;
        assert_eq!(a["state"], "attached", "{a}");
        // The job that waited for the other one's binding took one attempt at `bind`.
        let op = app
            .get_json(&app.viewer, a["operation"]["href"].as_str().unwrap())
            .await;
        let bind = op["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "bind")
            .unwrap();
        assert_eq!(bind["attempts"], 1, "{op}");
    }
    assert_eq!(sim.count("mo_post"), 1, "both bindings in one POST");
    let bindings = weft_bindings_in_sim(&sim);
    assert_eq!(bindings.len(), 2, "{bindings:?}");
    let listed = app.get_json(&app.viewer, "/api/v1/bindings").await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{listed}");
    assert!(
        items
            .iter()
            .all(|b| b["apic_state"] == "applied" && b["ref_count"] == 1),
        "{listed}"
    );

    // Detached together: after the linger both bindings leave through POSTs (one per EPG
    // and sweep round), never one DELETE per binding.
    sim.reset_counts();
    let deletes: Vec<String> = ids
        .iter()
        .map(|id| format!("/api/v1/attachments/{id}?wait=30"))
        .collect();
    let done = join_all(deletes.iter().map(|p| app.delete(&app.operator, p))).await;
    assert!(done.iter().all(|r| r.status() == StatusCode::ACCEPTED));
    for _ in 0..50 {
        if weft_bindings_in_sim(&sim).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        weft_bindings_in_sim(&sim).is_empty(),
        "removed after the linger"
    );
    assert_eq!(sim.count("mo_delete"), 0);
    assert!(
        (1..=2).contains(&sim.count("mo_post")),
        "{:?}",
        sim.counts()
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_refused_batch_fails_every_attach_whose_binding_was_in_it(db: PgPool) {
    let Some(bin) = agent_bin("e2e refused binding batch") else {
        return;
    };
    let (front, sim) = front(&db).await;
    let (mut a, mut b) = (
        Host::start(&bin, "10.50.0.1/24").await,
        Host::start(&bin, "10.50.0.1/24").await,
    );
    let (path_a, path_b) = (path(101, "eth1/2"), path(101, "eth1/3"));
    register_as(&front, &a, "batch-a", &path_a).await;
    // Nothing listens there: b's attach stays at `validate`, retrying, until b is fixed.
    let closed = b.url.replace(":9180", ":9181");
    register_at(&front, &b, &closed, "batch-b", &path_b).await;
    let (id_a, id_b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    queue(&front, id_a, "batch-a", &a.container(), "web").await;
    queue(&front, id_b, "batch-b", &b.container(), "web").await;
    let settings = Settings {
        max_attempts: 1000,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..worker_settings()
    };
    let app = workers_with(&db, &sim, &front, settings).await;

    // a's binding waits for b's, which is still to come.
    let mut pending = Value::Null;
    for _ in 0..300 {
        pending = app.get_json(&app.viewer, "/api/v1/bindings").await;
        if pending["items"][0]["apic_state"] == "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pending["items"][0]["apic_state"], "pending", "{pending}");
    // Meanwhile someone binds a's path by hand: the POST of the batch is refused.
    let foreign = format!("uni/tn-t/ap-ap/epg-web/rspathAtt-[{path_a}]");
    sim.inject(
        "uni/tn-t/ap-ap/epg-web",
        &json!({"fvRsPathAtt":{"attributes":{"tDn": path_a, "encap": "vlan-150", "mode": "untagged"}}}),
    )
    .unwrap();
    sim.reset_counts();
    register_as(&front, &b, "batch-b", &path_b).await;
    settle(&db).await;

    for id in [id_a, id_b] {
        let att = app
            .get_json(&app.viewer, &format!("/api/v1/attachments/{id}"))
            .await;
        assert_eq!(att["state"], "failed", "{att}");
        let reason = att["last_error"].as_str().unwrap();
        assert!(
            reason.contains("step `bind`") && reason.contains(&foreign),
            "{reason}"
        );
    }
    assert_eq!(sim.count("mo_post"), 0, "nothing was posted");
    // Both undone: the references dropped, the bindings forgotten after the linger without
    // an APIC write (a's path holds someone else's binding, b's nothing), leases quarantined.
    for _ in 0..50 {
        let left: (i64,) = sqlx::query_as("SELECT count(*) FROM bindings")
            .fetch_one(&db)
            .await
            .unwrap();
        if left.0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (bindings, refs, active): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM bindings), (SELECT count(*) FROM binding_refs),
                (SELECT count(*) FROM ip_leases WHERE state = 'active')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((bindings, refs, active), (0, 0, 0));
    assert_eq!(sim.count("mo_post") + sim.count("mo_delete"), 0);
    assert!(
        sim.get(&foreign).is_some(),
        "the foreign binding is untouched"
    );
    for host in [&a, &b] {
        let state = host.client().state().await.unwrap();
        assert!(state.attachments.is_empty(), "{state:?}");
    }
}

/// The ten leaf ports the scale test's hosts are cabled to (no LLDP neighbour on them, so a
/// host's configured uplink stands alone).
const SCALE_PORTS: [(u16, &str); 10] = [
    (101, "eth1/2"),
    (101, "eth1/3"),
    (101, "eth1/4"),
    (101, "eth1/7"),
    (101, "eth1/8"),
    (102, "eth1/2"),
    (102, "eth1/3"),
    (102, "eth1/4"),
    (102, "eth1/7"),
    (102, "eth1/8"),
];

/// 100 containers in 10 EPGs on 10 hosts: every EPG on every host, so 100 bindings. Ten EPGs
/// on one host need ten VLANs on its uplink: the Open vSwitch backend tags them in
/// userspace (the Linux-bridge backend would need 8021q, which this kernel lacks, or one
/// untagged uplink per EPG).
#[sqlx::test(migrations = "./migrations")]
async fn a_hundred_containers_in_ten_epgs_on_ten_hosts_take_at_most_ten_apic_posts(db: PgPool) {
    let Some(bin) = agent_bin("e2e 100 attaches") else {
        return;
    };
    if let Some(reason) = apic_sim::testbed::unavailable() {
        eprintln!("SKIPPED: e2e 100 attaches: {reason}");
        return;
    }
    let (front, sim) = front(&db).await;
    let epgs: Vec<String> = (0..10).map(|i| format!("scale{i}")).collect();
    for (i, epg) in (160..).zip(&epgs) {
        put_epg(&front, &sim, epg, i, "regular").await;
    }
    let mut hosts = Vec::new();
    for (i, (leaf, port)) in SCALE_PORTS.iter().enumerate() {
        let host = Host::builder().ovs().start(&bin, "10.99.0.1/24").await;
        let name = format!("scale-{i}");
        register_as(&front, &host, &name, &path(*leaf, port)).await;
        hosts.push((name, host));
    }
    let mut queued = Vec::new();
    for (name, host) in &mut hosts {
        for epg in &epgs {
            queued.push((uuid::Uuid::new_v4(), name.clone(), host.container(), epg));
        }
    }
    join_all(
        queued
            .iter()
            .map(|(id, host, netns, epg)| queue(&front, *id, host, netns, epg)),
    )
    .await;
    sim.reset_counts();
    let app = workers(&db, &sim, &front).await;
    settle(&db).await;

    let (attached, refs): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM attachments WHERE state = 'attached'),
                (SELECT count(*) FROM binding_refs)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((attached, refs), (100, 100));
    let posts = sim.count("mo_post");
    assert!(
        posts <= 10,
        "{posts} APIC POSTs for 100 bindings of 10 EPGs"
    );
    // At least 90 binds found their binding posted by another job, so they waited for it;
    // waiting is not an attempt: every bind took one.
    let (binds, retried): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE attempts <> 1) FROM job_steps WHERE step = 'bind'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((binds, retried), (100, 0));
    assert_eq!(weft_bindings_in_sim(&sim).len(), 100);
    let listed = app
        .get_json(&app.viewer, "/api/v1/bindings?limit=1000")
        .await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 100);
    assert!(items
        .iter()
        .all(|b| b["apic_state"] == "applied" && b["ref_count"] == 1));
    for (_, host) in &hosts {
        let state = host.client().state().await.unwrap();
        assert_eq!(state.segments.len(), 10, "{state:?}");
        assert_eq!(state.attachments.len(), 10);
        assert!(
            state.attachments.iter().all(|a| a.actual.wired),
            "{state:?}"
        );
    }
}
