//! The desired state the agent was given, kept in a small JSON file written atomically
//! (temp file, fsync, rename, fsync of the directory) so a crash leaves the old or the
//! new version, never half of one. Actual state is always read from the kernel.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use uuid::Uuid;
use weft_agent_api::{AttachmentSpec, SegmentMode, VlanId};

use crate::config::Naming;
use crate::{Error, Result};

/// A segment as asked for, with the uplink resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredSegment {
    pub mode: SegmentMode,
    pub uplink: String,
}

impl DesiredSegment {
    /// The 802.1Q sub-interface `<uplink>.<vlan>` that regular mode tags frames on.
    pub fn sub_interface(&self, vlan: VlanId) -> Option<String> {
        (self.mode == SegmentMode::Regular).then(|| Naming::sub_interface(&self.uplink, vlan))
    }

    /// The link that carries the segment onto the wire: the sub-interface, or the uplink
    /// itself in untagged mode.
    pub fn carrier(&self, vlan: VlanId) -> String {
        self.sub_interface(vlan)
            .unwrap_or_else(|| self.uplink.clone())
    }
}

/// An attachment as asked for, plus the Docker container id it resolved to (events carry ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredAttachment {
    pub spec: AttachmentSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub segments: BTreeMap<VlanId, DesiredSegment>,
    pub attachments: BTreeMap<Uuid, DesiredAttachment>,
}

/// The state file and its in-memory copy; every change is persisted before it returns.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    desired: Mutex<Desired>,
}

impl StateStore {
    /// Loads the file, or starts empty when it does not exist (first start, or a lost
    /// file: said loudly, since the host may still carry wired containers).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let desired = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::StateFile {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    state_file = %path.display(),
                    "no state file: starting without desired state; links of ours already on \
                     the host stay wired and are listed as unclaimed in /v1/state until the \
                     central service re-applies or deletes their attachments"
                );
                Desired::default()
            }
            Err(source) => return Err(Error::StateFile { path, source }),
        };
        Ok(StateStore {
            path,
            desired: Mutex::new(desired),
        })
    }

    /// A copy of the whole desired state, for walks that await between entries.
    pub async fn snapshot(&self) -> Desired {
        self.desired.lock().await.clone()
    }

    /// Reads from the desired state under its lock, copying only what `f` returns
    /// (requests need one entry, not the whole state).
    pub async fn read<R>(&self, f: impl FnOnce(&Desired) -> R) -> R {
        f(&*self.desired.lock().await)
    }

    /// Applies `change` and persists the result; nothing is written when it returns false.
    pub async fn update(&self, change: impl FnOnce(&mut Desired) -> bool) -> Result<()> {
        let mut desired = self.desired.lock().await;
        let mut next = desired.clone();
        if !change(&mut next) {
            return Ok(());
        }
        let path = self.path.clone();
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| Error::StateFile {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        tokio::task::spawn_blocking(move || {
            write_atomically(&path, &bytes).map_err(|source| Error::StateFile { path, source })
        })
        .await
        .map_err(|e| Error::StateFile {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })??;
        *desired = next;
        Ok(())
    }
}

/// Writes `bytes` to `path` so a crash leaves the old or the new content.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_survive_a_reload_and_no_temp_file_is_left() {
        let dir = std::env::temp_dir().join(format!("weft-state-{}", Uuid::new_v4()));
        let path = dir.join("state.json");
        let store = StateStore::load(&path).unwrap();
        let vlan = VlanId::try_from(181).unwrap();
        let seg = DesiredSegment {
            mode: SegmentMode::Untagged,
            uplink: "eth0".into(),
        };
        store
            .update(|d| d.segments.insert(vlan, seg.clone()).is_none())
            .await
            .unwrap();
        let reloaded = StateStore::load(&path).unwrap().snapshot().await;
        assert_eq!(reloaded.segments.get(&vlan), Some(&seg));
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
