//! The APIC as Weft's REST API uses it: one shared `weft-apic` client (one session) and an
//! in-memory fabric snapshot per replica, re-read when older than the TTL or on an explicit
//! refresh. Replicas do not share the snapshot; each reads the APIC at most once per TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use weft_apic::{ApicClient, ApicError, Fabric};

use crate::config::ApicSettings;

/// A fabric read and when it was read.
#[derive(Debug)]
pub struct Snapshot {
    pub fabric: Fabric,
    pub fetched_at: DateTime<Utc>,
    read_at: Instant,
}

/// The APIC client and the cached fabric.
pub struct Apic {
    pub client: ApicClient,
    ttl: Duration,
    /// Held across a discovery so concurrent requests wait for one read instead of each
    /// starting their own.
    snapshot: Mutex<Option<Arc<Snapshot>>>,
}

impl Apic {
    /// Builds the client; it logs in lazily on first use.
    pub fn new(settings: &ApicSettings) -> Result<Self, ApicError> {
        Ok(Self {
            client: ApicClient::new(settings.client.clone())?,
            ttl: settings.discovery_ttl,
            snapshot: Mutex::new(None),
        })
    }

    /// The cached fabric, re-read when older than the TTL. When that re-read fails the older
    /// snapshot is served (its `fetched_at` tells its age) rather than failing every host
    /// view while the APIC is busy; without any snapshot the error is returned.
    pub async fn fabric(&self) -> Result<Arc<Snapshot>, ApicError> {
        let mut slot = self.snapshot.lock().await;
        let stale = match slot.as_ref() {
            Some(s) if s.read_at.elapsed() < self.ttl => return Ok(s.clone()),
            other => other.cloned(),
        };
        match (Self::read(&self.client, &mut slot).await, stale) {
            (Ok(fresh), _) => Ok(fresh),
            (Err(e), Some(stale)) => {
                tracing::warn!(error = %e, fetched_at = %stale.fetched_at, "fabric re-read failed; serving the previous snapshot");
                Ok(stale)
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Re-reads the fabric now (after a change made on the APIC by hand); errors are returned,
    /// never hidden behind the previous snapshot.
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, ApicError> {
        let mut slot = self.snapshot.lock().await;
        Self::read(&self.client, &mut slot).await
    }

    #[tracing::instrument(skip_all)]
    async fn read(
        client: &ApicClient,
        slot: &mut Option<Arc<Snapshot>>,
    ) -> Result<Arc<Snapshot>, ApicError> {
        let fabric = client.discover().await?;
        tracing::info!(
            nodes = fabric.nodes.len(),
            paths = fabric.paths.len(),
            lldp = fabric.lldp_neighbours.len(),
            "fabric discovered"
        );
        let snap = Arc::new(Snapshot {
            fabric,
            fetched_at: Utc::now(),
            read_at: Instant::now(),
        });
        *slot = Some(snap.clone());
        Ok(snap)
    }
}
