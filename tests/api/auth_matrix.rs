//! Every documented route × every role: 401 without a valid token, 403 for a role below the
//! route's, and neither for a role that is allowed.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::spawn_app;

/// (method, OpenAPI path, least role allowed; None = public)
const ROUTES: &[(&str, &str, Option<&str>)] = &[
    ("get", "/healthz", None),
    ("get", "/readyz", None),
    ("get", "/api/v1/openapi.json", None),
    ("get", "/api/v1/vlan-pools", Some("viewer")),
    ("get", "/api/v1/vlan-pools/{name}", Some("viewer")),
    ("put", "/api/v1/vlan-pools/{name}", Some("admin")),
    ("delete", "/api/v1/vlan-pools/{name}", Some("admin")),
    ("get", "/api/v1/epgs", Some("viewer")),
    ("get", "/api/v1/epgs/{tenant}/{app}/{epg}", Some("viewer")),
    ("put", "/api/v1/epgs/{tenant}/{app}/{epg}", Some("operator")),
    (
        "delete",
        "/api/v1/epgs/{tenant}/{app}/{epg}",
        Some("operator"),
    ),
    (
        "get",
        "/api/v1/epgs/{tenant}/{app}/{epg}/reservations",
        Some("viewer"),
    ),
    (
        "get",
        "/api/v1/epgs/{tenant}/{app}/{epg}/reservations/{name}",
        Some("viewer"),
    ),
    (
        "put",
        "/api/v1/epgs/{tenant}/{app}/{epg}/reservations/{name}",
        Some("operator"),
    ),
    (
        "delete",
        "/api/v1/epgs/{tenant}/{app}/{epg}/reservations/{name}",
        Some("operator"),
    ),
    (
        "post",
        "/api/v1/epgs/{tenant}/{app}/{epg}/preflight",
        Some("operator"),
    ),
    ("get", "/api/v1/fabric", Some("viewer")),
    ("post", "/api/v1/fabric/refresh", Some("operator")),
    ("get", "/api/v1/hosts", Some("viewer")),
    ("get", "/api/v1/hosts/{name}", Some("viewer")),
    ("put", "/api/v1/hosts/{name}", Some("admin")),
    ("delete", "/api/v1/hosts/{name}", Some("admin")),
    ("get", "/api/v1/audit", Some("viewer")),
    ("get", "/api/v1/tokens", Some("admin")),
    ("post", "/api/v1/tokens", Some("admin")),
    ("delete", "/api/v1/tokens/{name}", Some("admin")),
    ("get", "/api/v1/attachments", Some("viewer")),
    ("get", "/api/v1/attachments/{id}", Some("viewer")),
    ("put", "/api/v1/attachments/{id}", Some("operator")),
    ("delete", "/api/v1/attachments/{id}", Some("operator")),
    ("get", "/api/v1/operations/{id}", Some("viewer")),
    ("get", "/api/v1/bindings", Some("viewer")),
    ("post", "/api/v1/agent/events", Some("agent")),
    ("post", "/api/v1/reconcile", Some("operator")),
    ("get", "/api/v1/reconcile/last", Some("viewer")),
    ("get", "/api/v1/reconcile/runs", Some("viewer")),
    ("get", "/api/v1/reconcile/runs/{id}", Some("viewer")),
];

const RANK: [&str; 3] = ["viewer", "operator", "admin"];

fn allowed(role: &str, need: &str) -> bool {
    let rank = |r: &str| RANK.iter().position(|x| *x == r);
    match (rank(role), rank(need)) {
        (Some(have), Some(need)) => have >= need,
        _ => role == need,
    }
}

fn concrete(path: &str) -> String {
    path.replace("{tenant}", "t")
        .replace("{app}", "ap")
        .replace("{epg}", "e")
        .replace("{name}", "n")
        .replace("{id}", "7f0e3c1a-54a6-4bd2-9d1e-0b7c5a1e2f30")
}

#[sqlx::test(migrations = "./migrations")]
async fn every_route_checks_the_token_and_the_role(db: PgPool) {
    let app = spawn_app(db).await;

    // The table covers every documented operation, so a new route cannot skip this test.
    let doc: Value = app.openapi().await;
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut tabled: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    tabled.sort();
    assert_eq!(
        documented, tabled,
        "auth matrix and OpenAPI document differ"
    );

    let tokens = [
        ("viewer", &app.viewer),
        ("operator", &app.operator),
        ("admin", &app.admin),
        ("agent", &app.agent),
    ];
    for (method, path, need) in ROUTES {
        let url = app.url(&concrete(path));
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let send = |token: Option<&str>| {
            let mut req = app.client.request(method.clone(), &url).json(&json!({}));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send()
        };
        let Some(need) = need else {
            assert_eq!(
                send(None).await.unwrap().status(),
                StatusCode::OK,
                "{method} {path} is public"
            );
            continue;
        };
        assert_eq!(
            send(None).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} without token"
        );
        assert_eq!(
            send(Some("weft_not-a-token")).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} bad token"
        );
        for (role, token) in tokens {
            let status = send(Some(token)).await.unwrap().status();
            if allowed(role, need) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path} as {role}: {status}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} as {role}");
            }
        }
    }
}
