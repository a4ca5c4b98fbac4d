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
    cache: Mutex<Cache>,
}

/// Longest wait before a failed re-read is tried again (shorter when the TTL is).
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Cache {
    snapshot: Option<Arc<Snapshot>>,
    /// When the last TTL re-read failed; until the retry wait passes the previous snapshot is
    /// served without asking the APIC, so a down APIC does not cost every request a full
    /// retry cycle.
    failed_at: Option<Instant>,
}

impl Apic {
    /// Builds the client; it logs in lazily on first use.
    pub fn new(settings: &ApicSettings) -> Result<Self, ApicError> {
        Ok(Self {
            client: ApicClient::new(settings.client.clone())?,
            ttl: settings.discovery_ttl,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// The cached fabric, re-read when older than the TTL. When that re-read fails the older
    /// snapshot is served (its `fetched_at` tells its age) rather than failing every host
    /// view while the APIC is busy, and the APIC is not asked again for a while (the TTL, at
    /// most 30 s); without any snapshot the error is returned.
    pub async fn fabric(&self) -> Result<Arc<Snapshot>, ApicError> {
        let mut cache = self.cache.lock().await;
        let stale = match cache.snapshot.as_ref() {
            Some(s) if s.read_at.elapsed() < self.ttl => return Ok(s.clone()),
            other => other.cloned(),
        };
        let retry_wait = self.ttl.min(RETRY_FAILED_AFTER);
        if let (Some(stale), Some(failed)) = (&stale, cache.failed_at) {
            if failed.elapsed() < retry_wait {
                return Ok(stale.clone());
            }
        }
        match (Self::read(&self.client, &mut cache).await, stale) {
            (Ok(fresh), _) => Ok(fresh),
            (Err(e), Some(stale)) => {
                tracing::warn!(error = %e, fetched_at = %stale.fetched_at, "fabric re-read failed; serving the previous snapshot");
                cache.failed_at = Some(Instant::now());
                Ok(stale)
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Re-reads the fabric now (after a change made on the APIC by hand); errors are returned,
    /// never hidden behind the previous snapshot.
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, ApicError> {
        let mut cache = self.cache.lock().await;
        Self::read(&self.client, &mut cache).await
    }

    #[tracing::instrument(skip_all)]
    async fn read(client: &ApicClient, cache: &mut Cache) -> Result<Arc<Snapshot>, ApicError> {
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
        cache.snapshot = Some(snap.clone());
        cache.failed_at = None;
        Ok(snap)
    }
}
