//! The agent's error type; the HTTP layer maps it to problem+json.

use std::path::PathBuf;

use weft_agent_api::Vlan;

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
    #[error("container {0} is not running")]
    ContainerNotRunning(String),
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("open vswitch: {0}")]
    Ovs(#[from] weft_ovsdb::Error),
    #[error("no segment for VLAN {0} on this host; PUT /v1/segments/{0} first")]
    SegmentMissing(Vlan),
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

    pub fn into_result(mut self) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(Error::List(self.0)),
        }
    }
}
