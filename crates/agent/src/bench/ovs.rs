//! A private ovsdb-server + ovs-vswitchd (userspace datapath) started in the caller's
//! network namespace, for the benchmark and the integration tests; killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

pub struct PrivateOvs {
    dir: PathBuf,
    children: Vec<Child>,
}

impl PrivateOvs {
    /// Why OVS cannot run here, if it cannot.
    pub fn unavailable() -> Option<String> {
        let missing = ["ovsdb-server", "ovs-vswitchd", "ovsdb-tool", "ovs-vsctl"]
            .into_iter()
            .find(|t| {
                !Command::new("sh")
                    .args(["-c", &format!("command -v {t}")])
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
        match missing {
            Some(tool) => Some(format!(
                "{tool} not installed (apt-get install openvswitch-switch)"
            )),
            None if !Path::new(SCHEMA).exists() => Some(format!("{SCHEMA} missing")),
            None => None,
        }
    }

    /// Starts both daemons with a fresh database in a new temporary directory.
    pub fn start() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("weft-ovs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let f = |n: &str| dir.join(n).to_string_lossy().into_owned();
        run("ovsdb-tool", &["create", &f("conf.db"), SCHEMA])?;
        let mut ovs = PrivateOvs {
            dir: dir.clone(),
            children: Vec::new(),
        };
        let remote = format!("--remote=punix:{}", f("db.sock"));
        ovs.spawn(
            "ovsdb-server",
            &[
                &f("conf.db"),
                &remote,
                &format!("--unixctl={}", f("ovsdb.ctl")),
            ],
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(dir.join("db.sock")).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other(
                    "ovsdb-server does not accept clients",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        run(
            "ovs-vsctl",
            &[&format!("--db={}", ovs.db()), "--no-wait", "init"],
        )?;
        ovs.spawn(
            "ovs-vswitchd",
            &[&ovs.db(), &format!("--unixctl={}", f("vswitchd.ctl"))],
        )?;
        Ok(ovs)
    }

    /// The OVSDB address (`unix:<dir>/db.sock`).
    pub fn db(&self) -> String {
        format!("unix:{}", self.dir.join("db.sock").display())
    }

    fn spawn(&mut self, program: &str, args: &[&str]) -> std::io::Result<()> {
        let child = Command::new(program)
            .args(args)
            .env("OVS_RUNDIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.children.push(child);
        Ok(())
    }
}

fn run(program: &str, args: &[&str]) -> std::io::Result<()> {
    let out = Command::new(program).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl Drop for PrivateOvs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
