//! `weft serve` replicas as separate processes, so that they can be restarted and killed
//! with SIGKILL like real ones; and `weft token create`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::{process, LabError};

/// One `weft serve` process.
pub struct WeftServer {
    bin: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// `http://<listen>`.
    pub url: String,
    child: Option<Child>,
}

impl WeftServer {
    /// Starts `bin serve` listening on `listen` with `env` (the `WEFT_*` settings), its log
    /// appended to `log`.
    pub fn start(
        bin: &Path,
        listen: &str,
        env: &[(&str, String)],
        log: PathBuf,
    ) -> Result<Self, LabError> {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        env.push(("WEFT_LISTEN".into(), listen.into()));
        let mut server = WeftServer {
            bin: bin.into(),
            env,
            log,
            url: format!("http://{listen}"),
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), LabError> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve").envs(self.env.iter().map(|(k, v)| (k, v)));
        self.child = Some(process::spawn_logged(&mut cmd, &self.log)?);
        Ok(())
    }

    /// Waits until `/readyz` answers 200 (database reachable, migrations current).
    pub async fn wait_ready(&self) -> Result<(), LabError> {
        if process::answers(&format!("{}/readyz", self.url)).await {
            return Ok(());
        }
        Err(LabError::Timeout(format!(
            "weft serve on {} did not become ready (log: {})",
            self.url,
            self.log.display()
        )))
    }

    /// Sets a setting for the next start (after [`WeftServer::stop`]).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the process dies mid-whatever, as in a crash.
    pub fn kill9(&mut self) {
        process::kill(self.child.take());
    }

    /// Graceful stop (SIGTERM: in-flight requests are answered), SIGKILL after 15 s.
    pub fn stop(&mut self) {
        process::terminate(self.child.take());
    }

    /// Starts the process again after [`WeftServer::stop`] or [`WeftServer::kill9`].
    pub async fn start_again(&mut self) -> Result<(), LabError> {
        self.spawn()?;
        self.wait_ready().await
    }
}

impl Drop for WeftServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Kills the `weft serve` whose pid a crashed run left in `pidfile` (it would hold the
/// demo's address and port), when that pid still is a `weft serve`.
pub fn kill_stale(pidfile: &Path) {
    let Some(pid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut args = cmdline.split(|b| *b == 0);
    let is_weft =
        args.next().is_some_and(|a| a.ends_with(b"weft")) && args.next() == Some(b"serve");
    if is_weft {
        tracing::warn!(pid, "stopping the weft serve a crashed demo left running");
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

/// Runs `bin <args>` against `database_url`; returns its stdout.
fn command(bin: &Path, database_url: &str, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(bin)
        .args(args)
        .env("WEFT_DATABASE_URL", database_url)
        .output()
        .map_err(|source| LabError::Spawn {
            program: bin.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: format!("weft {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `weft token create`: a new token of `role`, printed once by the command.
pub fn token(bin: &Path, database_url: &str, role: &str, name: &str) -> Result<String, LabError> {
    command(
        bin,
        database_url,
        &["token", "create", "--role", role, "--name", name],
    )
}

/// `weft migrate` against `database_url`.
pub fn migrate(bin: &Path, database_url: &str) -> Result<(), LabError> {
    command(bin, database_url, &["migrate"]).map(drop)
}

/// Settings of the replicas in a lab: the simulated APIC, short claims and lingers.
pub fn lab_env(database_url: &str, apic_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("WEFT_DATABASE_URL", database_url.into()),
        ("WEFT_APIC_CONTROLLERS", apic_url.into()),
        ("WEFT_APIC_USERNAME", "admin".into()),
        ("WEFT_APIC_PASSWORD", "password".into()),
        ("WEFT_WORKFLOW_CLAIM_SECS", "2".into()),
        ("WEFT_BINDING_LINGER_SECS", "1".into()),
        ("WEFT_LOST_GRACE_SECS", "60".into()),
    ]
}
