//! macvlan backend on an untagged uplink (a veth here; 802.1Q parents run in the VM).

use uuid::Uuid;
use weft_agent_api::{AttachmentSpec, Backend};

use crate::helpers::*;

#[tokio::test(flavor = "current_thread")]
async fn macvlan_child_in_the_container_reaches_the_gateway_and_leaves_cleanly() {
    if !private_netns("macvlan attach") {
        return;
    }
    let leaf = uplink_with_gateway();
    let container = NsProc::new();
    let agent = start_agent(Backend::Macvlan).await;
    let vlan = vlan(300);
    let seg = agent.ensure_segment(vlan, &untagged()).await.unwrap();
    assert!(seg.ready && seg.bridge.is_none());
    let id = Uuid::new_v4();
    let spec = AttachmentSpec {
        ifname: "eth1".parse().unwrap(),
        gateway: None,
        ..pid_spec(container.pid(), vlan, "10.0.0.20/24")
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
