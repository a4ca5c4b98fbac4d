//! macvlan backend on an untagged uplink (a veth here; 802.1Q parents run in the VM).

use uuid::Uuid;
use weft_agent::agent::Agent;
use weft_agent_api::{AttachmentSpec, Backend, SegmentMode, SegmentSpec, Target, VlanId};

use crate::helpers::*;

#[tokio::test(flavor = "current_thread")]
async fn macvlan_child_in_the_container_reaches_the_gateway_and_leaves_cleanly() {
    if !private_netns("macvlan attach") {
        return;
    }
    let leaf = uplink_with_leaf();
    leaf.sh("ip addr add 10.0.0.1/24 dev far0");
    let container = NsProc::new();
    let agent = Agent::new(config(Backend::Macvlan, temp_state_file()))
        .await
        .unwrap();
    let vlan = VlanId::try_from(300).unwrap();
    let seg = agent
        .ensure_segment(
            vlan,
            &SegmentSpec {
                mode: SegmentMode::Untagged,
                uplink: None,
            },
        )
        .await
        .unwrap();
    assert!(seg.ready && seg.bridge.is_none());
    let id = Uuid::new_v4();
    let spec = AttachmentSpec {
        target: Target::Pid {
            pid: container.pid(),
        },
        ifname: "eth1".parse().unwrap(),
        vlan,
        address: "10.0.0.20/24".parse().unwrap(),
        gateway: None,
        mac: None,
        mtu: None,
    };
    let att = agent.ensure_attachment(id, &spec).await.unwrap();
    assert!(att.actual.wired && att.host_ifname.is_none(), "{att:?}");
    let link = container.sh("ip -d -o link show eth1");
    assert!(
        link.contains("macvlan mode bridge") && link.contains("02:57:0a:00:00:14"),
        "{link}"
    );
    assert!(
        leaf.learns("10.0.0.20", "far0", "02:57:0a:00:00:14"),
        "no GARP at the leaf"
    );
    assert!(container.sh_ok("ping -c1 -W2 10.0.0.1"));
    let before = container.sh("ip -o link show eth1");
    assert_eq!(agent.ensure_attachment(id, &spec).await.unwrap(), att);
    assert_eq!(
        container.sh("ip -o link show eth1"),
        before,
        "repeated PUT re-created the child"
    );

    agent.remove_attachment(id).await.unwrap();
    assert!(!container.sh_ok("ip link show eth1"));
    agent.remove_segment(vlan).await.unwrap();
    assert!(link_line("upl0").is_some());
}
