//! Network namespaces: opening them, and doing work inside one from a dedicated thread.
//!
//! `setns` changes only the calling OS thread and a socket stays in the namespace it was
//! created in. So a short-lived thread joins the namespace, opens the sockets the agent
//! needs there and exits; the async code then uses those sockets from any tokio worker.
//! Never `setns` on a tokio worker.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use tokio::sync::oneshot;

use crate::netlink::Netlink;
use crate::{Error, Result};

/// An open network namespace; the fd keeps it alive while we hold it.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    path: PathBuf,
}

impl Netns {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::Netns {
            path: path.clone(),
            source,
        })?;
        Ok(Netns {
            fd: file.into(),
            path,
        })
    }

    pub fn of_pid(pid: u32) -> Result<Self> {
        Self::open(format!("/proc/{pid}/ns/net"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a fresh thread that joined this namespace.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.on_thread(move |joined| {
            let _ = tx.send(joined.map(|()| f()));
        })?;
        let path = self.path.clone();
        let joined = rx.await.map_err(|_| Error::Netns {
            path: path.clone(),
            source: std::io::Error::other("namespace thread ended without answering"),
        })?;
        joined.map_err(|errno| Error::Netns {
            path,
            source: errno.into(),
        })
    }

    /// Starts `f` on a fresh thread that joined this namespace, without waiting for it.
    pub fn spawn<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce() + Send + 'static,
    {
        let path = self.path.clone();
        self.on_thread(move |joined| match joined {
            Ok(()) => f(),
            Err(e) => tracing::warn!(netns = %path.display(), error = %e, "could not enter"),
        })
    }

    /// A fresh thread that tries to join this namespace and hands the outcome to `f`.
    fn on_thread<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(nix::Result<()>) + Send + 'static,
    {
        let fd = self.fd.try_clone().map_err(|source| Error::Netns {
            path: self.path.clone(),
            source,
        })?;
        std::thread::Builder::new()
            .name("weft-netns".into())
            .spawn(move || f(setns(&fd, CloneFlags::CLONE_NEWNET)))
            .map_err(|source| Error::Netns {
                path: self.path.clone(),
                source,
            })?;
        Ok(())
    }

    /// Opens a netlink socket inside this namespace (driven on the current runtime).
    pub async fn netlink(&self) -> Result<Netlink> {
        let rt = tokio::runtime::Handle::current();
        let opened = self
            .run(move || {
                let _guard = rt.enter();
                rtnetlink::new_connection()
            })
            .await?;
        let (conn, handle, _) = opened.map_err(|source| Error::Netns {
            path: self.path.clone(),
            source,
        })?;
        tokio::spawn(conn);
        Ok(Netlink::from_handle(handle))
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
