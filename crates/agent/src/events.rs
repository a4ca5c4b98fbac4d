//! Docker events: a wired container that starts again is re-wired at once (same address
//! and MAC, new namespace); deaths and removals are reported to the central service.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Url;
use tracing::{info, warn};
use weft_agent_api::{ContainerEvent, ContainerEventKind, Token};

use crate::agent::Agent;
use crate::docker::{Action, ContainerEvent as DockerEvent};

/// Follows the Docker event stream until the process ends, reconnecting after errors.
pub async fn watch(agent: Arc<Agent>, callback: Callback) {
    let Some(docker) = agent.docker().cloned() else {
        return;
    };
    loop {
        let mut events = std::pin::pin!(docker.events());
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => handle(&agent, &callback, event).await,
                Err(e) => {
                    warn!(error = %e, "docker event stream broke; reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Events may have been missed while disconnected: converge on the desired state.
        if let Err(e) = agent.reapply().await {
            warn!(error = %e, "re-apply after event stream reconnect failed");
        }
    }
}

async fn handle(agent: &Agent, callback: &Callback, event: DockerEvent) {
    for (id, spec) in agent
        .attachments_of_container(&event.id, event.name.as_deref())
        .await
    {
        let kind = match event.action {
            Action::Start => match agent.ensure_attachment(id, &spec).await {
                Ok(_) => {
                    info!(attachment.id = %id, container = %event.id, "container restarted; re-wired");
                    ContainerEventKind::Rewired
                }
                Err(e) => {
                    warn!(attachment.id = %id, error = %e, "re-wiring restarted container failed");
                    continue;
                }
            },
            Action::Die => {
                if let Err(e) = agent.release_host_side(id).await {
                    warn!(attachment.id = %id, error = %e, "releasing the stopped container's host side failed");
                }
                ContainerEventKind::Died
            }
            Action::Destroy => ContainerEventKind::Destroyed,
        };
        callback.send(ContainerEvent {
            attachment: id,
            container: event.id.clone(),
            kind,
        });
    }
}

/// POSTs container events to the central service, retrying in the background.
pub struct Callback {
    target: Option<(Url, Option<Token>)>,
    http: reqwest::Client,
}

impl Callback {
    /// The callback to `url` (none: events are only logged). Fails at start-up when the
    /// HTTP client cannot be built (e.g. no usable TLS backend), not later per event.
    pub fn new(url: Option<Url>, token: Option<Token>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Callback {
            target: url.map(|u| (u, token)),
            http,
        })
    }

    /// Delivers `event` with exponential backoff (1 s doubling to 60 s, 20 tries).
    fn send(&self, event: ContainerEvent) {
        let Some((url, token)) = self.target.clone() else {
            return;
        };
        let http = self.http.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            for attempt in 1..=20 {
                let mut req = http.post(url.clone()).json(&event);
                if let Some(t) = &token {
                    req = req.bearer_auth(t.expose());
                }
                match req.send().await.and_then(|r| r.error_for_status()) {
                    Ok(_) => return,
                    Err(e) => {
                        warn!(attempt, error = %e, url = %url, "container event callback failed; retrying")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            warn!(attachment.id = %event.attachment, "gave up delivering container event");
        });
    }
}
