//! Docker events: a wired container that starts again is re-wired at once (same address
//! and MAC, new namespace); deaths and removals are reported to the central service.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Url;
use tokio::sync::mpsc;
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

/// POSTs container events to the central service in the order they happened (a container's
/// `died` must not arrive after its `destroyed`), retrying each in the background.
pub struct Callback {
    queue: Option<mpsc::UnboundedSender<ContainerEvent>>,
}

impl Callback {
    /// The callback to `url` (none: events are only logged), with its delivery task. Fails at
    /// start-up when the HTTP client cannot be built (e.g. no usable TLS backend), not later
    /// per event.
    pub fn new(url: Option<Url>, token: Option<Token>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let queue = url.map(|url| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(deliver(http, url, token, rx));
            tx
        });
        Ok(Callback { queue })
    }

    fn send(&self, event: ContainerEvent) {
        if let Some(queue) = &self.queue {
            // Fails only when the delivery task is gone, i.e. the runtime is shutting down.
            let _ = queue.send(event);
        }
    }
}

/// Delivers queued events one after the other, each with exponential backoff (1 s doubling to
/// 60 s, 20 tries) before the next is sent.
async fn deliver(
    http: reqwest::Client,
    url: Url,
    token: Option<Token>,
    mut queue: mpsc::UnboundedReceiver<ContainerEvent>,
) {
    while let Some(event) = queue.recv().await {
        let mut delay = Duration::from_secs(1);
        let mut delivered = false;
        for attempt in 1..=20 {
            let mut req = http.post(url.clone()).json(&event);
            if let Some(t) = &token {
                req = req.bearer_auth(t.expose());
            }
            match req.send().await.and_then(|r| r.error_for_status()) {
                Ok(_) => {
                    delivered = true;
                    break;
                }
                // Refused for good (a wrong token, a bad request): retrying would only hold
                // back the events queued behind it.
                Err(e) if e.status().is_some_and(refused_for_good) => {
                    warn!(error = %e, url = %url, "container event refused by the central service");
                    break;
                }
                Err(e) => {
                    warn!(attempt, error = %e, url = %url, "container event callback failed; retrying")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(60));
        }
        if !delivered {
            warn!(attachment.id = %event.attachment, "gave up delivering container event");
        }
    }
}

/// A 4xx other than a timeout or a rate limit.
fn refused_for_good(status: reqwest::StatusCode) -> bool {
    status.is_client_error()
        && status != reqwest::StatusCode::REQUEST_TIMEOUT
        && status != reqwest::StatusCode::TOO_MANY_REQUESTS
}
