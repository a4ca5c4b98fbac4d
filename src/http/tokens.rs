//! `/api/v1/tokens`: API tokens (admin only). A token is shown once, in the response that
//! creates it; only its sha256 is stored.

use actix_web::web::{self, Json};
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::{ApiJson, ApiPath, ApiQuery, Page, Paging};
use crate::auth::{create_token, Admin, Auth, Role, TokenError};
use crate::db::audit;
use crate::domain::ApicName;
use crate::error::{ApiError, ApiResult, Problem};
use crate::startup::AppState;

/// Registers this resource's routes (and their documentation).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_tokens)
        .service(create)
        .service(delete_token);
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: ApicName,
    pub role: Role,
}

/// A token without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub name: ApicName,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// The one response that carries the secret.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The bearer token; it cannot be shown again.
    pub token: String,
}

/// Redacts the token, so a debug log of the response cannot leak it.
impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("info", &self.info)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A token as stored (never its hash).
struct Row {
    id: i64,
    name: String,
    role: String,
    created_at: DateTime<Utc>,
}

fn decode(row: Row) -> ApiResult<TokenInfo> {
    let role = Role::parse(&row.role)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("stored role `{}`", row.role)))?;
    Ok(TokenInfo {
        name: ApicName::parse(&row.name)?,
        role,
        created_at: row.created_at,
    })
}

#[utoipa::path(get, path = "/api/v1/tokens", impl_for = list_tokens, tag = "tokens", params(Paging),
    responses((status = 200, body = Page<TokenInfo>)))]
#[actix_web::get("/api/v1/tokens")]
async fn list_tokens(
    _auth: Auth<Admin>,
    st: web::Data<AppState>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<TokenInfo>>> {
    let (after, limit) = paging.resolve()?;
    let rows = sqlx::query_as!(
        Row,
        "SELECT id, name, role, created_at FROM api_tokens WHERE id > $1 ORDER BY id LIMIT $2",
        after.unwrap_or(0),
        limit + 1,
    )
    .fetch_all(&st.db)
    .await?;
    Ok(Json(Page::decode(rows, limit, |r| Ok((r.id, decode(r)?)))?))
}

/// Creates a token and returns it once. 409 when the name is taken.
#[utoipa::path(post, path = "/api/v1/tokens", impl_for = create, tag = "tokens", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 409, body = Problem)))]
#[actix_web::post("/api/v1/tokens")]
async fn create(
    auth: Auth<Admin>,
    st: web::Data<AppState>,
    ApiJson(new): ApiJson<NewToken>,
) -> ApiResult<HttpResponse> {
    let mut tx = st.db.begin().await?;
    let token = create_token(&mut *tx, new.name.as_str(), new.role)
        .await
        .map_err(|e| match e {
            TokenError::NameTaken(_) => ApiError::Conflict(e.to_string()),
            TokenError::BadName(p) => p.into(),
            TokenError::Database(d) => d.into(),
        })?;
    let row = sqlx::query_as!(
        Row,
        "SELECT id, name, role, created_at FROM api_tokens WHERE name = $1",
        new.name.as_str()
    )
    .fetch_one(&mut *tx)
    .await?;
    let info = decode(row)?;
    let resource = format!("tokens/{}", new.name);
    audit::record(
        &mut tx,
        auth.actor(),
        "token.create",
        &resource,
        None::<&TokenInfo>,
        Some(&info),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(CreatedToken { info, token }))
}

/// Revokes a token at once. Revoking a missing token is a no-op.
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", impl_for = delete_token, tag = "tokens", params(("name" = ApicName, Path)),
    responses((status = 204, description = "revoked or absent")))]
#[actix_web::delete("/api/v1/tokens/{name}")]
async fn delete_token(
    auth: Auth<Admin>,
    st: web::Data<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<HttpResponse> {
    let name = ApicName::parse(&name)?;
    let mut tx = st.db.begin().await?;
    let row = sqlx::query_as!(
        Row,
        "DELETE FROM api_tokens WHERE name = $1 RETURNING id, name, role, created_at",
        name.as_str()
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = row {
        let before = decode(row)?;
        audit::record(
            &mut tx,
            auth.actor(),
            "token.delete",
            &format!("tokens/{name}"),
            Some(&before),
            None::<&TokenInfo>,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
