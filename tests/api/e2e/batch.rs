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

use super::{agent_bin, epg_web, Host, AGENT_TOKEN};
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

async fn replica(db: &PgPool, sim: &apic_sim::SimHandle) -> Application {
    let apic =
        std::sync::Arc::new(weft::apic::Apic::new(&apic_settings(&sim.url, "password")).unwrap());
    Application::bind("127.0.0.1:0".parse().unwrap(), db.clone(), LONG, Some(apic))
        .await
        .unwrap()
}

/// The replica that runs the queued jobs: a batch window no test waits for, a short linger.
async fn workers(db: &PgPool, sim: &apic_sim::SimHandle, front: &TestApp) -> TestApp {
    let settings = Settings {
        binding_batch_window: Duration::from_secs(60),
        binding_linger: Duration::from_secs(1),
        ..Settings::default()
    };
    let mut app = serve(replica(db, sim).await.with_workflow(settings));
    (app.admin, app.operator, app.viewer) = (
        front.admin.clone(),
        front.operator.clone(),
        front.viewer.clone(),
    );
    app
}

/// Registers `host` as `name` with one uplink on `path`.
async fn register_as(app: &TestApp, host: &Host, name: &str, path: &str) {
    let r = app
        .put(
            &app.admin,
            &format!("/api/v1/hosts/{name}"),
            &json!({"agent_url": host.url, "agent_token": AGENT_TOKEN, "backend": "linux-bridge",
                    "uplinks": [{"interface": "upl0", "path_dn": path}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
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

/// Polls until no job is unfinished (at most a minute).
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
    panic!("jobs still unfinished after a minute");
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
