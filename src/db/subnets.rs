//! Subnets of an EPG as stored, with the allocation scan hint.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use sqlx::types::Json;
use sqlx::PgConnection;

use crate::alloc::ip::parse_addr;
use crate::alloc::AllocError;
use crate::domain::{AddressRange, Ipv4Cidr, SubnetSpec};

#[derive(Debug, Clone)]
pub struct StoredSubnet {
    pub id: i64,
    pub spec: SubnetSpec,
    /// Every allocatable address below this one is taken.
    pub hint: Ipv4Addr,
}

/// A subnet as read, before its text columns are parsed.
struct Row {
    epg_id: i64,
    id: i64,
    cidr: String,
    gateway: String,
    reserved: Json<Vec<AddressRange>>,
    hint: String,
}

/// `query_as!` into [`Row`] followed by `$tail` (a string literal) and its arguments; a macro
/// because sqlx checks only literal SQL (see `select_epgs!`).
macro_rules! select_subnets {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Row,
            r#"SELECT epg_id, id, cidr::text AS "cidr!", host(gateway) AS "gateway!",
                   reserved AS "reserved: Json<Vec<AddressRange>>", host(alloc_hint) AS "hint!"
               FROM subnets "# + $tail
            $(, $arg)*
        )
    };
}

fn decode(row: Row) -> Result<StoredSubnet, AllocError> {
    let bad = |m: String| AllocError::Database(sqlx::Error::Decode(m.into()));
    let cidr = Ipv4Cidr::parse(&row.cidr).map_err(|e| bad(e.0))?;
    let spec =
        SubnetSpec::new(cidr, parse_addr(&row.gateway)?, row.reserved.0).map_err(|e| bad(e.0))?;
    Ok(StoredSubnet {
        id: row.id,
        spec,
        hint: parse_addr(&row.hint)?,
    })
}

/// The EPG's subnets in declaration order.
pub async fn for_epg(
    conn: &mut PgConnection,
    epg_id: i64,
) -> Result<Vec<StoredSubnet>, AllocError> {
    let rows = select_subnets!("WHERE epg_id = $1 ORDER BY position", epg_id)
        .fetch_all(conn)
        .await?;
    rows.into_iter().map(decode).collect()
}

/// The subnets of several EPGs in one query (a list page), each EPG's in declaration order.
pub async fn for_epgs(
    conn: &mut PgConnection,
    epg_ids: &[i64],
) -> Result<HashMap<i64, Vec<StoredSubnet>>, AllocError> {
    let rows = select_subnets!("WHERE epg_id = ANY($1) ORDER BY epg_id, position", epg_ids)
        .fetch_all(conn)
        .await?;
    let mut out: HashMap<i64, Vec<StoredSubnet>> = HashMap::new();
    for row in rows {
        out.entry(row.epg_id).or_default().push(decode(row)?);
    }
    Ok(out)
}

/// The EPG's subnets, row-locked (in order, so lockers never deadlock) until the transaction ends.
pub async fn lock_for_epg(
    conn: &mut PgConnection,
    epg_id: i64,
) -> Result<Vec<StoredSubnet>, AllocError> {
    let rows = select_subnets!(
        "WHERE epg_id = $1 ORDER BY position FOR NO KEY UPDATE",
        epg_id
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(decode).collect()
}

pub async fn set_hint(
    conn: &mut PgConnection,
    subnet_id: i64,
    hint: Ipv4Addr,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE subnets SET alloc_hint = $2::text::inet WHERE id = $1",
        subnet_id,
        hint.to_string(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the EPG's quarantined leases (of subnet `subnet_id` only, when given) to
/// `released_addresses`, keyed by tenant, bridge domain and CIDR, before the rows that own them
/// are deleted: the quarantine holds for a subnet that comes back under that key.
pub async fn keep_quarantined(
    conn: &mut PgConnection,
    epg_id: i64,
    subnet_id: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH gone AS (
             DELETE FROM ip_leases WHERE epg_id = $1 AND ($2::bigint IS NULL OR subnet_id = $2)
                 AND state = 'quarantined'
             RETURNING subnet_id, address, reservation, quarantined_until)
         INSERT INTO released_addresses
             (tenant, bridge_domain, cidr, address, app, epg, reservation, quarantined_until)
         SELECT e.tenant, e.bridge_domain, s.cidr, g.address, e.app, e.name, g.reservation, g.quarantined_until
         FROM gone g JOIN subnets s ON s.id = g.subnet_id JOIN epgs e ON e.id = $1
         WHERE g.quarantined_until > now()
         ON CONFLICT (tenant, bridge_domain, cidr, address) DO UPDATE SET
             app = EXCLUDED.app, epg = EXCLUDED.epg, reservation = EXCLUDED.reservation,
             quarantined_until = GREATEST(released_addresses.quarantined_until, EXCLUDED.quarantined_until)",
        epg_id,
        subnet_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the addresses kept by [`keep_quarantined`] for the EPG's tenant, bridge domain and the
/// CIDR of its new subnet `subnet_id` back into that subnet as quarantined leases. The reservation
/// name comes back too when the EPG is the one that held it (deleted and re-created).
async fn restore_quarantined(
    conn: &mut PgConnection,
    epg_id: i64,
    subnet_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH kept AS (
             DELETE FROM released_addresses r USING epgs e, subnets s
             WHERE e.id = $1 AND s.id = $2 AND (r.tenant, r.bridge_domain, r.cidr) = (e.tenant, e.bridge_domain, s.cidr)
             RETURNING r.address, r.reservation, r.quarantined_until, (r.app, r.epg) = (e.app, e.name) AS same_epg)
         INSERT INTO ip_leases (subnet_id, address, epg_id, reservation, state, quarantined_until)
         SELECT $2, k.address, $1,
                CASE WHEN k.same_epg AND NOT EXISTS
                         (SELECT 1 FROM ip_leases x WHERE x.epg_id = $1 AND x.reservation = k.reservation)
                     THEN k.reservation END,
                'quarantined', k.quarantined_until
         FROM kept k WHERE k.quarantined_until > now()
         ON CONFLICT DO NOTHING",
        epg_id,
        subnet_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Refuses (`Unavailable`) subnets that overlap one of another EPG on the same bridge domain of
/// the same tenant: as on ACI, a subnet belongs to the bridge domain, and two EPGs there handing
/// out the same addresses would collide on one L2 segment. A lock per bridge domain, held until
/// the transaction ends, makes concurrent PUTs on one bridge domain check one after the other.
async fn check_bridge_domain(
    conn: &mut PgConnection,
    epg_id: i64,
    specs: &[SubnetSpec],
) -> Result<(), AllocError> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('weft-bd/' || tenant || '/' || bridge_domain, 0))
         FROM epgs WHERE id = $1",
        epg_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let cidrs: Vec<String> = specs.iter().map(|s| s.cidr.to_string()).collect();
    let clash = sqlx::query!(
        r#"SELECT o.tenant || '/' || o.app || '/' || o.name AS "epg!", o.bridge_domain,
                  s.cidr::text AS "theirs!", mine AS "mine!"
           FROM epgs me JOIN epgs o ON (o.tenant, o.bridge_domain) = (me.tenant, me.bridge_domain)
           JOIN subnets s ON s.epg_id = o.id, unnest($2::text[]) AS mine
           WHERE me.id = $1 AND o.id <> me.id AND s.cidr && mine::cidr
           ORDER BY o.id, s.position LIMIT 1"#,
        epg_id,
        &cidrs,
    )
    .fetch_optional(&mut *conn)
    .await?;
    match clash {
        Some(c) => Err(AllocError::Unavailable(format!(
            "subnet {} overlaps {} of EPG {} on bridge domain `{}`: a subnet belongs to its \
             bridge domain, so only one EPG there can hold it",
            c.mine, c.theirs, c.epg, c.bridge_domain
        ))),
        None => Ok(()),
    }
}

/// Makes the EPG's stored subnets equal `specs`. Refuses (`InUse`) to drop a subnet
/// that still has active leases, or to make a leased address unallocatable, and
/// (`Unavailable`) subnets another EPG on the bridge domain holds. Quarantined leases
/// of a dropped subnet are kept ([`keep_quarantined`]) and come back with it.
pub async fn replace(
    conn: &mut PgConnection,
    epg_id: i64,
    specs: &[SubnetSpec],
) -> Result<(), AllocError> {
    check_bridge_domain(conn, epg_id, specs).await?;
    let current = lock_for_epg(conn, epg_id).await?;
    for old in &current {
        let leased = sqlx::query_scalar!(
            r#"SELECT host(address) AS "address!" FROM ip_leases WHERE subnet_id = $1 AND state = 'active'"#,
            old.id
        )
        .fetch_all(&mut *conn)
        .await?;
        let new = specs.iter().find(|s| s.cidr == old.spec.cidr);
        for text in &leased {
            let addr = parse_addr(text)?;
            match new {
                None => {
                    return Err(AllocError::InUse(format!(
                        "subnet {} still has leased addresses",
                        old.spec.cidr
                    )))
                }
                Some(n) if !n.is_allocatable(addr) => {
                    return Err(AllocError::InUse(format!(
                        "leased address {addr} would become the gateway or reserved"
                    )))
                }
                Some(_) => {}
            }
        }
        if new.is_none() {
            keep_quarantined(conn, epg_id, Some(old.id)).await?;
            sqlx::query!("DELETE FROM subnets WHERE id = $1", old.id)
                .execute(&mut *conn)
                .await?;
        }
    }
    // Positions are rewritten in two steps so the UNIQUE (epg_id, position) never collides midway.
    sqlx::query!(
        "UPDATE subnets SET position = -position - 1 WHERE epg_id = $1",
        epg_id
    )
    .execute(&mut *conn)
    .await?;
    for (pos, s) in specs.iter().enumerate() {
        let (first, _) = s.host_bounds();
        let inserted = sqlx::query!(
            "INSERT INTO subnets (epg_id, position, cidr, gateway, reserved, alloc_hint)
             VALUES ($1, $2, $3::text::cidr, $4::text::inet, $5, $6::text::inet)
             ON CONFLICT (epg_id, cidr) DO UPDATE SET position = EXCLUDED.position, gateway = EXCLUDED.gateway,
                 reserved = EXCLUDED.reserved,
                 alloc_hint = CASE WHEN subnets.gateway = EXCLUDED.gateway AND subnets.reserved = EXCLUDED.reserved
                                   THEN subnets.alloc_hint ELSE EXCLUDED.alloc_hint END
             RETURNING id, (xmax = 0) AS \"created!\"",
            epg_id,
            pos as i32,
            s.cidr.to_string(),
            s.gateway.to_string(),
            serde_json::to_value(&s.reserved).unwrap_or_default(),
            first.to_string(),
        )
        .fetch_one(&mut *conn)
        .await?;
        if inserted.created {
            restore_quarantined(conn, epg_id, inserted.id).await?;
        }
    }
    Ok(())
}
