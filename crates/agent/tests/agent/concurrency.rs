//! Many requests at once against one agent (linux-bridge, untagged), then the invariants a
//! caller relies on: every answered attachment is wired exactly once, the kernel holds
//! exactly the agent's links, and the state file (read by a fresh agent) lists them all.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::join_all;
use uuid::Uuid;
use weft_agent::agent::Agent;
use weft_agent_api::{AttachmentSpec, Backend, VlanId};

use crate::helpers::*;

const CONTAINERS: usize = 50;

fn address(i: usize) -> String {
    format!("10.0.{}.{}/16", i / 200, i % 200 + 10)
}

/// The agent's host veths (`wf<hex>`) in the test's namespace.
fn host_veths() -> BTreeSet<String> {
    sh("ip -o link show type veth")
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .filter(|name| name.starts_with("wf"))
        .collect()
}

/// `n` container namespaces, each with an attachment spec on `vlan_of(i)`.
fn containers_with_specs(
    n: usize,
    vlan_of: impl Fn(usize) -> VlanId,
) -> (Vec<NsProc>, Vec<(Uuid, AttachmentSpec)>) {
    let containers: Vec<NsProc> = (0..n).map(|_| NsProc::new()).collect();
    let specs = containers
        .iter()
        .enumerate()
        .map(|(i, c)| (Uuid::new_v4(), pid_spec(c.pid(), vlan_of(i), &address(i))))
        .collect();
    (containers, specs)
}

/// The ids of the agent's attachments, after checking each is wired and their host ends
/// are exactly the kernel's `wf*` links.
async fn assert_host_ends_match_the_kernel(agent: &Agent) -> BTreeSet<Uuid> {
    let state = agent.state().await.unwrap();
    let hosts: BTreeSet<String> = state
        .attachments
        .iter()
        .map(|a| {
            assert!(a.actual.wired, "{a:?}");
            a.host_ifname.clone().expect("host end")
        })
        .collect();
    assert_eq!(
        host_veths(),
        hosts,
        "kernel and agent disagree on host links"
    );
    state.attachments.iter().map(|a| a.id).collect()
}

#[tokio::test(flavor = "current_thread")]
async fn fifty_parallel_attaches_repeats_and_deletes_leave_one_consistent_state() {
    if !private_netns("agent concurrency") {
        return;
    }
    let _leaf = uplink_with_gateway();
    let state_file = temp_state_file();
    let agent = Agent::new(config(Backend::LinuxBridge, state_file.clone()))
        .await
        .unwrap();
    let vlan = vlan(181);
    agent.ensure_segment(vlan, &untagged()).await.unwrap();

    let (containers, specs) = containers_with_specs(CONTAINERS, |_| vlan);

    // Every attachment at once, the first ten of them three times each.
    let puts = specs
        .iter()
        .chain(specs.iter().take(10))
        .chain(specs.iter().take(10))
        .map(|(id, spec)| agent.ensure_attachment(*id, spec));
    let answers = join_all(puts).await;
    for (i, answer) in answers.iter().enumerate() {
        let att = answer.as_ref().unwrap_or_else(|e| panic!("PUT #{i}: {e}"));
        assert!(att.actual.wired, "PUT #{i}: {att:?}");
    }
    // A repeat answers exactly what the first PUT did.
    for i in 0..10 {
        let first = answers[i].as_ref().ok();
        assert_eq!(first, answers[CONTAINERS + i].as_ref().ok());
        assert_eq!(first, answers[CONTAINERS + 10 + i].as_ref().ok());
    }

    // Delete the last ten while others re-PUT them: a PUT that waited behind the DELETE, and
    // one issued after the DELETE answered, must take turns on the same attachment.
    let churn = specs[CONTAINERS - 10..].iter().map(|(id, spec)| {
        let agent = &agent;
        async move {
            let delete_then_put = async {
                agent.remove_attachment(*id).await?;
                agent.ensure_attachment(*id, spec).await
            };
            let (late, waiting) =
                futures::join!(delete_then_put, agent.ensure_attachment(*id, spec));
            (late, waiting)
        }
    });
    for (late, waiting) in join_all(churn).await {
        let (late, waiting) = (late.unwrap(), waiting.unwrap());
        assert!(
            late.actual.wired && waiting.actual.wired,
            "{late:?} {waiting:?}"
        );
    }

    // Invariants: one host veth per attachment, each container with its one address, and
    // the same set known to a fresh agent reading the state file.
    let expected: BTreeSet<Uuid> = specs.iter().map(|(id, _)| *id).collect();
    assert_eq!(assert_host_ends_match_the_kernel(&agent).await, expected);
    for (i, c) in containers.iter().enumerate() {
        let addrs = c.sh("ip -o -4 addr show dev eth0");
        assert_eq!(addrs.lines().count(), 1, "container {i}: {addrs}");
        assert!(addrs.contains(&address(i)), "container {i}: {addrs}");
    }
    drop(agent);
    let fresh = Agent::new(config(Backend::LinuxBridge, state_file))
        .await
        .unwrap();
    let reread: BTreeSet<Uuid> = fresh
        .state()
        .await
        .unwrap()
        .attachments
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(
        reread, expected,
        "the state file lost or kept an attachment"
    );
}

/// A Docker engine stand-in on a unix socket. It answers the version negotiation and
/// shows one running container per entry of `pids` (named by the key, id = name). While
/// `stall` is set, an inspection first signals `arrived` and then waits for that
/// container's `release`: it keeps a request in flight at a point the test chooses.
struct StandInDocker {
    stall: Arc<std::sync::atomic::AtomicBool>,
    arrived: Arc<tokio::sync::Notify>,
    release: std::collections::HashMap<&'static str, Arc<tokio::sync::Notify>>,
}

impl StandInDocker {
    async fn serve(socket: &std::path::Path, pids: &[(&'static str, u32)]) -> Self {
        let docker = StandInDocker {
            stall: Arc::default(),
            arrived: Arc::default(),
            release: pids.iter().map(|(n, _)| (*n, Arc::default())).collect(),
        };
        let pids: std::collections::HashMap<&'static str, u32> = pids.iter().copied().collect();
        let (stall, arrived, release) = (
            docker.stall.clone(),
            docker.arrived.clone(),
            docker.release.clone(),
        );
        let answer = move |req: actix_web::HttpRequest| {
            let (stall, arrived, release, pids) = (
                stall.clone(),
                arrived.clone(),
                release.clone(),
                pids.clone(),
            );
            async move {
                let json = actix_web::web::Json;
                if req.path().ends_with("/version") {
                    return json(serde_json::json!({"ApiVersion": "1.41"}));
                }
                // /v1.41/containers/<name>/json
                let name = req.path().split('/').rev().nth(1).unwrap_or_default();
                let (Some(pid), Some(release)) = (pids.get(name), release.get(name)) else {
                    return json(serde_json::json!({}));
                };
                if stall.load(std::sync::atomic::Ordering::SeqCst) {
                    arrived.notify_one();
                    release.notified().await;
                }
                json(serde_json::json!({
                    "Id": name, "State": {"Running": true, "Pid": pid}
                }))
            }
        };
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new().default_service(actix_web::web::to(answer.clone()))
        })
        .workers(1)
        .disable_signals()
        .listen_uds(std::os::unix::net::UnixListener::bind(socket).unwrap())
        .unwrap()
        .run();
        tokio::spawn(server);
        docker
    }
}

/// A re-apply (agent start, Docker reconnect) sweeps what of ours can no longer carry
/// traffic, never a live link of ours: neither one no attachment claims (listed as
/// unclaimed) nor one of an attachment being wired meanwhile, which is not in the state
/// file yet. Made deterministic with a Docker stand-in: the re-apply is held while it
/// checks attachment `y`, a PUT of `x` starts and is held at its own Docker inspection
/// with a link under its name in place, then `y` is let go and the re-apply sweeps.
#[tokio::test(flavor = "current_thread")]
async fn reapply_keeps_the_links_of_an_attachment_being_wired() {
    if !private_netns("agent reapply during an attach") {
        return;
    }
    let _leaf = uplink_with_gateway();
    let (cx, cy) = (NsProc::new(), NsProc::new());
    let state_file = temp_state_file();
    let socket = state_file.with_file_name("docker.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let docker = StandInDocker::serve(&socket, &[("x", cx.pid()), ("y", cy.pid())]).await;
    let mut cfg = config(Backend::LinuxBridge, state_file);
    cfg.docker_socket = Some(socket);
    let naming = cfg.naming.clone();
    let agent = Agent::new(cfg).await.unwrap();
    let vlan = vlan(181);
    agent.ensure_segment(vlan, &untagged()).await.unwrap();
    let docker_spec = |name: &str, i| AttachmentSpec {
        target: weft_agent_api::Target::Docker {
            container: name.into(),
        },
        ..pid_spec(0, vlan, &address(i))
    };
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    agent
        .ensure_attachment(y, &docker_spec("y", 1))
        .await
        .unwrap();

    docker
        .stall
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let unclaimed = Uuid::new_v4();
    let (busy, orphan) = (naming.host_veth(x), naming.host_veth(unclaimed));
    let x_spec = docker_spec("x", 0);
    let reapplied = tokio::sync::Notify::new();
    let reapply = async {
        agent.reapply().await.unwrap();
        reapplied.notify_one();
    };
    let put_x_during_it = async {
        docker.arrived.notified().await; // the re-apply is at y
        let put = agent.ensure_attachment(x, &x_spec);
        let steer = async {
            docker.arrived.notified().await; // the PUT of x is in flight
            sh(&format!(
                "ip link add {busy} type veth peer name busypeer && ip link set {busy} alias weft-attachment={x}"
            ));
            sh(&format!(
                "ip link add {orphan} type veth peer name orphanpeer && ip link set {orphan} alias weft-attachment={unclaimed}"
            ));
            docker.release["y"].notify_one();
            reapplied.notified().await;
            assert!(
                link_line(&orphan).is_some(),
                "a re-apply swept an unclaimed link"
            );
            assert!(
                link_line(&busy).is_some(),
                "a re-apply swept the link of an attachment being wired"
            );
            docker.release["x"].notify_one();
        };
        futures::join!(put, steer).0
    };
    let ((), put) = futures::join!(reapply, put_x_during_it);
    // The PUT found its half-made link and wired x from scratch.
    assert!(put.unwrap().actual.wired);
    docker
        .stall
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let state = agent.state().await.unwrap();
    assert_eq!(
        state.unclaimed,
        vec![weft_agent_api::UnclaimedLink {
            attachment: unclaimed,
            host_ifname: orphan.clone()
        }]
    );
    // A DELETE of the unclaimed attachment removes its link.
    agent.remove_attachment(unclaimed).await.unwrap();
    assert!(link_line(&orphan).is_none());
    assert_eq!(assert_host_ends_match_the_kernel(&agent).await.len(), 2);
}

/// Segments under concurrent requests: the same segment asked three times at once is built
/// once and answered alike, and an uplink carries one untagged segment, a second being
/// refused before anything is built for it.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_segment_requests_build_one_segment_per_uplink() {
    if !private_netns("agent segment races") {
        return;
    }
    let _leaf = uplink_with_gateway();
    let agent = Agent::new(config(Backend::LinuxBridge, temp_state_file()))
        .await
        .unwrap();
    let untagged = untagged();
    for i in 0..10 {
        let v = vlan(101 + i);
        let (a, b, c) = futures::join!(
            agent.ensure_segment(v, &untagged),
            agent.ensure_segment(v, &untagged),
            agent.ensure_segment(v, &untagged)
        );
        let a = a.unwrap_or_else(|e| panic!("VLAN {v}: {e}"));
        assert!(a.ready, "{a:?}");
        assert_eq!(Some(&a), b.as_ref().ok(), "VLAN {v}");
        assert_eq!(Some(&a), c.as_ref().ok(), "VLAN {v}");
        // The uplink is this segment's now: another untagged VLAN on it is a conflict,
        // refused before anything is built for it.
        assert!(matches!(
            agent.ensure_segment(vlan(201 + i), &untagged).await,
            Err(weft_agent::Error::Conflict(_))
        ));
        assert!(
            link_line(&format!("wbr{}", 201 + i)).is_none(),
            "refused, yet built"
        );
        agent.remove_segment(v).await.unwrap();
    }
}

/// A segment removal waits for an attachment being wired onto it, then refuses (the
/// attachment uses the segment): an attachment answered wired always has its segment.
/// Steered with a Docker stand-in that holds the attach at its container inspection.
#[tokio::test(flavor = "current_thread")]
async fn segment_removal_waits_for_an_attachment_being_wired() {
    if !private_netns("agent segment removal during an attach") {
        return;
    }
    let _leaf = uplink_with_gateway();
    let container = NsProc::new();
    let state_file = temp_state_file();
    let socket = state_file.with_file_name("docker.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let docker = StandInDocker::serve(&socket, &[("c", container.pid())]).await;
    let mut cfg = config(Backend::LinuxBridge, state_file);
    cfg.docker_socket = Some(socket);
    let agent = Agent::new(cfg).await.unwrap();
    let vlan = vlan(181);
    agent.ensure_segment(vlan, &untagged()).await.unwrap();
    let spec = AttachmentSpec {
        target: weft_agent_api::Target::Docker {
            container: "c".into(),
        },
        ..pid_spec(0, vlan, &address(0))
    };

    docker
        .stall
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let attach = agent.ensure_attachment(Uuid::new_v4(), &spec);
    let remove_meanwhile = async {
        docker.arrived.notified().await; // the attach is in flight
        let removal = agent.remove_segment(vlan);
        tokio::pin!(removal);
        let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut removal);
        assert!(
            early.await.is_err(),
            "the segment was removed under an attachment being wired"
        );
        docker.release["c"].notify_one();
        removal.await
    };
    let (attached, removed) = futures::join!(attach, remove_meanwhile);
    assert!(attached.unwrap().actual.wired);
    assert!(
        matches!(removed, Err(weft_agent::Error::Conflict(_))),
        "{removed:?}"
    );
    docker
        .stall
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let state = agent.state().await.unwrap();
    assert!(state.segments.iter().any(|s| s.vlan == vlan && s.ready));
    assert_eq!(assert_host_ends_match_the_kernel(&agent).await.len(), 1);
}

/// The OVS backend under the same load, on two VLANs: afterwards the switch holds exactly
/// one access port per attachment, tagged with its VLAN and marked with its id, and
/// concurrent detaches leave only the trunk and no veth.
#[tokio::test(flavor = "current_thread")]
async fn fifty_parallel_ovs_attaches_give_one_tagged_port_each() {
    if !private_netns("agent concurrency (ovs)") {
        return;
    }
    if let Some(reason) = weft_agent::bench::PrivateOvs::unavailable() {
        eprintln!("SKIPPED: agent concurrency (ovs): {reason}");
        return;
    }
    let ovs = weft_agent::bench::PrivateOvs::start().unwrap();
    sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
    let _leaf = uplink_with_leaf();
    let mut cfg = config(Backend::Ovs, temp_state_file());
    cfg.ovs_db = ovs.db();
    let agent = Agent::new(cfg).await.unwrap();
    let vlans = [vlan(181), vlan(182)];
    for v in vlans {
        agent
            .ensure_segment(v, &weft_agent_api::SegmentSpec::default())
            .await
            .unwrap();
    }
    let (_containers, specs) = containers_with_specs(CONTAINERS, |i| vlans[i % 2]);

    let answers = join_all(
        specs
            .iter()
            .map(|(id, spec)| agent.ensure_attachment(*id, spec)),
    )
    .await;
    let vsctl = format!("ovs-vsctl --db={}", ovs.db());
    for ((id, spec), answer) in specs.iter().zip(answers) {
        let att = answer.unwrap();
        assert!(att.actual.wired, "{att:?}");
        let port = att.host_ifname.expect("host end");
        let row = sh(&format!("{vsctl} get Port {port} tag external_ids"));
        assert!(
            row.starts_with(&spec.vlan.get().to_string()) && row.contains(&id.to_string()),
            "{port}: {row}"
        );
    }
    let ports = sh(&format!("{vsctl} list-ports br-weft"));
    assert_eq!(ports.lines().count(), CONTAINERS + 1, "{ports}");

    for answer in join_all(specs.iter().map(|(id, _)| agent.remove_attachment(*id))).await {
        answer.unwrap();
    }
    assert_eq!(sh(&format!("{vsctl} list-ports br-weft")).trim(), "upl0");
    assert!(host_veths().is_empty(), "{:?}", host_veths());
}
