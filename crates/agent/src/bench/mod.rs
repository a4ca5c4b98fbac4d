//! `weft-agent bench`: attach and detach N network namespaces on a Linux bridge with a warm
//! agent (over its HTTP API), and the same work by netavark and by an `ip` script following
//! the seed's recipe, plus the kernel's own cost of deleting a veth. Runs in a private
//! network namespace; the target namespaces are `ip netns` ones, removed afterwards.

use std::fmt::Write as _;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::try_join_all;
use nix::sched::{unshare, CloneFlags};
use uuid::Uuid;
use weft_agent_api::{
    AgentClient, AttachmentSpec, Backend, InterfaceName, Mtu, SegmentMode, SegmentSpec, Target,
    Token, VlanId,
};

pub use weft_ovsdb::private::PrivateOvs;

use crate::agent::Agent;
use crate::config::{Config, Naming};
use crate::netlink::{ContainerEnd, HostPort, Netlink};
use crate::netns::Netns;

const NETAVARK: &str = "/usr/lib/podman/netavark";
const TOKEN: &str = "bench";

/// Per-operation latencies of one method.
struct Samples {
    name: String,
    attach: Vec<Duration>,
    detach: Vec<Duration>,
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn sh(cmd: &str) -> anyhow::Result<()> {
    let out = Command::new("sh").arg("-c").arg(cmd).output()?;
    if !out.status.success() {
        bail!("`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn address(i: usize) -> String {
    format!("10.1.{}.{}/16", i / 250, i % 250 + 2)
}

/// Runs the whole benchmark for each N and returns a Markdown report.
pub fn run(sizes: &[usize]) -> anyhow::Result<String> {
    unshare(CloneFlags::CLONE_NEWNET)
        .context("unshare a private network namespace (run as root)")?;
    // IPv6 off everywhere, for every method alike: the userspace OVS datapath floods the
    // DAD/MLD/RS chatter of every new port, which would measure IPv6, not wiring.
    const NO_IPV6: &str =
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1";
    sh(&format!("ip link set lo up && {NO_IPV6}"))?;
    sh("ip link add upl0 type veth peer name far0 && ip link set far0 up")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut report = String::from("| method | N | attach median ms | attach p90 ms | detach median ms | detach p90 ms |\n|---|---|---|---|---|---|\n");
    for &n in sizes {
        let names: Vec<String> = (0..n)
            .map(|i| format!("weftb{}-{i}", std::process::id()))
            .collect();
        for ns in &names {
            sh(&format!(
                "ip netns add {ns} && ip netns exec {ns} {NO_IPV6}"
            ))?;
        }
        let result = rt.block_on(run_size(&names));
        for ns in &names {
            let _ = sh(&format!("ip netns del {ns}"));
        }
        for s in result? {
            let _ = writeln!(
                report,
                "| {} | {n} | {} | {} | {} | {} |",
                s.name,
                ms(percentile(&s.attach, 0.5)),
                ms(percentile(&s.attach, 0.9)),
                ms(percentile(&s.detach, 0.5)),
                ms(percentile(&s.detach, 0.9)),
            );
        }
    }
    Ok(report)
}

async fn run_size(namespaces: &[String]) -> anyhow::Result<Vec<Samples>> {
    let linux_bridge = (Backend::LinuxBridge, SegmentMode::Untagged);
    let mut all = vec![
        agent(namespaces, linux_bridge, String::new(), Load::Sequential).await?,
        kernel_veth(namespaces).await?,
        state_file_write(namespaces.len())?,
        ip_script(namespaces)?,
    ];
    if Path::new(NETAVARK).exists() {
        all.push(netavark(namespaces)?);
    } else {
        eprintln!("netavark not installed at {NETAVARK}; skipping it");
    }
    match PrivateOvs::unavailable() {
        None => {
            let ovs = PrivateOvs::start()?;
            let ovs_regular = (Backend::Ovs, SegmentMode::Regular);
            all.push(agent(namespaces, ovs_regular, ovs.db(), Load::Sequential).await?);
            all.push(agent(namespaces, ovs_regular, ovs.db(), Load::Concurrent).await?);
        }
        Some(reason) => eprintln!("skipping OVS: {reason}"),
    }
    Ok(all)
}

/// The warm agent over its HTTP API.
async fn agent(
    namespaces: &[String],
    (backend, mode): (Backend, SegmentMode),
    ovs_db: String,
    load: Load,
) -> anyhow::Result<Samples> {
    let dir = std::env::temp_dir().join(format!("weft-bench-{}", Uuid::new_v4()));
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        token: Token::new(TOKEN),
        uplinks: vec!["upl0".into()],
        backend,
        naming: Naming::default(),
        mtu: Mtu::ETHERNET,
        ovs_db,
        ovs_datapath: weft_ovsdb::DatapathType::Netdev,
        state_file: dir.join("state.json"),
        docker_socket: None,
        central_url: None,
        central_token: None,
        http: Default::default(),
    };
    let agent = Agent::new(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/", listener.local_addr()?);
    let server = tokio::spawn(crate::http::serve(agent, listener, std::future::pending()));
    let client = AgentClient::new(base.parse()?, Token::new(TOKEN))?;
    let vlan = VlanId::new(100)?;
    client
        .ensure_segment(vlan, &SegmentSpec { mode, uplink: None })
        .await?;

    let mut specs = Vec::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let spec = AttachmentSpec {
            target: Target::Netns {
                path: format!("/run/netns/{ns}"),
            },
            ifname: InterfaceName::parse("eth0")?,
            vlan,
            address: address(i).parse()?,
            gateway: Some("10.1.0.1".parse()?),
            mac: None,
            mtu: None,
        };
        specs.push((Uuid::new_v4(), spec));
    }
    let (attach, detach) = match load {
        Load::Sequential => {
            let mut attach = Vec::new();
            for (id, spec) in &specs {
                let t = Instant::now();
                client.ensure_attachment(*id, spec).await?;
                attach.push(t.elapsed());
            }
            let mut detach = Vec::new();
            for (id, _) in &specs {
                let t = Instant::now();
                client.remove_attachment(*id).await?;
                detach.push(t.elapsed());
            }
            (attach, detach)
        }
        Load::Concurrent => {
            let n = u32::try_from(specs.len())?.max(1);
            let t = Instant::now();
            try_join_all(
                specs
                    .iter()
                    .map(|(id, spec)| client.ensure_attachment(*id, spec)),
            )
            .await?;
            let attach = t.elapsed() / n;
            let t = Instant::now();
            try_join_all(specs.iter().map(|(id, _)| client.remove_attachment(*id))).await?;
            let detach = t.elapsed() / n;
            (vec![attach], vec![detach])
        }
    };
    client.remove_segment(vlan).await?;
    server.abort();
    let _ = std::fs::remove_dir_all(dir);
    let how = match load {
        Load::Sequential => "one request at a time",
        Load::Concurrent => "all N requests at once, wall time / N",
    };
    Ok(Samples {
        name: format!("weft-agent {backend:?} (HTTP, {how})"),
        attach,
        detach,
    })
}

/// How the benchmark issues requests to the agent.
#[derive(Clone, Copy)]
enum Load {
    Sequential,
    /// Shows batching: concurrent OVS port changes share OVSDB transactions.
    Concurrent,
}

/// The kernel alone: one RTM_NEWLINK creating the veth with its peer in the namespace,
/// one RTM_DELLINK deleting it.
async fn kernel_veth(namespaces: &[String]) -> anyhow::Result<Samples> {
    let nl = Netlink::connect()?;
    let (mut attach, mut detach) = (Vec::new(), Vec::new());
    for ns in namespaces {
        let netns = Netns::open(format!("/run/netns/{ns}"))?;
        let end = ContainerEnd {
            netns: netns.as_fd(),
            name: "eth9",
            mac: weft_agent_api::MacAddr([2, 0, 0, 0, 0, 9]),
            mtu: 1500,
        };
        let t = Instant::now();
        nl.add_veth("wfkernel", "weft-bench", HostPort::Switch, 1500, &end)
            .await?;
        attach.push(t.elapsed());
        let index = nl
            .link("wfkernel")
            .await?
            .context("veth just created")?
            .index;
        let t = Instant::now();
        nl.delete_index(index).await?;
        detach.push(t.elapsed());
    }
    Ok(Samples {
        name: "kernel only (1 RTM_NEWLINK veth into netns / 1 RTM_DELLINK)".into(),
        attach,
        detach,
    })
}

/// The disk's share of each agent call: one durable state-file write of the size the
/// agent writes with N attachments (the disk is shared, so this varies with other load).
fn state_file_write(n: usize) -> anyhow::Result<Samples> {
    let dir = std::env::temp_dir().join(format!("weft-bench-state-{}", Uuid::new_v4()));
    let path = dir.join("state.json");
    let bytes = vec![b' '; 330 * n];
    let mut writes = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        crate::state::write_atomically(&path, &bytes)?;
        writes.push(t.elapsed());
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(Samples {
        name: "state file write alone (write, fsync, rename, fsync dir)".into(),
        attach: writes.clone(),
        detach: writes,
    })
}

/// The seed's recipe as `ip` commands: create, move, rename, address, up, route (no ARP step).
fn ip_script(namespaces: &[String]) -> anyhow::Result<Samples> {
    sh("ip link add wbrip type bridge && ip link set wbrip up")?;
    let (mut attach, mut detach) = (Vec::new(), Vec::new());
    for (i, ns) in namespaces.iter().enumerate() {
        let script = format!(
            "ip link add ipv{i} type veth peer name ipp{i} && ip link set ipv{i} master wbrip up && \
             ip link set ipp{i} netns {ns} && ip -n {ns} link set ipp{i} name eth1 && \
             ip -n {ns} addr add {} dev eth1 && ip -n {ns} link set eth1 up && \
             ip -n {ns} route add default via 10.1.0.1 dev eth1",
            address(i)
        );
        let t = Instant::now();
        sh(&script)?;
        attach.push(t.elapsed());
    }
    for i in 0..namespaces.len() {
        let t = Instant::now();
        sh(&format!("ip link del ipv{i}"))?;
        detach.push(t.elapsed());
    }
    sh("ip link del wbrip")?;
    Ok(Samples {
        name: "ip script (seed recipe, no ARP)".into(),
        attach,
        detach,
    })
}

/// netavark setup/teardown with a static IP on a bridge network (its iptables firewall on).
fn netavark(namespaces: &[String]) -> anyhow::Result<Samples> {
    let dir = std::env::temp_dir().join(format!("weft-bench-netavark-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let (mut attach, mut detach) = (Vec::new(), Vec::new());
    let run = |verb: &str, ns: &str, file: &Path| -> anyhow::Result<Duration> {
        let t = Instant::now();
        let out = Command::new(NETAVARK)
            .args([
                "--config",
                &dir.to_string_lossy(),
                "--file",
                &file.to_string_lossy(),
                verb,
                &format!("/run/netns/{ns}"),
            ])
            .output()?;
        let took = t.elapsed();
        if !out.status.success() {
            bail!(
                "netavark {verb} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(took)
    };
    let mut files = Vec::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let file = dir.join(format!("{i}.json"));
        let ip = address(i);
        let ip = ip.split('/').next().unwrap_or_default();
        let cfg = serde_json::json!({
            "container_id": format!("{:064x}", i + 1),
            "container_name": format!("bench{i}"),
            "networks": {"weftbench": {"interface_name": "eth2", "static_ips": [ip]}},
            "network_info": {"weftbench": {
                "name": "weftbench", "id": format!("{:064x}", 7), "driver": "bridge",
                "network_interface": "wbrnv", "subnets": [{"subnet": "10.1.0.0/16", "gateway": "10.1.0.1"}],
                "ipv6_enabled": false, "internal": false, "dns_enabled": false
            }},
            "port_mappings": null
        });
        std::fs::write(&file, cfg.to_string())?;
        attach.push(run("setup", ns, &file)?);
        files.push(file);
    }
    for (ns, file) in namespaces.iter().zip(&files) {
        detach.push(run("teardown", ns, file)?);
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(Samples {
        name: "netavark 1.4 (bridge, iptables firewall)".into(),
        attach,
        detach,
    })
}
