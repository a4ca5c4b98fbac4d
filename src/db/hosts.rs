//! Hosts running weft-agent and their uplinks.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::Deleted;

#[derive(Debug, Clone)]
pub struct HostRow {
    pub id: i64,
    pub name: String,
    pub agent_url: String,
    pub agent_token_set: bool,
    pub backend: String,
    pub mtu: i32,
    /// `[{"interface": .., "path_dn": ..}]` ordered by interface bytewise (as Rust sorts them,
    /// whatever the database's collation), so a repeated PUT compares equal.
    pub uplinks: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `query_as!` into [`HostRow`] followed by `$tail` (a string literal) and its arguments; a
/// macro because sqlx checks only literal SQL (see `select_epgs!`).
macro_rules! select_hosts {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            HostRow,
            "SELECT h.id, h.name, h.agent_url, h.agent_token IS NOT NULL AS \"agent_token_set!\",
                h.backend, h.mtu,
                COALESCE((SELECT json_agg(json_build_object('interface', u.interface, 'path_dn', u.path_dn)
                          ORDER BY u.interface COLLATE \"C\") FROM host_uplinks u WHERE u.host_id = h.id),
                         '[]'::json)::jsonb AS \"uplinks!\",
                h.created_at, h.updated_at
             FROM hosts h " + $tail
            $(, $arg)*
        )
    };
}

pub async fn get(conn: &mut PgConnection, name: &str) -> Result<Option<HostRow>, sqlx::Error> {
    select_hosts!("WHERE h.name = $1", name)
        .fetch_optional(conn)
        .await
}

pub async fn list(
    conn: &mut PgConnection,
    backend: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<HostRow>, sqlx::Error> {
    select_hosts!(
        "WHERE ($1::text IS NULL OR h.backend = $1) AND h.id > $2 ORDER BY h.id LIMIT $3",
        backend,
        after.unwrap_or(0),
        limit,
    )
    .fetch_all(conn)
    .await
}

/// The stored columns a client controls. `agent_token: None` keeps the stored token.
pub struct HostColumns<'a> {
    pub agent_url: &'a str,
    pub agent_token: Option<&'a str>,
    pub backend: &'a str,
    pub mtu: i32,
}

/// Inserts or updates the host and replaces its uplinks; returns whether it was created.
pub async fn upsert(
    conn: &mut PgConnection,
    name: &str,
    c: &HostColumns<'_>,
    uplinks: &[(String, String)],
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query!(
        "INSERT INTO hosts (name, agent_url, agent_token, backend, mtu) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO UPDATE SET agent_url = EXCLUDED.agent_url,
             agent_token = COALESCE(EXCLUDED.agent_token, hosts.agent_token),
             backend = EXCLUDED.backend, mtu = EXCLUDED.mtu, updated_at = now()
         RETURNING id, (xmax = 0) AS \"created!\"",
        name,
        c.agent_url,
        c.agent_token,
        c.backend,
        c.mtu,
    )
    .fetch_one(&mut *conn)
    .await?;
    let id = row.id;
    let (ifaces, paths): (Vec<&str>, Vec<&str>) = uplinks
        .iter()
        .map(|(i, p)| (i.as_str(), p.as_str()))
        .unzip();
    sqlx::query!(
        "DELETE FROM host_uplinks WHERE host_id = $1 AND NOT (interface = ANY($2))",
        id,
        &ifaces as &[&str],
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO host_uplinks (host_id, interface, path_dn) SELECT $1, i, p FROM unnest($2::text[], $3::text[]) AS t(i, p)
         ON CONFLICT (host_id, interface) DO UPDATE SET path_dn = EXCLUDED.path_dn",
        id,
        &ifaces as &[&str],
        &paths as &[&str],
    )
    .execute(conn)
    .await?;
    Ok(row.created)
}

/// Whether the stored agent token equals `token` (compared in the database, never logged).
pub async fn token_is(
    conn: &mut PgConnection,
    name: &str,
    token: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT agent_token IS NOT DISTINCT FROM $2 AS \"same!\" FROM hosts WHERE name = $1",
        name,
        token,
    )
    .fetch_one(conn)
    .await
}

/// Deletes the host unless containers on it are attached.
pub async fn delete(conn: &mut PgConnection, name: &str) -> Result<Deleted, sqlx::Error> {
    let id = sqlx::query_scalar!("SELECT id FROM hosts WHERE name = $1 FOR UPDATE", name)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(id) = id else {
        return Ok(Deleted::Missing);
    };
    let n = sqlx::query_scalar!(
        "SELECT count(*) AS \"n!\" FROM attachments WHERE host_id = $1",
        id
    )
    .fetch_one(&mut *conn)
    .await?;
    if n > 0 {
        return Ok(Deleted::InUse(n));
    }
    sqlx::query!("DELETE FROM hosts WHERE id = $1", id)
        .execute(conn)
        .await?;
    Ok(Deleted::Done)
}
