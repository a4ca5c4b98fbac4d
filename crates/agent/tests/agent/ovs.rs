//! ovs backend on a private ovsdb-server + ovs-vswitchd (userspace `netdev` datapath; this
//! kernel has no openvswitch module) started inside the test's own network namespace.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use uuid::Uuid;
use weft_agent::agent::Agent;
use weft_agent::bench::PrivateOvs;
use weft_agent_api::{AttachmentSpec, Backend, SegmentSpec};

use crate::helpers::*;

/// `tcpdump -e` on the leaf's end of the uplink, started and listening; returns the
/// first frame matching `filter` (or what it printed when none came).
struct Capture(Child);

impl Capture {
    fn start(leaf: &NsProc, filter: &str) -> Self {
        let mut child = Command::new("nsenter")
            .args([
                "-t",
                &leaf.pid().to_string(),
                "-n",
                "timeout",
                "20",
                "tcpdump",
                "-l",
                "-e",
                "-nn",
                "-c",
                "1",
                "-i",
                "far0",
            ])
            .arg(filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("listening on") {
            line.clear();
        }
        Capture(child)
    }

    fn frame(self) -> String {
        let out = self.0.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn ovs_access_port_tags_the_containers_frames_on_the_uplink() {
    if !private_netns("ovs attach") {
        return;
    }
    if let Some(reason) = PrivateOvs::unavailable() {
        eprintln!("SKIPPED: ovs test: {reason}");
        return;
    }
    if !sh_ok("command -v tcpdump") {
        eprintln!("SKIPPED: ovs test: tcpdump not installed");
        return;
    }
    let ovs = PrivateOvs::start().unwrap();
    // The userspace datapath floods IPv6 chatter of every new port; keep the capture clean.
    sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
    let leaf = uplink_with_leaf();
    let container = NsProc::new();
    let mut cfg = config(Backend::Ovs, temp_state_file());
    cfg.ovs_db = ovs.db();
    let agent = Agent::new(cfg).await.unwrap();
    let vlan = vlan(181);
    assert!(
        agent.ensure_segment(vlan, &untagged()).await.is_err(),
        "ovs has no untagged mode"
    );
    let seg = agent
        .ensure_segment(vlan, &SegmentSpec::default())
        .await
        .unwrap();
    assert!(
        seg.ready && seg.bridge.as_deref() == Some("br-weft"),
        "{seg:?}"
    );

    let capture = Capture::start(&leaf, "arp and ether src 02:57:0a:00:00:05");
    let id = Uuid::new_v4();
    let spec = AttachmentSpec {
        gateway: None,
        ..pid_spec(container.pid(), vlan, "10.0.0.5/24")
    };
    let att = agent.ensure_attachment(id, &spec).await.unwrap();
    assert!(att.actual.wired && att.host_ifname.is_some(), "{att:?}");
    let frame = capture.frame();
    assert!(
        frame.contains("802.1Q") && frame.contains("vlan 181"),
        "container frame not tagged 181 on the uplink: {frame:?}"
    );

    let port = sh(&format!(
        "ovs-vsctl --db={} get Port {} tag external_ids",
        ovs.db(),
        att.host_ifname.clone().unwrap()
    ));
    assert!(
        port.starts_with("181") && port.contains(&id.to_string()),
        "{port}"
    );
    assert_eq!(agent.ensure_attachment(id, &spec).await.unwrap(), att);

    // After a crash: a port marked as ours for a forgotten attachment whose container
    // (and with it the veth) is gone, and a foreign port.
    let vsctl = format!("ovs-vsctl --db={}", ovs.db());
    sh("ip link add foreign0 type veth peer name foreign1");
    sh(&format!(
        "{vsctl} add-port br-weft wf0123456789abc tag=181 -- set Port wf0123456789abc external_ids:weft-attachment={} \
         -- add-port br-weft foreign0 tag=5",
        Uuid::new_v4()
    ));
    agent.reapply().await.unwrap();
    let ports = sh(&format!("{vsctl} list-ports br-weft"));
    let host = att.host_ifname.clone().unwrap();
    assert!(
        !ports.contains("wf0123456789abc") && link_line("wf0123456789abc").is_none(),
        "{ports}"
    );
    assert!(
        ports.contains("foreign0") && ports.contains(&host),
        "{ports}"
    );
    sh(&format!("{vsctl} del-port br-weft foreign0"));

    // Its switch port deleted behind the agent's back: the state says not wired (what the
    // central reconciler acts on) and the next PUT wires it again.
    sh(&format!("{vsctl} del-port br-weft {host}"));
    let state = agent.state().await.unwrap();
    let had = state.attachments.iter().find(|a| a.id == id).unwrap();
    assert!(
        !had.actual.wired
            && had.host_ifname.is_none()
            && had
                .actual
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("host side")),
        "{had:?}"
    );
    let again = agent.ensure_attachment(id, &spec).await.unwrap();
    assert!(again.actual.wired, "{again:?}");
    assert!(sh(&format!("{vsctl} list-ports br-weft")).contains(&host));

    agent.remove_attachment(id).await.unwrap();
    let ports = sh(&format!("ovs-vsctl --db={} list-ports br-weft", ovs.db()));
    assert_eq!(ports.trim(), "upl0", "access port left behind");
    assert!(link_line(&att.host_ifname.unwrap()).is_none());
}
