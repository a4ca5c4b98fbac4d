use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{assert_problem, spawn_app};

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
    let app = weft::startup::Application::bind(
        "127.0.0.1:0".parse().unwrap(),
        db,
        crate::helpers::LONG,
        None,
    )
    .await
    .unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
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
