//! The `weft` binary as an operator runs it: configuration from the environment, migrations
//! at start, `token create`, JSON logs carrying the request id, `openapi --check`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn database_url(db: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for sqlx::test");
    let mut url = reqwest::Url::parse(&base).unwrap();
    url.set_path(db.connect_options().get_database().unwrap());
    url.to_string()
}

/// Kills the server even when an assertion fails first.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[sqlx::test(migrations = false)]
async fn serve_migrates_at_start_and_logs_json_lines_with_the_request_id(db: PgPool) {
    let url = database_url(&db);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Server(
        Command::new(WEFT)
            .arg("serve")
            .env("WEFT_DATABASE_URL", &url)
            .env("WEFT_LISTEN", &listen)
            .env("WEFT_LOG_FORMAT", "json")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
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

    let out = Command::new(WEFT)
        .args(["token", "create", "--role", "viewer", "--name", "log-check"])
        .env("WEFT_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
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
