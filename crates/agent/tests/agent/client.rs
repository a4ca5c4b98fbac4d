//! The typed client the central service uses, against a real agent: its request id lands
//! on the agent's log lines for that request, its errors say whether a retry may help, and
//! `resolve` finds a container without changing anything.

use uuid::Uuid;
use weft_agent_api::{Backend, ClientError, Problem, Target};

use crate::helpers::*;

#[tokio::test(flavor = "current_thread")]
async fn request_id_reaches_the_agent_log_and_errors_say_whether_to_retry() {
    if !private_netns("agent client") {
        return;
    }
    let captured = Captured::debug_log();

    let container = NsProc::new();
    let (client, _) = serve(start_agent(Backend::LinuxBridge).await).await;
    let traced = client.with_request_id("central-req-7");
    // No segment 181 on this host: refused with 409, and the same call will not succeed
    // later on its own.
    let spec = pid_spec(container.pid(), vlan(181), "10.0.0.9/24");
    let err = traced
        .ensure_attachment(Uuid::new_v4(), &spec)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { status, problem }
            if *status == 409 && problem.kind == "urn:weft:agent:segment-missing"),
        "{err:?}"
    );
    assert!(!err.is_transient(), "{err:?}");
    let log = captured.text();
    assert!(
        log.lines()
            .any(|l| l.contains("request.id=central-req-7") && l.contains("/v1/attachments/")),
        "request id missing from the agent log:\n{log}"
    );
    // Calls from a client without an id get one of the agent's own.
    client.state().await.unwrap();
    let state_line = captured
        .text()
        .lines()
        .find(|l| l.contains("uri=/v1/state"))
        .map(str::to_owned)
        .expect("GET /v1/state logged");
    assert!(!state_line.contains("central-req-7"), "{state_line}");

    // An agent that is down: a transport error, worth retrying.
    let (_, down) = free_port_and_client();
    let err = down.state().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Transport { .. }) && err.is_transient(),
        "{err:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn resolve_finds_a_target_and_names_one_it_cannot_wire() {
    if !private_netns("agent resolve") {
        return;
    }
    let container = NsProc::new();
    let (client, base) = serve(start_agent(Backend::LinuxBridge).await).await;
    let ns = format!("/proc/{}/ns/net", container.pid());
    for target in [
        Target::Pid {
            pid: container.pid(),
        },
        Target::Netns { path: ns.clone() },
    ] {
        let found = client.resolve(&target).await.unwrap();
        assert_eq!((found.target, found.netns.as_str()), (target, ns.as_str()));
        assert_eq!(found.container_id, None);
    }

    // Missing, or a file that is no namespace (it opens, but cannot be joined): 422 naming it.
    let gone = format!("/run/netns/weft-gone-{}", Uuid::new_v4().simple());
    for (target, kind) in [
        (Target::Netns { path: gone.clone() }, "netns"),
        (
            Target::Netns {
                path: "/etc/passwd".into(),
            },
            "netns",
        ),
        (
            Target::Docker {
                container: "web1".into(),
            },
            "docker-disabled",
        ),
    ] {
        let err = client.resolve(&target).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Api { status, problem }
                if *status == 422 && problem.kind == format!("urn:weft:agent:{kind}")),
            "{target:?}: {err:?}"
        );
        assert!(!err.is_transient());
    }
    assert!(client.state().await.unwrap().attachments.is_empty());

    // Exactly one kind of target per query.
    let http = reqwest::Client::new();
    for query in ["", "?pid=1&netns=/run/netns/x", "?pid=x", "?vm=1"] {
        let r = http
            .get(format!("{base}v1/target{query}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let problem: Problem = r.json().await.unwrap();
        assert_eq!(problem.kind, "urn:weft:agent:invalid", "{query}");
    }
}
