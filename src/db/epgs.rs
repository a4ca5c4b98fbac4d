//! EPG rows with their pool name and allocated VLAN.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::subnets;
use crate::domain::EpgKey;

#[derive(Debug, Clone)]
pub struct EpgRow {
    pub id: i64,
    pub tenant: String,
    pub app: String,
    pub name: String,
    pub bridge_domain: String,
    pub physical_domain: String,
    pub pool_id: i64,
    pub pool: String,
    pub requested_vlan: Option<i32>,
    pub vlan: Option<i32>,
    pub mode: String,
    pub immediacy: String,
    pub managed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `query_as!` into [`EpgRow`] of the one EPG read, followed by `$tail` (a string literal:
/// WHERE, ORDER, LIMIT) and its arguments. A macro because sqlx checks only literal SQL, and
/// `+` of literals is the one composition it accepts.
macro_rules! select_epgs {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            EpgRow,
            "SELECT e.id, e.tenant, e.app, e.name, e.bridge_domain, e.physical_domain, e.pool_id,
                    p.name AS pool, e.requested_vlan, a.vlan AS \"vlan?\", e.mode, e.immediacy,
                    e.managed, e.created_at, e.updated_at
             FROM epgs e JOIN vlan_pools p ON p.id = e.pool_id
             LEFT JOIN vlan_assignments a ON a.epg_id = e.id " + $tail
            $(, $arg)*
        )
    };
}

pub async fn get(conn: &mut PgConnection, key: &EpgKey) -> Result<Option<EpgRow>, sqlx::Error> {
    select_epgs!(
        "WHERE (e.tenant, e.app, e.name) = ($1, $2, $3)",
        key.tenant.as_str(),
        key.app.as_str(),
        key.epg.as_str(),
    )
    .fetch_optional(conn)
    .await
}

/// Filters of the EPG listing.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    pub tenant: Option<&'a str>,
    pub app: Option<&'a str>,
    pub pool: Option<&'a str>,
}

pub async fn list(
    conn: &mut PgConnection,
    f: &Filter<'_>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<EpgRow>, sqlx::Error> {
    select_epgs!(
        "WHERE ($1::text IS NULL OR e.tenant = $1) AND ($2::text IS NULL OR e.app = $2)
           AND ($3::text IS NULL OR p.name = $3) AND e.id > $4 ORDER BY e.id LIMIT $5",
        f.tenant,
        f.app,
        f.pool,
        after.unwrap_or(0),
        limit,
    )
    .fetch_all(conn)
    .await
}

/// The id and pool id of an EPG, if it exists.
pub async fn ids_of(
    conn: &mut PgConnection,
    key: &EpgKey,
) -> Result<Option<(i64, i64)>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT id, pool_id FROM epgs WHERE (tenant, app, name) = ($1, $2, $3)",
        key.tenant.as_str(),
        key.app.as_str(),
        key.epg.as_str(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.id, r.pool_id)))
}

/// The stored columns a client controls.
pub struct EpgColumns<'a> {
    pub bridge_domain: &'a str,
    pub physical_domain: &'a str,
    pub pool_id: i64,
    pub requested_vlan: Option<i32>,
    pub mode: &'a str,
    pub immediacy: &'a str,
    pub managed: bool,
}

/// Inserts or updates the EPG row; returns (id, created).
pub async fn upsert(
    conn: &mut PgConnection,
    key: &EpgKey,
    c: &EpgColumns<'_>,
) -> Result<(i64, bool), sqlx::Error> {
    let row = sqlx::query!(
        "INSERT INTO epgs (tenant, app, name, bridge_domain, physical_domain, pool_id, requested_vlan, mode, immediacy, managed)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (tenant, app, name) DO UPDATE SET
             bridge_domain = EXCLUDED.bridge_domain, physical_domain = EXCLUDED.physical_domain,
             requested_vlan = EXCLUDED.requested_vlan, mode = EXCLUDED.mode, immediacy = EXCLUDED.immediacy,
             managed = EXCLUDED.managed, updated_at = now()
         RETURNING id, (xmax = 0) AS \"created!\"",
        key.tenant.as_str(),
        key.app.as_str(),
        key.epg.as_str(),
        c.bridge_domain,
        c.physical_domain,
        c.pool_id,
        c.requested_vlan,
        c.mode,
        c.immediacy,
        c.managed,
    )
    .fetch_one(conn)
    .await?;
    Ok((row.id, row.created))
}

/// Row-locks the EPG for deletion and counts what still depends on it: (attachments, active reservations).
pub async fn lock_and_count_users(
    conn: &mut PgConnection,
    id: i64,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_scalar!("SELECT id FROM epgs WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(&mut *conn)
        .await?;
    let row = sqlx::query!(
        "SELECT (SELECT count(*) FROM attachments WHERE epg_id = $1) AS \"attachments!\",
                (SELECT count(*) FROM ip_leases WHERE epg_id = $1 AND state = 'active') AS \"reservations!\"",
        id,
    )
    .fetch_one(conn)
    .await?;
    Ok((row.attachments, row.reservations))
}

/// Deletes the EPG; its addresses still in quarantine are kept for a subnet that comes back
/// ([`subnets::keep_quarantined`]).
pub async fn delete(conn: &mut PgConnection, id: i64) -> Result<(), sqlx::Error> {
    subnets::keep_quarantined(conn, id, None).await?;
    sqlx::query!("DELETE FROM epgs WHERE id = $1", id)
        .execute(conn)
        .await?;
    Ok(())
}
