//! Bearer-token authentication and role checks.
//!
//! Tokens are random, shown once at creation, and stored only as a sha256 hash. The request
//! middleware looks the bearer token up once ([`identify`]) before any extractor runs, and every
//! API handler takes an [`Auth<R>`] extractor as its first argument. actix-web polls a
//! handler's extractors together, so `Auth<R>` must be ready at once for its 401/403 to win over
//! the body's errors: a caller without the role learns nothing about its input's validity.

use std::future::{ready, Ready};
use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::db::audit::Actor;
use crate::error::ApiError;
use crate::startup::RequestId;

/// What a token may do. `viewer < operator < admin`; `agent` stands apart and is only for
/// agents' callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Role::Viewer, Role::Operator, Role::Admin, Role::Agent]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// Whether a caller with `self` may do what needs `need`.
    pub fn allows(self, need: Role) -> bool {
        let rank = |r: Role| match r {
            Role::Viewer => Some(0),
            Role::Operator => Some(1),
            Role::Admin => Some(2),
            Role::Agent => None,
        };
        match (rank(self), rank(need)) {
            (Some(have), Some(need)) => have >= need,
            _ => self == need,
        }
    }
}

/// A role requirement at the type level, so a handler's signature states who may call it.
pub trait Requirement: Send + Sync + 'static {
    const ROLE: Role;
}

/// Read access.
pub struct Viewer;
/// EPGs and reservations.
pub struct Operator;
/// Pools, hosts, tokens.
pub struct Admin;

impl Requirement for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl Requirement for Operator {
    const ROLE: Role = Role::Operator;
}
impl Requirement for Admin {
    const ROLE: Role = Role::Admin;
}
/// Agents' callbacks (container events).
pub struct Agent;
impl Requirement for Agent {
    const ROLE: Role = Role::Agent;
}

/// The authenticated caller of a request that needs role `R`.
pub struct Auth<R> {
    /// Name of the token used; recorded as the actor in the audit log.
    pub token_name: String,
    /// The request id (`x-request-id`), recorded in the audit log.
    pub request_id: Option<String>,
    _role: PhantomData<R>,
}

/// Who the request's bearer token names, as [`identify`] found it; `None` when the request
/// carries no token or one that is unknown.
pub struct Identity(pub Result<Option<(String, Role)>, ApiError>);

/// Looks up the request's bearer token, if it has one (the scheme in any case, as
/// [`weft_domain::bearer_token`] reads it).
pub async fn identify(db: &PgPool, headers: &HeaderMap) -> Identity {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(weft_domain::bearer_token);
    Identity(match token {
        Some(token) => lookup(db, token).await,
        None => Ok(None),
    })
}

impl<R: Requirement> FromRequest for Auth<R> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let identity = req.extensions_mut().remove::<Identity>();
        let request_id = req.extensions().get::<RequestId>().map(|id| id.0.clone());
        ready(match identity {
            Some(Identity(found)) => Self::check(found, request_id),
            None => Err(ApiError::Internal(anyhow::anyhow!(
                "the request middleware did not identify the caller"
            ))),
        })
    }
}

impl<R: Requirement> Auth<R> {
    fn check(
        found: Result<Option<(String, Role)>, ApiError>,
        request_id: Option<String>,
    ) -> Result<Self, ApiError> {
        let (actor, role) = found?.ok_or(ApiError::Unauthorized)?;
        if !role.allows(R::ROLE) {
            return Err(ApiError::Forbidden {
                have: role.as_str(),
                need: R::ROLE.as_str(),
            });
        }
        Ok(Self {
            token_name: actor,
            request_id,
            _role: PhantomData,
        })
    }
}

impl<R> Auth<R> {
    /// The caller as the audit log records it.
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            name: &self.token_name,
            request_id: self.request_id.as_deref(),
        }
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

async fn lookup(db: &PgPool, token: &str) -> Result<Option<(String, Role)>, ApiError> {
    let row = sqlx::query!(
        "SELECT name, role FROM api_tokens WHERE token_hash = $1",
        hash(token)
    )
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|r| Role::parse(&r.role).map(|role| (r.name, role))))
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named `{0}` already exists")]
    NameTaken(String),
    #[error("token name: {0}")]
    BadName(#[from] crate::domain::ParseError),
    #[error("storing the token failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// Creates a token and returns it; only its hash is stored, so this is the one chance to see it.
pub async fn create_token<'c, E>(db: E, name: &str, role: Role) -> Result<String, TokenError>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let name = crate::domain::ApicName::parse(name)?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("weft_{}", hex::encode(bytes));
    let inserted = sqlx::query!(
        "INSERT INTO api_tokens (name, role, token_hash) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        name.as_str(),
        role.as_str(),
        hash(&token),
    )
    .execute(db)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(TokenError::NameTaken(name.to_string()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_agent_stands_apart() {
        assert!(Role::Admin.allows(Role::Viewer));
        assert!(Role::Operator.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Agent.allows(Role::Viewer));
        assert!(!Role::Admin.allows(Role::Agent));
        assert!(Role::Agent.allows(Role::Agent));
    }
}
