//! The agent's operations, shared by the HTTP API, start-up re-apply and Docker events.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::sync::Arc;

use tokio::sync::{Mutex, RwLock};
use tracing::{info, instrument, warn};
use uuid::Uuid;
use weft_agent_api::{
    AgentState, Attachment, AttachmentSpec, ResolvedTarget, Segment, SegmentMode, SegmentSpec,
    Target, UnclaimedLink, Uplink, Versions, VlanId, API_VERSION,
};

use crate::backend::{self, Backend, ContainerIf, HostSide};
use crate::config::Config;
use crate::container;
use crate::docker::Docker;
use crate::error::ErrorList;
use crate::garp;
use crate::netlink::{ContainerEnd, Netlink};
use crate::state::{DesiredAttachment, DesiredSegment, StateStore};
use crate::{Error, Result};

pub struct Agent {
    config: Config,
    host: Netlink,
    backend: Box<dyn Backend>,
    store: StateStore,
    docker: Option<Docker>,
    /// One lock per attachment id, so concurrent PUT/DELETE of the same id serialise
    /// while different attachments proceed in parallel.
    locks: Mutex<HashMap<Uuid, Arc<Mutex<()>>>>,
    /// Segment changes are exclusive (rare, and two of them can compete for one uplink);
    /// wiring an attachment shares it, so a segment cannot go away under one being wired.
    segments_lock: RwLock<()>,
}

impl Agent {
    /// Opens the host netlink socket in the calling thread's namespace, the backend, the
    /// state file and (when configured) Docker.
    pub async fn new(config: Config) -> Result<Arc<Self>> {
        config
            .naming
            .validate(&config.uplinks)
            .map_err(Error::Invalid)?;
        let host = Netlink::connect().map_err(|source| Error::Netns {
            path: "host".into(),
            source,
        })?;
        let backend = backend::from_config(&config, host.clone()).await?;
        let store = StateStore::load(&config.state_file)?;
        let docker = match &config.docker_socket {
            Some(path) => match Docker::connect(path).await {
                Ok(d) => Some(d),
                // A host without Docker still serves PID and netns targets.
                Err(e) => {
                    warn!(error = %e, "Docker unavailable; Docker targets and re-wiring are off");
                    None
                }
            },
            None => None,
        };
        Ok(Arc::new(Agent {
            config,
            host,
            backend,
            store,
            docker,
            locks: Mutex::default(),
            segments_lock: RwLock::default(),
        }))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn docker(&self) -> Option<&Docker> {
        self.docker.as_ref()
    }

    pub fn versions(&self) -> Versions {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Versions {
            agent: env!("CARGO_PKG_VERSION").into(),
            api: API_VERSION.into(),
            kernel: kernel.trim().into(),
        }
    }

    #[instrument(skip(self, spec), fields(vlan.id = %vlan))]
    pub async fn ensure_segment(&self, vlan: VlanId, spec: &SegmentSpec) -> Result<Segment> {
        let uplink = match &spec.uplink {
            Some(u) if self.config.uplinks.contains(u) => u.clone(),
            Some(u) => {
                return Err(Error::Invalid(format!(
                    "{u} is not one of this agent's uplinks"
                )))
            }
            None => self
                .config
                .uplinks
                .first()
                .cloned()
                .ok_or_else(|| Error::Invalid("agent has no uplink".into()))?,
        };
        let want = DesiredSegment {
            mode: spec.mode,
            uplink,
        };
        let _held = self.segments_lock.write().await;
        let differs = self
            .store
            .read(|d| d.segments.get(&vlan).is_some_and(|e| *e != want))
            .await;
        if differs {
            return Err(Error::Conflict(format!(
                "segment {vlan} exists with another mode or uplink; delete it first"
            )));
        }
        if want.mode == SegmentMode::Untagged {
            let taken = self
                .store
                .read(|d| {
                    d.segments
                        .iter()
                        .find(|(v, s)| {
                            **v != vlan
                                && s.mode == SegmentMode::Untagged
                                && s.uplink == want.uplink
                        })
                        .map(|(v, _)| *v)
                })
                .await;
            if let Some(other) = taken {
                return Err(Error::Conflict(format!(
                    "uplink {} already carries VLAN {other} untagged; it can carry one untagged segment",
                    want.uplink
                )));
            }
        }
        let segment = self.backend.ensure_segment(vlan, &want).await?;
        self.store
            .update(|d| d.segments.insert(vlan, want).is_none())
            .await?;
        Ok(segment)
    }

    #[instrument(skip(self), fields(vlan.id = %vlan))]
    pub async fn remove_segment(&self, vlan: VlanId) -> Result<()> {
        let _held = self.segments_lock.write().await;
        let (seg, user) = self
            .store
            .read(|d| {
                let user = d.attachments.iter().find(|(_, a)| a.spec.vlan == vlan);
                (d.segments.get(&vlan).cloned(), user.map(|(id, _)| *id))
            })
            .await;
        let Some(seg) = seg else {
            return Ok(());
        };
        if let Some(id) = user {
            return Err(Error::Conflict(format!(
                "attachment {id} still uses VLAN {vlan}"
            )));
        }
        self.backend.remove_segment(vlan, &seg).await?;
        self.store
            .update(|d| d.segments.remove(&vlan).is_some())
            .await
    }

    /// Wires the attachment unless the kernel already shows it wired as asked.
    #[instrument(skip(self, spec), fields(attachment.id = %id, vlan.id = %spec.vlan))]
    pub async fn ensure_attachment(&self, id: Uuid, spec: &AttachmentSpec) -> Result<Attachment> {
        validate(spec)?;
        let lock = self.lock(id).await;
        let _held = lock.lock().await;
        let segments_held = self.segments_lock.read().await;
        let result = self.ensure_attachment_locked(id, spec).await;
        drop(segments_held);
        if result.is_err() && !self.store.read(|d| d.attachments.contains_key(&id)).await {
            // Nothing to guard for an id that failed before it was ever stored.
            self.forget_lock(id, &lock).await;
        }
        result
    }

    async fn ensure_attachment_locked(
        &self,
        id: Uuid,
        spec: &AttachmentSpec,
    ) -> Result<Attachment> {
        let (differs, seg) = self
            .store
            .read(|d| {
                let differs = d.attachments.get(&id).is_some_and(|a| a.spec != *spec);
                (differs, d.segments.get(&spec.vlan).cloned())
            })
            .await;
        if differs {
            return Err(Error::Conflict(format!(
                "attachment {id} exists with another spec; delete it first"
            )));
        }
        let seg = seg.ok_or(Error::SegmentMissing(spec.vlan))?;
        let (container_id, attachment) = self.wire(id, spec, &seg).await?;
        let record = DesiredAttachment {
            spec: spec.clone(),
            container_id,
        };
        self.store
            .update(|d| d.attachments.insert(id, record.clone()) != Some(record))
            .await?;
        Ok(attachment)
    }

    /// Makes the kernel match `spec`; returns the Docker container id when the target is
    /// one, and the attachment as the kernel then shows it, read through the namespace
    /// already resolved here (no second Docker inspect or namespace entry).
    async fn wire(
        &self,
        id: Uuid,
        spec: &AttachmentSpec,
        seg: &DesiredSegment,
    ) -> Result<(Option<String>, Attachment)> {
        let (ns, container_id) = container::resolve(&spec.target, self.docker.as_ref()).await?;
        let inside = ns.netlink().await?;
        let report = |host: HostSide, actual| Attachment {
            id,
            spec: spec.clone(),
            host_ifname: host.ifname(),
            actual,
        };
        // Before anything changes: the container interface and the host-side names must
        // be free or already this attachment's, never another's or a stranger's.
        let name = spec.ifname.to_string();
        if let Some(link) = inside.link(&name).await? {
            let what = format!("interface {name} in {}", ns.path().display());
            backend::owned_by(&link, id, &what)?;
        }
        self.backend.claim(id).await?;
        let host = self.backend.host_side(id, spec).await?;
        if host != HostSide::Missing {
            let actual = container::actual(&inside, spec).await?;
            if actual.wired {
                return Ok((container_id, report(host, actual)));
            }
        }
        // Partially wired (or a stale host end): start from nothing.
        let container = ContainerIf {
            netlink: &inside,
            name: &name,
        };
        self.backend.unplug(id, Some(container)).await?;
        let end = ContainerEnd {
            netns: ns.as_fd(),
            name: &name,
            mac: spec.effective_mac(),
            mtu: spec.mtu.unwrap_or(self.config.mtu).get().into(),
        };
        self.backend.plug(id, spec, seg, &end).await?;
        let connected = async {
            container::configure(&inside, id, spec).await?;
            self.backend.connect(id, spec).await
        };
        if let Err(e) = connected.await {
            // Undo: the host end carries its mark from creation, the container end from
            // the first step of `configure`.
            let _ = self.backend.unplug(id, Some(container)).await;
            return Err(e);
        }
        let announced = garp::announce_later(&ns, &name, end.mac.0, spec.address.addr());
        if let Err(e) = announced {
            warn!(error = %e, "follow-up gratuitous ARPs not scheduled");
        }
        info!(netns = %ns.path().display(), "attachment wired");
        let host = self.backend.host_side(id, spec).await?;
        let actual = container::actual(&inside, spec).await?;
        Ok((container_id, report(host, actual)))
    }

    /// Removes the attachment's interfaces; a missing attachment is success. An
    /// attachment the agent has no record of loses the host links marked as its own
    /// (unclaimed ones, see [`Agent::state`]).
    #[instrument(skip(self), fields(attachment.id = %id))]
    pub async fn remove_attachment(&self, id: Uuid) -> Result<()> {
        let lock = self.lock(id).await;
        let _held = lock.lock().await;
        let Some(record) = self.store.read(|d| d.attachments.get(&id).cloned()).await else {
            let unplugged = self.backend.unplug(id, None).await;
            self.forget_lock(id, &lock).await;
            return unplugged;
        };
        // The container may be gone already; then only host-side objects remain.
        let inside = match container::resolve(&record.spec.target, self.docker.as_ref()).await {
            Ok((ns, _)) => ns.netlink().await.ok(),
            Err(_) => None,
        };
        let name = record.spec.ifname.to_string();
        let container = inside.as_ref().map(|netlink| ContainerIf {
            netlink,
            name: &name,
        });
        self.backend.unplug(id, container).await?;
        self.store
            .update(|d| d.attachments.remove(&id).is_some())
            .await?;
        self.forget_lock(id, &lock).await;
        Ok(())
    }

    /// Removes the host side of an attachment whose container stopped: its namespace, and
    /// with it the veth, is gone, but a switch port left for a missing device makes
    /// ovs-vswitchd warn and slows every one of its reconfigurations. The attachment stays
    /// desired; the container's next start wires it again.
    #[instrument(skip(self), fields(attachment.id = %id))]
    pub async fn release_host_side(&self, id: Uuid) -> Result<()> {
        let lock = self.lock(id).await;
        let _held = lock.lock().await;
        if self.store.read(|d| d.attachments.contains_key(&id)).await {
            self.backend.unplug(id, None).await
        } else {
            Ok(())
        }
    }

    /// The attachment as the kernel shows it. A container end without its host side (the
    /// veth end or, on OVS, the switch port gone behind the agent's back) carries no traffic,
    /// so it is not wired: the same test `wire` makes before it re-wires.
    async fn attachment(&self, id: Uuid, spec: &AttachmentSpec) -> Result<Attachment> {
        let host = self.backend.host_side(id, spec).await?;
        let mut actual = match container::resolve(&spec.target, self.docker.as_ref()).await {
            Ok((ns, _)) => container::actual(&ns.netlink().await?, spec).await?,
            Err(e) => container::not_wired(e.to_string()),
        };
        if host == HostSide::Missing && actual.wired {
            actual.wired = false;
            actual.detail = Some("the host side (veth end or switch port) is missing".into());
        }
        Ok(Attachment {
            id,
            spec: spec.clone(),
            host_ifname: host.ifname(),
            actual,
        })
    }

    /// Host links of ours whose attachment is not in the desired state.
    async fn unclaimed(&self) -> Result<Vec<UnclaimedLink>> {
        let links = self.backend.links_of_ours().await?;
        let known = self
            .store
            .read(|d| {
                links
                    .iter()
                    .map(|(id, _)| d.attachments.contains_key(id))
                    .collect::<Vec<_>>()
            })
            .await;
        Ok(links
            .into_iter()
            .zip(known)
            .filter(|(_, known)| !known)
            .map(|((attachment, host_ifname), _)| UnclaimedLink {
                attachment,
                host_ifname,
            })
            .collect())
    }

    /// Finds `target` and enters its network namespace once, changing nothing: what the
    /// central service checks before it leases or binds anything for a container.
    #[instrument(skip(self), fields(target = %target))]
    pub async fn resolve(&self, target: &Target) -> Result<ResolvedTarget> {
        let (ns, container_id) = container::resolve(target, self.docker.as_ref()).await?;
        // Opening a path proves little (any file opens): joining it proves a namespace.
        ns.run(|| ()).await?;
        Ok(ResolvedTarget {
            target: target.clone(),
            netns: ns.path().display().to_string(),
            container_id,
        })
    }

    /// Segments, attachments, unclaimed links and uplinks as found in the kernel now.
    pub async fn state(&self) -> Result<AgentState> {
        let desired = self.store.snapshot().await;
        let mut segments = Vec::new();
        for (vlan, seg) in &desired.segments {
            segments.push(self.backend.segment(*vlan, seg).await?);
        }
        let attachments = futures::future::try_join_all(
            desired
                .attachments
                .iter()
                .map(|(id, a)| self.attachment(*id, &a.spec)),
        )
        .await?;
        let mut uplinks = Vec::new();
        for name in &self.config.uplinks {
            let link = self.host.link(name).await?;
            uplinks.push(Uplink {
                name: name.clone(),
                present: link.is_some(),
                up: link.as_ref().is_some_and(|l| l.up),
                mtu: link.as_ref().and_then(|l| l.mtu),
                mac: link.as_ref().and_then(|l| l.mac),
            });
        }
        Ok(AgentState {
            backend: self.backend.kind(),
            segments,
            attachments,
            unclaimed: self.unclaimed().await?,
            uplinks,
            versions: self.versions(),
        })
    }

    /// On start: rebuild every desired segment and attachment (running targets only) and
    /// sweep what of ours can no longer carry traffic. Links of ours that no desired
    /// attachment claims stay (the state file may be lost while containers still use
    /// them): they are logged and listed in [`Agent::state`]. Keeps going on errors.
    pub async fn reapply(&self) -> Result<()> {
        let desired = self.store.snapshot().await;
        let mut errors = ErrorList::default();
        {
            let _held = self.segments_lock.write().await;
            for (vlan, seg) in &desired.segments {
                errors.keep(self.backend.ensure_segment(*vlan, seg).await);
            }
        }
        for (id, a) in &desired.attachments {
            match self.ensure_attachment(*id, &a.spec).await {
                Err(Error::ContainerNotRunning(c) | Error::ContainerNotFound(c)) => {
                    info!(attachment.id = %id, container = %c, "container not running; will re-wire when it starts");
                    errors.keep(self.release_host_side(*id).await);
                }
                other => drop(errors.keep(other)),
            }
        }
        // Requests wiring an attachment right now have created links that the state file
        // does not list yet: they hold an entry in the lock map, and holding the map's
        // mutex keeps new requests from starting until the sweep is done.
        let locks = self.locks.lock().await;
        let stored = self
            .store
            .read(|d| d.attachments.keys().copied().collect::<Vec<_>>());
        let keep: HashSet<Uuid> = stored
            .await
            .into_iter()
            .chain(locks.keys().copied())
            .collect();
        errors.keep(self.backend.sweep(&keep).await);
        drop(locks);
        if let Some(unclaimed) = errors.keep(self.unclaimed().await) {
            if !unclaimed.is_empty() {
                warn!(
                    links = ?unclaimed.iter().map(|u| &u.host_ifname).collect::<Vec<_>>(),
                    "host links of ours that no attachment claims are left wired; a DELETE of \
                     their attachment removes them"
                );
            }
        }
        errors.into_result()
    }

    /// Desired attachments targeting a Docker container, by id or name.
    pub async fn attachments_of_container(
        &self,
        id: &str,
        name: Option<&str>,
    ) -> Vec<(Uuid, AttachmentSpec)> {
        self.store
            .read(|d| {
                d.attachments
                    .iter()
                    .filter(|(_, a)| {
                        let Target::Docker { container } = &a.spec.target else {
                            return false;
                        };
                        a.container_id.as_deref() == Some(id)
                            || container == id
                            || Some(container.as_str()) == name
                    })
                    .map(|(uuid, a)| (*uuid, a.spec.clone()))
                    .collect()
            })
            .await
    }

    async fn lock(&self, id: Uuid) -> Arc<Mutex<()>> {
        self.locks.lock().await.entry(id).or_default().clone()
    }

    /// Drops a deleted attachment's lock from the map, unless another request holds or
    /// awaits it: a request arriving later must then find that same lock, not a fresh one
    /// that would let it wire the attachment alongside the waiting request. Clones are only
    /// taken under the map's mutex, so the count cannot grow while it is checked.
    async fn forget_lock(&self, id: Uuid, lock: &Arc<Mutex<()>>) {
        let mut locks = self.locks.lock().await;
        // One reference in the map, one held by the caller.
        if Arc::strong_count(lock) == 2 {
            locks.remove(&id);
        }
    }
}

fn validate(spec: &AttachmentSpec) -> Result<()> {
    if let Some(gw) = spec.gateway {
        if !spec.address.contains(&gw) || gw == spec.address.addr() {
            return Err(Error::Invalid(format!(
                "gateway {gw} is not another address in {}",
                spec.address
            )));
        }
    }
    Ok(())
}
