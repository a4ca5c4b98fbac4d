//! The typed client the central service uses, against a real agent: its request id lands
//! on the agent's log lines for that request, and its errors say whether a retry may help.

use uuid::Uuid;
use weft_agent_api::{Backend, ClientError};

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
