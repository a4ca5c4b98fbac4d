//! The real `weft-agent` binary: configured from the environment, killed with SIGKILL and
//! started again on the same state file, without losing or duplicating anything.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use uuid::Uuid;
use weft_agent_api::AgentClient;

use crate::helpers::*;

struct Daemon(Child);

impl Daemon {
    fn start(port: u16, state_file: &std::path::Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_weft-agent"))
            .env("WEFT_AGENT_TOKEN", TOKEN)
            .env("WEFT_AGENT_LISTEN", format!("127.0.0.1:{port}"))
            .env("WEFT_AGENT_UPLINKS", "upl0")
            .env("WEFT_AGENT_STATE_FILE", state_file)
            .env("WEFT_AGENT_DOCKER_SOCKET", "")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn ready(client: &AgentClient) {
    for _ in 0..100 {
        if client.health().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("weft-agent did not come up");
}

#[tokio::test(flavor = "current_thread")]
async fn killed_agent_restarts_with_nothing_lost_or_duplicated() {
    if !private_netns("agent binary restart") {
        return;
    }
    let _leaf = uplink_with_gateway();
    let container = NsProc::new();
    let (port, client) = free_port_and_client();
    let state_file = temp_state_file();

    let daemon = Daemon::start(port, &state_file);
    ready(&client).await;
    let vlan = vlan(181);
    client.ensure_segment(vlan, &untagged()).await.unwrap();
    let id = Uuid::new_v4();
    let spec = pid_spec(container.pid(), vlan, "10.0.0.8/24");
    let att = client.ensure_attachment(id, &spec).await.unwrap();
    let host = att.host_ifname.clone().unwrap();
    let before = (ifindex(&host), ifindex("wbr181"));
    drop(daemon); // SIGKILL

    let _daemon = Daemon::start(port, &state_file);
    ready(&client).await;
    let state = client.state().await.unwrap();
    assert_eq!(state.attachments, vec![att]);
    assert!(state.segments.len() == 1 && state.segments[0].ready);
    assert_eq!(
        (ifindex(&host), ifindex("wbr181")),
        before,
        "restart re-created links"
    );
    assert_eq!(sh("ip -o link show").matches(": wf").count(), 1);
    assert_eq!(
        container
            .sh("ip -o addr show dev eth0")
            .matches("inet ")
            .count(),
        1
    );
    assert!(container.sh_ok("ping -c1 -W2 10.0.0.1"));
}

/// `docker stop` and systemd stop with SIGTERM: the agent finishes and exits cleanly
/// instead of dying on the signal.
#[tokio::test(flavor = "current_thread")]
async fn sigterm_stops_the_agent_cleanly() {
    if !private_netns("agent binary SIGTERM") {
        return;
    }
    let _leaf = uplink_with_gateway();
    let (port, client) = free_port_and_client();
    let mut daemon = Daemon::start(port, &temp_state_file());
    ready(&client).await;
    sh(&format!("kill -TERM {}", daemon.0.id()));
    for _ in 0..200 {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            assert!(status.success(), "the agent died on SIGTERM: {status}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the agent did not stop on SIGTERM");
}
