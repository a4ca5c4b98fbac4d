//! The Open_vSwitch API against a real ovsdb-server and ovs-vswitchd
//! (userspace datapath), checked with `ovs-vsctl`, `ip` and `tcpdump`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Netns, Ovs};
use serde_json::json;
use weft_ovsdb::op::Operation;
use weft_ovsdb::{
    AccessPort, Client, DatapathType, Error, Outcome, PortInfo, Vswitch, VswitchOptions,
};

async fn connect(ovs: &Ovs) -> Vswitch {
    Vswitch::connect(&ovs.addr(), VswitchOptions::default())
        .await
        .expect("connecting to ovsdb-server")
}

fn ids(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn access(name: &str, tag: u16, attachment: &str) -> AccessPort {
    AccessPort {
        name: name.to_owned(),
        iface: name.to_owned(),
        tag,
        external_ids: ids(&[("weft-attachment", attachment)]),
    }
}

#[tokio::test]
async fn bridge_is_created_once_applied_by_vswitchd_and_deleted() {
    let Some(ovs) = Ovs::start() else { return };
    let vs = connect(&ovs).await;

    assert_eq!(
        vs.ensure_bridge("brw", DatapathType::Netdev).await.unwrap(),
        Outcome::Changed
    );
    // The call waited for ovs-vswitchd: its datapath device exists right away.
    ovs.netns.ip(&["link", "show", "brw"]);
    assert_eq!(
        ovs.vsctl(&["get", "bridge", "brw", "datapath_type"]),
        "netdev"
    );
    assert_eq!(
        vs.ensure_bridge("brw", DatapathType::Netdev).await.unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        vs.list_ports("brw").await.unwrap(),
        vec![PortInfo {
            name: "brw".into(),
            interfaces: vec!["brw".into()],
            tag: None,
            external_ids: BTreeMap::new(),
            error: None,
        }]
    );
    assert_eq!(ovs.vsctl(&["get", "interface", "brw", "type"]), "internal");

    assert_eq!(vs.delete_bridge("brw").await.unwrap(), Outcome::Changed);
    assert_eq!(ovs.vsctl(&["list-br"]), "");
    assert_eq!(vs.delete_bridge("brw").await.unwrap(), Outcome::Unchanged);
    assert!(matches!(
        vs.list_ports("brw").await,
        Err(Error::NoBridge(_))
    ));
}

#[tokio::test]
async fn concurrent_access_ports_share_transactions_and_carry_their_tags() {
    let Some(ovs) = Ovs::start() else { return };
    let vs = connect(&ovs).await;
    vs.ensure_bridge("brw", DatapathType::Netdev).await.unwrap();
    ovs.veth("up0", "far0", None);
    assert_eq!(
        vs.ensure_trunk_port("brw", "up0").await.unwrap(),
        Outcome::Changed
    );
    assert_eq!(
        vs.ensure_trunk_port("brw", "up0").await.unwrap(),
        Outcome::Unchanged
    );

    let ports: Vec<AccessPort> = (0..20u16)
        .map(|i| {
            let name = format!("acc{i}");
            ovs.veth(&name, &format!("accp{i}"), None);
            access(&name, 100 + i, &format!("att-{i}"))
        })
        .collect();

    let before = vs.transact_count();
    let results = futures::future::join_all(
        ports
            .iter()
            .map(|p| vs.ensure_access_ports("brw", std::slice::from_ref(p))),
    )
    .await;
    let used = vs.transact_count() - before;
    for result in results {
        assert_eq!(result.unwrap(), Outcome::Changed);
    }
    // One port alone takes three transactions (read, write, status check).
    assert!(
        used < 20,
        "20 concurrent additions used {used} transactions"
    );

    for (i, p) in ports.iter().enumerate() {
        assert_eq!(
            ovs.vsctl(&["get", "port", &p.name, "tag"]),
            (100 + i).to_string()
        );
        assert_eq!(ovs.vsctl(&["get", "interface", &p.name, "error"]), "[]");
    }
    assert_eq!(ovs.vsctl(&["get", "port", "up0", "tag"]), "[]");
    let listed = vs.list_ports("brw").await.unwrap();
    for p in &ports {
        let found = listed
            .iter()
            .find(|l| l.name == p.name)
            .expect("port listed");
        assert_eq!(found.tag, Some(p.tag));
        assert_eq!(found.external_ids, p.external_ids);
        assert_eq!(found.interfaces, vec![p.iface.clone()]);
    }

    assert_eq!(
        vs.ensure_access_ports("brw", &ports).await.unwrap(),
        Outcome::Unchanged
    );

    let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
    let removed = futures::future::join_all(
        names
            .iter()
            .map(|n| vs.remove_ports("brw", std::slice::from_ref(n))),
    )
    .await;
    for result in removed {
        assert_eq!(result.unwrap(), Outcome::Changed);
    }
    let mut left: Vec<String> = ovs
        .vsctl(&["list-ports", "brw"])
        .lines()
        .map(str::to_owned)
        .collect();
    left.sort();
    assert_eq!(left, vec!["up0".to_owned()]);
    assert_eq!(
        vs.remove_ports("brw", &names).await.unwrap(),
        Outcome::Unchanged
    );
}

#[tokio::test]
async fn drifted_ports_are_corrected_and_recognised_after_reconnect() {
    let Some(ovs) = Ovs::start() else { return };
    let vs = connect(&ovs).await;
    vs.ensure_bridge("brw", DatapathType::Netdev).await.unwrap();
    ovs.veth("up0", "far0", None);
    ovs.veth("c1", "c1p", None);

    // Someone made the uplink an access port: ensuring the trunk clears the tag.
    ovs.vsctl(&["add-port", "brw", "up0", "tag=5"]);
    assert_eq!(
        vs.ensure_trunk_port("brw", "up0").await.unwrap(),
        Outcome::Changed
    );
    assert_eq!(ovs.vsctl(&["get", "port", "up0", "tag"]), "[]");

    let mut port = access("c1", 10, "a1");
    port.external_ids.insert("weft-vlan".into(), "10".into());
    vs.ensure_access_ports("brw", &[port.clone()])
        .await
        .unwrap();
    let moved = access("c1", 20, "a2");
    assert_eq!(
        vs.ensure_access_ports("brw", std::slice::from_ref(&moved))
            .await
            .unwrap(),
        Outcome::Changed
    );
    assert_eq!(ovs.vsctl(&["get", "port", "c1", "tag"]), "20");
    assert_eq!(
        ovs.vsctl(&["get", "port", "c1", "external_ids"]),
        r#"{weft-attachment=a2}"#
    );
    drop(vs);

    // A restarted agent finds its port by external_ids.
    let vs = connect(&ovs).await;
    let ours: Vec<PortInfo> = vs
        .list_ports("brw")
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.external_ids.contains_key("weft-attachment"))
        .collect();
    assert_eq!(
        ours,
        vec![PortInfo {
            name: "c1".into(),
            interfaces: vec!["c1".into()],
            tag: Some(20),
            external_ids: moved.external_ids,
            error: None,
        }]
    );
}

/// Port changes and `Vswitch::port` read only the rows they name; a port
/// whose interface has another name still shows (and checks) that name.
#[tokio::test]
async fn one_port_is_read_by_name_whatever_its_interface_is_called() {
    let Some(ovs) = Ovs::start() else { return };
    let vs = connect(&ovs).await;
    vs.ensure_bridge("brw", DatapathType::Netdev).await.unwrap();
    vs.ensure_bridge("brx", DatapathType::Netdev).await.unwrap();
    ovs.veth("c1", "c1p", None);
    ovs.veth("dev9", "dev9p", None);
    ovs.veth("x1", "x1p", None);
    vs.ensure_access_ports("brw", &[access("c1", 10, "a1")])
        .await
        .unwrap();
    vs.ensure_access_ports("brx", &[access("x1", 11, "a2")])
        .await
        .unwrap();
    ovs.vsctl(&[
        "--",
        "--id=@i",
        "create",
        "interface",
        "name=dev9",
        "--",
        "--id=@p",
        "create",
        "port",
        "name=p9",
        "interfaces=@i",
        "tag=12",
        "--",
        "add",
        "bridge",
        "brw",
        "ports",
        "@p",
    ]);

    assert_eq!(
        vs.port("brw", "c1").await.unwrap(),
        Some(PortInfo {
            name: "c1".into(),
            interfaces: vec!["c1".into()],
            tag: Some(10),
            external_ids: ids(&[("weft-attachment", "a1")]),
            error: None,
        })
    );
    let p9 = vs.port("brw", "p9").await.unwrap().expect("p9 on brw");
    assert_eq!((p9.interfaces, p9.tag), (vec!["dev9".to_owned()], Some(12)));
    assert_eq!(vs.port("brw", "x1").await.unwrap(), None, "x1 is on brx");
    assert_eq!(vs.port("brw", "absent").await.unwrap(), None);
    assert!(matches!(
        vs.port("nobr", "c1").await,
        Err(Error::NoBridge(_))
    ));

    let mismatch = vs
        .ensure_access_ports("brw", &[access("p9", 12, "a9")])
        .await;
    match mismatch {
        Err(Error::PortInterfaceMismatch { existing, .. }) => assert_eq!(existing, ["dev9"]),
        other => panic!("interface mismatch accepted: {other:?}"),
    }
    assert_eq!(
        vs.remove_ports("brw", &["p9", "x1"]).await.unwrap(),
        Outcome::Changed
    );
    assert_eq!(ovs.vsctl(&["list-ports", "brw"]), "c1");
    assert_eq!(ovs.vsctl(&["list-ports", "brx"]), "x1");
}

#[tokio::test]
async fn bad_requests_fail_alone_with_their_reason() {
    let Some(ovs) = Ovs::start() else { return };
    let vs = connect(&ovs).await;
    vs.ensure_bridge("brw", DatapathType::Netdev).await.unwrap();
    vs.ensure_bridge("brx", DatapathType::Netdev).await.unwrap();
    ovs.veth("good0", "good0p", None);
    ovs.veth("other0", "other0p", None);
    vs.ensure_access_ports("brx", &[access("other0", 7, "x")])
        .await
        .unwrap();

    let ghost = [access("ghost0", 30, "g")];
    let good = [access("good0", 31, "ok")];
    let elsewhere = [access("other0", 32, "o")];
    let bad_vlan = [access("good1", 4095, "v")];
    let (ghost, good, elsewhere, bad_vlan, no_bridge) = tokio::join!(
        vs.ensure_access_ports("brw", &ghost),
        vs.ensure_access_ports("brw", &good),
        vs.ensure_access_ports("brw", &elsewhere),
        vs.ensure_access_ports("brw", &bad_vlan),
        vs.ensure_access_ports("nobr", &good),
    );
    match ghost {
        Err(Error::Interface { iface, error }) => {
            assert_eq!(iface, "ghost0");
            assert!(error.contains("ghost0"), "{error}");
        }
        other => panic!("missing device accepted: {other:?}"),
    }
    assert_eq!(good.unwrap(), Outcome::Changed);
    assert!(
        matches!(&elsewhere, Err(Error::PortOnOtherBridge { bridge, .. }) if bridge == "brx"),
        "{elsewhere:?}"
    );
    assert!(
        matches!(bad_vlan, Err(Error::InvalidVlan(4095))),
        "{bad_vlan:?}"
    );
    assert!(
        matches!(no_bridge, Err(Error::NoBridge(_))),
        "{no_bridge:?}"
    );
    assert_eq!(ovs.vsctl(&["get", "port", "good0", "tag"]), "31");
    assert_eq!(ovs.vsctl(&["get", "port", "other0", "tag"]), "7");

    // The port that could not be attached was taken out again; once the
    // device exists, the same request succeeds.
    let ports = ovs.vsctl(&["list-ports", "brw"]);
    assert!(
        !ports.contains("ghost0"),
        "failed port left behind: {ports}"
    );
    ovs.veth("ghost0", "ghost0p", None);
    let ghost = [access("ghost0", 30, "g")];
    assert_eq!(
        vs.ensure_access_ports("brw", &ghost).await.unwrap(),
        Outcome::Changed
    );
    assert_eq!(ovs.vsctl(&["get", "interface", "ghost0", "error"]), "[]");
}

#[tokio::test]
async fn a_port_whose_device_appeared_late_is_repaired() {
    let Some(ovs) = Ovs::start() else { return };
    let vs = connect(&ovs).await;
    vs.ensure_bridge("brw", DatapathType::Netdev).await.unwrap();
    // Added (as ovs-vsctl allows) before its device existed: vswitchd marks it.
    ovs.vsctl(&[
        "add-port",
        "brw",
        "late0",
        "tag=5",
        "--",
        "set",
        "port",
        "late0",
        "external_ids:weft-attachment=l",
    ]);
    let listed = vs.list_ports("brw").await.unwrap();
    let late = listed
        .iter()
        .find(|p| p.name == "late0")
        .expect("late0 listed");
    assert!(
        late.error.as_deref().is_some_and(|e| e.contains("late0")),
        "{late:?}"
    );

    // Ensuring it while the device is still missing asks ovs-vswitchd to try
    // again and reports its verdict; the port, not ours to drop, stays.
    let port = access("late0", 5, "l");
    match vs.ensure_access_ports("brw", &[port]).await {
        Err(Error::Interface { iface, .. }) => assert_eq!(iface, "late0"),
        other => panic!("missing device accepted: {other:?}"),
    }
    assert!(ovs.vsctl(&["list-ports", "brw"]).contains("late0"));

    // ovs-vswitchd may notice the new device by itself or through the retry
    // the call asks for; either way the port works when the call returns.
    ovs.veth("late0", "late0p", None);
    let port = access("late0", 5, "l");
    vs.ensure_access_ports("brw", &[port]).await.unwrap();
    let listed = vs.list_ports("brw").await.unwrap();
    let late = listed
        .iter()
        .find(|p| p.name == "late0")
        .expect("late0 listed");
    assert_eq!(late.error, None);
    assert_ne!(ovs.vsctl(&["get", "interface", "late0", "ofport"]), "-1");
}

#[tokio::test]
async fn work_continues_after_ovsdb_server_restarts() {
    let Some(mut ovs) = Ovs::start() else { return };
    let vs = connect(&ovs).await;
    vs.ensure_bridge("brw", DatapathType::Netdev).await.unwrap();
    ovs.veth("r1", "r1p", None);
    ovs.veth("r2", "r2p", None);
    vs.ensure_access_ports("brw", &[access("r1", 11, "r1")])
        .await
        .unwrap();

    ovs.restart_ovsdb();
    assert_eq!(
        vs.ensure_access_ports("brw", &[access("r2", 12, "r2")])
            .await
            .unwrap(),
        Outcome::Changed
    );
    assert_eq!(ovs.vsctl(&["get", "port", "r2", "tag"]), "12");
    let names: Vec<String> = vs
        .list_ports("brw")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["brw", "r1", "r2"]);
}

#[tokio::test]
async fn a_write_cut_off_while_waiting_for_vswitchd_still_waits_after_reconnecting() {
    let Some(mut ovs) = Ovs::start() else { return };
    let vs = connect(&ovs).await;
    vs.ensure_bridge("brw", DatapathType::Netdev).await.unwrap();
    ovs.veth("w1", "w1p", None);

    ovs.freeze_vswitchd(true);
    let call = tokio::spawn({
        let vs = vs.clone();
        async move {
            vs.ensure_access_ports("brw", &[access("w1", 21, "w1")])
                .await
        }
    });
    // The port is committed; the call waits for the frozen ovs-vswitchd when
    // ovsdb-server goes away under it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ovs.vsctl(&["list-ports", "brw"]).contains("w1") {
        assert!(Instant::now() < deadline, "port never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ovs.restart_ovsdb();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !call.is_finished(),
        "returned before ovs-vswitchd applied the port"
    );

    ovs.freeze_vswitchd(false);
    call.await.unwrap().unwrap();
    let ofport: i64 = ovs
        .vsctl(&["get", "interface", "w1", "ofport"])
        .parse()
        .unwrap();
    assert!(ofport > 0, "port not in the datapath: ofport {ofport}");
}

#[tokio::test]
async fn a_stuck_vswitchd_is_reported_after_the_apply_timeout() {
    let Some(ovs) = Ovs::start() else { return };
    let vs = connect(&ovs).await;
    vs.ensure_bridge("brw", DatapathType::Netdev).await.unwrap();
    ovs.veth("s1", "s1p", None);
    ovs.veth("s2", "s2p", None);
    ovs.freeze_vswitchd(true);

    let opts = VswitchOptions {
        apply_timeout: Duration::from_millis(300),
        ..VswitchOptions::default()
    };
    let waiting = Vswitch::connect(&ovs.addr(), opts).await.unwrap();
    let result = waiting
        .ensure_access_ports("brw", &[access("s1", 41, "s1")])
        .await;
    assert!(
        matches!(result, Err(Error::ApplyTimeout { .. })),
        "{result:?}"
    );

    // Without waiting, the same call only commits to the database.
    let opts = VswitchOptions {
        wait_applied: false,
        ..VswitchOptions::default()
    };
    let fire_and_forget = Vswitch::connect(&ovs.addr(), opts).await.unwrap();
    let result = fire_and_forget
        .ensure_access_ports("brw", &[access("s2", 42, "s2")])
        .await;
    assert_eq!(result.unwrap(), Outcome::Changed);
    assert_eq!(ovs.vsctl(&["--no-wait", "get", "port", "s2", "tag"]), "42");
    ovs.freeze_vswitchd(false);
}

#[tokio::test]
async fn the_raw_client_reads_the_schema_and_surfaces_ovsdb_errors() {
    let Some(ovs) = Ovs::start() else { return };
    let (client, _updates) = Client::connect(&ovs.addr(), Duration::from_secs(10))
        .await
        .unwrap();
    let schema = client.get_schema("Open_vSwitch").await.unwrap();
    assert_eq!(schema["name"], "Open_vSwitch");
    assert!(schema["tables"]["Port"]["columns"]["tag"].is_object());

    let bad = [Operation::Insert {
        table: "Port".into(),
        row: serde_json::from_value(json!({"name": "p", "tag": 5000})).unwrap(),
        uuid_name: None,
    }];
    match client.transact("Open_vSwitch", &bad).await {
        Err(Error::Transaction {
            index: 0,
            op,
            error,
        }) => {
            assert_eq!(op, "insert");
            assert!(error.contains("constraint violation"), "{error}");
        }
        other => panic!("out-of-range tag accepted: {other:?}"),
    }
    match client.get_schema("NoSuchDb").await {
        Err(Error::Rpc { method, error }) => {
            assert_eq!(method, "get_schema");
            assert!(error.contains("unknown database"), "{error}");
        }
        other => panic!("unknown database accepted: {other:?}"),
    }
}

#[tokio::test]
async fn tcp_remotes_work_too() {
    let Some(ovs) = Ovs::start() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("picking a free port")
        .port();
    ovs.appctl_ovsdb(&["ovsdb-server/add-remote", &format!("ptcp:{port}:127.0.0.1")]);
    let vs = Vswitch::connect(&format!("tcp:127.0.0.1:{port}"), VswitchOptions::default())
        .await
        .expect("connecting over TCP");
    assert_eq!(
        vs.ensure_bridge("brt", DatapathType::Netdev).await.unwrap(),
        Outcome::Changed
    );
    assert_eq!(ovs.vsctl(&["list-br"]), "brt");
    assert!(matches!(
        Vswitch::connect("udp:127.0.0.1:1", VswitchOptions::default()).await,
        Err(Error::Address(_))
    ));
}

/// tcpdump on the uplink's far end, started and listening (its stderr is
/// kept open so it can report at exit without a broken pipe).
struct Capture {
    child: std::process::Child,
    _stderr: BufReader<std::process::ChildStderr>,
}

impl Capture {
    fn start(ns: &Netns, iface: &str, filter: &str) -> Self {
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", &ns.0, "tcpdump", "-i", iface, "-e", "-nn", "-l", "-c", "1",
            ])
            .arg(filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tcpdump");
        let stderr = child.stderr.take().expect("tcpdump stderr");
        let mut stderr = BufReader::new(stderr);
        let banner: Vec<String> = stderr
            .by_ref()
            .lines()
            .map_while(Result::ok)
            .take_while(|l| !l.contains("listening on"))
            .collect();
        assert!(
            child.try_wait().expect("tcpdump status").is_none(),
            "tcpdump did not start: {banner:?}"
        );
        Capture {
            child,
            _stderr: stderr,
        }
    }

    /// The first captured line, once one arrives (or panics after `within`).
    fn first_line(mut self, within: Duration, mut poke: impl FnMut()) -> String {
        let deadline = Instant::now() + within;
        while self.child.try_wait().expect("tcpdump status").is_none() {
            assert!(
                Instant::now() < deadline,
                "no matching frame within {within:?}"
            );
            poke();
        }
        let mut out = String::new();
        let stdout = self.child.stdout.take().expect("tcpdump stdout");
        BufReader::new(stdout)
            .read_line(&mut out)
            .expect("tcpdump output");
        out
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn frames_from_an_access_port_leave_the_uplink_tagged() {
    if !common::have_tool("tcpdump") {
        return;
    }
    let Some(ovs) = Ovs::start() else { return };
    let container = Netns::new("weft-c-");
    let far = Netns::new("weft-far-");
    let vs = connect(&ovs).await;
    vs.ensure_bridge("brw", DatapathType::Netdev).await.unwrap();
    ovs.veth("up0", "far0", Some(&far));
    ovs.veth("c181", "eth0", Some(&container));
    container.ip(&["addr", "add", "10.181.0.2/24", "dev", "eth0"]);
    let mac = container.ip(&["-br", "link", "show", "eth0"]);
    let mac = mac.split_whitespace().nth(2).expect("eth0 MAC").to_owned();
    vs.ensure_trunk_port("brw", "up0").await.unwrap();
    vs.ensure_access_ports("brw", &[access("c181", 181, "e2e")])
        .await
        .unwrap();

    let capture = Capture::start(&far, "far0", "vlan 181");
    let line = capture.first_line(Duration::from_secs(15), || {
        // ARP requests from the container are broadcast out of the trunk.
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                &container.0,
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "10.181.0.1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    });
    assert!(
        line.contains(&mac),
        "frame not from the container ({mac}): {line}"
    );
    assert!(line.contains("vlan 181"), "frame without tag 181: {line}");
}
