//! TLS on the agent listener with a private CA generated per run: a client trusting the
//! CA gets in, others do not, and a failed or stalled handshake costs only that connection.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_agent::config::TlsFiles;
use weft_agent_api::{AgentClient, Backend, ClientError, Token};

use crate::helpers::*;

/// A CA and a server certificate for localhost and 127.0.0.1 signed by it, as PEM files.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    files: TlsFiles,
}

impl Pki {
    fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "weft-agent test CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("weft-agent-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        Pki {
            dir,
            ca_pem: ca.pem(),
            files,
        }
    }

    fn trusting(&self, base: &str) -> AgentClient {
        AgentClient::with_root_ca_pem(
            base.parse().unwrap(),
            Token::new(TOKEN),
            self.ca_pem.as_bytes(),
        )
        .unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every message in an error's source chain, for asserting on the root cause.
fn chain(err: &ClientError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        text.push_str(&format!(" / {e}"));
        source = e.source();
    }
    text
}

/// The call must not wait behind another client's handshake.
async fn promptly<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the agent answered within 5 s")
}

#[tokio::test(flavor = "current_thread")]
async fn tls_serves_clients_trusting_the_ca_and_survives_failed_handshakes() {
    if !private_netns("agent TLS") {
        return;
    }
    let log = Captured::debug_log();
    let pki = Pki::new();
    let agent = start_agent(Backend::LinuxBridge).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = weft_agent::tls::acceptor(&pki.files).unwrap();
    tokio::spawn(weft_agent::http::serve_tls(
        agent,
        listener,
        acceptor,
        std::future::pending(),
    ));

    // A client that connects and never says hello must not hold up anyone else.
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();

    // (a) Trusting the CA: health, and an authenticated read, by name and by address.
    for host in ["localhost", "127.0.0.1"] {
        let client = pki.trusting(&format!("https://{host}:{port}/"));
        assert_eq!(promptly(client.health()).await.unwrap().status, "ok");
        promptly(client.state()).await.unwrap();
    }
    // The token is still checked over TLS.
    let wrong_token = AgentClient::with_root_ca_pem(
        format!("https://localhost:{port}/").parse().unwrap(),
        Token::new("wrong"),
        pki.ca_pem.as_bytes(),
    )
    .unwrap();
    let err = promptly(wrong_token.state()).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { status, .. } if *status == 401),
        "{err:?}"
    );

    // (b) Not trusting the CA: a certificate error, before any request is sent.
    let untrusted = AgentClient::new(
        format!("https://localhost:{port}/").parse().unwrap(),
        Token::new(TOKEN),
    )
    .unwrap();
    let err = promptly(untrusted.state()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Transport { .. }) && chain(&err).contains("certificate"),
        "{}",
        chain(&err)
    );

    // (c) Plain HTTP to the TLS port gets no answer.
    let plain = AgentClient::new(
        format!("http://127.0.0.1:{port}/").parse().unwrap(),
        Token::new(TOKEN),
    )
    .unwrap();
    let err = promptly(plain.health()).await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");

    // Garbage instead of a ClientHello: that connection is closed...
    let mut junk = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    junk.write_all(&[0xff; 64]).await.unwrap();
    let mut rest = Vec::new();
    let _ = promptly(junk.read_to_end(&mut rest)).await;

    // (d) ...and the agent keeps serving.
    let client = pki.trusting(&format!("https://localhost:{port}/"));
    promptly(client.health()).await.unwrap();
    promptly(client.state()).await.unwrap();
    // Failed handshakes are logged, at debug only (probes and scans are routine).
    let failures: Vec<String> = log
        .text()
        .lines()
        .filter(|l| l.contains("TLS handshake failed"))
        .map(str::to_owned)
        .collect();
    assert!(!failures.is_empty(), "no handshake failure logged");
    assert!(failures.iter().all(|l| l.contains("DEBUG")), "{failures:?}");
}

/// The real binary, configured from the environment, killed on drop.
struct Daemon(Child);

impl Daemon {
    fn start(port: u16, tls: &[(&str, &Path)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-agent"));
        cmd.env("WEFT_AGENT_TOKEN", TOKEN)
            .env("WEFT_AGENT_LISTEN", format!("127.0.0.1:{port}"))
            .env("WEFT_AGENT_UPLINKS", "upl0")
            .env("WEFT_AGENT_STATE_FILE", temp_state_file())
            .env("WEFT_AGENT_DOCKER_SOCKET", "")
            .env_remove("WEFT_AGENT_TLS_CERT")
            .env_remove("WEFT_AGENT_TLS_KEY")
            .envs(tls.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Daemon(cmd.spawn().unwrap())
    }

    /// Stderr of a start that must fail within 10 s.
    fn refused(mut self) -> String {
        for _ in 0..200 {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(!status.success());
                let mut err = String::new();
                std::io::Read::read_to_string(&mut self.0.stderr.take().unwrap(), &mut err)
                    .unwrap();
                return err;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("weft-agent started despite bad TLS settings");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn binary_serves_https_from_env_and_refuses_bad_tls_settings() {
    if !private_netns("agent binary TLS") {
        return;
    }
    let pki = Pki::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (cert, key) = (pki.files.cert.as_path(), pki.files.key.as_path());

    let _daemon = Daemon::start(
        port,
        &[("WEFT_AGENT_TLS_CERT", cert), ("WEFT_AGENT_TLS_KEY", key)],
    );
    let client = pki.trusting(&format!("https://localhost:{port}/"));
    let mut up = false;
    for _ in 0..100 {
        if client.health().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "weft-agent did not come up over https");
    client.state().await.unwrap();

    // One setting alone names both.
    let err = Daemon::start(port, &[("WEFT_AGENT_TLS_CERT", cert)]).refused();
    assert!(
        err.contains("WEFT_AGENT_TLS_CERT") && err.contains("WEFT_AGENT_TLS_KEY"),
        "{err}"
    );
    // A corrupt key file is named, and nothing of it is shown.
    let key_pem = std::fs::read_to_string(key).unwrap();
    let corrupt = pki.dir.join("corrupt.pem");
    std::fs::write(&corrupt, key_pem.replacen('M', "!", 1)).unwrap();
    let err = Daemon::start(
        port,
        &[
            ("WEFT_AGENT_TLS_CERT", cert),
            ("WEFT_AGENT_TLS_KEY", &corrupt),
        ],
    )
    .refused();
    assert!(err.contains(&*corrupt.to_string_lossy()), "{err}");
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!err.contains(line), "key material in the error: {err}");
    }
}
