//! `/api/v1/audit`: the audit log, newest first, filtered and paged.

use actix_web::web::{self, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::{ApiQuery, Page, Paging};
use crate::auth::{Auth, Viewer};
use crate::db::audit;
use crate::error::ApiResult;
use crate::startup::AppState;

/// Registers this resource's routes (and their documentation).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_audit);
}

/// One recorded mutation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Name of the API token that made the change.
    pub actor: String,
    /// e.g. `epg.put`, `vlan-pool.delete`.
    pub action: String,
    /// e.g. `epgs/t1/ap1/web`.
    pub resource: String,
    /// The resource before the change; absent when it was created.
    pub before: Option<serde_json::Value>,
    /// The resource after the change; absent when it was deleted.
    pub after: Option<serde_json::Value>,
    pub request_id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    #[param(pattern = r"^[^\x00]*$")]
    pub actor: Option<String>,
    #[param(pattern = r"^[^\x00]*$")]
    pub action: Option<String>,
    /// Resource path prefix, e.g. `epgs/t1/`.
    #[param(pattern = r"^[^\x00]*$")]
    pub resource: Option<String>,
    #[param(pattern = r"^[^\x00]*$")]
    pub request_id: Option<String>,
    /// Entries at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Entries before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/v1/audit", impl_for = list_audit, tag = "audit", params(Paging, AuditFilter),
    responses((status = 200, body = Page<AuditEntry>)))]
#[actix_web::get("/api/v1/audit")]
async fn list_audit(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiQuery(paging): ApiQuery<Paging>,
    ApiQuery(f): ApiQuery<AuditFilter>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let (before_id, limit) = paging.resolve()?;
    let filter = audit::Filter {
        actor: f.actor.as_deref(),
        action: f.action.as_deref(),
        resource_prefix: f.resource.as_deref(),
        request_id: f.request_id.as_deref(),
        since: f.since,
        until: f.until,
    };
    let mut conn = st.db.acquire().await?;
    let rows = audit::list(&mut conn, &filter, before_id, limit + 1).await?;
    let page = Page::decode(rows, limit, |e| {
        let entry = AuditEntry {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            resource: e.resource,
            before: e.before,
            after: e.after,
            request_id: e.request_id,
        };
        Ok((e.id, entry))
    })?;
    Ok(Json(page))
}
