use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{assert_problem, spawn_app};

#[sqlx::test(migrations = "./migrations")]
async fn put_twice_gives_the_same_pool_and_get_returns_it(db: PgPool) {
    let app = spawn_app(db).await;
    let body = json!({"ranges": [{"first": 100, "last": 109}, {"first": 200, "last": 204}]});
    let r1 = app.put(&app.admin, "/api/v1/vlan-pools/p1", &body).await;
    assert_eq!(r1.status(), StatusCode::CREATED);
    let r1: Value = r1.json().await.unwrap();
    let r2 = app.put(&app.admin, "/api/v1/vlan-pools/p1", &body).await;
    assert_eq!(r2.status(), StatusCode::OK);
    let r2: Value = r2.json().await.unwrap();
    assert_eq!(r1["ranges"], r2["ranges"]);
    assert_eq!(
        r2["usage"],
        json!({"total": 15, "allocated": 0, "quarantined": 0, "free": 15})
    );
    let got: Value = app.get_json(&app.viewer, "/api/v1/vlan-pools/p1").await;
    assert_eq!(got["ranges"], body["ranges"]);
    assert_eq!(got["name"], "p1");
}

#[sqlx::test(migrations = "./migrations")]
async fn usage_counts_allocated_and_quarantined(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 10, 19).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    app.epg("b", "p", "10.0.1.0/24", "10.0.1.1").await;
    app.delete_ok(&app.operator, "/api/v1/epgs/t/ap/b").await;
    let got: Value = app.get_json(&app.viewer, "/api/v1/vlan-pools/p").await;
    assert_eq!(
        got["usage"],
        json!({"total": 10, "allocated": 1, "quarantined": 1, "free": 8})
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn deleting_a_pool_in_use_is_a_conflict_and_deleting_a_missing_one_is_not_an_error(
    db: PgPool,
) {
    let app = spawn_app(db).await;
    app.pool("p", 10, 19).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    assert_problem(
        app.delete(&app.admin, "/api/v1/vlan-pools/p").await,
        StatusCode::CONFLICT,
        "in-use",
    )
    .await;
    app.delete_ok(&app.operator, "/api/v1/epgs/t/ap/a").await;
    app.delete_and_check_gone(&app.admin, "/api/v1/vlan-pools/p")
        .await;
}

#[sqlx::test(migrations = "./migrations")]
async fn shrinking_ranges_below_a_held_vlan_is_refused(db: PgPool) {
    let app = spawn_app(db).await;
    app.pool("p", 10, 19).await;
    let epg = app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    assert_eq!(epg["vlan"], 10);
    let r = app
        .put(
            &app.admin,
            "/api/v1/vlan-pools/p",
            &json!({"ranges": [{"first": 11, "last": 19}]}),
        )
        .await;
    assert_problem(r, StatusCode::CONFLICT, "in-use").await;
    let r = app
        .put(
            &app.admin,
            "/api/v1/vlan-pools/p",
            &json!({"ranges": [{"first": 5, "last": 10}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[sqlx::test(migrations = "./migrations")]
async fn lists_page_and_filter(db: PgPool) {
    let app = spawn_app(db).await;
    for i in 0..5 {
        app.pool(&format!("pool-{i}"), 10 * i + 1, 10 * i + 5).await;
    }
    app.pool("other", 100, 101).await;
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let page: Value = app
            .get_json(
                &app.viewer,
                &format!("/api/v1/vlan-pools?limit=2&name_prefix=pool-{q}"),
            )
            .await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        names.extend(items.iter().map(|p| p["name"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(names, ["pool-0", "pool-1", "pool-2", "pool-3", "pool-4"]);
    let r = app.get(&app.viewer, "/api/v1/vlan-pools?limit=0").await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid-input").await;
    let r = app.get(&app.viewer, "/api/v1/vlan-pools?cursor=zzz").await;
    assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid-input").await;
}

#[sqlx::test(migrations = "./migrations")]
async fn overlapping_or_missing_ranges_are_refused(db: PgPool) {
    let app = spawn_app(db).await;
    for ranges in [
        json!([{"first": 10, "last": 20}, {"first": 30, "last": 40}, {"first": 20, "last": 25}]),
        // One range inside another, apart in the list.
        json!([{"first": 100, "last": 400}, {"first": 500, "last": 600}, {"first": 150, "last": 160}]),
        json!([]),
    ] {
        let r = app
            .put(
                &app.admin,
                "/api/v1/vlan-pools/p",
                &json!({ "ranges": ranges }),
            )
            .await;
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid-input").await;
    }
    assert_eq!(
        app.get(&app.viewer, "/api/v1/vlan-pools/p").await.status(),
        StatusCode::NOT_FOUND
    );
}
