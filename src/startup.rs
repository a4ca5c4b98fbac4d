//! Builds the application from a configuration and a database pool. Production (`weft serve`)
//! and the integration tests go through the same code, only the listener address differs.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ResourceDef, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpMessage, HttpServer};
use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use sqlx::{ConnectOptions, Connection};
use tracing::Instrument;

use crate::alloc::Quarantine;
use crate::apic::Apic;
use crate::config::{Config, HttpLimits};
use crate::error::{ApiError, Limit};
use crate::workflow::reconcile::{Reconciler, Settings as ReconcileSettings};

/// The schema migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Shared by every handler (as `web::Data<AppState>`).
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub quarantine: Quarantine,
    /// `None` when no APIC is configured.
    pub apic: Option<Arc<Apic>>,
    /// The OpenAPI document, rendered once.
    pub openapi: Arc<serde_json::Value>,
    /// Every documented path and its methods, to tell 405 from 404.
    pub routes: Arc<Routes>,
    /// The attach/detach workflows of this replica.
    pub workflow: Arc<crate::workflow::Engine>,
    /// The reconciler of this replica (it leads, or stands by).
    pub reconciler: Arc<Reconciler>,
}

/// The documented paths as router patterns, each with the methods it answers.
pub struct Routes(Vec<(ResourceDef, Vec<Method>)>);

impl Routes {
    fn from_doc(doc: &utoipa::openapi::OpenApi) -> Self {
        Self(
            doc.paths
                .paths
                .iter()
                .map(|(path, item)| {
                    let methods = [
                        (Method::GET, item.get.is_some()),
                        (Method::PUT, item.put.is_some()),
                        (Method::POST, item.post.is_some()),
                        (Method::DELETE, item.delete.is_some()),
                    ];
                    let methods = methods
                        .into_iter()
                        .filter_map(|(m, has)| has.then_some(m))
                        .collect();
                    (ResourceDef::new(path.as_str()), methods)
                })
                .collect(),
        )
    }

    /// The methods `path` answers; empty when it is no route of ours.
    pub fn allowed(&self, path: &str) -> Vec<Method> {
        self.0
            .iter()
            .filter(|(def, _)| def.is_match(path))
            .flat_map(|(_, methods)| methods.iter().cloned())
            .collect()
    }
}

/// How long opening the database may take, at start and for each pool acquire (bounded, so
/// /readyz reports an unreachable database instead of hanging).
const DATABASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the pool described by the configuration, failing fast with the real reason when the
/// database cannot be reached.
pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = config.database_url.expose().parse()?;
    // One direct connection first: a pool retries until its acquire timeout and then reports
    // only "pool timed out", hiding "connection refused", an unknown database or a bad password.
    let first = tokio::time::timeout(DATABASE_TIMEOUT, options.connect())
        .await
        .map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from the database within {DATABASE_TIMEOUT:?}"),
            ))
        })??;
    first.close().await?;
    Ok(PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(DATABASE_TIMEOUT)
        .connect_lazy_with(options))
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the client's `x-request-id` when it is 1 to [`MAX_REQUEST_ID`] visible
/// ASCII characters, otherwise a new UUID. The same value is echoed on the response, carried
/// by the request's span and recorded in the audit log.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Longest client-chosen request id kept; a longer one is replaced, not cut.
pub const MAX_REQUEST_ID: usize = 128;

impl RequestId {
    fn of(req: &ServiceRequest) -> Self {
        let given = req
            .headers()
            .get(&REQUEST_ID)
            .map(|v| v.as_bytes())
            .filter(|v| (1..=MAX_REQUEST_ID).contains(&v.len()))
            .filter(|v| v.iter().all(|b| b.is_ascii_graphic()))
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned);
        Self(given.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()))
    }
}

/// Outermost middleware: gives the request its id and a `request` span that every log line of
/// the request is recorded in, identifies the caller (the span's `actor`), logs the outcome and
/// echoes the id.
async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = RequestId::of(&req);
    let span = tracing::info_span!(
        "request",
        request_id = %id.0,
        method = %req.method(),
        path = %req.path(),
        actor = tracing::field::Empty,
    );
    let started = Instant::now();
    async move {
        let mut resp = match check_head(&req) {
            Err(e) => {
                let problem = actix_web::ResponseError::error_response(&e);
                req.into_response(problem).map_into_boxed_body()
            }
            Ok(()) => {
                if let Some(st) = req.app_data::<web::Data<AppState>>() {
                    let identity = crate::auth::identify(&st.db, req.headers()).await;
                    if let Ok(Some((actor, _))) = &identity.0 {
                        tracing::Span::current().record("actor", actor.as_str());
                    }
                    req.extensions_mut().insert(identity);
                }
                req.extensions_mut().insert(id.clone());
                next.call(req).await?.map_into_boxed_body()
            }
        };
        tracing::info!(
            status = resp.status().as_u16(),
            latency_ms = started.elapsed().as_millis() as u64,
            "finished processing request"
        );
        if let Ok(v) = HeaderValue::from_str(&id.0) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        Ok(resp)
    }
    .instrument(span)
    .await
}

/// Longest request target (path and query) served; API paths are short.
const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header fields, and their combined size, a request may carry. actix-http itself closes
/// requests over 96 fields or a 128 KiB head with an empty 431 (no hook to give it a body), so
/// these lower limits are what answers almost every oversized head with a problem.
const MAX_HEADERS: usize = 64;
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses a request line or header section over the limits, as 414/431 problems.
fn check_head(req: &ServiceRequest) -> Result<(), ApiError> {
    let uri = req.uri().to_string().len();
    if uri > MAX_URI_BYTES {
        return Err(ApiError::TooLarge(
            Limit::Uri,
            format!("the request target is {uri} bytes, more than {MAX_URI_BYTES}"),
        ));
    }
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Err(ApiError::TooLarge(
            Limit::Headers,
            format!(
                "{} header fields of {bytes} bytes; at most {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        ));
    }
    Ok(())
}

/// A bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    limits: HttpLimits,
}

impl Application {
    /// Binds `listen` (port 0 picks a free port) and builds the application on `db`.
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
        let app = Self::bind(config.listen, db, quarantine, apic)
            .await
            .with_context(|| format!("binding server.listen {}", config.listen))?
            .with_limits(config.http);
        Ok(app
            .with_workflow(config.workflow.clone())
            .with_reconcile(config.reconcile.clone()))
    }

    /// Replaces the default workflow settings (workers, retries, linger, grace, agents' CA).
    pub fn with_workflow(mut self, settings: crate::workflow::Settings) -> Self {
        let st = &self.state;
        self.state.workflow = Arc::new(crate::workflow::Engine::new(
            st.db.clone(),
            st.apic.clone(),
            settings,
            st.quarantine.ip,
        ));
        let reconcile = self.state.reconciler.settings.clone();
        self.with_reconcile(reconcile)
    }

    /// Replaces the default reconciler settings (interval, agents asked at once).
    pub fn with_reconcile(mut self, settings: ReconcileSettings) -> Self {
        self.state.reconciler = Arc::new(Reconciler::new(self.state.workflow.clone(), settings));
        self
    }

    /// Like [`Application::build`] without a full configuration (tests, benchmarks).
    pub async fn bind(
        listen: SocketAddr,
        db: PgPool,
        quarantine: Quarantine,
        apic: Option<Arc<Apic>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let doc = crate::openapi::openapi();
        let workflow = Arc::new(crate::workflow::Engine::new(
            db.clone(),
            apic.clone(),
            crate::workflow::Settings::default(),
            quarantine.ip,
        ));
        let state = AppState {
            reconciler: Arc::new(Reconciler::new(
                workflow.clone(),
                ReconcileSettings::default(),
            )),
            workflow,
            db,
            quarantine,
            apic,
            openapi: Arc::new(serde_json::to_value(&doc).unwrap_or_default()),
            routes: Arc::new(Routes::from_doc(&doc)),
        };
        Ok(Self {
            listener,
            state,
            limits: HttpLimits::default(),
        })
    }

    /// Replaces the default [`HttpLimits`].
    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves (and runs the workflow workers) until `shutdown` resolves, then finishes
    /// in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.state.workflow.start();
        self.state.reconciler.start();
        let state = web::Data::new(self.state);
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let server = HttpServer::new(move || {
            let app = App::new()
                .app_data(state.clone())
                .default_service(web::to(crate::http::fallback))
                .wrap(from_fn(request_context));
            crate::openapi::register(app)
        })
        .workers(workers)
        // actix-web counts connections per worker thread.
        .max_connections(self.limits.max_connections.div_ceil(workers))
        .client_request_timeout(self.limits.header_timeout)
        .keep_alive(self.limits.keep_alive)
        .disable_signals()
        .shutdown_signal(shutdown)
        .listen(self.listener)?
        .run();
        server.await
    }
}
