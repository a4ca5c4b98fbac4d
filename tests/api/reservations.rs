use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{assert_problem, spawn_app, spawn_with, NONE};

const R: &str = "/api/v1/epgs/t/ap/a/reservations";

async fn reserve(app: &crate::helpers::TestApp, name: &str, body: Value) -> reqwest::Response {
    app.put(&app.operator, &format!("{R}/{name}"), &body).await
}

#[sqlx::test(migrations = "./migrations")]
async fn the_same_name_always_gets_the_same_address(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 101).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    let r = reserve(&app, "job-1", json!({})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["address"], "10.0.0.2");
    assert_eq!(first["gateway"], "10.0.0.1");
    assert_eq!(first["subnet"], "10.0.0.0/24");
    let r = reserve(&app, "job-1", json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let second: Value = r.json().await.unwrap();
    assert_eq!(first, second);
    // An empty body is the same as `{}`.
    let r = app
        .client
        .put(app.url(&format!("{R}/job-1")))
        .bearer_auth(&app.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got: Value = app.get_json(&app.viewer, &format!("{R}/job-1")).await;
    assert_eq!(got, first);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_requested_address_is_honoured_when_free_otherwise_conflict(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 101).await;
    let mut body = crate::helpers::epg_body("p", "10.0.0.0/24", "10.0.0.1");
    body["subnets"][0]["reserved"] = json!([{"first": "10.0.0.2", "last": "10.0.0.9"}]);
    app.put(&app.operator, "/api/v1/epgs/t/ap/a", &body).await;
    let a: Value = reserve(&app, "a", json!({"address": "10.0.0.50"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["address"], "10.0.0.50");
    assert_problem(
        reserve(&app, "b", json!({"address": "10.0.0.50"})).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    for taboo in ["10.0.0.0", "10.0.0.1", "10.0.0.5", "10.0.0.255"] {
        assert_problem(
            reserve(&app, "b", json!({"address": taboo})).await,
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;
    }
    assert_problem(
        reserve(&app, "b", json!({"address": "10.9.0.5"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-input",
    )
    .await;
    assert_problem(
        reserve(&app, "a", json!({"address": "10.0.0.51"})).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    let b: Value = reserve(&app, "b", json!({})).await.json().await.unwrap();
    assert_eq!(
        b["address"], "10.0.0.10",
        "lowest address after gateway and reserved range"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn network_broadcast_gateway_and_reserved_are_never_handed_out(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 101).await;
    let mut body = crate::helpers::epg_body("p", "10.0.0.0/28", "10.0.0.14");
    body["subnets"][0]["reserved"] = json!([{"first": "10.0.0.4", "last": "10.0.0.6"}]);
    app.put(&app.operator, "/api/v1/epgs/t/ap/a", &body).await;
    let mut got = Vec::new();
    for i in 0.. {
        let r = reserve(&app, &format!("n{i}"), json!({})).await;
        if r.status() == StatusCode::CONFLICT {
            assert_problem(r, StatusCode::CONFLICT, "pool-exhausted").await;
            break;
        }
        let v: Value = r.json().await.unwrap();
        got.push(v["address"].as_str().unwrap().to_owned());
    }
    let want: Vec<String> = [1, 2, 3, 7, 8, 9, 10, 11, 12, 13]
        .iter()
        .map(|i| format!("10.0.0.{i}"))
        .collect();
    assert_eq!(got, want);
}

#[sqlx::test(migrations = "./migrations")]
async fn released_addresses_are_quarantined(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 101).await;
    app.epg("a", "p", "10.0.0.0/29", "10.0.0.1").await;
    let first: Value = reserve(&app, "x", json!({})).await.json().await.unwrap();
    assert_eq!(first["address"], "10.0.0.2");
    app.delete_and_check_gone(&app.operator, &format!("{R}/x"))
        .await;
    let y: Value = reserve(&app, "y", json!({})).await.json().await.unwrap();
    assert_eq!(y["address"], "10.0.0.3");
    assert_problem(
        reserve(&app, "z", json!({"address": "10.0.0.2"})).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    // The released name comes back to its own address.
    let x: Value = reserve(&app, "x", json!({})).await.json().await.unwrap();
    assert_eq!(x["address"], "10.0.0.2");
}

#[sqlx::test(migrations = "./migrations")]
async fn without_quarantine_the_lowest_released_address_is_reused(db: PgPool) {
    let app = spawn_with(db, NONE).await;
    app.pool("p", 100, 101).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    for n in ["a", "b", "c"] {
        reserve(&app, n, json!({})).await;
    }
    app.delete_ok(&app.operator, &format!("{R}/a")).await;
    let d: Value = reserve(&app, "d", json!({})).await.json().await.unwrap();
    assert_eq!(d["address"], "10.0.0.2");
    let e: Value = reserve(&app, "e", json!({})).await.json().await.unwrap();
    assert_eq!(e["address"], "10.0.0.5");
}

#[sqlx::test(migrations = "./migrations")]
async fn reservations_list_pages_in_address_order(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 100, 101).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    for i in 0..7 {
        reserve(&app, &format!("r{i}"), json!({})).await;
    }
    let mut seen = HashSet::new();
    let mut url = format!("{R}?limit=3");
    loop {
        let page: Value = app.get_json(&app.viewer, &url).await;
        for item in page["items"].as_array().unwrap() {
            assert!(seen.insert(item["address"].as_str().unwrap().to_owned()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("{R}?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(
        app.get(&app.viewer, "/api/v1/epgs/t/ap/none/reservations")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}
