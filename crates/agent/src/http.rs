//! The agent's HTTP API (bearer token), its OpenAPI document and problem+json errors.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::{Listener, ListenerExt};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tokio_rustls::TlsAcceptor;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use weft_agent_api::{
    AgentState, Attachment, AttachmentSpec, ContainerEvent, ContainerEventKind, Health, Problem,
    Segment, SegmentSpec, VlanId, REQUEST_ID,
};

use crate::agent::Agent;
use crate::tls::TlsListener;
use crate::Error;

#[derive(OpenApi)]
#[openapi(
    info(title = "weft-agent", description = "Per-host agent of Weft: VLAN segments and container wiring."),
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

/// The router and the OpenAPI document, built from the same route list. Every request
/// gets an `x-request-id` (the caller's, or a new UUID), echoed in the response and
/// recorded on the request's tracing span.
pub fn api(agent: Arc<Agent>) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut doc) = routes().with_state(agent).split_for_parts();
    document_common_errors(&mut doc);
    let trace = TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
        let id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request.id = %id)
    });
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(trace)
        .layer(PropagateRequestIdLayer::x_request_id());
    (router.layer(layers), doc)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, _) = api(agent);
    axum::serve(nodelay(listener), router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// [`serve`] over TLS; a failed handshake drops only that connection.
pub async fn serve_tls(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    tls: TlsAcceptor,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, _) = api(agent);
    axum::serve(TlsListener::new(nodelay(listener), tls), router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Responses are small and latency matters, so Nagle is off on every accepted socket
/// (otherwise delayed ACKs add ~40 ms per request).
fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "TCP_NODELAY");
        }
    })
}

/// The OpenAPI document alone (for the committed `openapi/agent.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().into_openapi();
    document_common_errors(&mut doc);
    doc
}

/// Adds the errors every token-protected operation can answer (wrong token, host failure,
/// Docker/OVS failure), so each route lists only its own. An operation is protected when it
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
        for op in ops.into_iter().flatten().filter(|op| op.security.is_none()) {
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
        .content("application/problem+json", content)
        .build()
}

fn routes() -> OpenApiRouter<Arc<Agent>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(get_state))
        .routes(routes!(put_segment, delete_segment))
        .routes(routes!(put_attachment, delete_attachment))
}

/// Proof that the request carried the agent's bearer token; handlers that take it are protected.
struct Authorized;

impl FromRequestParts<Arc<Agent>> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, agent: &Arc<Agent>) -> Result<Self, Response> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(t) if constant_time_eq(t.as_bytes(), agent.config().token.expose().as_bytes()) => {
                Ok(Authorized)
            }
            _ => Err(problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token".into(),
                Vec::new(),
            )),
        }
    }
}

/// `Path` whose rejection is a problem document like every other error.
struct ValidPath<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ValidPath<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ValidPath(v)),
            Err(r) => Err(problem(
                StatusCode::BAD_REQUEST,
                "invalid",
                r.body_text(),
                Vec::new(),
            )),
        }
    }
}

/// `Json` whose rejection is a problem document like every other error.
struct ValidJson<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ValidJson<T> {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ValidJson(v)),
            Err(r) => Err(problem(r.status(), "invalid", r.body_text(), Vec::new())),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Liveness and versions (no token needed).
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, body = Health)))]
async fn healthz(State(agent): State<Arc<Agent>>) -> Json<Health> {
    Json(Health {
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
    State(agent): State<Arc<Agent>>,
) -> Result<Json<AgentState>, ApiError> {
    Ok(Json(agent.state().await?))
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
    State(agent): State<Arc<Agent>>,
    ValidPath(vlan): ValidPath<VlanId>,
    ValidJson(spec): ValidJson<SegmentSpec>,
) -> Result<Json<Segment>, ApiError> {
    Ok(Json(agent.ensure_segment(vlan, &spec).await?))
}

/// Removes a segment; a missing one is success.
#[utoipa::path(delete, path = "/v1/segments/{vlan}", params(("vlan" = u16, Path, minimum = 1, maximum = 4094)), responses(
    (status = 204),
    (status = 400, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json"),
))]
async fn delete_segment(
    _: Authorized,
    State(agent): State<Arc<Agent>>,
    ValidPath(vlan): ValidPath<VlanId>,
) -> Result<StatusCode, ApiError> {
    agent.remove_segment(vlan).await?;
    Ok(StatusCode::NO_CONTENT)
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
    State(agent): State<Arc<Agent>>,
    ValidPath(id): ValidPath<Uuid>,
    ValidJson(spec): ValidJson<AttachmentSpec>,
) -> Result<Json<Attachment>, ApiError> {
    Ok(Json(agent.ensure_attachment(id, &spec).await?))
}

/// Removes an attachment's interfaces; a missing one is success.
#[utoipa::path(delete, path = "/v1/attachments/{id}", params(("id" = Uuid, Path)), responses(
    (status = 204),
    (status = 400, body = Problem, content_type = "application/problem+json"),
))]
async fn delete_attachment(
    _: Authorized,
    State(agent): State<Arc<Agent>>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    agent.remove_attachment(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An agent error on its way to becoming a problem+json response.
struct ApiError(Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self.0 {
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            Error::SegmentMissing(_) => (StatusCode::CONFLICT, "segment-missing"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::ContainerNotFound(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "container-not-found")
            }
            Error::ContainerNotRunning(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "container-not-running")
            }
            Error::NoSuchLink(_) => (StatusCode::UNPROCESSABLE_ENTITY, "no-such-link"),
            Error::Netns { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "netns"),
            Error::Docker(_) | Error::Ovs(_) => (StatusCode::BAD_GATEWAY, "dependency"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "host"),
        };
        let errors = match &self.0 {
            Error::List(list) => list.iter().map(ToString::to_string).collect(),
            _ => Vec::new(),
        };
        if status.is_server_error() {
            tracing::error!(error = %self.0, "request failed");
        }
        problem(status, kind, self.0.to_string(), errors)
    }
}

fn problem(status: StatusCode, kind: &str, detail: String, errors: Vec<String>) -> Response {
    let body = Problem {
        kind: format!("urn:weft:agent:{kind}"),
        title: status.canonical_reason().unwrap_or("error").into(),
        status: status.as_u16(),
        detail: Some(detail),
        errors,
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        Json(body),
    )
        .into_response()
}
