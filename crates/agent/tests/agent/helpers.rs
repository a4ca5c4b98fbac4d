//! Throwaway network namespaces and an agent running in one.
//!
//! Every test first moves its own thread into a fresh, empty network namespace
//! (`unshare(CLONE_NEWNET)`, netavark style), so nothing touches the machine's interfaces.
//! "Containers" and the far side of the uplink ("leaf") are `unshare -n sleep` processes.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sched::{unshare, CloneFlags};
use weft_agent::agent::Agent;
use weft_agent::config::{Config, Naming};
use weft_agent_api::{
    AgentClient, AttachmentSpec, Backend, Mtu, SegmentMode, SegmentSpec, Target, Token, VlanId,
};
use weft_ovsdb::DatapathType;

pub const TOKEN: &str = "test-token";

/// Moves the calling thread into a new network namespace with `lo` up; false (after a
/// loud SKIPPED line) when we lack the privilege.
pub fn private_netns(test: &str) -> bool {
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
        eprintln!("SKIPPED: {test}: cannot create a network namespace ({e}); run as root");
        return false;
    }
    sh("ip link set lo up");
    true
}

/// Runs a shell command in the test's namespace and returns stdout; panics on failure.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`sh`] but reports success instead of panicking.
pub fn sh_ok(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A process in its own network namespace; killed on drop.
pub struct NsProc {
    child: Child,
}

impl NsProc {
    pub fn new() -> Self {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "600"])
            .spawn()
            .expect("spawn unshare");
        let p = NsProc { child };
        let me = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let path = format!("/proc/{}/ns/net", p.pid());
        for _ in 0..200 {
            if std::fs::read_link(&path).is_ok_and(|ns| ns != me) {
                p.sh("ip link set lo up");
                return p;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("unshare -n did not enter a new namespace");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sh(&self, cmd: &str) -> String {
        sh(&format!("nsenter -t {} -n sh -c '{cmd}'", self.pid()))
    }

    /// Whether this (leaf) namespace learns `ip` at `mac` on `dev` within 3 s: a
    /// gratuitous ARP crosses the bridge asynchronously (softirq backlog), slowly under TCG.
    pub fn learns(&self, ip: &str, dev: &str, mac: &str) -> bool {
        for _ in 0..150 {
            if self
                .sh(&format!("ip neigh show {ip} dev {dev}"))
                .contains(mac)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn sh_ok(&self, cmd: &str) -> bool {
        sh_ok(&format!("nsenter -t {} -n sh -c '{cmd}'", self.pid()))
    }
}

impl Drop for NsProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A veth "uplink" `upl0` whose far end `far0` sits in a leaf namespace holding the
/// gateway address 10.0.0.1/24 (untagged) and accepting gratuitous ARP into its table.
pub fn uplink_with_leaf() -> NsProc {
    let leaf = NsProc::new();
    sh(&format!(
        "ip link add upl0 type veth peer name far0 netns {}",
        leaf.pid()
    ));
    leaf.sh("sysctl -qw net.ipv4.conf.all.arp_accept=1; ip link set far0 up; sysctl -qw net.ipv4.conf.far0.arp_accept=1");
    leaf
}

/// [`uplink_with_leaf`] whose leaf also answers the gateway 10.0.0.1/24, untagged.
pub fn uplink_with_gateway() -> NsProc {
    let leaf = uplink_with_leaf();
    leaf.sh("ip addr add 10.0.0.1/24 dev far0");
    leaf
}

/// An agent in the test namespace with a fresh state file and uplink `upl0`.
pub async fn start_agent(backend: Backend) -> Arc<Agent> {
    Agent::new(config(backend, temp_state_file()))
        .await
        .unwrap()
}

/// A segment sending frames untagged over the default uplink.
pub fn untagged() -> SegmentSpec {
    SegmentSpec {
        mode: SegmentMode::Untagged,
        uplink: None,
    }
}

pub fn vlan(id: u16) -> VlanId {
    VlanId::new(id).unwrap()
}

/// `eth0` in the namespace of process `pid` on `vlan` at `addr` (with prefix), default
/// route via 10.0.0.1, derived MAC, the agent's MTU.
pub fn pid_spec(pid: u32, vlan: VlanId, addr: &str) -> AttachmentSpec {
    AttachmentSpec {
        target: Target::Pid { pid },
        ifname: "eth0".parse().unwrap(),
        vlan,
        address: addr.parse().unwrap(),
        gateway: Some("10.0.0.1".parse().unwrap()),
        mac: None,
        mtu: None,
    }
}

pub fn config(backend: Backend, state_file: PathBuf) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Token::new(TOKEN),
        uplinks: vec!["upl0".into()],
        backend,
        naming: Naming::default(),
        mtu: Mtu::ETHERNET,
        ovs_db: String::new(),
        ovs_datapath: DatapathType::Netdev,
        state_file,
        docker_socket: None,
        central_url: None,
        central_token: None,
        http: Default::default(),
    }
}

pub fn temp_state_file() -> PathBuf {
    std::env::temp_dir()
        .join(format!("weft-agent-test-{}", uuid::Uuid::new_v4()))
        .join("state.json")
}

/// Serves the agent's API on a loopback port of the test namespace; returns a client
/// and the base URL.
pub async fn serve(agent: Arc<Agent>) -> (AgentClient, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(weft_agent::http::serve(
        agent,
        listener,
        std::future::pending(),
    ));
    let base = format!("http://{addr}/");
    (
        AgentClient::new(base.parse().unwrap(), Token::new(TOKEN)).unwrap(),
        base,
    )
}

/// The `ip -o link` line of `name` in the test namespace, if it exists.
pub fn link_line(name: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-o", "-d", "link", "show", "dev", name])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn ifindex(name: &str) -> Option<u32> {
    link_line(name)?.split(':').next()?.trim().parse().ok()
}

/// The agent's own host links stay silent in the EPG: none of `links` has an IPv6 address,
/// while the container's `eth0` has its link-local one (so IPv6 is on and the check means
/// something).
pub fn assert_quiet_host_links(container: &NsProc, links: &[&str]) {
    assert!(container
        .sh("ip -6 -o addr show dev eth0")
        .contains("fe80::"));
    for link in links {
        let v6 = sh(&format!("ip -6 -o addr show dev {link}"));
        assert!(v6.trim().is_empty(), "{link} has an IPv6 address: {v6}");
    }
}

/// Log output of the agent under test, captured in memory.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures the agent's log at debug level from here on. The agent's requests are
    /// handled on the server's own worker threads, so this is the process-wide subscriber
    /// (one test per process under nextest).
    pub fn debug_log() -> Self {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("weft_agent=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A port nothing listens on yet, and a client for an agent there.
pub fn free_port_and_client() -> (u16, AgentClient) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = AgentClient::new(
        format!("http://127.0.0.1:{port}/").parse().unwrap(),
        Token::new(TOKEN),
    )
    .unwrap();
    (port, client)
}
