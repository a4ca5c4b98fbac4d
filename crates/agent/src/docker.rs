//! Docker engine access: container → PID (→ `/proc/<pid>/ns/net`) and container events.

use std::collections::HashMap;
use std::path::Path;

use bollard::query_parameters::EventsOptions;
use futures::{Stream, StreamExt};

use crate::{Error, Result};

/// A container's identity and init process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub id: String,
    pub pid: u32,
}

/// A container lifecycle event the agent reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub action: Action,
    pub id: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Die,
    Destroy,
}

#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
}

impl Docker {
    /// Connects and negotiates the API version (Debian's engine speaks 1.41, older than
    /// bollard's default).
    pub async fn connect(socket: &Path) -> Result<Self> {
        let path = socket.to_string_lossy();
        let client = bollard::Docker::connect_with_unix(&path, 30, bollard::API_DEFAULT_VERSION)
            .map_err(|e| Error::Docker(format!("connect {path}: {e}")))?
            .negotiate_version()
            .await
            .map_err(|e| Error::Docker(format!("negotiate API version on {path}: {e}")))?;
        Ok(Docker { client })
    }

    /// Finds a running container by id or name.
    pub async fn running(&self, container: &str) -> Result<Running> {
        let info = self
            .client
            .inspect_container(container, None)
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => Error::ContainerNotFound(container.to_owned()),
                other => Error::Docker(format!("inspect {container}: {other}")),
            })?;
        let pid = info.state.as_ref().and_then(|s| s.pid).unwrap_or(0);
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        match (info.id, u32::try_from(pid)) {
            (Some(id), Ok(pid)) if running && pid > 0 => Ok(Running { id, pid }),
            _ => Err(Error::ContainerNotRunning(container.to_owned())),
        }
    }

    /// Container start, die and destroy events, as they happen.
    pub fn events(&self) -> impl Stream<Item = Result<ContainerEvent>> + Send + 'static {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "event".to_owned(),
                vec!["start".to_owned(), "die".to_owned(), "destroy".to_owned()],
            ),
        ]);
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        self.client
            .events(Some(options))
            .filter_map(|msg| async move {
                match msg {
                    Err(e) => Some(Err(Error::Docker(format!("event stream: {e}")))),
                    Ok(msg) => {
                        let action = match msg.action.as_deref()? {
                            "start" => Action::Start,
                            "die" => Action::Die,
                            "destroy" => Action::Destroy,
                            _ => return None,
                        };
                        let actor = msg.actor?;
                        let name = actor
                            .attributes
                            .as_ref()
                            .and_then(|a| a.get("name").cloned());
                        Some(Ok(ContainerEvent {
                            action,
                            id: actor.id?,
                            name,
                        }))
                    }
                }
            })
    }
}
