//! The OpenAPI document, built from the same routes the server runs, and its committed copy.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::http;
use crate::startup::AppState;

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

/// Every route with its documentation.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(http::health::routes())
        .merge(http::pools::routes())
        .merge(http::epgs::routes())
        .merge(http::reservations::routes())
        .merge(http::hosts::routes())
        .merge(http::audit::routes())
        .merge(http::tokens::routes())
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document() -> Result<String, serde_json::Error> {
    let (_, doc) = api().split_for_parts();
    Ok(doc.to_pretty_json()? + "\n")
}
