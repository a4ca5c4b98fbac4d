//! Simulated hosts for data-plane tests (here, in Weft's end-to-end tests and proof, and in the
//! demo): a network namespace whose uplink is the host side of a leaf port, with an Open
//! vSwitch of its own (userspace `netdev` datapath, private run directory). [`SimHost`] is the
//! bare host a weft-agent runs on; [`TestHost`] adds one endpoint on an access port `tag=N`, so
//! its frames leave the host 802.1Q-tagged as a real host's would. Everything is removed on
//! drop. Needs root, `ip`, `nft` and Open vSwitch.

use crate::dataplane::DataPlane;
use std::path::PathBuf;
use std::process::{Command, Stdio};
pub use weft_ovsdb::private::PrivateOvs;

/// Why data-plane tests cannot run here, if they cannot (tests print it as SKIPPED).
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output();
    if !uid.is_ok_and(|o| o.stdout.trim_ascii() == b"0") {
        return Some("not root".into());
    }
    let missing = ["ip", "nft"].into_iter().find(|t| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    match missing {
        Some(tool) => Some(format!("{tool} not installed")),
        None => PrivateOvs::unavailable(),
    }
}

/// A simulated host: a network namespace cabled to a leaf port, with its own Open vSwitch and
/// no bridge yet (a weft-agent with the OVS backend builds its own).
pub struct SimHost {
    pub netns: String,
    /// Dropped in this order: the switch's daemons, then the namespace.
    ovs: PrivateOvs,
    _netns: NetnsGuard,
}

/// A host namespace with its own OVS and one tagged endpoint.
pub struct TestHost {
    host: SimHost,
    /// The endpoint's IPv4 address (without prefix).
    pub ip: String,
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

impl SimHost {
    /// Creates namespace `netns` (after removing a leftover of that name), cables it to
    /// `port` of leaf `node` as link `uplink` and starts its OVS.
    pub fn start(
        netns: &str,
        fabric: &DataPlane,
        node: u32,
        port: &str,
        uplink: &str,
    ) -> std::io::Result<Self> {
        remove_netns(netns);
        run("ip", &["netns", "add", netns])?;
        // Deletes the namespace when dropped, whatever fails next.
        let guard = NetnsGuard(netns.to_string());
        run("ip", &["-n", netns, "link", "set", "lo", "up"])?;
        fabric
            .cable(node, port, netns, uplink)
            .map_err(std::io::Error::other)?;
        Ok(SimHost {
            ovs: start_ovs_in(netns)?,
            netns: netns.to_string(),
            _netns: guard,
        })
    }

    /// The host's switch.
    pub fn ovs(&self) -> &PrivateOvs {
        &self.ovs
    }
}

impl std::ops::Deref for TestHost {
    type Target = SimHost;
    fn deref(&self) -> &SimHost {
        &self.host
    }
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
        let host = SimHost::start(netns, fabric, node, port, "uplink")?;
        let ovs = host.ovs();
        ovs.vsctl(&[
            "add-br",
            "br0",
            "--",
            "set",
            "bridge",
            "br0",
            "datapath_type=netdev",
        ])?;
        ovs.vsctl(&["add-port", "br0", "uplink"])?;
        ovs.vsctl(&[
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
        Ok(TestHost {
            host,
            ip: ip.to_string(),
        })
    }

    /// Pings from the endpoint.
    pub fn pinger(&self) -> Pinger {
        Pinger::netns(&self.netns)
    }

    /// One ping of `ip` from the endpoint, answered within a second.
    pub fn ping(&self, ip: &str) -> bool {
        self.pinger().ping(ip)
    }

    /// See [`Pinger::stream`].
    pub fn ping_stream(&self, ip: &str, count: u32, interval_ms: u32) -> u32 {
        self.pinger().stream(ip, count, interval_ms)
    }

    /// See [`Pinger::reaches`].
    pub fn reaches(&self, ip: &str, attempts: u32) -> bool {
        self.pinger().reaches(ip, attempts)
    }
}

/// Pings from inside a network namespace: a host's (`ip netns exec`) or a container's
/// (`nsenter` into its init process's namespace, with the host's `ping`).
#[derive(Debug, Clone)]
pub struct Pinger(Vec<String>);

impl Pinger {
    /// From the named namespace.
    pub fn netns(name: &str) -> Self {
        Pinger(["ip", "netns", "exec", name].map(String::from).to_vec())
    }

    /// From the network namespace of process `pid` (e.g. a container's init).
    pub fn process(pid: u32) -> Self {
        Pinger(vec!["nsenter".into(), format!("--net=/proc/{pid}/ns/net")])
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.0[0]);
        c.args(&self.0[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        c
    }

    /// One ping of `ip`, answered within a second.
    pub fn ping(&self, ip: &str) -> bool {
        self.command()
            .args(["ping", "-c", "1", "-W", "1", "-q", ip])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Sends `count` pings to `ip`, one every `interval_ms`, and returns how many were
    /// answered: a continuous ping that must lose nothing while something else changes.
    pub fn stream(&self, ip: &str, count: u32, interval_ms: u32) -> u32 {
        let (count, interval) = (
            count.to_string(),
            format!("{}", f64::from(interval_ms) / 1000.0),
        );
        let out = self
            .command()
            .args(["ping", "-q", "-W", "1", "-c", &count, "-i", &interval, ip])
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

/// Deletes a network namespace, and whatever still runs in it, on drop.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        remove_netns(&self.0);
    }
}

/// Where the OVS of namespace `netns` keeps its files.
fn run_dir(netns: &str) -> PathBuf {
    std::env::temp_dir().join(format!("weft-testbed-{netns}"))
}

/// Removes namespace `netns` as a crashed run may have left it: every process still in it
/// (an OVS daemon, an agent) is killed first, since deleting a namespace does not end them;
/// then the namespace and its switch's run directory. Missing pieces are fine.
pub fn remove_netns(netns: &str) {
    let pids = Command::new("ip").args(["netns", "pids", netns]).output();
    if let Some(out) = pids.ok().filter(|o| o.status.success()) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", netns])
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(run_dir(netns));
}

/// A private Open vSwitch in network namespace `netns` (which must exist), running from a
/// directory named after it, so a crashed run's switch is found and removed by [`remove_netns`].
pub fn start_ovs_in(netns: &str) -> std::io::Result<PrivateOvs> {
    PrivateOvs::start_in(netns, run_dir(netns))
}
