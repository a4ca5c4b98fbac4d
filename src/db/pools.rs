//! VLAN pools and their ranges.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;

use super::Deleted;

use crate::domain::{VlanId, VlanRange};

#[derive(Debug, Clone)]
pub struct PoolRow {
    pub id: i64,
    pub name: String,
    pub ranges: Vec<VlanRange>,
    /// The physical domain whose VLAN blocks the reconciler copies into `ranges`.
    pub follow_domain: Option<String>,
    pub allocated: i64,
    pub quarantined: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A pool as read, before its ranges leave their JSON wrapper.
struct Raw {
    id: i64,
    name: String,
    ranges: Json<Vec<VlanRange>>,
    follow_domain: Option<String>,
    allocated: i64,
    quarantined: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Raw> for PoolRow {
    fn from(r: Raw) -> Self {
        PoolRow {
            id: r.id,
            name: r.name,
            ranges: r.ranges.0,
            follow_domain: r.follow_domain,
            allocated: r.allocated,
            quarantined: r.quarantined,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// `query_as!` into [`Raw`] followed by `$tail` (a string literal) and its arguments; a macro
/// because sqlx checks only literal SQL (see `select_epgs!`).
macro_rules! select_pools {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Raw,
            r#"SELECT p.id, p.name,
                COALESCE((SELECT json_agg(json_build_object('first', first_vlan, 'last', last_vlan) ORDER BY first_vlan)
                          FROM vlan_ranges r WHERE r.pool_id = p.id), '[]'::json)::jsonb
                    AS "ranges!: Json<Vec<VlanRange>>",
                p.follow_domain,
                (SELECT count(*) FROM vlan_assignments a WHERE a.pool_id = p.id AND a.state = 'active')
                    AS "allocated!",
                (SELECT count(*) FROM vlan_assignments a WHERE a.pool_id = p.id AND a.state = 'quarantined'
                     AND a.quarantined_until > now()) AS "quarantined!",
                p.created_at, p.updated_at
            FROM vlan_pools p "# + $tail
            $(, $arg)*
        )
    };
}

pub async fn get(conn: &mut PgConnection, name: &str) -> Result<Option<PoolRow>, sqlx::Error> {
    let raw = select_pools!("WHERE p.name = $1", name)
        .fetch_optional(conn)
        .await?;
    Ok(raw.map(PoolRow::from))
}

pub async fn list(
    conn: &mut PgConnection,
    name_prefix: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<PoolRow>, sqlx::Error> {
    let raw = select_pools!(
        "WHERE ($1::text IS NULL OR starts_with(p.name, $1)) AND p.id > $2 ORDER BY p.id LIMIT $3",
        name_prefix,
        after.unwrap_or(0),
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(raw.into_iter().map(PoolRow::from).collect())
}

/// Creates the pool if missing and row-locks it; returns (id, created). A pool created under
/// the name of a deleted one takes back that pool's VLANs still in quarantine.
pub async fn lock_or_create(
    conn: &mut PgConnection,
    name: &str,
) -> Result<(i64, bool), sqlx::Error> {
    let inserted = sqlx::query_scalar!(
        "INSERT INTO vlan_pools (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
        name
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = inserted {
        sqlx::query!(
            "WITH kept AS (DELETE FROM released_vlans WHERE pool = $2 RETURNING vlan, epg_key, quarantined_until)
             INSERT INTO vlan_assignments (pool_id, vlan, epg_key, state, quarantined_until)
             SELECT $1, vlan, epg_key, 'quarantined', quarantined_until FROM kept WHERE quarantined_until > now()",
            id,
            name,
        )
        .execute(&mut *conn)
        .await?;
        return Ok((id, true));
    }
    let id = lock(conn, name).await?.ok_or(sqlx::Error::RowNotFound)?;
    Ok((id, false))
}

/// Row-locks the pool named `name`, serializing the allocations in it across replicas (as
/// `alloc::vlan::lock_pool` does by id); its id, or None when there is no such pool.
pub async fn lock(conn: &mut PgConnection, name: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT id FROM vlan_pools WHERE name = $1 FOR NO KEY UPDATE",
        name
    )
    .fetch_optional(conn)
    .await
}

/// VLANs held by EPGs that fall outside `ranges`.
pub async fn active_outside(
    conn: &mut PgConnection,
    pool_id: i64,
    ranges: &[VlanRange],
) -> Result<Vec<i32>, sqlx::Error> {
    let held = sqlx::query_scalar!(
        "SELECT vlan FROM vlan_assignments WHERE pool_id = $1 AND state = 'active' ORDER BY vlan",
        pool_id
    )
    .fetch_all(conn)
    .await?;
    Ok(held
        .into_iter()
        .filter(|v| {
            let inside =
                VlanId::from_i64(i64::from(*v)).map(|v| ranges.iter().any(|r| r.contains(v)));
            !inside.unwrap_or(false)
        })
        .collect())
}

/// Replaces the ranges. Quarantined VLANs outside them stay quarantined: ranges shrunk and
/// restored within the quarantine must not hand them out early.
pub async fn set_ranges(
    conn: &mut PgConnection,
    pool_id: i64,
    ranges: &[VlanRange],
) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM vlan_ranges WHERE pool_id = $1", pool_id)
        .execute(&mut *conn)
        .await?;
    let firsts: Vec<i32> = ranges.iter().map(|r| i32::from(r.first.get())).collect();
    let lasts: Vec<i32> = ranges.iter().map(|r| i32::from(r.last.get())).collect();
    sqlx::query!(
        "INSERT INTO vlan_ranges (pool_id, first_vlan, last_vlan) SELECT $1, f, l FROM unnest($2::int[], $3::int[]) AS t(f, l)",
        pool_id,
        &firsts,
        &lasts,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE vlan_pools SET updated_at = now() WHERE id = $1",
        pool_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets (or clears) the physical domain the pool follows.
pub async fn set_follow_domain(
    conn: &mut PgConnection,
    pool_id: i64,
    domain: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE vlan_pools SET follow_domain = $2, updated_at = now() WHERE id = $1",
        pool_id,
        domain
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The pools that follow a physical domain: (name, domain).
pub async fn following(conn: &mut PgConnection) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT name, follow_domain AS "follow_domain!" FROM vlan_pools
           WHERE follow_domain IS NOT NULL ORDER BY name"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.name, r.follow_domain))
        .collect())
}

/// Deletes the pool unless an EPG uses it. Its VLANs still in quarantine are kept by pool name
/// (`released_vlans`) for a pool re-created under that name.
pub async fn delete(conn: &mut PgConnection, name: &str) -> Result<Deleted, sqlx::Error> {
    let id = sqlx::query_scalar!("SELECT id FROM vlan_pools WHERE name = $1 FOR UPDATE", name)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(id) = id else {
        return Ok(Deleted::Missing);
    };
    let epgs = sqlx::query_scalar!("SELECT count(*) AS \"n!\" FROM epgs WHERE pool_id = $1", id)
        .fetch_one(&mut *conn)
        .await?;
    if epgs > 0 {
        return Ok(Deleted::InUse(epgs));
    }
    // No EPG uses the pool, so every assignment left is a quarantined one.
    sqlx::query!(
        "WITH gone AS (DELETE FROM vlan_assignments WHERE pool_id = $1
                       RETURNING vlan, epg_key, quarantined_until)
         INSERT INTO released_vlans (pool, vlan, epg_key, quarantined_until)
         SELECT $2, vlan, epg_key, quarantined_until FROM gone WHERE quarantined_until > now()
         ON CONFLICT (pool, vlan) DO UPDATE SET epg_key = EXCLUDED.epg_key,
             quarantined_until = GREATEST(released_vlans.quarantined_until, EXCLUDED.quarantined_until)",
        id,
        name,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("DELETE FROM vlan_pools WHERE id = $1", id)
        .execute(conn)
        .await?;
    Ok(Deleted::Done)
}
