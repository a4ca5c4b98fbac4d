//! Simulated hosts for data-plane tests (here and in Weft's end-to-end tests): a network
//! namespace whose uplink is the host side of a leaf port, with an Open vSwitch of its own
//! (userspace `netdev` datapath, private run directory) and one endpoint on an access port
//! `tag=N`, so the endpoint's frames leave the host 802.1Q-tagged as a real host's would.
//! Everything is removed on drop. Needs root, `ip`, `nft` and Open vSwitch.

use crate::dataplane::DataPlane;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Why data-plane tests cannot run here, if they cannot (tests print it as SKIPPED).
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output();
    if !uid.is_ok_and(|o| o.stdout.trim_ascii() == b"0") {
        return Some("not root".into());
    }
    let missing = [
        "ip",
        "nft",
        "ovsdb-server",
        "ovs-vswitchd",
        "ovsdb-tool",
        "ovs-vsctl",
    ]
    .into_iter()
    .find(|t| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    match missing {
        Some(tool) => Some(format!("{tool} not installed")),
        None if !Path::new(SCHEMA).exists() => Some(format!("{SCHEMA} missing")),
        None => None,
    }
}

/// A host namespace with its own OVS and one tagged endpoint.
pub struct TestHost {
    pub netns: String,
    /// The endpoint's IPv4 address (without prefix).
    pub ip: String,
    dir: PathBuf,
    daemons: Vec<Child>,
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

impl TestHost {
    /// Creates namespace `netns`, cables it to `port` of leaf `node` (uplink `uplink`), starts
    /// its OVS (bridge `br0`, `datapath_type=netdev`) and puts the endpoint `ep` (internal
    /// port, `tag=vlan`) on `ip/24`.
    pub fn start(
        netns: &str,
        fabric: &DataPlane,
        node: u32,
        port: &str,
        vlan: u16,
        ip: &str,
    ) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("weft-testbed-{netns}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        run("ip", &["netns", "add", netns])?;
        let mut host = TestHost {
            netns: netns.to_string(),
            ip: ip.to_string(),
            dir,
            daemons: Vec::new(),
        };
        run("ip", &["-n", netns, "link", "set", "lo", "up"])?;
        fabric
            .cable(node, port, netns, "uplink")
            .map_err(std::io::Error::other)?;
        host.start_ovs()?;
        host.vsctl(&[
            "add-br",
            "br0",
            "--",
            "set",
            "bridge",
            "br0",
            "datapath_type=netdev",
        ])?;
        host.vsctl(&["add-port", "br0", "uplink"])?;
        host.vsctl(&[
            "add-port",
            "br0",
            "ep",
            &format!("tag={vlan}"),
            "--",
            "set",
            "interface",
            "ep",
            "type=internal",
        ])?;
        run(
            "ip",
            &["-n", netns, "addr", "add", &format!("{ip}/24"), "dev", "ep"],
        )?;
        run("ip", &["-n", netns, "link", "set", "ep", "up"])?;
        Ok(host)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn db(&self) -> String {
        format!("unix:{}", self.path("db.sock"))
    }

    fn vsctl(&self, args: &[&str]) -> std::io::Result<()> {
        let db = format!("--db={}", self.db());
        let mut all = vec![db.as_str(), "--timeout=10"];
        all.extend_from_slice(args);
        run("ovs-vsctl", &all)
    }

    /// A daemon inside the namespace (`ip netns exec` execs it, so the child is the daemon).
    fn spawn(&mut self, program: &str, args: &[&str]) -> std::io::Result<()> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, program])
            .args(args)
            .env("OVS_RUNDIR", &self.dir)
            .env("OVS_DBDIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.daemons.push(child);
        Ok(())
    }

    fn start_ovs(&mut self) -> std::io::Result<()> {
        run("ovsdb-tool", &["create", &self.path("conf.db"), SCHEMA])?;
        let (conf, remote, ctl) = (
            self.path("conf.db"),
            format!("--remote=punix:{}", self.path("db.sock")),
            format!("--unixctl={}", self.path("ovsdb.ctl")),
        );
        self.spawn("ovsdb-server", &[&conf, &remote, &ctl])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(self.dir.join("db.sock")).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other(
                    "ovsdb-server does not accept clients",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.vsctl(&["--no-wait", "init"])?;
        let (db, ctl) = (
            self.db(),
            format!("--unixctl={}", self.path("vswitchd.ctl")),
        );
        self.spawn("ovs-vswitchd", &[&db, &ctl])
    }

    /// One ping of `ip` from the endpoint, answered within a second.
    pub fn ping(&self, ip: &str) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "-q",
                ip,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Sends `count` pings to `ip`, one every `interval_ms`, and returns how many were
    /// answered: a continuous ping that must lose nothing while something else changes.
    pub fn ping_stream(&self, ip: &str, count: u32, interval_ms: u32) -> u32 {
        let (count, interval) = (
            count.to_string(),
            format!("{}", f64::from(interval_ms) / 1000.0),
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, "ping", "-q", "-W", "1"])
            .args(["-c", &count, "-i", &interval, ip])
            .output();
        // Summary line: "N packets transmitted, M received, ..."
        out.ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.split(", ")
                    .find_map(|part| part.strip_suffix(" received")?.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Whether `ip` answers within `attempts` one-second pings (a bounded wait, for paths
    /// that were just enabled and still learn ARP and MAC entries).
    pub fn reaches(&self, ip: &str, attempts: u32) -> bool {
        (0..attempts).any(|_| self.ping(ip))
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        for c in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = run("ip", &["netns", "del", &self.netns]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
