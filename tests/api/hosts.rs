use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{assert_problem, spawn_app};

fn host_body() -> Value {
    json!({
        "agent_url": "https://host1.example:9180",
        "agent_token": "s3cret-agent-token",
        "backend": "linux-bridge",
        "mtu": 9000,
        "uplinks": [
            {"interface": "eth1", "path_dn": "topology/pod-1/protpaths-101-102/pathep-[host1-vpc]"},
            {"interface": "eth0", "path_dn": "topology/pod-1/paths-101/pathep-[eth1/1]"}
        ]
    })
}

#[sqlx::test(migrations = "./migrations")]
async fn a_host_round_trips_without_ever_showing_its_agent_token(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let r = app
        .put(&app.admin, "/api/v1/hosts/host1", &host_body())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let text = r.text().await.unwrap();
    assert!(!text.contains("s3cret"), "{text}");
    let got: Value = app.get_json(&app.viewer, "/api/v1/hosts/host1").await;
    assert_eq!(got["agent_token_set"], true);
    assert_eq!(got["backend"], "linux-bridge");
    assert_eq!(got["mtu"], 9000);
    assert_eq!(got["uplinks"][0]["interface"], "eth0");
    assert_eq!(
        got["uplinks"][0]["path_dn"],
        "topology/pod-1/paths-101/pathep-[eth1/1]"
    );
    assert!(got["uplinks"][0].get("learned").is_none(), "{got}");
    assert_eq!(
        got["uplinks"][1]["path_dn"],
        "topology/pod-1/protpaths-101-102/pathep-[host1-vpc]"
    );

    // PUT without a token keeps the stored one; the audit log never holds it.
    let mut body = host_body();
    body.as_object_mut().unwrap().remove("agent_token");
    body["uplinks"] = json!([{"interface": "eth0", "path_dn": "topology/pod-1/paths-101/extpaths-110/pathep-[eth1/2]"}]);
    let r = app.put(&app.admin, "/api/v1/hosts/host1", &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["agent_token_set"], true);
    assert_eq!(got["uplinks"].as_array().unwrap().len(), 1);
    let (stored,): (String,) = sqlx::query_as("SELECT agent_token FROM hosts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, "s3cret-agent-token");
    let audit = app
        .get(&app.admin, "/api/v1/audit")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        audit.contains("host.put") && !audit.contains("s3cret"),
        "{audit}"
    );

    app.delete_and_check_gone(&app.admin, "/api/v1/hosts/host1")
        .await;
}

#[sqlx::test(migrations = "./migrations")]
async fn bad_host_input_is_refused_by_field(db: PgPool) {
    let app = spawn_app(db).await;
    let cases = [
        ("backend", json!("bridge")),
        ("mtu", json!(10000)),
        ("agent_url", json!("ftp://x")),
        ("agent_url", json!("http://user:pw@x")),
        (
            "uplinks",
            json!([{"interface": "eth0", "path_dn": "topology/pod-1/protpaths-102-101/pathep-[x]"}]),
        ),
        (
            "uplinks",
            json!([{"interface": "eth0/1", "path_dn": "topology/pod-1/paths-101/pathep-[eth1/1]"}]),
        ),
        (
            "uplinks",
            json!([{"interface": "eth0", "path_dn": "topology/pod-1/paths-101/pathep-[eth1/1]"},
                           {"interface": "eth0", "path_dn": "topology/pod-1/paths-101/pathep-[eth1/2]"}]),
        ),
    ];
    for (field, value) in cases {
        let mut body = host_body();
        body[field] = value.clone();
        let r = app.put(&app.admin, "/api/v1/hosts/h", &body).await;
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid-input").await;
    }
    assert_problem(
        app.put(&app.admin, "/api/v1/hosts/a%2Fb", &host_body())
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-input",
    )
    .await;
}

#[sqlx::test(migrations = "./migrations")]
async fn hosts_list_filters_by_backend(db: PgPool) {
    let app = spawn_app(db).await;
    for (name, backend) in [("h1", "ovs"), ("h2", "macvlan"), ("h3", "ovs")] {
        app.put(
            &app.admin,
            &format!("/api/v1/hosts/{name}"),
            &json!({"agent_url": "http://x:1", "backend": backend}),
        )
        .await;
    }
    let page: Value = app.get_json(&app.viewer, "/api/v1/hosts?backend=ovs").await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["h1", "h3"]);
    assert_eq!(page["items"][0]["mtu"], 1500);
    assert_problem(
        app.get(&app.viewer, "/api/v1/hosts?backend=x").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-input",
    )
    .await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_repeated_host_put_writes_nothing_but_a_new_token_is_a_change(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let put = |body: Value| {
        let app = &app;
        async move {
            let r = app.put(&app.admin, "/api/v1/hosts/host1", &body).await;
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let audit_rows = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM audit_log WHERE action = 'host.put'")
                .fetch_one(&db)
                .await
                .unwrap();
        n
    };
    let (status, first) = put(host_body()).await;
    assert_eq!(status, StatusCode::CREATED);
    // Same fields, same token, uplinks in another order: nothing changes.
    let mut same = host_body();
    same["uplinks"].as_array_mut().unwrap().reverse();
    let (status, again) = put(same).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first, "identical document, no new updated_at");
    assert_eq!(audit_rows().await, 1);
    // Only the token differs: that is a change.
    let mut rotated = host_body();
    rotated["agent_token"] = json!("rotated-agent-token");
    let (status, changed) = put(rotated).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(changed["updated_at"], first["updated_at"]);
    assert_eq!(audit_rows().await, 2);
    let (stored,): (String,) = sqlx::query_as("SELECT agent_token FROM hosts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, "rotated-agent-token");
}
