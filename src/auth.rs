//! Bearer-token authentication and role checks.
//!
//! Tokens are random, shown once at creation, and stored only as a sha256 hash. Every API
//! handler takes an [`Auth<R>`] extractor as its first argument, so the role check runs before
//! the body is even read: a caller without the role learns nothing about its input's validity.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::db::audit::Actor;
use crate::error::ApiError;
use crate::startup::AppState;

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

/// The authenticated caller of a request that needs role `R`.
pub struct Auth<R> {
    /// Name of the token used; recorded as the actor in the audit log.
    pub token_name: String,
    /// The request id (`x-request-id`), recorded in the audit log.
    pub request_id: Option<String>,
    _role: PhantomData<R>,
}

impl<R: Requirement> FromRequestParts<AppState> for Auth<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        let (actor, role) = lookup(&state.db, token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if !role.allows(R::ROLE) {
            return Err(ApiError::Forbidden {
                have: role.as_str(),
                need: R::ROLE.as_str(),
            });
        }
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        tracing::Span::current().record("actor", actor.as_str());
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
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT name, role FROM api_tokens WHERE token_hash = $1")
            .bind(hash(token))
            .fetch_optional(db)
            .await?;
    Ok(row.and_then(|(name, role)| Role::parse(&role).map(|r| (name, r))))
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
    let inserted = sqlx::query("INSERT INTO api_tokens (name, role, token_hash) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
        .bind(name.as_str())
        .bind(role.as_str())
        .bind(hash(&token))
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
