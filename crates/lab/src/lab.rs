//! The fabric (in-process apic-sim with its data plane), the management bridge the central
//! service and the agents talk over, and the simulated hosts with their agents.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use apic_sim::testbed::{self, SimHost};
use apic_sim::{DataPlaneConfig, SimConfig, SimHandle, Topology};

use crate::{docker, process, run, LabError};

/// Port every agent listens on (each in its own namespace).
pub const AGENT_PORT: u16 = 9180;
/// The uplink's name inside every host.
pub const UPLINK: &str = "uplink";

/// Where a host is cabled and what Weft is told about it.
#[derive(Debug, Clone)]
pub struct HostPlan {
    /// Weft's host name (not one the sim's LLDP knows, so configured uplinks stand alone).
    pub name: String,
    /// The leaf port the host's uplink is cabled to.
    pub leaf: u32,
    pub port: String,
    /// The path Weft binds on: the port, or the vPC the port is a member of.
    pub path_dn: String,
}

impl HostPlan {
    /// A host on a plain leaf port.
    pub fn port(name: &str, leaf: u32, port: &str) -> Self {
        HostPlan {
            name: name.into(),
            leaf,
            port: port.into(),
            path_dn: format!("topology/pod-1/paths-{leaf}/pathep-[{port}]"),
        }
    }

    /// A host on vPC `vpc` of leaves `pair`, cabled to its member `port` on `leaf` (no
    /// bonding in this kernel: one member carries the host's traffic).
    pub fn vpc(name: &str, pair: (u32, u32), vpc: &str, leaf: u32, port: &str) -> Self {
        HostPlan {
            name: name.into(),
            leaf,
            port: port.into(),
            path_dn: format!(
                "topology/pod-1/protpaths-{}-{}/pathep-[{vpc}]",
                pair.0, pair.1
            ),
        }
    }
}

/// Where an agent sends container events: the central service's events URL and its
/// agent-role token.
#[derive(Debug, Clone)]
pub struct Central {
    pub url: String,
    pub token: String,
}

/// A simulated host running a weft-agent.
pub struct LabHost {
    pub plan: HostPlan,
    pub host: SimHost,
    /// The agent's API, e.g. `http://198.18.40.11:9180`.
    pub agent_url: String,
    /// The bearer token the agent requires.
    pub agent_token: String,
    agent_bin: PathBuf,
    central: Option<Central>,
    agent: Option<Child>,
}

impl LabHost {
    fn spawn_agent(&mut self) -> Result<(), LabError> {
        let listen = self.agent_url.trim_start_matches("http://").to_owned();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host.netns])
            .arg(&self.agent_bin)
            .env("WEFT_AGENT_TOKEN", &self.agent_token)
            .env("WEFT_AGENT_LISTEN", listen)
            .env("WEFT_AGENT_UPLINKS", UPLINK)
            .env("WEFT_AGENT_BACKEND", "ovs")
            .env("WEFT_AGENT_OVS_DB", self.host.ovs().db())
            .env("WEFT_AGENT_OVS_DATAPATH", "netdev")
            .env(
                "WEFT_AGENT_STATE_FILE",
                self.host.ovs().path("agent-state.json"),
            )
            // Restarts in the proof should not wait for idle keep-alive connections.
            .env("WEFT_AGENT_KEEP_ALIVE", "1")
            .env_remove("WEFT_AGENT_CENTRAL_URL");
        if let Some(c) = &self.central {
            cmd.env("WEFT_AGENT_CENTRAL_URL", &c.url)
                .env("WEFT_AGENT_CENTRAL_TOKEN", &c.token);
        }
        self.agent = Some(process::spawn_logged(&mut cmd, self.log().as_ref())?);
        Ok(())
    }

    fn log(&self) -> String {
        self.host.ovs().path("agent.log")
    }

    /// Waits until the agent answers `/healthz`.
    pub async fn wait_agent(&self) -> Result<(), LabError> {
        if process::answers(&format!("{}/healthz", self.agent_url)).await {
            return Ok(());
        }
        Err(LabError::Timeout(format!(
            "weft-agent of {} did not answer on {} (log: {})",
            self.plan.name,
            self.agent_url,
            self.log()
        )))
    }

    /// Stops the agent gracefully (SIGTERM, SIGKILL after 15 s).
    pub fn stop_agent(&mut self) {
        process::terminate(self.agent.take());
    }

    /// Stops and starts the agent again, as an upgrade or a crash-and-restart would.
    pub async fn restart_agent(&mut self) -> Result<(), LabError> {
        self.stop_agent();
        self.spawn_agent()?;
        self.wait_agent().await
    }

    /// `ovs-vsctl` on the host's switch; its output.
    pub fn vsctl(&self, args: &[&str]) -> Result<String, LabError> {
        self.host.ovs().vsctl(args).map_err(|source| LabError::Io {
            what: format!("ovs-vsctl {}", args.join(" ")),
            source,
        })
    }
}

impl Drop for LabHost {
    fn drop(&mut self) {
        process::kill(self.agent.take());
    }
}

/// A fabric with hosts. Dropped: containers, agents, hosts, the management bridge and the
/// fabric's namespace are removed.
pub struct Lab {
    pub prefix: String,
    pub sim: SimHandle,
    pub hosts: Vec<LabHost>,
    /// The central side of the management bridge: where `weft` listens for the agents.
    pub mgmt_ip: Ipv4Addr,
    mgmt_net: u8,
}

impl Lab {
    /// Removes what a lab of `prefix` may have left (a crashed run): its containers, its
    /// namespaces with every process in them, its links in this namespace (deleted here
    /// first: a veth whose peer goes with a namespace vanishes only once the kernel has torn
    /// that namespace down, later).
    pub fn cleanup(prefix: &str) {
        docker::remove_labelled(prefix);
        for link in root_links(prefix) {
            let _ = Command::new("ip")
                .args(["link", "del", &link])
                .stderr(Stdio::null())
                .status();
        }
        for ns in namespaces(prefix) {
            testbed::remove_netns(&ns);
        }
    }

    /// What a lab of `prefix` currently holds on this machine (empty when it is all gone):
    /// namespaces, links in this namespace and containers named after it.
    pub fn leftovers(prefix: &str) -> Vec<String> {
        let netns = namespaces(prefix).into_iter().map(|n| format!("netns {n}"));
        let links = root_links(prefix).into_iter().map(|n| format!("link {n}"));
        let containers = docker::labelled(prefix)
            .into_iter()
            .map(|c| format!("container {c}"));
        netns.chain(links).chain(containers).collect()
    }

    /// Starts apic-sim (the example topology) with its data plane in namespace
    /// `<prefix>-fab`, and the management bridge `<prefix>-m` on `198.18.<mgmt_net>.1/24`,
    /// after removing leftovers of `prefix`.
    pub async fn new(prefix: &str, mgmt_net: u8) -> Result<Self, LabError> {
        Self::cleanup(prefix);
        let mut config = SimConfig::new(Topology::example().map_err(apic_sim::SimError::from)?);
        config.data_plane = Some(DataPlaneConfig {
            netns: format!("{prefix}-fab"),
        });
        let sim = apic_sim::spawn(config).await?;
        let lab = Lab {
            prefix: prefix.into(),
            sim,
            hosts: Vec::new(),
            mgmt_ip: Ipv4Addr::new(198, 18, mgmt_net, 1),
            mgmt_net,
        };
        let br = bridge(prefix);
        run("ip", &["link", "add", &br, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{}/24", lab.mgmt_ip), "dev", &br],
        )?;
        run("ip", &["link", "set", &br, "up"])?;
        Ok(lab)
    }

    /// A free `198.18.N.0/24` for a lab's management bridge, starting at `hint`.
    pub fn free_mgmt_net(hint: u8) -> u8 {
        let used = run("ip", &["-4", "-o", "addr"]).unwrap_or_default();
        (0..200u16)
            .map(|i| ((u16::from(hint) + i) % 200 + 20) as u8)
            .find(|n| !used.contains(&format!("198.18.{n}.")))
            .unwrap_or(hint)
    }

    /// Builds host `plan.name` (namespace `<prefix>-h<i>`), cables it, connects it to the
    /// management bridge and starts its agent; returns its index.
    pub async fn add_host(
        &mut self,
        plan: HostPlan,
        agent_bin: PathBuf,
        central: Option<Central>,
    ) -> Result<usize, LabError> {
        let i = self.hosts.len();
        let ns = format!("{}-h{i}", self.prefix);
        let dp = self
            .sim
            .data_plane()
            .ok_or_else(|| LabError::Timeout("apic-sim runs without a data plane".into()))?;
        let host = SimHost::start(&ns, dp, plan.leaf, &plan.port, UPLINK).map_err(|source| {
            LabError::Io {
                what: format!("host {} ({ns})", plan.name),
                source,
            }
        })?;
        let ip = Ipv4Addr::new(198, 18, self.mgmt_net, 10 + i as u8);
        let root_end = format!("{}-v{i}", self.prefix);
        run(
            "ip",
            &[
                "link", "add", &root_end, "type", "veth", "peer", "name", "mgmt", "netns", &ns,
            ],
        )?;
        run(
            "ip",
            &[
                "link",
                "set",
                &root_end,
                "master",
                &bridge(&self.prefix),
                "up",
            ],
        )?;
        run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "mgmt"],
        )?;
        run("ip", &["-n", &ns, "link", "set", "mgmt", "up"])?;
        let mut host = LabHost {
            plan,
            host,
            agent_url: format!("http://{ip}:{AGENT_PORT}"),
            agent_token: uuid::Uuid::new_v4().simple().to_string(),
            agent_bin,
            central,
            agent: None,
        };
        host.spawn_agent()?;
        host.wait_agent().await?;
        self.hosts.push(host);
        Ok(i)
    }
}

/// The network namespaces named `<prefix>-...`.
fn namespaces(prefix: &str) -> Vec<String> {
    run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_owned)
        .collect()
}

/// The links of this namespace named `<prefix>-...`.
fn root_links(prefix: &str) -> Vec<String> {
    run("ip", &["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_owned)
        .collect()
}

/// The management bridge of a lab.
fn bridge(prefix: &str) -> String {
    format!("{prefix}-m")
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(dp) = self.sim.data_plane() {
            dp.remove();
        }
        // Links before namespaces (see `cleanup`), which kills the agents and OVS daemons;
        // dropping the hosts then reaps them.
        Self::cleanup(&self.prefix);
        self.hosts.clear();
    }
}
