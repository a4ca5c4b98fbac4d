//! Attach and detach through the API, with apic-sim over HTTP: what a PUT refuses up front
//! (a 4xx that leaves nothing behind), the dry run's plan (no row, no APIC write), one
//! attachment for concurrent identical PUTs, and a workflow whose agent never answers: retried
//! with backoff, then failed with a reason naming the step and the agent, its lease
//! quarantined, no binding left, every step in the operation with the PUT's request id.

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{assert_problem, spawn_with_sim, TestApp};

/// The sim's LLDP names host-1 on leaf 101 eth1/1.
const HOST1_PATH: &str = "topology/pod-1/paths-101/pathep-[eth1/1]";

/// Pool `p`, EPG t/ap/{name} on VLAN `vlan` in 10.{vlan-100}.0.0/24 (also on the APIC), and
/// host-1 whose agent URL answers nothing (a closed port).
async fn setup(app: &TestApp, sim: &apic_sim::SimHandle, name: &str, vlan: u16) {
    if app.get(&app.viewer, "/api/v1/vlan-pools/p").await.status() == StatusCode::NOT_FOUND {
        app.pool("p", 100, 199).await;
    }
    let n = vlan - 100;
    let r = app
        .put(
            &app.operator,
            &format!("/api/v1/epgs/t/ap/{name}"),
            &json!({"bridge_domain": "bd1", "physical_domain": "weft_phys", "vlan_pool": "p",
                "requested_vlan": vlan, "mode": "untagged",
                "subnets": [{"cidr": format!("10.{n}.0.0/24"), "gateway": format!("10.{n}.0.1"),
                    "reserved": [{"first": format!("10.{n}.0.2"), "last": format!("10.{n}.0.9")}]}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    crate::helpers::inject_epg(sim, name);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let r = app
        .put(
            &app.admin,
            "/api/v1/hosts/host-1",
            &json!({"agent_url": format!("http://127.0.0.1:{port}"), "agent_token": "t0k3n-of-the-agent",
                "backend": "linux-bridge"}),
        )
        .await;
    assert!(r.status().is_success());
}

fn spec(epg: &str) -> Value {
    json!({"host": "host-1", "target": {"kind": "netns", "path": "/run/netns/c1"},
           "epg": {"tenant": "t", "app": "ap", "epg": epg}})
}

/// Rows of the tables an attach writes.
async fn counts(db: &PgPool) -> Value {
    let (a, l, j, b, au): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM attachments), (SELECT count(*) FROM ip_leases),
                (SELECT count(*) FROM jobs), (SELECT count(*) FROM bindings),
                (SELECT count(*) FROM audit_log WHERE action LIKE 'attachment.%')",
    )
    .fetch_one(db)
    .await
    .unwrap();
    json!({"attachments": a, "leases": l, "jobs": j, "bindings": b, "audit": au})
}

#[sqlx::test(migrations = "./migrations")]
async fn bad_attach_requests_are_4xx_and_leave_nothing_behind(db: PgPool) {
    let (app, sim) = spawn_with_sim(db.clone()).await;
    setup(&app, &sim, "web", 150).await;
    let before = counts(&db).await;
    let id = uuid::Uuid::new_v4();
    let path = format!("/api/v1/attachments/{id}");
    let with = |k: &str, v: Value| {
        let mut s = spec("web");
        s[k] = v;
        s
    };
    let cases = [
        (
            with("host", json!("nohost")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
        ),
        (
            with("epg", json!({"tenant": "t", "app": "ap", "epg": "none"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
        ),
        (
            with("reservation", json!("nores")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
        ),
        (
            with("address", json!("10.99.0.5")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
        ),
        (
            with("address", json!("10.50.0.1")),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            with("address", json!("10.50.0.3")),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            with("target", json!({"kind": "vm", "name": "x"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
        ),
        (
            with("interface", json!("bad/name")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
        ),
    ];
    for (body, status, kind) in cases {
        let r = app.put(&app.operator, &path, &body).await;
        assert_problem(r, status, kind).await;
    }
    let mut both = with("address", json!("10.50.0.20"));
    both["reservation"] = json!("r1");
    assert_problem(
        app.put(&app.operator, &path, &both).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-input",
    )
    .await;
    // A host without uplinks (host-9: no LLDP neighbour, none configured).
    app.put(
        &app.admin,
        "/api/v1/hosts/host-9",
        &json!({"agent_url": "http://h:1", "backend": "ovs"}),
    )
    .await;
    let r = app
        .put(&app.operator, &path, &with("host", json!("host-9")))
        .await;
    assert_problem(r, StatusCode::CONFLICT, "conflict").await;
    let r = app.put(&app.viewer, &path, &spec("web")).await;
    assert_problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = app
        .put(&app.operator, &format!("{path}?wait=61"), &spec("web"))
        .await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid-input").await;

    assert_eq!(counts(&db).await, before);
    assert_eq!(sim.count("mo_post"), 0);
    assert_eq!(
        app.get(&app.viewer, &path).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_dry_run_shows_the_plan_and_changes_nothing(db: PgPool) {
    let (app, sim) = spawn_with_sim(db.clone()).await;
    setup(&app, &sim, "web", 150).await;
    let before = counts(&db).await;
    let dump = sim.dump();
    sim.reset_counts();
    let id = uuid::Uuid::new_v4();
    let r = app
        .put(
            &app.operator,
            &format!("/api/v1/attachments/{id}?dry_run=true"),
            &spec("web"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let plan: Value = r.json().await.unwrap();
    assert_eq!(plan["address"], "10.50.0.10/24", "{plan}");
    assert_eq!(plan["gateway"], "10.50.0.1");
    assert_eq!(plan["vlan"], 150);
    assert_eq!(
        plan["bindings"],
        json!([{"dn": format!("uni/tn-t/ap-ap/epg-web/rspathAtt-[{HOST1_PATH}]"), "path": HOST1_PATH,
                "encap": "vlan-150", "action": "create"}])
    );
    assert_eq!(
        plan["agent_calls"],
        json!(["PUT /v1/segments/150", format!("PUT /v1/attachments/{id}")])
    );
    assert_eq!(counts(&db).await, before, "no row");
    assert_eq!(sim.count("mo_post"), 0, "no APIC write");
    assert_eq!(sim.dump(), dump);
}

#[sqlx::test(migrations = "./migrations")]
async fn an_unreachable_agent_fails_the_attach_after_retries_and_leaves_nothing_behind(db: PgPool) {
    let (app, sim) = spawn_with_sim(db.clone()).await;
    setup(&app, &sim, "web", 150).await;
    sim.reset_counts();
    let id = uuid::Uuid::new_v4();
    let path = format!("/api/v1/attachments/{id}");
    let r = app
        .client
        .put(app.url(&format!("{path}?wait=30")))
        .bearer_auth(&app.operator)
        .header("x-request-id", "req-attach-1")
        .json(&spec("web"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let att: Value = r.json().await.unwrap();
    assert_eq!(att["state"], "failed", "{att}");
    let reason = att["last_error"].as_str().unwrap();
    assert!(
        reason.contains("step `validate`") && reason.contains("agent of host `host-1`"),
        "{reason}"
    );
    assert!(!reason.contains("t0k3n"), "{reason}");
    assert_eq!(att["address"], Value::Null, "the lease was released");

    let op = app
        .get_json(&app.viewer, att["operation"]["href"].as_str().unwrap())
        .await;
    assert_eq!(op["state"], "failed", "{op}");
    assert_eq!(op["request_id"], "req-attach-1");
    assert_eq!(op["steps"][0]["name"], "lease");
    assert_eq!(op["steps"][1]["name"], "validate");
    assert_eq!(
        op["steps"][1]["attempts"], 5,
        "retried up to the bound: {op}"
    );
    let undone = crate::helpers::undone_steps(&op);
    assert_eq!(undone, ["validate", "lease"]);

    let (leases, active, bindings): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ip_leases), (SELECT count(*) FROM ip_leases WHERE state = 'active'),
                (SELECT count(*) FROM bindings)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        (leases, active, bindings),
        (1, 0, 0),
        "one quarantined lease, no binding"
    );
    assert_eq!(sim.count("mo_post"), 0, "nothing was bound on the APIC");
    let audit = app
        .get_json(&app.viewer, "/api/v1/audit?request_id=req-attach-1")
        .await;
    assert_eq!(audit["items"][0]["action"], "attachment.put");

    // A repeated PUT with the same document tries again; another EPG is a 409.
    setup_second_epg(&app).await;
    let r = app.put(&app.operator, &path, &spec("db")).await;
    assert_problem(r, StatusCode::CONFLICT, "conflict").await;
    let again = app
        .put(&app.operator, &format!("{path}?wait=30"), &spec("web"))
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_ne!(
        again["operation"], att["operation"],
        "a new attach operation"
    );
    assert_eq!(again["state"], "failed");

    // A detach is queued as an operation of its own.
    let r = app.delete(&app.operator, &path).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let op: Value = r.json().await.unwrap();
    assert_eq!(op["kind"], "detach");
    let list = app
        .get_json(&app.viewer, "/api/v1/attachments?state=detaching")
        .await;
    assert_eq!(list["items"][0]["id"], id.to_string(), "{list}");
}

async fn setup_second_epg(app: &TestApp) {
    let r = app
        .put(
            &app.operator,
            "/api/v1/epgs/t/ap/db",
            &json!({"bridge_domain": "bd1", "physical_domain": "weft_phys", "vlan_pool": "p",
                "subnets": [{"cidr": "10.60.0.0/24", "gateway": "10.60.0.1", "reserved": []}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[sqlx::test(migrations = "./migrations")]
async fn concurrent_identical_puts_make_one_attachment(db: PgPool) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("error")
        .try_init();
    let (app, sim) = spawn_with_sim(db.clone()).await;
    setup(&app, &sim, "web", 150).await;
    let id = uuid::Uuid::new_v4();
    let path = format!("/api/v1/attachments/{id}");
    let body = spec("web");
    let puts = (0..10).map(|_| app.put(&app.operator, &path, &body));
    let statuses: Vec<StatusCode> = futures::future::join_all(puts)
        .await
        .into_iter()
        .map(|r| r.status())
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        9,
        "{statuses:?}"
    );
    let c = counts(&db).await;
    assert_eq!(c["attachments"], 1);
    assert_eq!(c["jobs"], 1);
    assert_eq!(c["leases"], 1);
    assert_eq!(c["audit"], 1);
}

#[sqlx::test(migrations = "./migrations")]
async fn agent_events_need_the_agent_role_and_unknown_attachments_are_ignored(db: PgPool) {
    let (app, _sim) = spawn_with_sim(db).await;
    let event = json!({"attachment": uuid::Uuid::new_v4(), "container": "c", "kind": "destroyed"});
    let r = app
        .post(&app.operator, "/api/v1/agent/events", &event)
        .await;
    assert_problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = app.post(&app.agent, "/api/v1/agent/events", &event).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let bindings = app.get_json(&app.viewer, "/api/v1/bindings").await;
    assert_eq!(bindings["items"], json!([]));
}
