//! Starts the app on a random port and offers small typed request helpers.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use weft::alloc::Quarantine;
use weft::apic::Apic;
use weft::auth::{create_token, Role};
use weft::config::ApicSettings;
use weft::startup::Application;

/// Quarantine long enough that no test outlives it.
pub const LONG: Quarantine = Quarantine {
    vlan: Duration::from_secs(3600),
    ip: Duration::from_secs(3600),
};
/// No quarantine: released values are reusable at once.
pub const NONE: Quarantine = Quarantine {
    vlan: Duration::ZERO,
    ip: Duration::ZERO,
};

#[derive(Clone)]
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub admin: String,
    pub operator: String,
    pub viewer: String,
    pub agent: String,
}

/// Starts one app instance with a token per role.
pub async fn spawn_app(db: PgPool) -> TestApp {
    spawn_with(db, LONG).await
}

pub async fn spawn_with(db: PgPool, quarantine: Quarantine) -> TestApp {
    spawn_full(db, quarantine, None).await
}

/// An app talking to an in-process apic-sim of the example topology (user admin/`password`).
pub async fn spawn_with_sim(db: PgPool) -> (TestApp, apic_sim::SimHandle) {
    let sim = apic_sim::spawn(apic_sim::SimConfig::new(
        apic_sim::Topology::example().unwrap(),
    ))
    .await
    .unwrap();
    let app = spawn_with_apic(db, apic_settings(&sim.url, "password")).await;
    (app, sim)
}

/// APIC settings for a simulator at `url`: fast retries, no client-side rate limit (a test's
/// burst of attaches would queue behind it for many seconds), a long discovery TTL (tests
/// refresh explicitly).
pub fn apic_settings(url: &str, password: &str) -> ApicSettings {
    let mut client = weft_apic::ApicConfig::new(vec![url.to_owned()], "admin", password);
    client.retry.base_delay = Duration::from_millis(1);
    client.retry.max_attempts = 2;
    client.rate_limit = None;
    ApicSettings {
        client,
        discovery_ttl: Duration::from_secs(3600),
    }
}

pub async fn spawn_with_apic(db: PgPool, settings: ApicSettings) -> TestApp {
    let apic = Arc::new(Apic::new(&settings).unwrap());
    spawn_full(db, LONG, Some(apic)).await
}

async fn spawn_full(db: PgPool, quarantine: Quarantine, apic: Option<Arc<Apic>>) -> TestApp {
    let app = bind_app(db.clone(), quarantine, apic).await;
    serve_with_tokens(app, db).await
}

/// Runs a bound application (its own settings) and creates a token per role.
pub async fn serve_with_tokens(app: Application, db: PgPool) -> TestApp {
    let mut app = serve(app);
    app.admin = create_token(&db, "t-admin", Role::Admin).await.unwrap();
    app.operator = create_token(&db, "t-operator", Role::Operator)
        .await
        .unwrap();
    app.viewer = create_token(&db, "t-viewer", Role::Viewer).await.unwrap();
    app.agent = create_token(&db, "t-agent", Role::Agent).await.unwrap();
    app
}

/// Another instance (replica) on the same database, sharing the tokens of `other`.
pub async fn spawn_replica(db: PgPool, other: &TestApp) -> TestApp {
    let mut app = spawn_instance(db, LONG, None).await;
    app.admin = other.admin.clone();
    app.operator = other.operator.clone();
    app.viewer = other.viewer.clone();
    app.agent = other.agent.clone();
    app
}

/// Binds an application on a free port of 127.0.0.1 (no tokens are created).
pub async fn bind_app(db: PgPool, quarantine: Quarantine, apic: Option<Arc<Apic>>) -> Application {
    Application::bind("127.0.0.1:0".parse().unwrap(), db, quarantine, apic)
        .await
        .unwrap()
}

/// Runs `app` in the background; returns its base URL.
pub fn start(app: Application) -> String {
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    base
}

async fn spawn_instance(db: PgPool, quarantine: Quarantine, apic: Option<Arc<Apic>>) -> TestApp {
    serve(bind_app(db, quarantine, apic).await)
}

/// Runs a bound application (no tokens: copy them from another instance).
pub fn serve(app: Application) -> TestApp {
    TestApp {
        base: start(app),
        client: reqwest::Client::new(),
        admin: String::new(),
        operator: String::new(),
        viewer: String::new(),
        agent: String::new(),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, token: &str, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// GETs `path` expecting 200 and returns the JSON body.
    pub async fn get_json(&self, token: &str, path: &str) -> Value {
        json_ok(self.get(token, path).await).await
    }

    /// The served OpenAPI document (public, no token).
    pub async fn openapi(&self) -> Value {
        let r = self
            .client
            .get(self.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    pub async fn put(&self, token: &str, path: &str, body: &Value) -> Response {
        self.client
            .put(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, token: &str, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, token: &str, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// DELETEs `path` expecting 204.
    pub async fn delete_ok(&self, token: &str, path: &str) {
        let r = self.delete(token, path).await;
        let status = r.status();
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "DELETE {path}: {}",
            r.text().await.unwrap()
        );
    }

    /// DELETEs `path`, then checks that it is gone (GET 404) and that deleting it again is a
    /// no-op (204).
    pub async fn delete_and_check_gone(&self, token: &str, path: &str) {
        self.delete_ok(token, path).await;
        assert_eq!(
            self.get(&self.viewer, path).await.status(),
            StatusCode::NOT_FOUND,
            "GET {path} after DELETE"
        );
        self.delete_ok(token, path).await;
    }

    /// Creates pool `name` with one VLAN range.
    pub async fn pool(&self, name: &str, first: u16, last: u16) {
        let r = self
            .put(
                &self.admin,
                &format!("/api/v1/vlan-pools/{name}"),
                &json!({"ranges": [{"first": first, "last": last}]}),
            )
            .await;
        assert!(r.status().is_success(), "pool: {}", r.text().await.unwrap());
    }

    /// Creates EPG `t/ap/{epg}` in `pool` with one subnet; returns the EPG document.
    pub async fn epg(&self, epg: &str, pool: &str, cidr: &str, gateway: &str) -> Value {
        let r = self
            .put(
                &self.operator,
                &format!("/api/v1/epgs/t/ap/{epg}"),
                &epg_body(pool, cidr, gateway),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "epg: {:?}", r.text().await);
        r.json().await.unwrap()
    }
}

pub fn epg_body(pool: &str, cidr: &str, gateway: &str) -> Value {
    json!({
        "bridge_domain": "bd1",
        "physical_domain": "phys1",
        "vlan_pool": pool,
        "subnets": [{"cidr": cidr, "gateway": gateway, "reserved": []}]
    })
}

/// Asserts a 200 response and returns its JSON body.
pub async fn json_ok(r: Response) -> Value {
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Asserts a problem+json response with the given status and kind; returns the body.
pub async fn assert_problem(r: Response, status: StatusCode, kind: &str) -> Value {
    assert_eq!(r.status(), status);
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/problem+json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["type"],
        format!("https://weft.dev/problems/{kind}"),
        "{body}"
    );
    assert_eq!(body["status"], status.as_u16());
    body
}

/// The whole content of every table Weft writes, for "nothing changed" checks.
pub async fn db_snapshot(db: &PgPool) -> Value {
    let mut out = serde_json::Map::new();
    for table in [
        "vlan_pools",
        "vlan_ranges",
        "epgs",
        "vlan_assignments",
        "subnets",
        "ip_leases",
        "hosts",
        "host_uplinks",
        "audit_log",
        "api_tokens",
    ] {
        let (v,): (Option<Value>,) = sqlx::query_as(&format!(
            "SELECT json_agg(t ORDER BY t::text)::jsonb FROM {table} t"
        ))
        .fetch_one(db)
        .await
        .unwrap();
        out.insert(table.into(), v.unwrap_or(Value::Null));
    }
    Value::Object(out)
}

/// Speaks HTTP/1.1 by hand: writes `head`, then `chunk` up to `repeat` times (stopping when the
/// server stops reading), and returns the response head and body (`content-length` bytes).
pub async fn raw_exchange(app: &TestApp, head: &[u8], chunk: &[u8], repeat: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head).await.unwrap();
    for _ in 0..repeat {
        if stream.write_all(chunk).await.is_err() {
            break;
        }
    }
    let mut response = Vec::new();
    let complete = |r: &[u8]| {
        let text = String::from_utf8_lossy(r);
        let Some(end) = text.find("\r\n\r\n") else {
            return false;
        };
        let length = text[..end]
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0);
        r.len() >= end + 4 + length
    };
    let read = async {
        let mut buf = [0u8; 4096];
        // A reset after the answer is fine: the answer is what counts.
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            response.extend_from_slice(&buf[..n]);
            if complete(&response) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// A pool on the test's database big enough for `n` requests to wait on a row lock at once
/// (the pool `#[sqlx::test]` hands out has 5 connections), plus the steering connections.
pub async fn wide_pool(connect: PgConnectOptions, n: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(n + 4)
        .connect_with(connect)
        .await
        .unwrap()
}

/// The test's own transaction holding the row locks of EPG `epg`'s subnets, the lock every
/// reservation and EPG delete takes: requests queue behind it in a known order, so a race is
/// steered, not hoped for. Roll it back to let them go.
pub async fn hold_subnet_locks(db: &PgPool, epg: &str) -> sqlx::Transaction<'static, Postgres> {
    let mut tx = db.begin().await.unwrap();
    let locked = sqlx::query(
        "SELECT s.id FROM subnets s JOIN epgs e ON e.id = s.epg_id WHERE e.name = $1 FOR NO KEY UPDATE",
    )
    .bind(epg)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert!(!locked.is_empty(), "EPG {epg} has no subnets to lock");
    tx
}

/// Waits until `n` sessions on the test's database wait for a lock.
pub async fn wait_for_lock_waiters(db: &PgPool, n: i64) {
    for _ in 0..1000 {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(db)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} sessions never queued for the lock");
}

/// Puts EPG `t/ap/<name>` on apic-sim out of band, associated with the physical domain
/// `weft_phys`, as an admin would have made it.
pub fn inject_epg(sim: &apic_sim::SimHandle, name: &str) {
    sim.inject(
        "uni",
        &json!({"fvTenant":{"attributes":{"name":"t"},"children":[{"fvAp":{"attributes":{"name":"ap"},"children":[
            {"fvAEPg":{"attributes":{"name":name},"children":[
                {"fvRsDomAtt":{"attributes":{"tDn":"uni/phys-weft_phys"}}}]}}]}}]}}),
    )
    .unwrap();
}

/// The names of an operation's undo steps, in the order they ran.
pub fn undone_steps(op: &Value) -> Vec<&str> {
    op["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["phase"] == "undo")
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}
