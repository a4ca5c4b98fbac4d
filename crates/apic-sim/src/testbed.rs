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
    /// Dropped in this order: the switch's daemons, then the namespace.
    ovs: NetnsOvs,
    _netns: NetnsGuard,
}

/// A private Open vSwitch in a network namespace: `ovsdb-server` and `ovs-vswitchd`
/// (userspace datapath, so bridges need `datapath_type=netdev`) with a run directory of their
/// own. The daemons are killed and the directory removed on drop.
pub struct NetnsOvs {
    netns: String,
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
        run("ip", &["netns", "add", netns])?;
        // Deletes the namespace when dropped, whatever fails next.
        let guard = NetnsGuard(netns.to_string());
        run("ip", &["-n", netns, "link", "set", "lo", "up"])?;
        fabric
            .cable(node, port, netns, "uplink")
            .map_err(std::io::Error::other)?;
        let host = TestHost {
            ovs: NetnsOvs::start(netns)?,
            netns: netns.to_string(),
            ip: ip.to_string(),
            _netns: guard,
        };
        host.ovs.vsctl(&[
            "add-br",
            "br0",
            "--",
            "set",
            "bridge",
            "br0",
            "datapath_type=netdev",
        ])?;
        host.ovs.vsctl(&["add-port", "br0", "uplink"])?;
        host.ovs.vsctl(&[
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

/// Deletes a network namespace on drop.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

impl NetnsOvs {
    /// Starts both daemons in `netns` (which must exist) with a fresh database.
    pub fn start(netns: &str) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("weft-testbed-{netns}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut ovs = NetnsOvs {
            netns: netns.to_string(),
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

    fn path(&self, name: &str) -> String {
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
}

impl Drop for NetnsOvs {
    fn drop(&mut self) {
        for c in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
