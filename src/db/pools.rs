//! VLAN pools and their ranges.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::Deleted;

use crate::domain::{VlanId, VlanRange};

#[derive(Debug, Clone)]
pub struct PoolRow {
    pub id: i64,
    pub name: String,
    pub ranges: Vec<VlanRange>,
    pub allocated: i64,
    pub quarantined: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

type Raw = (
    i64,
    String,
    serde_json::Value,
    i64,
    i64,
    DateTime<Utc>,
    DateTime<Utc>,
);

const SELECT: &str = "
    SELECT p.id, p.name,
        COALESCE((SELECT json_agg(json_build_object('first', first_vlan, 'last', last_vlan) ORDER BY first_vlan)
                  FROM vlan_ranges r WHERE r.pool_id = p.id), '[]'::json)::jsonb,
        (SELECT count(*) FROM vlan_assignments a WHERE a.pool_id = p.id AND a.state = 'active'),
        (SELECT count(*) FROM vlan_assignments a WHERE a.pool_id = p.id AND a.state = 'quarantined'
             AND a.quarantined_until > now()),
        p.created_at, p.updated_at
    FROM vlan_pools p";

fn decode(r: Raw) -> Result<PoolRow, sqlx::Error> {
    let ranges = serde_json::from_value(r.2).map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok(PoolRow {
        id: r.0,
        name: r.1,
        ranges,
        allocated: r.3,
        quarantined: r.4,
        created_at: r.5,
        updated_at: r.6,
    })
}

pub async fn get(conn: &mut PgConnection, name: &str) -> Result<Option<PoolRow>, sqlx::Error> {
    let raw: Option<Raw> = sqlx::query_as(&format!("{SELECT} WHERE p.name = $1"))
        .bind(name)
        .fetch_optional(conn)
        .await?;
    raw.map(decode).transpose()
}

pub async fn list(
    conn: &mut PgConnection,
    name_prefix: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<PoolRow>, sqlx::Error> {
    let raw: Vec<Raw> = sqlx::query_as(&format!(
        "{SELECT} WHERE ($1::text IS NULL OR starts_with(p.name, $1)) AND p.id > $2 ORDER BY p.id LIMIT $3"
    ))
    .bind(name_prefix)
    .bind(after.unwrap_or(0))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    raw.into_iter().map(decode).collect()
}

/// Creates the pool if missing and row-locks it; returns (id, created).
pub async fn lock_or_create(
    conn: &mut PgConnection,
    name: &str,
) -> Result<(i64, bool), sqlx::Error> {
    let inserted: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO vlan_pools (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((id,)) = inserted {
        return Ok((id, true));
    }
    let (id,): (i64,) =
        sqlx::query_as("SELECT id FROM vlan_pools WHERE name = $1 FOR NO KEY UPDATE")
            .bind(name)
            .fetch_one(conn)
            .await?;
    Ok((id, false))
}

/// VLANs held by EPGs that fall outside `ranges`.
pub async fn active_outside(
    conn: &mut PgConnection,
    pool_id: i64,
    ranges: &[VlanRange],
) -> Result<Vec<i32>, sqlx::Error> {
    let held: Vec<(i32,)> = sqlx::query_as(
        "SELECT vlan FROM vlan_assignments WHERE pool_id = $1 AND state = 'active' ORDER BY vlan",
    )
    .bind(pool_id)
    .fetch_all(conn)
    .await?;
    Ok(held
        .into_iter()
        .map(|(v,)| v)
        .filter(|v| {
            let inside =
                VlanId::from_i64(i64::from(*v)).map(|v| ranges.iter().any(|r| r.contains(v)));
            !inside.unwrap_or(false)
        })
        .collect())
}

/// Replaces the ranges; quarantined VLANs that fall outside them are dropped.
pub async fn set_ranges(
    conn: &mut PgConnection,
    pool_id: i64,
    ranges: &[VlanRange],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM vlan_ranges WHERE pool_id = $1")
        .bind(pool_id)
        .execute(&mut *conn)
        .await?;
    let firsts: Vec<i32> = ranges.iter().map(|r| i32::from(r.first.get())).collect();
    let lasts: Vec<i32> = ranges.iter().map(|r| i32::from(r.last.get())).collect();
    sqlx::query("INSERT INTO vlan_ranges (pool_id, first_vlan, last_vlan) SELECT $1, f, l FROM unnest($2::int[], $3::int[]) AS t(f, l)")
        .bind(pool_id)
        .bind(&firsts)
        .bind(&lasts)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "DELETE FROM vlan_assignments a WHERE a.pool_id = $1 AND a.state = 'quarantined' AND NOT EXISTS
             (SELECT 1 FROM vlan_ranges r WHERE r.pool_id = $1 AND a.vlan BETWEEN r.first_vlan AND r.last_vlan)",
    )
    .bind(pool_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE vlan_pools SET updated_at = now() WHERE id = $1")
        .bind(pool_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes the pool unless an EPG uses it; its quarantined VLANs go with it.
pub async fn delete(conn: &mut PgConnection, name: &str) -> Result<Deleted, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM vlan_pools WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((id,)) = row else {
        return Ok(Deleted::Missing);
    };
    let (epgs,): (i64,) = sqlx::query_as("SELECT count(*) FROM epgs WHERE pool_id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    if epgs > 0 {
        return Ok(Deleted::InUse(epgs));
    }
    sqlx::query("DELETE FROM vlan_assignments WHERE pool_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM vlan_pools WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(Deleted::Done)
}
