//! A private Open vSwitch: an `ovsdb-server` and an `ovs-vswitchd` of its own (userspace
//! datapath, so bridges need `datapath_type=netdev`) with their own run directory, in the
//! caller's network namespace or in a named one. For tests, benchmarks and the simulated lab,
//! never the host's switch. The daemons are killed and the directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The schema `ovsdb-tool` creates the private database from (Debian's openvswitch-common).
pub const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

pub struct PrivateOvs {
    /// The namespace the daemons run in (none: the caller's).
    netns: Option<String>,
    dir: PathBuf,
    daemons: Vec<Child>,
}

impl PrivateOvs {
    /// Why a private switch cannot run here, if it cannot (a missing tool or schema).
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

    /// Both daemons in the caller's network namespace, in a new temporary directory.
    pub fn start() -> std::io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-ovs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        Self::launch(None, dir)
    }

    /// Both daemons in network namespace `netns` (which must exist), running from `dir`
    /// (emptied first: a crashed run's leftovers go).
    pub fn start_in(netns: &str, dir: PathBuf) -> std::io::Result<Self> {
        Self::launch(Some(netns.to_string()), dir)
    }

    fn launch(netns: Option<String>, dir: PathBuf) -> std::io::Result<Self> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut ovs = PrivateOvs {
            netns,
            dir,
            daemons: Vec::new(),
        };
        run("ovsdb-tool", &["create", &ovs.path("conf.db"), SCHEMA])?;
        let (conf, remote, ctl) = (
            ovs.path("conf.db"),
            format!("--remote=punix:{}", ovs.path("db.sock")),
            format!("--unixctl={}", ovs.path("ovsdb.ctl")),
        );
        ovs.spawn("ovsdb-server", &[&conf, &remote, &ctl])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(ovs.dir.join("db.sock")).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other(
                    "ovsdb-server does not accept clients",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        ovs.vsctl(&["--no-wait", "init"])?;
        let (db, ctl) = (ovs.db(), format!("--unixctl={}", ovs.path("vswitchd.ctl")));
        ovs.spawn("ovs-vswitchd", &[&db, &ctl])?;
        Ok(ovs)
    }

    /// A file in the switch's run directory (also a place for its owner's own files).
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// The OVSDB address (`unix:<dir>/db.sock`), e.g. for `WEFT_AGENT_OVS_DB`.
    pub fn db(&self) -> String {
        format!("unix:{}", self.path("db.sock"))
    }

    /// Runs `ovs-vsctl` against this switch; returns its output.
    pub fn vsctl(&self, args: &[&str]) -> std::io::Result<String> {
        let db = format!("--db={}", self.db());
        let out = Command::new("ovs-vsctl")
            .args([db.as_str(), "--timeout=10"])
            .args(args)
            .output()?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(std::io::Error::other(format!(
            "ovs-vsctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    /// A daemon, in the namespace if there is one (`ip netns exec` execs it, so the child is
    /// the daemon itself).
    fn spawn(&mut self, program: &str, args: &[&str]) -> std::io::Result<()> {
        let mut command = match &self.netns {
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns, program]);
                c
            }
            None => Command::new(program),
        };
        let child = command
            .args(args)
            .env("OVS_RUNDIR", &self.dir)
            .env("OVS_DBDIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.daemons.push(child);
        Ok(())
    }
}

impl Drop for PrivateOvs {
    fn drop(&mut self) {
        for c in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(program: &str, args: &[&str]) -> std::io::Result<()> {
    let out = Command::new(program).args(args).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
