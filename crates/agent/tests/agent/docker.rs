//! A real Docker container (`--net=none`, busybox image built offline by scripts/services.sh).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use uuid::Uuid;
use weft_agent::agent::Agent;
use weft_agent::bench::PrivateOvs;
use weft_agent::events::Callback;
use weft_agent_api::{
    AttachmentSpec, Backend, ContainerEvent, ContainerEventKind, SegmentSpec, Target,
};

use crate::helpers::*;

const SOCKET: &str = "/var/run/docker.sock";
const IMAGE: &str = "weft-test/busybox:local";

/// A container removed on drop.
struct Container(String);

impl Container {
    fn run() -> Self {
        let name = format!("weft-test-{}", &Uuid::new_v4().simple().to_string()[..12]);
        sh(&format!(
            "docker run -d --net=none --name {name} {IMAGE} sleep 3600"
        ));
        Container(name)
    }

    fn exec(&self, cmd: &str) -> String {
        sh(&format!("docker exec {} {cmd}", self.0))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        sh_ok(&format!("docker rm -f {}", self.0));
    }
}

fn docker_ready() -> bool {
    if !PathBuf::from(SOCKET).exists() || !sh_ok(&format!("docker image inspect {IMAGE}")) {
        eprintln!("SKIPPED: docker test: no engine at {SOCKET} or no {IMAGE}; run eval \"$(scripts/services.sh)\"");
        return false;
    }
    true
}

/// Collects the agent's container-event callbacks.
async fn callback_sink() -> (reqwest::Url, Arc<Mutex<Vec<ContainerEvent>>>) {
    let seen: Arc<Mutex<Vec<ContainerEvent>>> = Arc::default();
    let sink = seen.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let server = HttpServer::new(move || {
        let sink = sink.clone();
        App::new().route(
            "/events",
            web::post().to(move |e: web::Json<ContainerEvent>| {
                sink.lock().unwrap().push(e.into_inner());
                async { "" }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (url, seen)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..150 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "current_thread")]
async fn docker_container_is_wired_rewired_after_restart_and_kept_across_agent_restart() {
    if !docker_ready() || !private_netns("docker attach") {
        return;
    }
    let _leaf = uplink_with_gateway();
    let c = Container::run();
    let (callback, events) = callback_sink().await;
    let state_file = temp_state_file();
    let mut cfg = config(Backend::LinuxBridge, state_file.clone());
    cfg.docker_socket = Some(SOCKET.into());
    cfg.central_url = Some(callback);
    let agent = Agent::new(cfg.clone()).await.unwrap();
    let sender = Callback::new(cfg.central_url.clone(), cfg.central_token.clone()).unwrap();
    let watcher = tokio::spawn(weft_agent::events::watch(agent.clone(), sender));

    let vlan = vlan(181);
    agent.ensure_segment(vlan, &untagged()).await.unwrap();
    let id = Uuid::new_v4();
    let spec = AttachmentSpec {
        target: Target::Docker {
            container: c.0.clone(),
        },
        mac: Some("02:00:00:00:00:99".parse().unwrap()),
        ..pid_spec(0, vlan, "10.0.0.9/24")
    };
    let att = agent.ensure_attachment(id, &spec).await.unwrap();
    assert!(att.actual.wired, "{att:?}");
    let inside = c.exec("ip addr show eth0");
    assert!(
        inside.contains("inet 10.0.0.9/24") && inside.contains("02:00:00:00:00:99"),
        "{inside}"
    );
    c.exec("ping -c1 -W2 10.0.0.1");

    // A restart gives the container a new namespace; the agent re-wires it by itself.
    sh(&format!("docker restart -t 0 {}", c.0));
    eventually("re-wiring after docker restart", || {
        sh_ok(&format!(
            "docker exec {} ip addr show eth0 | grep -q 'inet 10.0.0.9/24'",
            c.0
        ))
    })
    .await;
    assert!(
        c.exec("ip link show eth0").contains("02:00:00:00:00:99"),
        "MAC changed across restart"
    );
    c.exec("ping -c1 -W2 10.0.0.1");
    // The callbacks arrive in the order the events happened (one delivery queue).
    eventually("died, then rewired callbacks", || {
        let seen = events.lock().unwrap();
        let kinds: Vec<_> = seen
            .iter()
            .filter(|e| e.attachment == id)
            .map(|e| e.kind)
            .collect();
        kinds == [ContainerEventKind::Died, ContainerEventKind::Rewired]
    })
    .await;

    // Agent killed and started again: nothing lost, nothing duplicated.
    watcher.abort();
    let host = agent.state().await.unwrap().attachments[0]
        .host_ifname
        .clone()
        .unwrap();
    let before = ifindex(&host);
    drop(agent);
    let agent = Agent::new(cfg).await.unwrap();
    agent.reapply().await.unwrap();
    assert_eq!(ifindex(&host), before);
    assert_eq!(sh("ip -o link show").matches(": wf").count(), 1);
    assert_eq!(c.exec("ip -o addr show eth0").matches("inet ").count(), 1);
    let state = agent.state().await.unwrap();
    assert_eq!(state.attachments.len(), 1);
    assert!(state.attachments[0].actual.wired, "{state:?}");
    c.exec("ping -c1 -W2 10.0.0.1");
    agent.remove_attachment(id).await.unwrap();
    assert!(!sh_ok(&format!("docker exec {} ip link show eth0", c.0)));
}

/// On OVS a stopped container's port leaves the switch (a port without its device makes
/// ovs-vswitchd warn and costs it on every reconfiguration), and comes back, wired, when the
/// container starts again.
#[tokio::test(flavor = "current_thread")]
async fn ovs_port_of_a_stopped_container_leaves_the_switch_and_returns_on_start() {
    if !docker_ready() || !private_netns("docker ovs stop/start") {
        return;
    }
    if let Some(reason) = PrivateOvs::unavailable() {
        eprintln!("SKIPPED: docker ovs stop/start: {reason}");
        return;
    }
    let ovs = PrivateOvs::start().unwrap();
    sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
    let _leaf = uplink_with_leaf();
    let c = Container::run();
    let mut cfg = config(Backend::Ovs, temp_state_file());
    cfg.ovs_db = ovs.db();
    cfg.docker_socket = Some(SOCKET.into());
    let agent = Agent::new(cfg).await.unwrap();
    let watcher = tokio::spawn(weft_agent::events::watch(
        agent.clone(),
        Callback::new(None, None).unwrap(),
    ));

    let vlan = vlan(181);
    agent
        .ensure_segment(vlan, &SegmentSpec::default())
        .await
        .unwrap();
    let id = Uuid::new_v4();
    let spec = AttachmentSpec {
        target: Target::Docker {
            container: c.0.clone(),
        },
        ..pid_spec(0, vlan, "10.0.0.9/24")
    };
    let host = agent
        .ensure_attachment(id, &spec)
        .await
        .unwrap()
        .host_ifname
        .unwrap();
    let vsctl = format!("ovs-vsctl --db={}", ovs.db());
    let on_switch = || sh(&format!("{vsctl} list-ports br-weft")).contains(&host);
    assert!(on_switch());

    sh(&format!("docker stop -t 0 {}", c.0));
    eventually("the stopped container's port to leave the switch", || {
        !on_switch()
    })
    .await;
    assert_eq!(
        agent.state().await.unwrap().attachments.len(),
        1,
        "still desired"
    );

    sh(&format!("docker start {}", c.0));
    eventually("the port back and the container wired", || {
        on_switch()
            && sh_ok(&format!(
                "docker exec {} ip addr show eth0 | grep -q 'inet 10.0.0.9/24'",
                c.0
            ))
    })
    .await;
    watcher.abort();
    agent.remove_attachment(id).await.unwrap();
    assert!(!on_switch());
}
