//! The HTTP layer against clients that misbehave: every error it answers is a problem
//! document, and slow, idle or surplus connections cannot hold the listener.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_agent::agent::Agent;
use weft_agent::config::HttpLimits;
use weft_agent_api::{Backend, Problem};

use crate::helpers::*;

/// An agent serving with `limits`; returns its address.
async fn agent_with(limits: HttpLimits) -> String {
    let mut cfg = config(Backend::LinuxBridge, temp_state_file());
    cfg.http = limits;
    let (_, base) = serve(Agent::new(cfg).await.unwrap()).await;
    base.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Everything the server sends until it closes the connection. The guard is far above
/// the configured limits and below actix-web's defaults (5 s), so a setting that is not
/// applied fails the test instead of passing slowly.
async fn until_closed(conn: &mut TcpStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut got))
        .await
        .expect("the server closed the connection")
        .expect("read");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn half_sent_and_idle_connections_are_closed() {
    if !private_netns("agent http timeouts") {
        return;
    }
    let addr = agent_with(HttpLimits {
        // actix-web reads a clock it updates every 500 ms: a shorter timeout can expire
        // at once.
        request_head_timeout: Duration::from_secs(1),
        keep_alive: Duration::from_secs(1),
        max_connections: 16,
    })
    .await;

    // A finished request on a kept-alive connection, then silence.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");

    // A request whose head never ends (slowloris).
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut slow).await;
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[tokio::test(flavor = "current_thread")]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    if !private_netns("agent http connection limit") {
        return;
    }
    let addr = agent_with(HttpLimits {
        request_head_timeout: Duration::from_secs(30),
        max_connections: 1,
        ..HttpLimits::default()
    })
    .await;
    let mut first = TcpStream::connect(&addr).await.unwrap();
    first.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let mut second = TcpStream::connect(&addr).await.unwrap();
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "a second connection was served beyond the limit of one"
    );
    drop(first);
    let answer = until_closed(&mut second).await;
    assert!(answer.contains("200 OK"), "{answer}");
}

#[tokio::test(flavor = "current_thread")]
async fn every_error_the_server_makes_is_a_problem_document() {
    if !private_netns("agent http problems") {
        return;
    }
    let addr = agent_with(HttpLimits::default()).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let segment = format!("{base}/v1/segments/181");
    let cases = [
        (http.get(format!("{base}/nowhere")), 404, "not-found"),
        (
            http.post(format!("{base}/v1/state")),
            405,
            "method-not-allowed",
        ),
        (
            http.put(&segment)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(format!("{{\"uplink\":\"{}\"}}", "x".repeat(100_000))),
            413,
            "too-large",
        ),
        (
            http.get(format!("{base}/v1/state?q={}", "x".repeat(10_000))),
            414,
            "uri-too-long",
        ),
        (
            http.get(format!("{base}/healthz"))
                .header("x-padding", "x".repeat(20_000)),
            431,
            "headers-too-large",
        ),
        (
            http.put(&segment).bearer_auth(TOKEN).body("{}"),
            415,
            "invalid",
        ),
        (
            http.put(&segment)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body("{"),
            400,
            "invalid",
        ),
        (
            http.put(&segment)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body("{\"mode\":\"sideways\"}"),
            422,
            "invalid",
        ),
    ];
    for (request, status, kind) in cases {
        let resp = request
            .header("x-request-id", "hostile-1")
            .send()
            .await
            .unwrap();
        let what = format!("{} {}", resp.status(), resp.url().path());
        assert_eq!(resp.status().as_u16(), status, "{what}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        assert_eq!(resp.headers()["x-request-id"], "hostile-1", "{what}");
        let problem: Problem = resp.json().await.unwrap();
        assert_eq!(problem.status, status, "{what}");
        assert_eq!(problem.kind, format!("urn:weft:agent:{kind}"), "{what}");
    }
    // An overlong request id is not echoed (nor logged): the request gets its own.
    let long = "r".repeat(1000);
    let resp = http
        .get(format!("{base}/healthz"))
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    let echoed = resp.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(echoed).is_ok(), "{echoed}");
}
