//! Rejected requests change nothing: the database (audit log included) is identical before
//! and after each one, and every rejection is a 4xx problem.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

use weft::config::HttpLimits;

use crate::helpers::{
    assert_problem, bind_app, db_snapshot, epg_body, raw_exchange, spawn_app, start, LONG,
};

#[sqlx::test(migrations = "./migrations")]
async fn rejected_requests_leave_the_database_untouched(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.pool("p", 100, 100).await;
    app.epg("a", "p", "10.0.0.0/30", "10.0.0.1").await;
    app.put(
        &app.operator,
        "/api/v1/epgs/t/ap/a/reservations/r1",
        &json!({}),
    )
    .await;

    let with = |k: &str, v: Value| {
        let mut b = epg_body("p", "10.1.0.0/24", "10.1.0.1");
        b[k] = v;
        b
    };
    let cases: Vec<(Method, &str, Option<Value>, &str)> = vec![
        (
            Method::PUT,
            "/api/v1/vlan-pools/p",
            Some(json!({"ranges": []})),
            "admin",
        ),
        (
            Method::PUT,
            "/api/v1/vlan-pools/p",
            Some(json!({"ranges": [{"first": 0, "last": 5}]})),
            "admin",
        ),
        (
            Method::PUT,
            "/api/v1/vlan-pools/p",
            Some(json!({"ranges": [{"first": 9, "last": 5}]})),
            "admin",
        ),
        (
            Method::PUT,
            "/api/v1/vlan-pools/q",
            Some(json!({"ranges": [{"first": 1, "last": 5}, {"first": 5, "last": 6}]})),
            "admin",
        ),
        (
            Method::PUT,
            "/api/v1/vlan-pools/q",
            Some(json!({"ranges": [{"first": 1, "last": 4095}]})),
            "admin",
        ),
        (
            Method::PUT,
            "/api/v1/vlan-pools/p",
            Some(json!({"ranges": [{"first": 200, "last": 201}]})),
            "admin",
        ),
        (
            Method::PUT,
            "/api/v1/vlan-pools/bad%20name",
            Some(json!({"ranges": [{"first": 1, "last": 2}]})),
            "admin",
        ),
        (
            Method::PUT,
            "/api/v1/vlan-pools/q",
            Some(json!({"ranges": [{"first": 1, "last": 2}], "extra": 1})),
            "admin",
        ),
        (Method::PUT, "/api/v1/vlan-pools/q", None, "admin"),
        (Method::DELETE, "/api/v1/vlan-pools/p", None, "admin"),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/b",
            Some(with("vlan_pool", json!("missing"))),
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/b",
            Some(with("mode", json!("trunk"))),
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/b",
            Some(with("immediacy", json!("now"))),
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/b",
            Some(with("requested_vlan", json!(4095))),
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/b",
            Some(with("bridge_domain", json!("bd]x"))),
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/b",
            Some(with("subnets", json!([]))),
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/b",
            Some(with(
                "subnets",
                json!([{"cidr": "10.1.0.0/24", "gateway": "10.2.0.1"}]),
            )),
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/b",
            Some(with(
                "subnets",
                json!([{"cidr": "10.1.0.5/24", "gateway": "10.1.0.1"}]),
            )),
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/b",
            Some(with(
                "subnets",
                json!([{"cidr": "10.1.0.0/24", "gateway": "10.1.0.1"},
                                                                            {"cidr": "10.1.0.128/25", "gateway": "10.1.0.129"}]),
            )),
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/b",
            Some(epg_body("p", "10.1.0.0/24", "10.1.0.1")),
            "operator",
        ), // pool exhausted
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/a",
            Some(epg_body("p", "10.9.0.0/24", "10.9.0.1")),
            "operator",
        ), // subnet in use
        (
            Method::PUT,
            "/api/v1/epgs/t%5B/ap/b",
            Some(epg_body("p", "10.1.0.0/24", "10.1.0.1")),
            "operator",
        ),
        (Method::DELETE, "/api/v1/epgs/t/ap/a", None, "operator"),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/a/reservations/r2",
            Some(json!({"address": "10.0.0.1"})),
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/a/reservations/r2",
            Some(json!({"address": "not-an-ip"})),
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/a/reservations/r2",
            None,
            "operator",
        ), // /30: exhausted
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/zz/reservations/r2",
            None,
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/a/reservations/r2",
            Some(json!({"addr": "10.0.0.2"})),
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/hosts/h",
            Some(json!({"agent_url": "http://x", "backend": "ovs", "mtu": 0})),
            "admin",
        ),
        (
            Method::PUT,
            "/api/v1/hosts/h",
            Some(json!({"agent_url": "http://x"})),
            "admin",
        ),
        (
            Method::PUT,
            "/api/v1/vlan-pools/q",
            Some(json!({"ranges": [{"first": 1, "last": 2}]})),
            "operator",
        ),
        (
            Method::PUT,
            "/api/v1/epgs/t/ap/c",
            Some(epg_body("p", "10.1.0.0/24", "10.1.0.1")),
            "viewer",
        ),
    ];
    for (method, path, body, role) in cases {
        let token = match role {
            "admin" => &app.admin,
            "operator" => &app.operator,
            _ => &app.viewer,
        };
        let before = db_snapshot(&db).await;
        let mut req = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(token);
        req = match &body {
            Some(b) => req.json(b),
            None if method == Method::PUT && path.starts_with("/api/v1/vlan-pools") => req
                .header("content-type", "application/json")
                .body("{not json"),
            None => req,
        };
        let r = req.send().await.unwrap();
        let status = r.status();
        assert!(status.is_client_error(), "{method} {path}: {status}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        let problem: Value = r.json().await.unwrap();
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .starts_with("https://weft.dev/problems/"),
            "{problem}"
        );
        assert!(!problem["detail"].as_str().unwrap().is_empty());
        assert_eq!(
            db_snapshot(&db).await,
            before,
            "{method} {path} changed the database"
        );
    }
}

/// Postgres text cannot hold NUL: a NUL in a filter, a path segment or a JSON string used to
/// reach the database and come back as a 500. It is a 422 at the edge and changes nothing.
#[sqlx::test(migrations = "./migrations")]
async fn a_nul_byte_anywhere_is_refused_at_the_edge(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.pool("p", 100, 100).await;
    let host = json!({"agent_url": "http://h1:9180", "backend": "ovs", "agent_token": "a\u{0}b"});
    let cases: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/api/v1/epgs?tenant=%00", None),
        (Method::GET, "/api/v1/epgs?app=a%00", None),
        (Method::GET, "/api/v1/epgs?vlan_pool=%00", None),
        (Method::GET, "/api/v1/vlan-pools?name_prefix=p%00", None),
        (Method::GET, "/api/v1/audit?actor=%00", None),
        (Method::GET, "/api/v1/audit?action=%00", None),
        (Method::GET, "/api/v1/audit?resource=%00", None),
        (Method::GET, "/api/v1/audit?request_id=%00", None),
        (Method::GET, "/api/v1/audit?%00=x", None),
        (Method::GET, "/api/v1/vlan-pools/p%00", None),
        (Method::DELETE, "/api/v1/tokens/t%00", None),
        (Method::PUT, "/api/v1/hosts/h1", Some(host)),
        (
            Method::PUT,
            "/api/v1/vlan-pools/q",
            Some(json!({"ranges": [{"first": 1, "last": 2}], "x\u{0}": 1})),
        ),
    ];
    for (method, path, body) in cases {
        let before = db_snapshot(&db).await;
        let mut req = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(&app.admin);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap();
        let problem = assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid-input").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("NUL"),
            "{method} {path}: {problem}"
        );
        assert_eq!(db_snapshot(&db).await, before, "{method} {path}");
    }
}

/// Every limit answers `application/problem+json` with its own status, and changes nothing:
/// 413 for a body over the limit (declared or streamed), 414 for a long URI, 431 for too many
/// or too large headers.
#[sqlx::test(migrations = "./migrations")]
async fn limits_are_problems_with_their_own_status(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.pool("p", 100, 100).await;
    app.epg("a", "p", "10.0.0.0/24", "10.0.0.1").await;
    let before = db_snapshot(&db).await;

    let pad = "x".repeat(2 * 1024 * 1024);
    let r = app
        .put(
            &app.admin,
            "/api/v1/vlan-pools/q",
            &json!({"ranges": [{"first": 1, "last": 2}], "pad": pad}),
        )
        .await;
    assert_problem(r, StatusCode::PAYLOAD_TOO_LARGE, "too-large").await;

    // Streamed (chunked, no content-length): refused once the limit is crossed.
    let head = format!(
        "PUT /api/v1/epgs/t/ap/a/reservations/r1 HTTP/1.1\r\nhost: weft\r\n\
         authorization: Bearer {}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        app.operator
    );
    let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
    let response = raw_exchange(&app, head.as_bytes(), chunk.as_bytes(), 48).await;
    assert!(
        response.starts_with("HTTP/1.1 413")
            && response.contains("content-type: application/problem+json")
            && response.contains("/problems/too-large"),
        "{response}"
    );

    let long = format!("/api/v1/epgs?tenant={}", "t".repeat(60_000));
    let r = app.get(&app.viewer, &long).await;
    assert_problem(r, StatusCode::URI_TOO_LONG, "too-large").await;

    let mut many = app
        .client
        .get(app.url("/api/v1/epgs"))
        .bearer_auth(&app.viewer);
    for i in 0..80 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let r = many.send().await.unwrap();
    assert_problem(r, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too-large").await;
    let r = app
        .client
        .get(app.url("/api/v1/epgs"))
        .bearer_auth(&app.viewer)
        .header("x-big", "b".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too-large").await;

    assert_eq!(db_snapshot(&db).await, before);
}

/// Slowloris: a client that never finishes its request head loses the connection once
/// `server.header_timeout_secs` has passed (1 s here; actix-web's own default is 5 s, so the
/// bound below shows the setting is the one applied).
#[sqlx::test(migrations = "./migrations")]
async fn a_half_sent_request_is_closed_after_the_header_timeout(db: PgPool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = HttpLimits {
        header_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    };
    let base = start(bind_app(db, LONG, None).await.with_limits(limits));
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: weft\r\nx-slow: ")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_millis(4500), stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the connection is still open: {}",
        String::from_utf8_lossy(&rest)
    );
}
