//! The agent's HTTP API (bearer token) on actix-web, its OpenAPI document and
//! problem+json errors.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{HttpService, Protocol};
use actix_service::{apply_fn_factory, fn_service, map_config, ServiceFactoryExt};
use actix_tls::accept::rustls_0_23::{Acceptor, AcceptorService, TlsStream};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{
    AppConfig, Payload, Server, Service, ServiceFactory, ServiceRequest, ServiceResponse,
};
use actix_web::error::{JsonPayloadError, PathError};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{KeepAlive, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, FromRequest, HttpRequest, HttpResponse, ResponseError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::Instrument;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use uuid::Uuid;
use weft_agent_api::{
    AgentState, Attachment, AttachmentSpec, ContainerEvent, ContainerEventKind, Health, Problem,
    ResolvedTarget, Segment, SegmentSpec, Target, TargetQuery, VlanId, REQUEST_ID,
};

use crate::agent::Agent;
use crate::Error;

/// The largest JSON body accepted; the biggest legal request body is well under 1 KiB.
const BODY_LIMIT: usize = 64 * 1024;
/// The longest request target accepted (the longest route is under 60 bytes).
const URI_LIMIT: usize = 2048;
/// The most header bytes (names and values) accepted. Heads beyond actix-web's own
/// limits (96 headers, 128 KiB) are refused by its parser with an empty 400 or 431.
const HEADER_LIMIT: usize = 16 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(title = "weft-agent", description = "Per-host agent of Weft: VLAN segments and container wiring."),
    paths(healthz, get_state, get_target, put_segment, delete_segment, put_attachment, delete_attachment),
    modifiers(&BearerAuth),
    // The body the agent POSTs to the central service's callback URL.
    components(schemas(ContainerEvent, ContainerEventKind)),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme =
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", scheme);
    }
}

/// The routes of the document in [`ApiDoc`]; one resource per path, so a method the path
/// does not serve is a 405, not a 404.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").get(healthz))
        .service(web::resource("/v1/state").get(get_state))
        .service(web::resource("/v1/target").get(get_target))
        .service(
            web::resource("/v1/segments/{vlan}")
                .put(put_segment)
                .delete(delete_segment),
        )
        .service(
            web::resource("/v1/attachments/{id}")
                .put(put_attachment)
                .delete(delete_attachment),
        );
}

/// The application: routes, extractor settings that answer with problem documents, and
/// the request-id/problem middleware around everything.
fn app(
    agent: web::Data<Agent>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(agent)
        .app_data(
            web::JsonConfig::default()
                .limit(BODY_LIMIT)
                .error_handler(|e, _| json_rejection(e).into()),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|e, _| ApiProblem::invalid(e.to_string()).into()),
        )
        .app_data(
            web::PathConfig::default()
                .error_handler(|e: PathError, _| ApiProblem::invalid(e.to_string()).into()),
        )
        .configure(routes)
        .wrap(from_fn(problems_and_request_id))
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes the requests in
/// flight.
pub async fn serve(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(agent, listener, None, shutdown).await
}

/// [`serve`] over TLS. Each connection's handshake runs on its own, under a timeout, so a
/// failed or stalled one (a port scan, plain HTTP) costs only that connection.
pub async fn serve_tls(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(agent, listener, Some(tls), shutdown).await
}

/// HTTP/1.1 over `T` (TCP or TLS), answered by the application.
fn http<T: AsyncRead + AsyncWrite + Unpin + 'static>(
    agent: web::Data<Agent>,
    keep_alive: KeepAlive,
    request_head_timeout: Duration,
) -> impl ServiceFactory<
    (T, Protocol, Option<SocketAddr>),
    Config = (),
    Response = (),
    Error = DispatchError,
    InitError = (),
> {
    HttpService::build()
        .keep_alive(keep_alive)
        .client_request_timeout(request_head_timeout)
        .finish(map_config(app(agent), |_| AppConfig::default()))
}

/// The TLS handshake of an accepted connection, under a timeout. A failed or stalled one
/// (a port scan, plain HTTP, a health probe) drops that connection only, logged at debug.
fn handshake(
    acceptor: Acceptor,
) -> impl ServiceFactory<
    (TcpStream, Option<SocketAddr>),
    Config = (),
    Response = (TlsStream<TcpStream>, Protocol, Option<SocketAddr>),
    Error = (),
    InitError = (),
> {
    apply_fn_factory::<_, _, _, _, _, TcpStream, _, _>(
        acceptor,
        |(io, peer): (TcpStream, Option<SocketAddr>), tls: &AcceptorService| {
            let handshake = tls.call(io);
            async move {
                let io = handshake.await.inspect_err(|e| {
                    tracing::debug!(?peer, error = %e, "TLS handshake failed; connection dropped");
                })?;
                Ok((io, Protocol::Http1, peer))
            }
        },
    )
    .map_err(|_| ())
}

/// The listener, plain or TLS, on actix-web's server and HTTP service, assembled here
/// so that the TLS handshake's outcome can be logged. Signals are the caller's business
/// (`shutdown`).
async fn serve_on(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    tls: Option<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = agent.config().http;
    // actix-web counts connections per worker: the workers share the limit, so the
    // listener never serves more than `max_connections` at once.
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 4)
        .min(limits.max_connections);
    let keep_alive = match limits.keep_alive {
        d if d.is_zero() => KeepAlive::Disabled,
        d => KeepAlive::Timeout(d),
    };
    let agent = web::Data::from(agent);
    let timeout = limits.request_head_timeout;
    let server = actix_web::dev::Server::build()
        .workers(workers)
        .max_concurrent_connections(limits.max_connections / workers)
        .disable_signals();
    let listener = listener.into_std()?;
    let server = match tls {
        None => server.listen("weft-agent", listener, move || {
            fn_service(|io: TcpStream| async move {
                let peer = accepted(&io);
                Ok::<_, DispatchError>((io, Protocol::Http1, peer))
            })
            .and_then(http::<TcpStream>(agent.clone(), keep_alive, timeout))
        })?,
        Some(tls) => server.listen("weft-agent-tls", listener, move || {
            let mut tls = Acceptor::new(tls.clone());
            tls.set_handshake_timeout(crate::tls::HANDSHAKE_TIMEOUT);
            fn_service(|io: TcpStream| async move {
                let peer = accepted(&io);
                Ok::<_, ()>((io, peer))
            })
            .and_then(handshake(tls))
            .and_then(
                http::<TlsStream<TcpStream>>(agent.clone(), keep_alive, timeout).map_err(|_| ()),
            )
        })?,
    };
    until(server.run(), shutdown).await
}

/// Responses are small and latency matters, so Nagle is off on every accepted socket
/// (otherwise delayed ACKs add ~40 ms per request). Returns the peer's address.
fn accepted(io: &TcpStream) -> Option<SocketAddr> {
    if let Err(e) = io.set_nodelay(true) {
        tracing::warn!(error = %e, "TCP_NODELAY");
    }
    io.peer_addr().ok()
}

/// Runs `server` until `shutdown` resolves, then stops it gracefully.
async fn until(
    server: Server,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown.await;
        handle.stop(true).await;
    });
    server.await
}

/// The longest caller's request id kept; a longer one (or one not in visible ASCII) is
/// replaced, so log lines stay short and printable.
const REQUEST_ID_LIMIT: usize = 128;

/// Every request gets an `x-request-id` (the caller's, or a new UUID), echoed in the
/// response and recorded on the request's tracing span, so every log line of the request
/// carries it. Every error answer leaves as `application/problem+json`, including those
/// actix-web makes itself (unknown route, wrong method).
async fn problems_and_request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .filter(|v| v.len() <= REQUEST_ID_LIMIT && v.to_str().is_ok())
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&Uuid::new_v4().to_string()).expect("a UUID is a header value")
        });
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        uri = %req.uri(),
        request.id = %id.to_str().unwrap_or("-"),
    );
    async move {
        if let Some(refused) = oversized(&req) {
            let res = req.into_response(refused.error_response());
            return Ok(with_request_id(res, id));
        }
        let res = next.call(req).await?;
        let status = res.status();
        tracing::debug!(status = status.as_u16(), "finished processing request");
        let res = if is_problem(&res) || !(status.is_client_error() || status.is_server_error()) {
            res.map_into_boxed_body()
        } else {
            res.map_body(|head, _| {
                let detail = match status {
                    StatusCode::NOT_FOUND => "no such resource".to_owned(),
                    StatusCode::METHOD_NOT_ALLOWED => "method not allowed here".to_owned(),
                    _ => status.canonical_reason().unwrap_or("error").to_owned(),
                };
                head.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
                BoxBody::new(problem_body(status, kind_of(status), detail, Vec::new()))
            })
        };
        Ok(with_request_id(res, id))
    }
    .instrument(span)
    .await
}

fn with_request_id(mut res: ServiceResponse<BoxBody>, id: HeaderValue) -> ServiceResponse<BoxBody> {
    res.headers_mut()
        .insert(HeaderName::from_static(REQUEST_ID), id);
    res
}

/// A request target or head larger than any legal request needs, refused before routing.
fn oversized(req: &ServiceRequest) -> Option<ApiProblem> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > URI_LIMIT {
        return Some(ApiProblem::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            format!("the request target has {target} bytes; at most {URI_LIMIT} are accepted"),
        ));
    }
    let head: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    (head > HEADER_LIMIT).then(|| {
        ApiProblem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!("the headers have {head} bytes; at most {HEADER_LIMIT} are accepted"),
        )
    })
}

const PROBLEM_JSON: &str = "application/problem+json";

fn is_problem<B>(res: &ServiceResponse<B>) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes())
}

/// The problem kind of an error status the handlers did not make themselves.
fn kind_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::URI_TOO_LONG => "uri-too-long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers-too-large",
        s if s.is_server_error() => "host",
        _ => "invalid",
    }
}

/// A JSON body the extractor refused: too large 413, not JSON 415, malformed 400, well
/// formed but not a valid request 422.
fn json_rejection(e: JsonPayloadError) -> ApiProblem {
    let status = match &e {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        JsonPayloadError::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        JsonPayloadError::Deserialize(de) if de.is_data() => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_REQUEST,
    };
    let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too-large"
    } else {
        "invalid"
    };
    ApiProblem::new(status, kind, e.to_string())
}

/// Proof that the request carried the agent's bearer token; handlers that take it are protected.
struct Authorized;

impl FromRequest for Authorized {
    type Error = ApiProblem;
    type Future = std::future::Ready<Result<Self, ApiProblem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(weft_domain::bearer_token);
        let expected = req
            .app_data::<web::Data<Agent>>()
            .map(|a| a.config().token.expose());
        std::future::ready(match (presented, expected) {
            (Some(t), Some(e)) if constant_time_eq(t.as_bytes(), e.as_bytes()) => Ok(Authorized),
            _ => Err(ApiProblem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token".into(),
            )),
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The OpenAPI document alone (for the committed `openapi/agent.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    document_common_errors(&mut doc);
    doc
}

/// Adds the errors every token-protected operation can answer (wrong token, host failure,
/// Docker/OVS failure), so each route lists only its own; drops empty tag lists. An operation is protected when it
/// keeps the document-wide bearer requirement (`/healthz` overrides it).
fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    let common = [
        ("401", "missing or wrong bearer token"),
        ("500", "the host failed the operation"),
        ("502", "Docker or Open vSwitch failed the operation"),
    ];
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ];
        for op in ops.into_iter().flatten() {
            // The derive lists an empty tag list for each path; the document has no tags.
            if op.tags.as_ref().is_some_and(Vec::is_empty) {
                op.tags = None;
            }
            if op.security.is_some() {
                continue;
            }
            for (status, why) in common {
                op.responses
                    .responses
                    .entry(status.into())
                    .or_insert_with(|| problem_response(why).into());
            }
        }
    }
}

fn problem_response(description: &str) -> utoipa::openapi::Response {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, content)
        .build()
}

/// Liveness and versions (no token needed).
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, body = Health)))]
async fn healthz(agent: web::Data<Agent>) -> web::Json<Health> {
    web::Json(Health {
        status: "ok".into(),
        versions: agent.versions(),
    })
}

/// Actual state of the host, read from the kernel.
#[utoipa::path(get, path = "/v1/state", responses(
    (status = 200, body = AgentState),
))]
async fn get_state(
    _: Authorized,
    agent: web::Data<Agent>,
) -> Result<web::Json<AgentState>, ApiProblem> {
    Ok(web::Json(agent.state().await?))
}

/// Finds a container (a running Docker container by name or id, a live PID, or an existing
/// network namespace) and changes nothing: give exactly one of `docker`, `pid`, `netns`.
/// 422 names a target the agent could not wire (not found, not running, no namespace).
#[utoipa::path(get, path = "/v1/target", params(TargetQuery), responses(
    (status = 200, body = ResolvedTarget),
    (status = 400, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
async fn get_target(
    _: Authorized,
    agent: web::Data<Agent>,
    query: web::Query<TargetQuery>,
) -> Result<web::Json<ResolvedTarget>, ApiProblem> {
    let target = Target::try_from(query.into_inner()).map_err(ApiProblem::invalid)?;
    Ok(web::Json(agent.resolve(&target).await?))
}

/// Builds (idempotently) the host side of a VLAN segment.
#[utoipa::path(put, path = "/v1/segments/{vlan}", params(("vlan" = u16, Path, minimum = 1, maximum = 4094)),
    request_body = SegmentSpec, responses(
    (status = 200, body = Segment),
    (status = 400, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json"),
    (status = 415, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
async fn put_segment(
    _: Authorized,
    agent: web::Data<Agent>,
    vlan: web::Path<VlanId>,
    spec: web::Json<SegmentSpec>,
) -> Result<web::Json<Segment>, ApiProblem> {
    Ok(web::Json(agent.ensure_segment(*vlan, &spec).await?))
}

/// Removes a segment; a missing one is success.
#[utoipa::path(delete, path = "/v1/segments/{vlan}", params(("vlan" = u16, Path, minimum = 1, maximum = 4094)), responses(
    (status = 204),
    (status = 400, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json"),
))]
async fn delete_segment(
    _: Authorized,
    agent: web::Data<Agent>,
    vlan: web::Path<VlanId>,
) -> Result<HttpResponse, ApiProblem> {
    agent.remove_segment(*vlan).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Wires (idempotently) one container interface.
#[utoipa::path(put, path = "/v1/attachments/{id}", params(("id" = Uuid, Path)), request_body = AttachmentSpec, responses(
    (status = 200, body = Attachment),
    (status = 400, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json"),
    (status = 415, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
async fn put_attachment(
    _: Authorized,
    agent: web::Data<Agent>,
    id: web::Path<Uuid>,
    spec: web::Json<AttachmentSpec>,
) -> Result<web::Json<Attachment>, ApiProblem> {
    Ok(web::Json(agent.ensure_attachment(*id, &spec).await?))
}

/// Removes an attachment's interfaces; a missing one is success.
#[utoipa::path(delete, path = "/v1/attachments/{id}", params(("id" = Uuid, Path)), responses(
    (status = 204),
    (status = 400, body = Problem, content_type = "application/problem+json"),
))]
async fn delete_attachment(
    _: Authorized,
    agent: web::Data<Agent>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiProblem> {
    agent.remove_attachment(*id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// An error on its way to becoming a problem+json response.
#[derive(Debug)]
struct ApiProblem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    errors: Vec<String>,
}

impl ApiProblem {
    fn new(status: StatusCode, kind: &'static str, detail: String) -> Self {
        ApiProblem {
            status,
            kind,
            detail,
            errors: Vec::new(),
        }
    }

    fn invalid(detail: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", detail)
    }
}

impl std::fmt::Display for ApiProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.kind, self.detail)
    }
}

impl From<Error> for ApiProblem {
    fn from(e: Error) -> Self {
        let (status, kind) = match &e {
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            Error::SegmentMissing(_) => (StatusCode::CONFLICT, "segment-missing"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::ContainerNotFound(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "container-not-found")
            }
            Error::ContainerNotRunning(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "container-not-running")
            }
            Error::DockerDisabled => (StatusCode::UNPROCESSABLE_ENTITY, "docker-disabled"),
            Error::NoSuchLink(_) => (StatusCode::UNPROCESSABLE_ENTITY, "no-such-link"),
            Error::Netns { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "netns"),
            Error::Docker(_) | Error::Ovs(_) => (StatusCode::BAD_GATEWAY, "dependency"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "host"),
        };
        let errors = match &e {
            Error::List(list) => list.iter().map(ToString::to_string).collect(),
            _ => Vec::new(),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        ApiProblem {
            status,
            kind,
            detail: e.to_string(),
            errors,
        }
    }
}

impl ResponseError for ApiProblem {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .content_type(PROBLEM_JSON)
            .body(problem_body(
                self.status,
                self.kind,
                self.detail.clone(),
                self.errors.clone(),
            ))
    }
}

/// The serialized problem document.
fn problem_body(status: StatusCode, kind: &str, detail: String, errors: Vec<String>) -> String {
    let body = Problem {
        kind: format!("urn:weft:agent:{kind}"),
        title: status.canonical_reason().unwrap_or("error").into(),
        status: status.as_u16(),
        detail: Some(detail),
        errors,
    };
    serde_json::to_string(&body).unwrap_or_default()
}
