//! VLAN assignment from a pool: one VLAN per EPG, unique within the pool.

use sqlx::PgConnection;

use super::{interval_secs, AllocError};
use crate::domain::VlanId;

/// Locks the pool row so that allocations in one pool are serialized across all replicas.
/// Returns false when the pool does not exist.
pub async fn lock_pool(conn: &mut PgConnection, pool_id: i64) -> Result<bool, sqlx::Error> {
    let row = sqlx::query_scalar!(
        "SELECT id FROM vlan_pools WHERE id = $1 FOR NO KEY UPDATE",
        pool_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

/// Gives the EPG `epg_id` a VLAN from the pool: its own quarantined VLAN if it had one, else
/// the requested VLAN if free, else the lowest free VLAN. The caller holds [`lock_pool`].
pub async fn assign(
    conn: &mut PgConnection,
    pool_id: i64,
    epg_id: i64,
    epg_key: &str,
    requested: Option<VlanId>,
) -> Result<VlanId, AllocError> {
    sqlx::query!(
        "DELETE FROM vlan_assignments WHERE pool_id = $1 AND state = 'quarantined' AND quarantined_until <= now()",
        pool_id
    )
    .execute(&mut *conn)
    .await?;

    // An EPG deleted and re-created during quarantine gets its VLAN back: nothing else could
    // have used it, and the fabric config that still may reference it stays right.
    let reclaimed = sqlx::query_scalar!(
        "UPDATE vlan_assignments SET state = 'active', epg_id = $2, quarantined_until = NULL
         WHERE (pool_id, vlan) = (
             SELECT a.pool_id, a.vlan FROM vlan_assignments a JOIN vlan_ranges r
               ON r.pool_id = a.pool_id AND a.vlan BETWEEN r.first_vlan AND r.last_vlan
             WHERE a.pool_id = $1 AND a.epg_key = $3 AND a.state = 'quarantined'
               AND ($4::int IS NULL OR a.vlan = $4)
             ORDER BY a.vlan LIMIT 1)
         RETURNING vlan",
        pool_id,
        epg_id,
        epg_key,
        requested.map(|v| i32::from(v.get())),
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(v) = reclaimed {
        return to_vlan(v);
    }

    if let Some(want) = requested {
        let in_pool = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM vlan_ranges WHERE pool_id = $1 AND $2 BETWEEN first_vlan AND last_vlan)
                   AS "in_pool!""#,
            pool_id,
            i32::from(want.get()),
        )
        .fetch_one(&mut *conn)
        .await?;
        if !in_pool {
            return Err(AllocError::OutOfRange(format!(
                "requested VLAN {want} is not in the pool's ranges"
            )));
        }
        let taken = sqlx::query!(
            "INSERT INTO vlan_assignments (pool_id, vlan, epg_id, epg_key, state)
             VALUES ($1, $2, $3, $4, 'active') ON CONFLICT DO NOTHING",
            pool_id,
            i32::from(want.get()),
            epg_id,
            epg_key,
        )
        .execute(&mut *conn)
        .await?;
        if taken.rows_affected() == 1 {
            return Ok(want);
        }
    }

    let lowest = sqlx::query_scalar!(
        "INSERT INTO vlan_assignments (pool_id, vlan, epg_id, epg_key, state)
         SELECT $1, v, $2, $3, 'active'
         FROM vlan_ranges r, generate_series(r.first_vlan, r.last_vlan) AS v
         WHERE r.pool_id = $1
           AND NOT EXISTS (SELECT 1 FROM vlan_assignments a WHERE a.pool_id = $1 AND a.vlan = v)
         ORDER BY v LIMIT 1
         ON CONFLICT DO NOTHING
         RETURNING vlan",
        pool_id,
        epg_id,
        epg_key,
    )
    .fetch_optional(&mut *conn)
    .await?;
    match lowest {
        Some(v) => to_vlan(v),
        None => Err(AllocError::Exhausted(
            "the EPG's VLAN pool has no free VLAN".into(),
        )),
    }
}

/// Moves the existing EPG `epg_id` from its VLAN to `want`, for a changed `requested_vlan`.
/// Refused (`InUse`) while attachments or fabric bindings use the current VLAN, and
/// (`Unavailable`) while `want` is held by another EPG or quarantined after one; `want` outside
/// the pool is `OutOfRange`. The old VLAN goes into quarantine. The caller holds [`lock_pool`].
pub async fn change(
    conn: &mut PgConnection,
    pool_id: i64,
    epg_id: i64,
    epg_key: &str,
    want: VlanId,
    quarantine: std::time::Duration,
) -> Result<VlanId, AllocError> {
    let pins = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM attachments WHERE epg_id = $1) AS "attachments!",
                  (SELECT count(*) FROM bindings WHERE epg_id = $1) AS "bindings!",
                  (SELECT vlan FROM vlan_assignments WHERE epg_id = $1) AS current"#,
        epg_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let current = pins
        .current
        .map_or_else(|| "none".into(), |v| v.to_string());
    if pins.attachments + pins.bindings > 0 {
        return Err(AllocError::InUse(format!(
            "VLAN {current} carries {} attachment(s) and {} fabric binding(s) of this EPG; \
             detach them before moving it to VLAN {want}",
            pins.attachments, pins.bindings
        )));
    }
    let holder = sqlx::query!(
        "SELECT epg_key, state, quarantined_until FROM vlan_assignments
         WHERE pool_id = $1 AND vlan = $2 AND (state = 'active' OR quarantined_until > now())",
        pool_id,
        i32::from(want.get()),
    )
    .fetch_optional(&mut *conn)
    .await?;
    match holder {
        Some(h) if h.state == "active" => {
            return Err(AllocError::Unavailable(format!(
                "VLAN {want} is held by EPG {}",
                h.epg_key
            )))
        }
        Some(h) if h.epg_key != epg_key => {
            return Err(AllocError::Unavailable(format!(
                "VLAN {want} is in quarantine after EPG {} until {}",
                h.epg_key,
                h.quarantined_until
                    .map_or_else(|| "?".into(), |t| t.to_rfc3339())
            )))
        }
        // Free, or this EPG's own VLAN from before: `assign` takes it.
        _ => {}
    }
    release(conn, epg_id, quarantine).await?;
    assign(conn, pool_id, epg_id, epg_key, Some(want)).await
}

/// Puts the EPG's VLAN into quarantine; it is not handed to another EPG before it ends.
pub async fn release(
    conn: &mut PgConnection,
    epg_id: i64,
    quarantine: std::time::Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE vlan_assignments SET state = 'quarantined', epg_id = NULL,
             quarantined_until = now() + make_interval(secs => $2)
         WHERE epg_id = $1",
        epg_id,
        interval_secs(quarantine),
    )
    .execute(conn)
    .await?;
    Ok(())
}

fn to_vlan(v: i32) -> Result<VlanId, AllocError> {
    VlanId::from_i64(i64::from(v)).map_err(|e| AllocError::Database(sqlx::Error::Decode(e.into())))
}
