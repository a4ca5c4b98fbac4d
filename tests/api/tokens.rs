use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{assert_problem, spawn_app};

#[sqlx::test(migrations = "./migrations")]
async fn an_admin_creates_lists_and_revokes_tokens_and_the_secret_is_shown_once(db: PgPool) {
    let app = spawn_app(db).await;
    let r = app
        .post(
            &app.admin,
            "/api/v1/tokens",
            &json!({"name": "pipeline", "role": "operator"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["role"], "operator");
    let token = created["token"].as_str().unwrap().to_owned();

    // The new token works with its role, and no other.
    app.pool("p", 10, 20).await;
    let r = app
        .put(
            &token,
            "/api/v1/epgs/t/ap/a",
            &crate::helpers::epg_body("p", "10.0.0.0/24", "10.0.0.1"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        app.get(&token, "/api/v1/tokens").await.status(),
        StatusCode::FORBIDDEN
    );

    let listed = app
        .get(&app.admin, "/api/v1/tokens")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        listed.contains("\"pipeline\"") && !listed.contains(&token),
        "{listed}"
    );
    let audit = app
        .get(&app.admin, "/api/v1/audit?action=token.create")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        audit.contains("tokens/pipeline") && !audit.contains(&token),
        "{audit}"
    );

    let again = app
        .post(
            &app.admin,
            "/api/v1/tokens",
            &json!({"name": "pipeline", "role": "viewer"}),
        )
        .await;
    assert_problem(again, StatusCode::CONFLICT, "conflict").await;

    app.delete_ok(&app.admin, "/api/v1/tokens/pipeline").await;
    assert_eq!(
        app.get(&token, "/api/v1/epgs").await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.delete_ok(&app.admin, "/api/v1/tokens/pipeline").await;
}
