//! Child processes of a lab (agents, `weft serve`): logged to a file, waited for over HTTP,
//! stopped gracefully or killed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::LabError;

/// Spawns `cmd` with stdin closed and stdout and stderr appended to `log`.
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child, LabError> {
    let io = |source| LabError::Io {
        what: format!("log {}", log.display()),
        source,
    };
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io)?;
    let err = out.try_clone().map_err(io)?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| LabError::Spawn {
            program: format!("{:?}", cmd.get_program()),
            source,
        })
}

/// Polls `url` until it answers 2xx (true) or 15 s pass (false).
pub(crate) async fn answers(url: &str) -> bool {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        let r = http
            .get(url)
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// SIGTERM, then SIGKILL when the process has not exited within 15 s.
pub(crate) fn terminate(child: Option<Child>) {
    let Some(mut c) = child else {
        return;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    for _ in 0..300 {
        if c.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(Some(c));
}

/// SIGKILL, and reaps it.
pub(crate) fn kill(child: Option<Child>) {
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
}
