//! linux-bridge backend, untagged mode (this kernel has no 802.1Q), driven over HTTP.

use uuid::Uuid;
use weft_agent::agent::Agent;
use weft_agent::config::Naming;
use weft_agent_api::{
    AgentClient, AttachmentSpec, Backend, ClientError, Mtu, SegmentMode, SegmentSpec, Token,
    UnclaimedLink,
};

use crate::helpers::*;

fn spec(pid: u32, addr: &str) -> AttachmentSpec {
    AttachmentSpec {
        mtu: Some(Mtu::new(1400).unwrap()),
        ..pid_spec(pid, vlan(181), addr)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn attached_namespace_reaches_the_gateway_across_the_bridge_and_announces_itself() {
    if !private_netns("linux-bridge attach") {
        return;
    }
    let leaf = uplink_with_gateway();
    let container = NsProc::new();
    let (client, _) = serve(start_agent(Backend::LinuxBridge).await).await;
    let vlan = vlan(181);

    // Attaching before the segment exists is refused with a problem document.
    let id = Uuid::new_v4();
    let spec = spec(container.pid(), "10.0.0.5/24");
    match client.ensure_attachment(id, &spec).await {
        Err(ClientError::Api { status, problem }) => {
            assert_eq!(status, 409);
            assert_eq!(problem.kind, "urn:weft:agent:segment-missing");
        }
        other => panic!("expected segment-missing, got {other:?}"),
    }

    let seg = client.ensure_segment(vlan, &untagged()).await.unwrap();
    assert!(seg.ready, "{seg:?}");
    assert!(link_line("upl0").unwrap().contains("master wbr181"));
    // The same segment again is fine; another mode for it is a conflict.
    assert_eq!(client.ensure_segment(vlan, &untagged()).await.unwrap(), seg);
    let regular = SegmentSpec {
        mode: SegmentMode::Regular,
        ..untagged()
    };
    assert!(matches!(client.ensure_segment(vlan, &regular).await,
            Err(ClientError::Api { status, problem }) if status == 409 && problem.kind == "urn:weft:agent:conflict"));

    let att = client.ensure_attachment(id, &spec).await.unwrap();
    assert!(att.actual.wired, "{att:?}");
    let host = att.host_ifname.clone().unwrap();
    assert!(link_line(&host).unwrap().contains("master wbr181"));
    assert_quiet_host_links(&container, &[&host, "wbr181"]);

    // The gratuitous ARP reached the leaf before any traffic did.
    assert!(
        leaf.learns("10.0.0.5", "far0", "02:57:0a:00:00:05"),
        "leaf did not learn the endpoint from the GARP"
    );
    // The kernel's first announcement can be lost while the bridge port comes up, so the
    // agent announces twice more within half a second: a leaf that forgot the entry (the
    // container has sent nothing else) learns it again.
    leaf.sh("ip neigh flush dev far0");
    assert!(
        leaf.learns("10.0.0.5", "far0", "02:57:0a:00:00:05"),
        "no follow-up gratuitous ARP after the kernel's own"
    );

    let inside = container.sh("ip -o addr show dev eth0; ip -o link show dev eth0; ip route");
    assert!(inside.contains("inet 10.0.0.5/24"), "{inside}");
    assert!(inside.contains("link/ether 02:57:0a:00:00:05"), "{inside}");
    assert!(inside.contains("mtu 1400"), "{inside}");
    assert!(inside.contains("default via 10.0.0.1 dev eth0"), "{inside}");
    assert!(
        container.sh_ok("ping -c1 -W2 10.0.0.1"),
        "gateway unreachable across the bridge"
    );

    // Repeating the PUT changes nothing: same host link, one address.
    let before = ifindex(&host);
    let again = client.ensure_attachment(id, &spec).await.unwrap();
    assert_eq!(again, att);
    assert_eq!(ifindex(&host), before);
    assert_eq!(
        container
            .sh("ip -o addr show dev eth0")
            .matches("inet ")
            .count(),
        1
    );

    // A different spec under the same id is a conflict, not a silent rewire.
    let mut other = spec.clone();
    other.address = "10.0.0.6/24".parse().unwrap();
    assert!(
        matches!(client.ensure_attachment(id, &other).await, Err(ClientError::Api { status, .. }) if status == 409)
    );

    let state = client.state().await.unwrap();
    assert_eq!(state.attachments, vec![att]);
    assert!(state.segments[0].ready);
    assert!(state.uplinks[0].present && state.uplinks[0].up);

    // The segment cannot go while an attachment uses it.
    assert!(matches!(client.remove_segment(vlan).await,
            Err(ClientError::Api { status, problem }) if status == 409 && problem.kind == "urn:weft:agent:conflict"));
    client.remove_attachment(id).await.unwrap();
    assert!(link_line(&host).is_none());
    assert!(!container.sh_ok("ip link show dev eth0"));
    client.remove_attachment(id).await.unwrap();

    client.remove_segment(vlan).await.unwrap();
    assert!(link_line("wbr181").is_none());
    let upl = link_line("upl0").expect("the uplink itself is never deleted");
    assert!(!upl.contains("master"), "{upl}");
    client.remove_segment(vlan).await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn api_rejects_requests_without_the_token() {
    if !private_netns("agent api auth") {
        return;
    }
    let (client, base) = serve(start_agent(Backend::LinuxBridge).await).await;
    assert_eq!(client.health().await.unwrap().status, "ok");
    let intruder = AgentClient::new(base.parse().unwrap(), Token::new("wrong")).unwrap();
    match intruder.state().await {
        Err(ClientError::Api { status, problem }) => {
            assert_eq!(status, 401);
            assert_eq!(problem.kind, "urn:weft:agent:unauthorized");
        }
        other => panic!("expected 401, got {other:?}"),
    }
    // Every operation the OpenAPI document marks protected documents 401 and answers it.
    let doc = weft_agent::http::openapi();
    let http = reqwest::Client::new();
    let mut protected = 0;
    for (path, item) in &doc.paths.paths {
        let ops = [
            (reqwest::Method::GET, &item.get),
            (reqwest::Method::PUT, &item.put),
            (reqwest::Method::DELETE, &item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_ref().filter(|op| op.security.is_none()) else {
                continue;
            };
            assert!(
                op.responses.responses.contains_key("401"),
                "{method} {path}"
            );
            let url = format!("{base}{}", path.trim_start_matches('/'))
                .replace("{vlan}", "181")
                .replace("{id}", &Uuid::new_v4().to_string());
            let resp = http.request(method.clone(), url).send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path}");
            protected += 1;
        }
    }
    assert_eq!(
        protected, 6,
        "GET state and target, PUT/DELETE segments and attachments"
    );
    // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` is as good as `Bearer`.
    for scheme in ["bearer", "BEARER"] {
        let resp = http
            .get(format!("{base}v1/state"))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{scheme}");
    }
    // The caller's request id comes back (and is on the agent's log span).
    let resp = http
        .get(format!("{base}healthz"))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-42");
    // Malformed input is answered with problem documents too.
    for (path, body) in [
        ("v1/segments/4095", "{}"),
        ("v1/segments/181", "{\"mode\":\"sideways\"}"),
    ] {
        let resp = http
            .put(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error(), "{path}: {}", resp.status());
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let problem: weft_agent_api::Problem = resp.json().await.unwrap();
        assert_eq!(problem.kind, "urn:weft:agent:invalid");
    }
}

/// A restart recognises the agent's links by name and owner mark: its attachment's are
/// kept as they are, one of an attachment it has no record of (a crash before the state
/// file was written) stays wired and is reported until a DELETE, and a link that merely
/// looks like one of ours is never touched.
#[tokio::test(flavor = "current_thread")]
async fn restarted_agent_keeps_attachments_and_touches_only_its_own_links() {
    if !private_netns("linux-bridge restart") {
        return;
    }
    let _leaf = uplink_with_gateway();
    let container = NsProc::new();
    let state_file = temp_state_file();
    let vlan = vlan(181);
    let id = Uuid::new_v4();
    let spec = spec(container.pid(), "10.0.0.7/24");
    let host = {
        let agent = Agent::new(config(Backend::LinuxBridge, state_file.clone()))
            .await
            .unwrap();
        agent.ensure_segment(vlan, &untagged()).await.unwrap();
        agent
            .ensure_attachment(id, &spec)
            .await
            .unwrap()
            .host_ifname
            .unwrap()
    };
    let before = ifindex(&host).unwrap();
    // Left behind by a crash mid-attach (our name and mark), and somebody else's links:
    // one named like ours without our mark, one not named like ours.
    let crashed = Uuid::new_v4();
    let crashed_host = Naming::default().host_veth(crashed);
    sh(&format!(
        "ip link add {crashed_host} type veth peer name crashpeer && ip link set {crashed_host} alias weft-attachment={crashed}"
    ));
    sh("ip link add wf0123456789abc type veth peer name lookalike");
    sh("ip link add wfnotours type veth peer name otherpeer");

    let agent = Agent::new(config(Backend::LinuxBridge, state_file))
        .await
        .unwrap();
    agent.reapply().await.unwrap();
    assert_eq!(
        ifindex(&host),
        Some(before),
        "re-apply must not re-create a healthy attachment"
    );
    let state = agent.state().await.unwrap();
    assert_eq!(state.attachments.len(), 1);
    assert!(state.attachments[0].actual.wired);
    assert!(container.sh_ok("ping -c1 -W2 10.0.0.1"));
    assert_eq!(
        state.unclaimed,
        vec![UnclaimedLink {
            attachment: crashed,
            host_ifname: crashed_host.clone()
        }]
    );
    assert!(
        link_line(&crashed_host).is_some(),
        "an unclaimed link was removed"
    );
    agent.remove_attachment(crashed).await.unwrap();
    assert!(
        link_line(&crashed_host).is_none(),
        "a DELETE left the unclaimed link"
    );
    for foreign in ["wf0123456789abc", "wfnotours"] {
        assert!(
            link_line(foreign).is_some(),
            "the agent deleted {foreign}, a link it did not create"
        );
    }
}

/// A network namespace given by path (runtimes other than Docker: `ip netns`, CNI, crun):
/// wired, reaches the gateway, and leaves nothing behind; a path that is no namespace is
/// refused without touching the host.
#[tokio::test(flavor = "current_thread")]
async fn netns_path_target_is_wired_and_a_bad_path_is_refused() {
    if !private_netns("linux-bridge netns path") {
        return;
    }
    let _leaf = uplink_with_gateway();
    let name = format!("weftt-{}", &Uuid::new_v4().simple().to_string()[..8]);
    sh(&format!("ip netns add {name}"));
    let agent = start_agent(Backend::LinuxBridge).await;
    let vlan = vlan(181);
    agent.ensure_segment(vlan, &untagged()).await.unwrap();
    let spec = AttachmentSpec {
        target: weft_agent_api::Target::Netns {
            path: format!("/run/netns/{name}"),
        },
        ..spec(0, "10.0.0.8/24")
    };
    let id = Uuid::new_v4();
    let att = agent.ensure_attachment(id, &spec).await;
    let inside = |cmd: &str| sh_ok(&format!("ip netns exec {name} {cmd}"));
    let checks = att.as_ref().map(|a| a.actual.wired).unwrap_or(false)
        && inside("ip addr show eth0 | grep -q 'inet 10.0.0.8/24'")
        && inside("ping -c1 -W2 10.0.0.1");
    let removed = agent.remove_attachment(id).await;
    let left = inside("ip link show eth0");
    sh(&format!("ip netns del {name}"));
    assert!(checks, "netns target not wired: {att:?}");
    removed.unwrap();
    assert!(!left, "eth0 left in the namespace");

    let bad = AttachmentSpec {
        target: weft_agent_api::Target::Netns {
            path: "/proc/self/status".into(),
        },
        ..spec
    };
    let refused = agent.ensure_attachment(Uuid::new_v4(), &bad).await;
    // Error::Netns: the API answers 422.
    assert!(
        matches!(refused, Err(weft_agent::Error::Netns { .. })),
        "{refused:?}"
    );
    assert!(
        !sh("ip -o link show").contains(": wf"),
        "a refused attach left a host link"
    );
}
