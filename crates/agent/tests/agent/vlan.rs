//! Real 802.1Q: linux-bridge regular mode and macvlan on `<uplink>.<vlan>`. This kernel
//! has no 8021q, so these run inside a QEMU VM booting Debian's kernel
//! (scripts/vm-test.sh sets WEFT_VM_TESTS=1); elsewhere they skip loudly.
//!
//! The leaf's gateway address lives only on its `far0.<vlan>` sub-interface, which
//! receives nothing but frames tagged with that VLAN: the gateway answering, and the leaf
//! learning the container from its gratuitous ARP there, prove the tag on the wire.

use uuid::Uuid;
use weft_agent_api::{Backend, SegmentMode, SegmentSpec};

use crate::helpers::*;

/// Whether 802.1Q sub-interfaces work here; in the VM they must.
fn vlan_capable(test: &str) -> bool {
    let ok = sh_ok(
        "ip link add vt0 type veth peer name vt1 && ip link add link vt0 name vt0.5 type vlan id 5",
    );
    sh_ok("ip link del vt0");
    if !ok {
        assert!(
            std::env::var_os("WEFT_VM_TESTS").is_none(),
            "{test}: 8021q missing inside the VM"
        );
        eprintln!("SKIPPED: {test}: this kernel has no 802.1Q sub-interfaces; scripts/vm-test.sh runs it in a VM");
    }
    ok
}

/// The leaf answers 10.0.0.1 on VLAN `vlan` only.
fn leaf_on_vlan(vlan: u16) -> NsProc {
    let leaf = uplink_with_leaf();
    leaf.sh(&format!(
        "ip link add link far0 name far0.{vlan} type vlan id {vlan} && ip link set far0.{vlan} up && \
         sysctl -qw net.ipv4.conf.far0/{vlan}.arp_accept=1 && ip addr add 10.0.0.1/24 dev far0.{vlan}"
    ));
    leaf
}

#[tokio::test(flavor = "current_thread")]
async fn linux_bridge_regular_mode_tags_frames_on_the_uplink() {
    if !private_netns("vlan linux-bridge") || !vlan_capable("vlan linux-bridge") {
        return;
    }
    let leaf = leaf_on_vlan(181);
    let container = NsProc::new();
    let agent = start_agent(Backend::LinuxBridge).await;
    let vlan = vlan(181);
    let seg = agent
        .ensure_segment(vlan, &SegmentSpec::default())
        .await
        .unwrap();
    assert!(seg.ready, "{seg:?}");
    assert_eq!(seg.sub_interface.as_deref(), Some("upl0.181"));
    let sub = link_line("upl0.181").expect("sub-interface");
    assert!(
        sub.contains("vlan protocol 802.1Q id 181") && sub.contains("master wbr181"),
        "{sub}"
    );
    assert!(link_line("wbr181").unwrap().contains("bridge"));

    let id = Uuid::new_v4();
    let att = agent
        .ensure_attachment(id, &pid_spec(container.pid(), vlan, "10.0.0.5/24"))
        .await
        .unwrap();
    assert!(att.actual.wired, "{att:?}");
    let host = att.host_ifname.clone().expect("host end");
    assert_quiet_host_links(&container, &[&host, "wbr181", "upl0.181"]);
    assert!(
        leaf.learns("10.0.0.5", "far0.181", "02:57:0a:00:00:05"),
        "no tagged GARP at the leaf"
    );
    assert!(
        container.sh_ok("ping -c1 -W2 10.0.0.1"),
        "gateway on VLAN 181 unreachable"
    );

    agent.remove_attachment(id).await.unwrap();
    agent.remove_segment(vlan).await.unwrap();
    assert!(link_line("upl0.181").is_none() && link_line("wbr181").is_none());
    assert!(link_line("upl0").is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn macvlan_on_the_sub_interface_tags_frames_on_the_uplink() {
    if !private_netns("vlan macvlan") || !vlan_capable("vlan macvlan") {
        return;
    }
    let leaf = leaf_on_vlan(300);
    let container = NsProc::new();
    let agent = start_agent(Backend::Macvlan).await;
    let vlan = vlan(300);
    let seg = agent
        .ensure_segment(
            vlan,
            &SegmentSpec {
                mode: SegmentMode::Regular,
                uplink: None,
            },
        )
        .await
        .unwrap();
    assert!(seg.ready && seg.bridge.is_none(), "{seg:?}");
    assert!(link_line("upl0.300")
        .unwrap()
        .contains("vlan protocol 802.1Q id 300"));

    let id = Uuid::new_v4();
    let att = agent
        .ensure_attachment(id, &pid_spec(container.pid(), vlan, "10.0.0.6/24"))
        .await
        .unwrap();
    assert!(att.actual.wired, "{att:?}");
    assert!(container
        .sh("ip -d -o link show eth0")
        .contains("macvlan mode bridge"));
    assert!(leaf.learns("10.0.0.6", "far0.300", "02:57:0a:00:00:06"));
    assert!(
        container.sh_ok("ping -c1 -W2 10.0.0.1"),
        "gateway on VLAN 300 unreachable"
    );

    agent.remove_attachment(id).await.unwrap();
    assert!(!container.sh_ok("ip link show eth0"));
    agent.remove_segment(vlan).await.unwrap();
    assert!(link_line("upl0.300").is_none());
}
