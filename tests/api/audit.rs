use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::spawn_app;

#[sqlx::test(migrations = "./migrations")]
async fn every_mutation_is_recorded_with_actor_request_id_and_before_after(db: PgPool) {
    let app = spawn_app(db).await;
    let r = app
        .client
        .put(app.url("/api/v1/vlan-pools/p"))
        .bearer_auth(&app.admin)
        .header("x-request-id", "req-pool-1")
        .json(&json!({"ranges": [{"first": 10, "last": 20}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    app.put(
        &app.admin,
        "/api/v1/vlan-pools/p",
        &json!({"ranges": [{"first": 10, "last": 30}]}),
    )
    .await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    app.put(
        &app.operator,
        "/api/v1/epgs/t/ap/a/reservations/r",
        &json!({}),
    )
    .await;
    app.delete_ok(&app.operator, "/api/v1/epgs/t/ap/a/reservations/r")
        .await;
    app.delete_ok(&app.operator, "/api/v1/epgs/t/ap/a/reservations/r")
        .await; // no-op, not recorded

    let page: Value = app.get_json(&app.viewer, "/api/v1/audit").await;
    let actions: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "reservation.delete",
            "reservation.put",
            "epg.put",
            "vlan-pool.put",
            "vlan-pool.put"
        ]
    );

    let first: Value = app
        .get_json(&app.viewer, "/api/v1/audit?request_id=req-pool-1")
        .await;
    let e = &first["items"][0];
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    assert_eq!(e["actor"], "t-admin");
    assert_eq!(e["resource"], "vlan-pools/p");
    assert_eq!(e["before"], Value::Null);
    assert_eq!(e["after"]["ranges"], json!([{"first": 10, "last": 20}]));

    let updates: Value = app
        .get_json(&app.viewer, "/api/v1/audit?action=vlan-pool.put&limit=1")
        .await;
    let e = &updates["items"][0];
    assert_eq!(e["before"]["ranges"], json!([{"first": 10, "last": 20}]));
    assert_eq!(e["after"]["ranges"], json!([{"first": 10, "last": 30}]));
    let cursor = updates["next_cursor"].as_str().unwrap();
    let next: Value = app
        .get_json(
            &app.viewer,
            &format!("/api/v1/audit?action=vlan-pool.put&limit=1&cursor={cursor}"),
        )
        .await;
    assert_eq!(next["items"][0]["request_id"], "req-pool-1");
    assert_eq!(next["next_cursor"], Value::Null);

    let by_actor: Value = app
        .get_json(
            &app.viewer,
            "/api/v1/audit?actor=t-operator&resource=epgs/t/ap/a",
        )
        .await;
    assert_eq!(by_actor["items"].as_array().unwrap().len(), 3);
    let future: Value = app
        .get_json(&app.viewer, "/api/v1/audit?since=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(future["items"], json!([]));
}

/// A repeated PUT returns the identical document (timestamps included) and records nothing.
#[sqlx::test(migrations = "./migrations")]
async fn repeating_a_put_changes_nothing_and_is_not_recorded(db: PgPool) {
    let app = spawn_app(db).await;
    let host = json!({"agent_url": "http://h:1", "agent_token": "tok", "backend": "ovs",
        "uplinks": [{"interface": "eth1", "path_dn": "topology/pod-1/paths-102/pathep-[eth1/1]"},
                    {"interface": "eth0", "path_dn": "topology/pod-1/paths-101/pathep-[eth1/1]"}]});
    let cases = [
        (
            &app.admin,
            "/api/v1/vlan-pools/p",
            json!({"ranges": [{"first": 30, "last": 40}, {"first": 10, "last": 20}]}),
        ),
        (
            &app.operator,
            "/api/v1/epgs/t/ap/a",
            crate::helpers::epg_body("p", "10.0.0.0/24", "10.0.0.1"),
        ),
        (
            &app.operator,
            "/api/v1/epgs/t/ap/a/reservations/r",
            json!({}),
        ),
        (&app.admin, "/api/v1/hosts/h", host),
    ];
    for (token, path, body) in cases {
        let first = app.put(token, path, &body).await;
        assert_eq!(first.status(), StatusCode::CREATED, "{path}");
        let first: Value = first.json().await.unwrap();
        let entries = |v: Value| v["items"].as_array().unwrap().len();
        let audit_before = entries(app.get_json(&app.viewer, "/api/v1/audit").await);
        let second = app.put(token, path, &body).await;
        assert_eq!(second.status(), StatusCode::OK, "{path}");
        assert_eq!(second.json::<Value>().await.unwrap(), first, "{path}");
        let audit_after = entries(app.get_json(&app.viewer, "/api/v1/audit").await);
        assert_eq!(
            audit_before, audit_after,
            "{path}: a no-op PUT was recorded"
        );
    }
    // A changed agent token is a change even though it is never shown.
    let host = json!({"agent_url": "http://h:1", "agent_token": "other", "backend": "ovs",
        "uplinks": [{"interface": "eth0", "path_dn": "topology/pod-1/paths-101/pathep-[eth1/1]"},
                    {"interface": "eth1", "path_dn": "topology/pod-1/paths-102/pathep-[eth1/1]"}]});
    app.put(&app.admin, "/api/v1/hosts/h", &host).await;
    let audit: Value = app
        .get_json(&app.viewer, "/api/v1/audit?action=host.put")
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 2);
}
