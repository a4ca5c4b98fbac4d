//! apic-sim: an in-memory Cisco APIC that speaks the real REST API (see
//! `shared/reference/apic-api.md`), for Weft's tests and demos.
//!
//! Start it in-process with [`spawn`] (random port) or run the `apic-sim` binary.
//! Test-only controls live under `/_sim/...` and on [`SimHandle`].

pub mod access;
pub mod auth;
pub mod classes;
pub mod dataplane;
pub mod dn;
pub mod error;
pub mod faults;
pub mod payload;
pub mod query;
mod server;
mod target;
pub mod testbed;
pub mod topology;
pub mod tree;
pub mod validate;

pub use dataplane::{DataPlane, DataPlaneConfig, DataPlaneError};
pub use error::ApicError;
pub use topology::{Topology, TopologyError};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tree::{Mit, Writer};

/// Fault injection, changeable at run time (`PUT /_sim/faults`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Added to every `/api/...` request.
    pub latency_ms: u64,
    /// Probability (0..=1) that an `/api/...` request gets nginx's HTML 503 page.
    pub overload_rate: f64,
    /// The next N `/api/...` requests get the 503 page (deterministic overload for tests).
    pub overload_next: u32,
    /// Logins + refreshes allowed per second (APIC default 2); `None` disables throttling.
    pub login_rate_per_sec: Option<u32>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            overload_rate: 0.0,
            overload_next: 0,
            login_rate_per_sec: Some(2),
        }
    }
}

/// Connection limits of the HTTP listener, so a slow or hostile client (slowloris) cannot hold
/// connections open indefinitely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// A connection that has not sent a complete request head within this time is closed.
    pub client_request_timeout: Duration,
    /// An idle keep-alive connection is closed after this time.
    pub keep_alive: Duration,
    /// Open connections per worker; beyond it new connections wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            client_request_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub topology: Topology,
    pub username: String,
    pub password: String,
    /// `refreshTimeoutSeconds` of issued tokens.
    pub token_lifetime: Duration,
    pub faults: FaultConfig,
    /// Unpaged class queries larger than this fail with "result dataset is too big".
    pub max_result: usize,
    pub http: HttpLimits,
    /// Real forwarding for the leaf ports (root only); `None` (the default) is control plane only.
    pub data_plane: Option<DataPlaneConfig>,
}

impl SimConfig {
    /// A simulator of `topology` with user `admin` / password `password`.
    pub fn new(topology: Topology) -> Self {
        Self {
            topology,
            username: "admin".into(),
            password: "password".into(),
            token_lifetime: Duration::from_secs(600),
            faults: FaultConfig::default(),
            max_result: 100_000,
            http: HttpLimits::default(),
            data_plane: None,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot build the data plane: {0}")]
    DataPlane(#[from] DataPlaneError),
}

struct Inner {
    seed: Mit,
    mit: Mit,
    sessions: auth::Sessions,
    counts: BTreeMap<String, u64>,
    faults: FaultConfig,
}

/// Shared simulator state; every operation takes the lock briefly and never across an await.
pub struct SimState {
    inner: Mutex<Inner>,
    config: SimConfig,
    data_plane: Option<DataPlane>,
}

impl SimState {
    /// Builds the state from a config (seeding the topology, creating the data plane if asked).
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        let seed = config.topology.build()?;
        let data_plane = config
            .data_plane
            .as_ref()
            .map(|c| DataPlane::create(&config.topology, c))
            .transpose()?;
        let state = Self {
            inner: Mutex::new(Inner {
                mit: seed.clone(),
                seed,
                sessions: auth::Sessions::default(),
                counts: BTreeMap::new(),
                faults: config.faults.clone(),
            }),
            config,
            data_plane,
        };
        state.written(&mut state.lock());
        Ok(state)
    }

    /// The data plane, when the simulator runs with one.
    pub fn data_plane(&self) -> Option<&DataPlane> {
        self.data_plane.as_ref()
    }

    /// Everything derived from the tree after a write: faults, then forwarding (under the
    /// tree's lock, so the kernel sees the writes in the order they were made).
    fn written(&self, g: &mut Inner) {
        faults::recompute(&mut g.mit, &now());
        if let Some(dp) = &self.data_plane {
            dp.sync(&g.mit);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the tree half-written (writes swap a
        // fully built clone), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests received per kind (`login`, `refresh`, `logout`, `mo_get`, `class_get`,
    /// `mo_post`, `mo_delete`, `other`), counted before any injected fault.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.lock().counts.clone()
    }

    /// Requests of one kind.
    pub fn count(&self, kind: &str) -> u64 {
        self.lock().counts.get(kind).copied().unwrap_or(0)
    }

    pub fn reset_counts(&self) {
        self.lock().counts.clear();
    }

    /// Invalidates every session token.
    pub fn expire_tokens(&self) {
        self.lock().sessions.expire_all();
    }

    pub fn faults(&self) -> FaultConfig {
        self.lock().faults.clone()
    }

    pub fn set_faults(&self, faults: FaultConfig) {
        self.lock().faults = faults;
    }

    /// Writes objects out of band (as a person would in the GUI): `body` is an MO tree posted
    /// under `target` with the usual validation, but read-only classes are allowed.
    pub fn inject(&self, target: &str, body: &serde_json::Value) -> Result<(), ApicError> {
        let bytes = serde_json::to_vec(body).map_err(|_| ApicError::json_parse())?;
        let node = payload::parse(&bytes)?;
        let mut g = self.lock();
        g.mit.apply(target, &node, Writer::OutOfBand)?;
        self.written(&mut g);
        Ok(())
    }

    /// Deletes a subtree out of band; returns whether it existed.
    pub fn remove(&self, dn: &str) -> bool {
        let mut g = self.lock();
        let existed = g.mit.remove_subtree(dn);
        self.written(&mut g);
        existed
    }

    /// One object with its full subtree, as the API would render it.
    pub fn get(&self, dn: &str) -> Option<serde_json::Value> {
        let g = self.lock();
        let (d, mo) = g.mit.entry(dn)?;
        Some(query::render(
            &g.mit,
            d,
            mo,
            &query::QueryOpts::full_subtree(),
            true,
        ))
    }

    /// Every object, flat, in DN order.
    pub fn dump(&self) -> Vec<serde_json::Value> {
        let g = self.lock();
        let opts = query::QueryOpts::default();
        g.mit
            .iter()
            .map(|(d, m)| query::render(&g.mit, d, m, &opts, true))
            .collect()
    }

    /// Back to the seeded topology: no sessions, no counts, configured faults.
    pub fn reset(&self) {
        let mut g = self.lock();
        g.mit = g.seed.clone();
        g.sessions = auth::Sessions::default();
        g.counts.clear();
        g.faults = self.config.faults.clone();
        self.written(&mut g);
    }
}

pub(crate) fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3f+00:00")
        .to_string()
}

/// A running in-process simulator; dropping it stops the server.
pub struct SimHandle {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    pub addr: SocketAddr,
    pub state: Arc<SimState>,
    server: actix_web::dev::ServerHandle,
}

impl std::ops::Deref for SimHandle {
    type Target = SimState;
    fn deref(&self) -> &SimState {
        &self.state
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        // The stop command is sent at once; its completion future need not be awaited.
        drop(self.server.stop(false));
    }
}

/// Starts a simulator on 127.0.0.1 with a random port.
pub async fn spawn(config: SimConfig) -> Result<SimHandle, SimError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    spawn_on(config, listener)
}

/// Starts a simulator on an already bound listener; must be called inside a Tokio runtime.
pub fn spawn_on(
    config: SimConfig,
    listener: tokio::net::TcpListener,
) -> Result<SimHandle, SimError> {
    let limits = config.http.clone();
    let state = Arc::new(SimState::new(config)?);
    let addr = listener.local_addr()?;
    let server = http_server(state.clone(), listener.into_std()?, 2, limits)?;
    let handle = server.handle();
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "apic-sim server stopped");
        }
    });
    Ok(SimHandle {
        url: format!("http://{addr}"),
        addr,
        state,
        server: handle,
    })
}

/// Serves until SIGINT or SIGTERM (the binary), then removes the data plane's namespace.
pub async fn serve(config: SimConfig, listener: tokio::net::TcpListener) -> Result<(), SimError> {
    use tokio::signal::unix::{signal, SignalKind};
    let limits = config.http.clone();
    let mut term = signal(SignalKind::terminate())?;
    let state = Arc::new(SimState::new(config)?);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let server = http_server(state.clone(), listener.into_std()?, workers, limits)?;
    let handle = server.handle();
    let served = tokio::select! {
        r = server => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    handle.stop(false).await;
    if let Some(dp) = state.data_plane() {
        dp.remove();
    }
    Ok(served?)
}

/// The actix-web app over `listener`, each connection read through [`target::LenientTarget`]
/// (so raw quotes in a query are taken as nginx takes them); signals are left to the caller.
fn http_server(
    state: Arc<SimState>,
    listener: std::net::TcpListener,
    workers: usize,
    limits: HttpLimits,
) -> std::io::Result<actix_web::dev::Server> {
    use actix_service::ServiceFactoryExt;
    let data = actix_web::web::Data::from(state);
    let server = actix_server::Server::build()
        .workers(workers)
        .disable_signals()
        .max_concurrent_connections(limits.max_connections)
        .listen("apic-sim", listener, move || {
            let app = actix_web::App::new()
                .app_data(data.clone())
                .configure(server::configure);
            let http = actix_http::HttpService::build()
                .client_request_timeout(limits.client_request_timeout)
                .keep_alive(limits.keep_alive)
                .h1(actix_service::map_config(app, |()| {
                    actix_web::dev::AppConfig::default()
                }));
            actix_service::fn_service(|io: tokio::net::TcpStream| {
                let peer = io.peer_addr().ok();
                std::future::ready(Ok::<_, actix_http::error::DispatchError>((
                    target::LenientTarget::new(io),
                    peer,
                )))
            })
            .and_then(http)
        })?
        .run();
    Ok(server)
}
