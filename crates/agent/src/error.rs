//! The agent's error type; the HTTP layer maps it to problem+json.

use std::path::PathBuf;

use weft_agent_api::VlanId;

use crate::netlink::NetlinkError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no link named {0}")]
    NoSuchLink(String),
    #[error("docker: {0}")]
    Docker(String),
    /// A Docker target on an agent started without a Docker socket (a setting, not an outage).
    #[error("Docker targets need the agent's Docker socket (WEFT_AGENT_DOCKER_SOCKET is empty)")]
    DockerDisabled,
    #[error("container {0} is not running")]
    ContainerNotRunning(String),
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("open vswitch: {0}")]
    Ovs(#[from] weft_ovsdb::Error),
    #[error("no segment for VLAN {0} on this host; PUT /v1/segments/{0} first")]
    SegmentMissing(VlanId),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("state file {path}: {source}")]
    StateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Several independent failures (teardown keeps going and reports them all).
    #[error("{} failures: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    List(Vec<Error>),
}

/// Collects failures of steps that must all be attempted.
#[derive(Debug, Default)]
pub struct ErrorList(Vec<Error>);

impl ErrorList {
    /// Records the error of `r`, if any, and carries on.
    pub fn keep<T>(&mut self, r: Result<T, impl Into<Error>>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                let e = e.into();
                tracing::warn!(error = %e, "teardown step failed; continuing");
                self.0.push(e);
                None
            }
        }
    }

    /// Ok when nothing failed, the error itself for one failure, [`Error::List`] for more.
    pub fn into_result(mut self) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(Error::List(self.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_list_keeps_going_and_reports_every_failure() {
        let mut errors = ErrorList::default();
        assert_eq!(errors.keep(Ok::<_, Error>(1)), Some(1));
        errors.keep(Err::<(), _>(Error::NoSuchLink("a".into())));
        errors.keep(Err::<(), _>(Error::Invalid("b".into())));
        match errors.into_result() {
            Err(Error::List(list)) => assert_eq!(list.len(), 2),
            other => panic!("expected both failures, got {other:?}"),
        }
        assert!(ErrorList::default().into_result().is_ok());
    }
}
