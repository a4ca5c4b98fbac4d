use std::time::Duration;

use reqwest::StatusCode;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::helpers::{assert_problem, bind_app, json_ok, spawn_app, start, LONG};

#[sqlx::test(migrations = "./migrations")]
async fn healthz_and_readyz_answer_without_a_token(db: PgPool) {
    let app = spawn_app(db).await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[sqlx::test(migrations = "./migrations")]
async fn readyz_fails_when_a_migration_is_not_applied(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&db)
        .await
        .unwrap();
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    let body = assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(
        body["detail"].as_str().unwrap().contains("weft migrate"),
        "{body}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn request_ids_are_echoed_or_generated(db: PgPool) {
    let app = spawn_app(db).await;
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = app
        .client
        .get(app.url("/api/v1/epgs"))
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "generated id {id} is not a UUID"
    );
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrations = "./migrations")]
async fn unknown_routes_are_problems(db: PgPool) {
    let app = spawn_app(db).await;
    let r = app.get(&app.admin, "/api/v1/nothing-here").await;
    assert_problem(r, StatusCode::NOT_FOUND, "not-found").await;
    let r = app
        .client
        .post(app.url("/api/v1/vlan-pools/p"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
}

#[tokio::test]
async fn readyz_reports_an_unreachable_database_as_unavailable() {
    let db = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_lazy("postgres://postgres@127.0.0.1:1/nothing")
        .unwrap();
    let base = start(bind_app(db, LONG, None).await);
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = client.get(format!("{base}/readyz")).send().await.unwrap();
    let body = assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(
        !body["detail"].as_str().unwrap().contains("127.0.0.1:1"),
        "{body}"
    );
}

/// Asserts a 503 `unavailable` problem that tells the client when to retry; returns its detail.
async fn assert_retry_later(r: reqwest::Response) -> String {
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let secs: u64 = retry_after.expect("a Retry-After header").parse().unwrap();
    assert!(secs >= 1, "Retry-After {secs}");
    body["detail"].as_str().unwrap().to_owned()
}

#[sqlx::test(migrations = "./migrations")]
async fn a_saturated_pool_is_503_with_retry_after(opts: PgPoolOptions, conn: PgConnectOptions) {
    let db = opts
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(500))
        .connect_with(conn)
        .await
        .unwrap();
    let app = spawn_app(db.clone()).await;
    let held = db.acquire().await.unwrap();
    let detail = assert_retry_later(app.get(&app.viewer, "/api/v1/epgs").await).await;
    assert!(detail.contains("busy"), "{detail}");
    drop(held);
    json_ok(app.get(&app.viewer, "/api/v1/epgs").await).await;
}

#[sqlx::test(migrations = false)]
async fn a_dropped_database_is_503_and_readyz_says_the_connection_is_lost(admin: PgPool) {
    let name = format!("weft_dropped_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let options = (*admin.connect_options()).clone().database(&name);
    let db = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options)
        .await
        .unwrap();
    weft::startup::MIGRATOR.run(&db).await.unwrap();
    let app = spawn_app(db).await;
    json_ok(app.get(&app.viewer, "/api/v1/epgs").await).await;

    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    let detail = assert_retry_later(app.get(&app.viewer, "/api/v1/epgs").await).await;
    assert!(detail.contains("unreachable"), "{detail}");
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    let detail = assert_retry_later(r).await;
    assert!(
        detail.contains("unreachable") && !detail.contains("schema"),
        "{detail}"
    );
}

#[sqlx::test(migrations = false)]
async fn readyz_on_an_empty_database_says_the_schema_is_missing(db: PgPool) {
    let base = start(bind_app(db, LONG, None).await);
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    let detail = assert_retry_later(r).await;
    assert!(
        detail.contains("schema missing") && detail.contains("weft migrate"),
        "{detail}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn the_bearer_scheme_is_case_insensitive(db: PgPool) {
    let app = spawn_app(db).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = app
            .client
            .get(app.url("/api/v1/epgs"))
            .header("authorization", format!("{scheme} {}", app.viewer))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{scheme}");
    }
    let r = app
        .client
        .get(app.url("/api/v1/epgs"))
        .header("authorization", format!("Basic {}", app.viewer))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

/// A request id that is not 1-128 visible ASCII characters is replaced by a new UUID, and the
/// value echoed is the one the audit log records.
#[sqlx::test(migrations = "./migrations")]
async fn request_ids_are_bounded_and_sanitised_and_audited_as_echoed(db: PgPool) {
    let app = spawn_app(db).await;
    let longest = "r".repeat(128);
    let long = "r".repeat(129);
    let cases: [(&[u8], bool); 5] = [
        (b"build-42/step.1", true),
        (longest.as_bytes(), true),
        (long.as_bytes(), false),
        ("caf\u{e9}".as_bytes(), false),
        (b"two words", false),
    ];
    for (i, (id, kept)) in cases.into_iter().enumerate() {
        let r = app
            .client
            .put(app.url(&format!("/api/v1/vlan-pools/p{i}")))
            .bearer_auth(&app.admin)
            .header(
                "x-request-id",
                reqwest::header::HeaderValue::from_bytes(id).unwrap(),
            )
            .json(&serde_json::json!({"ranges": [{"first": 10, "last": 20}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let echoed = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        if kept {
            assert_eq!(echoed.as_bytes(), id);
        } else {
            assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");
        }
        let audit = app
            .get_json(&app.viewer, &format!("/api/v1/audit?request_id={echoed}"))
            .await;
        let items = audit["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{audit}");
        assert_eq!(items[0]["resource"], format!("vlan-pools/p{i}"));
    }
}
