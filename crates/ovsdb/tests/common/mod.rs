//! A private ovsdb-server and ovs-vswitchd (userspace datapath) with their own
//! run directory and network namespace, torn down on drop, plus small helpers
//! for namespaces and veths. Shared by the integration tests and the bench;
//! each uses a subset, hence the dead_code allowance.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Why OVS tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Some("not root: OVS tests need network namespaces".into());
    }
    for tool in ["ovsdb-server", "ovs-vswitchd", "ovsdb-tool", "ovs-vsctl"] {
        if which(tool).is_none() {
            return Some(format!(
                "{tool} not installed (apt-get install openvswitch-switch)"
            ));
        }
    }
    if !Path::new(SCHEMA).exists() {
        return Some(format!("{SCHEMA} missing"));
    }
    None
}

/// Prints "SKIPPED: ..." and returns false if `tool` is not installed.
pub fn have_tool(tool: &str) -> bool {
    let found = which(tool).is_some();
    if !found {
        eprintln!("SKIPPED: {tool} not installed");
    }
    found
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&format!("{path}:/usr/sbin:/sbin"))
        .map(|d| d.join(tool))
        .find(|p| p.exists())
}

/// A short name unique within this machine for this run (interface names
/// must fit in 15 bytes).
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// Runs a command and returns its trimmed stdout; panics with stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A network namespace deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Starts ovsdb-server on `dir`/conf.db and waits until it accepts clients.
fn spawn_ovsdb(dir: &Path) -> Child {
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let child = Command::new("ovsdb-server")
        .args([
            file("conf.db"),
            format!("--remote=punix:{}", file("db.sock")),
            format!("--unixctl={}", file("ovsdb.ctl")),
            format!("--log-file={}", file("ovsdb.log")),
        ])
        .env("OVS_RUNDIR", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting ovsdb-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(dir.join("db.sock")).is_err() {
        assert!(
            Instant::now() < deadline,
            "ovsdb-server does not accept clients"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// A running private OVS. vswitchd lives in `netns`, so every datapath device
/// (and every port the tests add) is invisible to the host and other tests.
pub struct Ovs {
    pub dir: PathBuf,
    pub netns: Netns,
    ovsdb: Child,
    vswitchd: Child,
}

impl Ovs {
    /// Starts OVS, or prints "SKIPPED: ..." and returns `None` when it cannot run.
    pub fn start() -> Option<Self> {
        if let Some(reason) = skip_reason() {
            eprintln!("SKIPPED: {reason}");
            return None;
        }
        let dir = std::env::temp_dir().join(unique("weft-ovs-"));
        std::fs::create_dir_all(&dir).expect("creating OVS run directory");
        let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
        run("ovsdb-tool", &["create", &file("conf.db"), SCHEMA]);
        let ovsdb = spawn_ovsdb(&dir);
        let db = format!("--db=unix:{}", file("db.sock"));
        run("ovs-vsctl", &[&db, "--no-wait", "init"]);
        let netns = Netns::new("weft-ovs-");
        let vswitchd = Command::new("ip")
            .args(["netns", "exec", &netns.0, "ovs-vswitchd"])
            .args([
                format!("unix:{}", file("db.sock")),
                format!("--unixctl={}", file("vswitchd.ctl")),
                format!("--log-file={}", file("vswitchd.log")),
            ])
            .env("OVS_RUNDIR", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ovs-vswitchd");
        Some(Ovs {
            dir,
            netns,
            ovsdb,
            vswitchd,
        })
    }

    /// Kills ovsdb-server (as a crash or upgrade would) and starts it again
    /// on the same database; ovs-vswitchd reconnects by itself.
    pub fn restart_ovsdb(&mut self) {
        let _ = self.ovsdb.kill();
        let _ = self.ovsdb.wait();
        self.ovsdb = spawn_ovsdb(&self.dir);
    }

    /// Freezes (SIGSTOP) or resumes (SIGCONT) ovs-vswitchd, to hold a
    /// configuration change between the database and the datapath.
    pub fn freeze_vswitchd(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        run("kill", &[signal, &self.vswitchd.id().to_string()]);
    }

    /// Turns IPv6 off for devices created from now on in the OVS namespace.
    /// Otherwise every new veth end sends DAD, MLD and router solicitations,
    /// which the userspace datapath floods to every port, loading
    /// ovs-vswitchd with traffic that has nothing to do with configuration.
    pub fn quiet_ipv6(&self) {
        for key in ["all", "default"] {
            let setting = format!("net.ipv6.conf.{key}.disable_ipv6=1");
            run(
                "ip",
                &["netns", "exec", &self.netns.0, "sysctl", "-qw", &setting],
            );
        }
    }

    /// `ovs-appctl` against this ovsdb-server.
    pub fn appctl_ovsdb(&self, args: &[&str]) -> String {
        let target = self.dir.join("ovsdb.ctl").to_string_lossy().into_owned();
        let mut all = vec!["-t", target.as_str()];
        all.extend_from_slice(args);
        run("ovs-appctl", &all)
    }

    /// The address for `Vswitch::connect`.
    pub fn addr(&self) -> String {
        format!("unix:{}", self.dir.join("db.sock").display())
    }

    /// `ovs-vsctl` against this instance.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.addr());
        let mut all = vec![db.as_str(), "--timeout=10"];
        all.extend_from_slice(args);
        run("ovs-vsctl", &all)
    }

    /// A veth pair: `name` in the OVS namespace, `peer` in `peer_ns` (or also
    /// in the OVS namespace); both up.
    pub fn veth(&self, name: &str, peer: &str, peer_ns: Option<&Netns>) {
        let ns = peer_ns.unwrap_or(&self.netns);
        self.netns.ip(&[
            "link", "add", name, "type", "veth", "peer", "name", peer, "netns", &ns.0,
        ]);
        self.netns.ip(&["link", "set", name, "up"]);
        ns.ip(&["link", "set", peer, "up"]);
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        for child in [&mut self.vswitchd, &mut self.ovsdb] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
