//! Builds the application from a configuration and a database pool. Production (`weft serve`)
//! and the integration tests go through the same code, only the listener address differs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use axum::http::{HeaderName, Request};
use axum::Router;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::alloc::Quarantine;
use crate::apic::Apic;
use crate::config::Config;

/// The schema migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub quarantine: Quarantine,
    /// `None` when no APIC is configured.
    pub apic: Option<Arc<Apic>>,
    /// The OpenAPI document, rendered once.
    pub openapi: Arc<serde_json::Value>,
}

/// Opens the pool described by the configuration (fails fast when the database is unreachable).
pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        // Bounded, so /readyz reports an unreachable database instead of hanging.
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(config.database_url.expose())
        .await
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The complete HTTP application: API routes, request ids, tracing.
pub fn router(db: PgPool, quarantine: Quarantine, apic: Option<Arc<Apic>>) -> Router {
    let (api, doc) = crate::openapi::split();
    let state = AppState {
        db,
        quarantine,
        apic,
        openapi: Arc::new(serde_json::to_value(&doc).unwrap_or_default()),
    };
    api.fallback(crate::http::not_found)
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        // Outermost: a request id exists (the client's, or a new UUID) before anything logs.
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The span every log line of a request is recorded in; `actor` is filled in by authentication.
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        actor = tracing::field::Empty,
    )
}

/// A bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    /// Binds `listen` (port 0 picks a free port) and builds the router on `db`.
    pub async fn build(config: &Config, db: PgPool) -> anyhow::Result<Self> {
        let quarantine = Quarantine {
            vlan: config.vlan_quarantine,
            ip: config.ip_quarantine,
        };
        let apic = match &config.apic {
            Some(settings) => Some(Arc::new(
                Apic::new(settings).context("setting up the APIC client ([apic])")?,
            )),
            None => None,
        };
        Self::bind(config.listen, db, quarantine, apic)
            .await
            .with_context(|| format!("binding server.listen {}", config.listen))
    }

    /// Like [`Application::build`] without a full configuration (tests, benchmarks).
    pub async fn bind(
        listen: SocketAddr,
        db: PgPool,
        quarantine: Quarantine,
        apic: Option<Arc<Apic>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        Ok(Self {
            listener,
            router: router(db, quarantine, apic),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
