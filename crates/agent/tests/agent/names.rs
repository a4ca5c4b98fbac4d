//! Issue 10 on every backend: ids that share long prefixes never take each other's
//! interfaces, a name held by someone else is refused without touching it, and a lost
//! state file leaves working containers on the network.

use std::collections::BTreeSet;

use uuid::Uuid;
use weft_agent::agent::Agent;
use weft_agent::bench::PrivateOvs;
use weft_agent::config::{Config, Naming};
use weft_agent_api::{
    AgentClient, AttachmentSpec, Backend, ClientError, SegmentSpec, UnclaimedLink,
};

use crate::helpers::*;

/// Two UUIDv7 ids from one millisecond (the same 13 leading hex digits), and two ids
/// sharing their first 16 hex digits.
const IDS: [&str; 4] = [
    "0193a0c4-5e21-7a3f-9c1e-2b4d6f8a0b11",
    "0193a0c4-5e21-7b90-8d2f-7c3e1a5b9f22",
    "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
    "6f1c2a3b-4d5e-4f60-9c0d-1e2f3a4b5c6d",
];

fn id(i: usize) -> Uuid {
    Uuid::parse_str(IDS[i]).unwrap()
}

fn address(i: usize) -> String {
    format!("10.0.0.{}", 11 + i)
}

/// Attachment `i` of the test: `eth0` of `container` at 10.0.0.(11+i)/24 on VLAN 181.
fn spec(container: &NsProc, i: usize) -> AttachmentSpec {
    AttachmentSpec {
        gateway: None,
        ..pid_spec(container.pid(), vlan(181), &format!("{}/24", address(i)))
    }
}

/// A host for `backend` in the test's namespace: its configuration (on a fresh state
/// file), the switch it needs, and the leaf behind uplink `upl0`. None (after a SKIPPED
/// line) where it cannot run.
struct Host {
    cfg: Config,
    _ovs: Option<PrivateOvs>,
    _leaf: NsProc,
}

impl Host {
    fn new(backend: Backend, test: &str) -> Option<Self> {
        if !private_netns(test) {
            return None;
        }
        let mut cfg = config(backend, temp_state_file());
        let ovs = match backend {
            Backend::Ovs => {
                if let Some(reason) = PrivateOvs::unavailable() {
                    eprintln!("SKIPPED: {test}: {reason}");
                    return None;
                }
                let ovs = PrivateOvs::start().unwrap();
                cfg.ovs_db = ovs.db();
                Some(ovs)
            }
            _ => None,
        };
        Some(Host {
            cfg,
            _ovs: ovs,
            _leaf: uplink_with_gateway(),
        })
    }

    /// An agent on this host with the segment for VLAN 181 in place.
    async fn agent(&self) -> std::sync::Arc<Agent> {
        let agent = Agent::new(self.cfg.clone()).await.unwrap();
        let segment = match self.cfg.backend {
            // The OVS backend tags every VLAN on the trunk.
            Backend::Ovs => SegmentSpec::default(),
            _ => untagged(),
        };
        agent.ensure_segment(vlan(181), &segment).await.unwrap();
        agent
    }
}

/// The ifindex of `eth0` in `container`, if it has one.
fn eth0(container: &NsProc) -> Option<u32> {
    // Not /sys/class/net: nsenter -n keeps the test's /sys, which shows the test's links.
    container
        .sh_ok("ip link show dev eth0")
        .then(|| container.sh("ip -o link show dev eth0"))
        .and_then(|line| line.split(':').next()?.trim().parse().ok())
}

/// Containers `2k` and `2k+1` reach each other across the segment.
fn pairs_reach_each_other(containers: &[NsProc]) {
    for (i, c) in containers.iter().enumerate() {
        let peer = address(i ^ 1);
        assert!(
            c.sh_ok(&format!("ping -c1 -W2 {peer}")),
            "attachment {} cannot reach {peer}",
            IDS[i]
        );
    }
}

/// Every id attaches beside the others and stays wired, also across a restart.
async fn ids_with_shared_prefixes_attach_side_by_side(backend: Backend) {
    let Some(host) = Host::new(backend, "ids with shared prefixes") else {
        return;
    };
    let agent = host.agent().await;
    let containers: Vec<NsProc> = (0..IDS.len()).map(|_| NsProc::new()).collect();
    for (i, c) in containers.iter().enumerate() {
        let att = agent.ensure_attachment(id(i), &spec(c, i)).await.unwrap();
        assert!(att.actual.wired, "{att:?}");
    }
    let wired = |state: weft_agent_api::AgentState| {
        assert!(state.unclaimed.is_empty(), "{:?}", state.unclaimed);
        state
            .attachments
            .iter()
            .filter(|a| a.actual.wired)
            .map(|a| a.id)
            .collect::<BTreeSet<_>>()
    };
    let all: BTreeSet<Uuid> = (0..IDS.len()).map(id).collect();
    assert_eq!(wired(agent.state().await.unwrap()), all);
    pairs_reach_each_other(&containers);
    let before: Vec<Option<u32>> = containers.iter().map(eth0).collect();

    drop(agent);
    let agent = Agent::new(host.cfg.clone()).await.unwrap();
    agent.reapply().await.unwrap();
    assert_eq!(wired(agent.state().await.unwrap()), all);
    let after: Vec<Option<u32>> = containers.iter().map(eth0).collect();
    assert_eq!(after, before, "a restart re-created interfaces");
    pairs_reach_each_other(&containers);
}

#[tokio::test(flavor = "current_thread")]
async fn linux_bridge_ids_with_shared_prefixes_attach_side_by_side() {
    ids_with_shared_prefixes_attach_side_by_side(Backend::LinuxBridge).await;
}

#[tokio::test(flavor = "current_thread")]
async fn ovs_ids_with_shared_prefixes_attach_side_by_side() {
    ids_with_shared_prefixes_attach_side_by_side(Backend::Ovs).await;
}

#[tokio::test(flavor = "current_thread")]
async fn macvlan_ids_with_shared_prefixes_attach_side_by_side() {
    ids_with_shared_prefixes_attach_side_by_side(Backend::Macvlan).await;
}

/// The refusal a PUT of attachment `i` into `container` gets: a 409 whose detail names
/// `names`, with nothing wired.
async fn refused(client: &AgentClient, container: &NsProc, i: usize, names: &[&str]) {
    match client.ensure_attachment(id(i), &spec(container, i)).await {
        Err(ClientError::Api { status, problem }) => {
            assert_eq!(status, 409, "{problem:?}");
            assert_eq!(problem.kind, "urn:weft:agent:conflict");
            let detail = problem.detail.unwrap_or_default();
            for name in names {
                assert!(detail.contains(name), "{name} missing from {detail:?}");
            }
        }
        other => panic!("expected 409, got {other:?}"),
    }
}

/// A link with a name the agent needs, made by someone else or marked as another
/// attachment's, is refused with 409 and left exactly as it was.
async fn names_held_by_others_are_refused_and_left_alone(backend: Backend) {
    let Some(host) = Host::new(backend, "names held by others") else {
        return;
    };
    let (client, _) = serve(host.agent().await).await;
    let container = NsProc::new();
    let me = id(0).to_string();

    // The container already has an eth0 the agent did not make.
    container.sh("ip link add eth0 type veth peer name strangerpeer");
    let foreign = eth0(&container);
    refused(&client, &container, 0, &["eth0", &me]).await;
    assert_eq!(eth0(&container), foreign, "the foreign eth0 was touched");
    assert!(container
        .sh("ip -d link show eth0")
        .contains("strangerpeer"));
    container.sh("ip link del eth0");

    if backend != Backend::Macvlan {
        // The host link name, taken by a stranger, then by another attachment.
        let name = Naming::default().host_veth(id(0));
        sh(&format!(
            "ip link add {name} type veth peer name strangerpeer"
        ));
        let before = link_line(&name).unwrap();
        refused(&client, &container, 0, &[&name, &me]).await;
        assert_eq!(
            link_line(&name).unwrap(),
            before,
            "the stranger's link was changed"
        );
        let other = Uuid::new_v4().to_string();
        sh(&format!("ip link set {name} alias weft-attachment={other}"));
        let before = link_line(&name).unwrap();
        refused(&client, &container, 0, &[&name, &me, &other]).await;
        assert_eq!(
            link_line(&name).unwrap(),
            before,
            "the other attachment's link was changed"
        );
        assert!(!container.sh_ok("ip link show eth0"), "wired anyway");
        sh(&format!("ip link del {name}"));
    }

    if backend == Backend::LinuxBridge {
        // The bridge name of a VLAN, taken by a link that is no bridge.
        sh("ip link add wbr182 type veth peer name notabridge");
        let before = link_line("wbr182").unwrap();
        // Regular mode: the uplink already carries VLAN 181 untagged.
        match client
            .ensure_segment(vlan(182), &SegmentSpec::default())
            .await
        {
            Err(ClientError::Api { status, problem }) => {
                assert_eq!(status, 409, "{problem:?}");
                let detail = problem.detail.unwrap_or_default();
                assert!(detail.contains("wbr182"), "{detail}");
            }
            other => panic!("expected 409, got {other:?}"),
        }
        assert_eq!(link_line("wbr182").unwrap(), before, "wbr182 was changed");
    }

    // Once the name is free, the same request wires.
    let att = client
        .ensure_attachment(id(0), &spec(&container, 0))
        .await
        .unwrap();
    assert!(att.actual.wired, "{att:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn linux_bridge_names_held_by_others_are_refused_and_left_alone() {
    names_held_by_others_are_refused_and_left_alone(Backend::LinuxBridge).await;
}

#[tokio::test(flavor = "current_thread")]
async fn ovs_names_held_by_others_are_refused_and_left_alone() {
    names_held_by_others_are_refused_and_left_alone(Backend::Ovs).await;
}

#[tokio::test(flavor = "current_thread")]
async fn macvlan_names_held_by_others_are_refused_and_left_alone() {
    names_held_by_others_are_refused_and_left_alone(Backend::Macvlan).await;
}

/// Two containers wired and talking; the agent restarts without its state file. Both stay
/// on the network, their host links are reported as unclaimed, a DELETE removes one and
/// a PUT of the other adopts it as it is. (macvlan has no host links: the agent cannot
/// see its interfaces without a record, and a PUT adopts them.)
async fn a_lost_state_file_leaves_containers_wired(backend: Backend) {
    let Some(mut host) = Host::new(backend, "lost state file") else {
        return;
    };
    let agent = host.agent().await;
    let containers = [NsProc::new(), NsProc::new()];
    let mut host_links = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let att = agent.ensure_attachment(id(i), &spec(c, i)).await.unwrap();
        host_links.extend(att.host_ifname);
    }
    pairs_reach_each_other(&containers);
    let before: Vec<Option<u32>> = containers.iter().map(eth0).collect();
    drop(agent);

    host.cfg.state_file = temp_state_file();
    let agent = host.agent().await;
    agent.reapply().await.unwrap();
    pairs_reach_each_other(&containers);
    let mut unclaimed = agent.state().await.unwrap().unclaimed;
    unclaimed.sort_by_key(|u| u.attachment);
    let expected: Vec<_> = host_links
        .iter()
        .enumerate()
        .map(|(i, name)| UnclaimedLink {
            attachment: id(i),
            host_ifname: name.clone(),
        })
        .collect();
    assert_eq!(unclaimed, expected);

    if backend == Backend::Macvlan {
        let att = agent
            .ensure_attachment(id(0), &spec(&containers[0], 0))
            .await
            .unwrap();
        assert!(att.actual.wired, "{att:?}");
    }
    agent.remove_attachment(id(0)).await.unwrap();
    assert_eq!(eth0(&containers[0]), None, "a DELETE left the interface");
    if let Some(name) = host_links.first() {
        assert!(link_line(name).is_none(), "a DELETE left {name}");
    }
    let att = agent
        .ensure_attachment(id(1), &spec(&containers[1], 1))
        .await
        .unwrap();
    assert!(att.actual.wired, "{att:?}");
    assert_eq!(
        eth0(&containers[1]),
        before[1],
        "the PUT re-created a working interface"
    );
    assert!(agent.state().await.unwrap().unclaimed.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn linux_bridge_lost_state_file_leaves_containers_wired() {
    a_lost_state_file_leaves_containers_wired(Backend::LinuxBridge).await;
}

#[tokio::test(flavor = "current_thread")]
async fn ovs_lost_state_file_leaves_containers_wired() {
    a_lost_state_file_leaves_containers_wired(Backend::Ovs).await;
}

#[tokio::test(flavor = "current_thread")]
async fn macvlan_lost_state_file_leaves_containers_wired() {
    a_lost_state_file_leaves_containers_wired(Backend::Macvlan).await;
}
