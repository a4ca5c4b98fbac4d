//! The audit log: one row per mutation, written in the mutation's own transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

/// Who made a change, and in which request.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub name: &'a str,
    pub request_id: Option<&'a str>,
}

/// Records `action` on `resource` with the states before and after (None = absent).
pub async fn record<B: Serialize, A: Serialize>(
    conn: &mut PgConnection,
    actor: Actor<'_>,
    action: &str,
    resource: &str,
    before: Option<&B>,
    after: Option<&A>,
) -> Result<(), sqlx::Error> {
    let json = |v: Option<Value>| v.filter(|v| !v.is_null());
    sqlx::query!(
        "INSERT INTO audit_log (actor, action, resource, before, after, request_id) VALUES ($1, $2, $3, $4, $5, $6)",
        actor.name,
        action,
        resource,
        json(before.and_then(|b| serde_json::to_value(b).ok())),
        json(after.and_then(|a| serde_json::to_value(a).ok())),
        actor.request_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Filters of the audit listing; all optional and combined with AND.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    pub actor: Option<&'a str>,
    pub action: Option<&'a str>,
    pub resource_prefix: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub struct Entry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: Option<String>,
}

/// Newest first, entries older than `before_id`.
pub async fn list(
    conn: &mut PgConnection,
    f: &Filter<'_>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    // Optional filters as `$n IS NULL OR ...`: one static, checked statement serves every
    // combination, so no query is assembled at run time.
    sqlx::query_as!(
        Entry,
        "SELECT id, at, actor, action, resource, before, after, request_id FROM audit_log
         WHERE ($1::text IS NULL OR actor = $1)
           AND ($2::text IS NULL OR action = $2)
           AND ($3::text IS NULL OR starts_with(resource, $3))
           AND ($4::text IS NULL OR request_id = $4)
           AND ($5::timestamptz IS NULL OR at >= $5)
           AND ($6::timestamptz IS NULL OR at < $6)
           AND ($7::bigint IS NULL OR id < $7)
         ORDER BY id DESC LIMIT $8",
        f.actor,
        f.action,
        f.resource_prefix,
        f.request_id,
        f.since,
        f.until,
        before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}
