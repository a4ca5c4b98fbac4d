//! The OpenAPI document, built from the same routes the server runs, and its committed copy.

use actix_web::dev::{ServiceFactory, ServiceRequest};
use actix_web::App;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_actix_web::AppExt;

use crate::http;

/// Where the committed document lives, relative to the repository root.
pub const COMMITTED_PATH: &str = "openapi/weft.json";

#[derive(OpenApi)]
#[openapi(
    info(title = "Weft", description = "Puts Linux containers into Cisco ACI EPGs and keeps fabric and hosts in step."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "vlan-pools", description = "VLAN pools (admin to change)"),
        (name = "epgs", description = "EPGs, their subnets and VLAN (operator to change)"),
        (name = "reservations", description = "IP addresses held for a name (operator to change)"),
        (name = "hosts", description = "Hosts running weft-agent (admin to change)"),
        (name = "fabric", description = "Fabric discovery from the APIC (cached per replica; operator to refresh)"),
        (name = "attachments", description = "Containers in EPGs: attach, detach, their operations and the bindings they share (operator to change; agents report container events)"),
        (name = "reconcile", description = "Drift between the database, the APIC and the agents: run a pass (operator), read its reports"),
        (name = "audit", description = "Who changed what"),
        (name = "tokens", description = "API tokens (admin only); a token is shown once"),
        (name = "health", description = "Probes and this document; no token needed"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Registers every resource's routes; the same calls collect their documentation.
fn configure(cfg: &mut ServiceConfig) {
    cfg.configure(http::health::configure)
        .configure(http::pools::configure)
        .configure(http::epgs::configure)
        .configure(http::reservations::configure)
        .configure(http::hosts::configure)
        .configure(http::fabric::configure)
        .configure(http::preflight::configure)
        .configure(http::attachments::configure)
        .configure(http::reconcile::configure)
        .configure(http::audit::configure)
        .configure(http::tokens::configure);
}

/// `app` with every route, and the finished document of those routes.
fn split<T>(app: App<T>) -> (App<T>, utoipa::openapi::OpenApi)
where
    T: ServiceFactory<ServiceRequest, Config = (), Error = actix_web::Error, InitError = ()>,
{
    let (app, mut doc) = app
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(configure)
        .split_for_parts();
    document_errors(&mut doc);
    reference_page_items(&mut doc);
    (app, doc)
}

/// `app` with every route.
pub fn register<T>(app: App<T>) -> App<T>
where
    T: ServiceFactory<ServiceRequest, Config = (), Error = actix_web::Error, InitError = ()>,
{
    split(app).0
}

/// The finished document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    split(App::new()).1
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document() -> Result<String, serde_json::Error> {
    Ok(openapi().to_pretty_json()? + "\n")
}

/// Declares the errors every API operation can return (malformed or invalid input, missing
/// token, wrong role, limits, database outage, internal error), and gives every error response
/// the `application/problem+json` media type the server really sends.
fn document_errors(doc: &mut utoipa::openapi::OpenApi) {
    const COMMON: [(&str, &str); 8] = [
        ("400", "Malformed request (unparseable JSON or path)"),
        ("401", "Missing or invalid bearer token"),
        ("403", "The token's role may not do this"),
        ("414", "Request target over 8 KiB"),
        ("422", "Input refused by validation"),
        ("431", "More than 64 header fields or 16 KiB of them"),
        ("500", "Internal error"),
        (
            "503",
            "The database is busy or unreachable; retry after `Retry-After` seconds",
        ),
    ];
    const BODY: (&str, &str) = ("413", "JSON body over 1 MiB");
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ];
        for op in ops.into_iter().flatten() {
            let public = op
                .tags
                .as_ref()
                .is_some_and(|t| t.iter().any(|t| t == "health"));
            let body = op.request_body.is_some().then_some(BODY);
            let responses = &mut op.responses.responses;
            if !public {
                for (code, description) in COMMON.into_iter().chain(body) {
                    responses.entry(code.into()).or_insert_with(|| {
                        let content = ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build();
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(description)
                                .content(PROBLEM, content)
                                .build(),
                        )
                    });
                }
            }
            for (code, response) in responses.iter_mut() {
                if let (true, RefOr::T(r)) = (code.starts_with(['4', '5']), response) {
                    if let Some(content) = r.content.shift_remove("application/json") {
                        r.content.insert(PROBLEM.into(), content);
                    }
                }
            }
        }
    }
}

const PROBLEM: &str = "application/problem+json";

/// Makes every `Page_X` list its items as `$ref: X` (utoipa inlines a generic's argument), so
/// generated clients get one class per resource instead of a copy per page type.
fn reference_page_items(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{ArrayItems, Schema};
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let names: Vec<String> = components.schemas.keys().cloned().collect();
    for (name, schema) in components.schemas.iter_mut() {
        let Some(item) = name.strip_prefix("Page_") else {
            continue;
        };
        if !names.iter().any(|n| n == item) {
            continue;
        }
        if let RefOr::T(Schema::Object(page)) = schema {
            if let Some(RefOr::T(Schema::Array(items))) = page.properties.get_mut("items") {
                items.items = ArrayItems::RefOrSchema(Box::new(Ref::from_schema_name(item).into()));
            }
        }
    }
}
