//! The `weft` binary as an operator runs it: configuration from the environment, migrations
//! at start, `token create`, JSON logs carrying the request id, `openapi --check`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

pub(crate) fn database_url(db: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for sqlx::test");
    let mut url = reqwest::Url::parse(&base).unwrap();
    url.set_path(db.connect_options().get_database().unwrap());
    url.to_string()
}

/// Kills the server even when an assertion fails first.
pub(crate) struct Server(pub(crate) std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `weft serve` on `listen` against `url`, logging JSON lines to a piped stdout.
pub(crate) fn serve(url: &str, listen: &str) -> Command {
    let mut c = Command::new(WEFT);
    c.arg("serve")
        .env("WEFT_DATABASE_URL", url)
        .env("WEFT_LISTEN", listen)
        .env("WEFT_LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped());
    c
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for the server to accept connections; its first answer must already be ready
/// (migrations run before it listens).
pub(crate) async fn wait_ready(client: &reqwest::Client, base: &str) {
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            ready = r.status().is_success();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "weft serve did not become ready (migrations at start?)"
    );
}

pub(crate) fn create_token(url: &str, role: &str, name: &str) -> String {
    let out = Command::new(WEFT)
        .args(["token", "create", "--role", role, "--name", name])
        .env("WEFT_DATABASE_URL", url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[sqlx::test(migrations = false)]
async fn serve_migrates_at_start_and_logs_json_lines_with_the_request_id(db: PgPool) {
    let url = database_url(&db);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Server(serve(&url, &listen).spawn().unwrap());
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    wait_ready(&client, &base).await;
    let token = create_token(&url, "viewer", "log-check");
    let r = client
        .get(format!("{base}/api/v1/epgs"))
        .bearer_auth(&token)
        .header("x-request-id", "it-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let again = Command::new(WEFT)
        .args(["token", "create", "--role", "viewer", "--name", "log-check"])
        .env("WEFT_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!again.status.success(), "a token name is unique");

    let stdout = server.0.stdout.take().unwrap();
    drop(server);
    let lines: Vec<Value> = BufReader::new(stdout)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("every log line is JSON"))
        .collect();
    let line = lines
        .iter()
        .find(|l| l["span"]["request_id"] == "it-42")
        .expect("a log line of the request");
    assert_eq!(line["span"]["actor"], "log-check");
    assert!(
        !lines.iter().any(|l| l.to_string().contains(&token)),
        "the token was logged"
    );
}

#[test]
fn invalid_configuration_fails_at_start_naming_the_setting() {
    let out = Command::new(WEFT)
        .arg("serve")
        .env(
            "WEFT_DATABASE_URL",
            "postgres://postgres:hunter2@127.0.0.1:1/x",
        )
        .env("WEFT_IP_QUARANTINE_SECS", "ten")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("allocation.ip_quarantine_secs") && err.contains("WEFT_IP_QUARANTINE_SECS"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn openapi_check_fails_on_a_stale_document() {
    let dir = std::env::temp_dir().join(format!("weft-openapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("weft.json");
    let run = |check: bool| {
        let mut c = Command::new(WEFT);
        c.args(["openapi", "--output"]).arg(&file);
        if check {
            c.arg("--check");
        }
        c.status().unwrap().success()
    };
    assert!(run(false));
    assert!(run(true));
    std::fs::write(&file, "{}").unwrap();
    assert!(!run(true));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[sqlx::test(migrations = false)]
async fn the_apic_password_is_never_logged_even_at_debug_level(db: PgPool) {
    let secret = "apic-pw-binary-9d2c";
    let mut sim = apic_sim::SimConfig::new(apic_sim::Topology::example().unwrap());
    sim.password = secret.into();
    let sim = apic_sim::spawn(sim).await.unwrap();
    let url = database_url(&db);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Server(
        serve(&url, &listen)
            .env("WEFT_LOG_FILTER", "debug")
            .env("WEFT_APIC_CONTROLLERS", &sim.url)
            .env("WEFT_APIC_USERNAME", "admin")
            .env("WEFT_APIC_PASSWORD", secret)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Drained while the server runs: debug output could otherwise fill the pipe and stall it.
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(server.0.stdout.take().unwrap()));
    let err = drain(Box::new(server.0.stderr.take().unwrap()));
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    wait_ready(&client, &base).await;
    let token = create_token(&url, "operator", "apic-log-check");
    let r = client
        .post(format!("{base}/api/v1/fabric/refresh"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains(secret));
    assert!(sim.count("login") >= 1, "weft logged in to the APIC");

    drop(server);
    let logs = out.join().unwrap() + &err.join().unwrap();
    assert!(logs.contains("fabric discovered"), "debug logs captured");
    assert!(!logs.contains(secret), "the APIC password was logged");
}

#[sqlx::test(migrations = false)]
async fn every_log_line_of_a_request_carries_its_request_id(db: PgPool) {
    let sim = apic_sim::spawn(apic_sim::SimConfig::new(
        apic_sim::Topology::example().unwrap(),
    ))
    .await
    .unwrap();
    let url = database_url(&db);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Server(
        serve(&url, &listen)
            .env("WEFT_LOG_FILTER", "debug")
            .env("WEFT_APIC_CONTROLLERS", &sim.url)
            .env("WEFT_APIC_USERNAME", "admin")
            .env("WEFT_APIC_PASSWORD", "password")
            .spawn()
            .unwrap(),
    );
    // Lines arrive on a channel as the server writes them, so those logged while serving one
    // request can be told from the start-up and readiness lines before it.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = server.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    wait_ready(&client, &base).await;
    let token = create_token(&url, "operator", "every-line");
    let quiet = |rx: &std::sync::mpsc::Receiver<String>| {
        let mut got = Vec::new();
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            got.push(l);
        }
        got
    };
    quiet(&rx);

    // A refresh logs in to the APIC, reads it, writes the snapshot and the audit log.
    let r = client
        .post(format!("{base}/api/v1/fabric/refresh"))
        .bearer_auth(&token)
        .header("x-request-id", "it-every-line")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "it-every-line");
    let lines = quiet(&rx);
    drop(server);

    let lines: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect();
    // Lines of nested spans (the APIC client's, the fabric read's) and of sqlx included.
    for wanted in [
        "sqlx::query",
        "weft_apic::client",
        "weft::apic",
        "weft::startup",
    ] {
        assert!(
            lines.iter().any(|l| l["target"] == wanted),
            "no {wanted} line: {lines:#?}"
        );
    }
    for line in &lines {
        let ids: Vec<&Value> = line["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("request_id"))
            .collect();
        assert_eq!(ids, [&Value::from("it-every-line")], "{line}");
    }
}

#[test]
fn database_errors_at_start_say_where_and_why() {
    let run = |vars: &[(&str, &str)]| {
        let out = Command::new(WEFT)
            .arg("migrate")
            .env_remove("WEFT_CONFIG")
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let url = (
        "WEFT_DATABASE_URL",
        "postgres://postgres:hunter2@127.0.0.1:1/x",
    );
    let err = run(&[url, ("WEFT_DATABASE_MAX_CONNECTIONS", "0")]);
    assert!(
        err.contains("database.max_connections")
            && err.contains("environment variable WEFT_DATABASE_MAX_CONNECTIONS"),
        "{err}"
    );
    // Nothing listens on port 1: the reason is the refusal, not a pool timeout.
    let err = run(&[url]);
    assert!(
        err.to_lowercase().contains("connection refused") && !err.contains("timed out"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
