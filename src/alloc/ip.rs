//! IPv4 address leases in an EPG's subnets, keyed by a reservation name.

use std::net::Ipv4Addr;

use sqlx::PgConnection;

use super::{interval_secs, AllocError};
use crate::db::subnets::{self, StoredSubnet};

/// Addresses fetched per round trip while skipping taken ones.
const BATCH: i64 = 256;

/// Returns the address held by reservation `name` of the EPG, creating the lease when needed:
/// an existing (or still quarantined) reservation keeps its address, a requested address is
/// honoured only when it is free and allocatable, otherwise the lowest free address of the
/// first subnet that has one is taken.
pub async fn reserve(
    conn: &mut PgConnection,
    epg_id: i64,
    name: &str,
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, AllocError> {
    // Serializes every allocation in this EPG across replicas.
    let mut subnets = subnets::lock_for_epg(conn, epg_id).await?;
    if subnets.is_empty() {
        return Err(AllocError::Exhausted(
            "the EPG has no subnet to allocate from".into(),
        ));
    }

    if let Some(addr) = existing(conn, epg_id, name, requested).await? {
        return Ok(addr);
    }
    expire_quarantine(conn, &mut subnets).await?;

    if let Some(want) = requested {
        let subnet = subnets
            .iter()
            .find(|s| s.spec.cidr.contains(want))
            .ok_or_else(|| {
                AllocError::OutOfRange(format!("{want} is in none of the EPG's subnets"))
            })?;
        if !subnet.spec.is_allocatable(want) {
            return Err(AllocError::Unavailable(format!(
                "{want} is the network, broadcast, gateway or a reserved address of {}",
                subnet.spec.cidr
            )));
        }
        if !insert(conn, subnet.id, epg_id, name, want).await? {
            return Err(AllocError::Unavailable(format!(
                "{want} is already leased or quarantined"
            )));
        }
        return Ok(want);
    }

    for subnet in &subnets {
        if let Some(addr) = lowest_free(conn, subnet).await? {
            if !insert(conn, subnet.id, epg_id, name, addr).await? {
                // Unreachable while the subnet lock is held; the primary key still refuses it.
                return Err(AllocError::Unavailable(format!(
                    "{addr} was taken concurrently"
                )));
            }
            subnets::set_hint(conn, subnet.id, next(addr)).await?;
            return Ok(addr);
        }
    }
    Err(AllocError::Exhausted(
        "no free address is left in the EPG's subnets".into(),
    ))
}

/// The address a reservation already holds; a quarantined one is taken back into use.
async fn existing(
    conn: &mut PgConnection,
    epg_id: i64,
    name: &str,
    requested: Option<Ipv4Addr>,
) -> Result<Option<Ipv4Addr>, AllocError> {
    let row: Option<(String,)> = sqlx::query_as(
        "UPDATE ip_leases SET state = 'active', quarantined_until = NULL
         WHERE epg_id = $1 AND reservation = $2 RETURNING host(address)",
    )
    .bind(epg_id)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((text,)) = row else { return Ok(None) };
    let addr = parse_addr(&text)?;
    match requested {
        Some(want) if want != addr => Err(AllocError::Unavailable(format!(
            "reservation `{name}` already holds {addr}; delete it first to move it to {want}"
        ))),
        _ => Ok(Some(addr)),
    }
}

/// Deletes leases whose quarantine ended and lowers the subnets' scan hints accordingly.
async fn expire_quarantine(
    conn: &mut PgConnection,
    subnets: &mut [StoredSubnet],
) -> Result<(), AllocError> {
    let ids: Vec<i64> = subnets.iter().map(|s| s.id).collect();
    let freed: Vec<(i64, String)> = sqlx::query_as(
        "DELETE FROM ip_leases WHERE subnet_id = ANY($1) AND state = 'quarantined' AND quarantined_until <= now()
         RETURNING subnet_id, host(address)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for (id, text) in freed {
        let addr = parse_addr(&text)?;
        if let Some(s) = subnets.iter_mut().find(|s| s.id == id) {
            if addr < s.hint {
                s.hint = addr;
                subnets::set_hint(conn, id, addr).await?;
            }
        }
    }
    Ok(())
}

/// The lowest allocatable address at or above the subnet's hint that has no lease.
async fn lowest_free(
    conn: &mut PgConnection,
    subnet: &StoredSubnet,
) -> Result<Option<Ipv4Addr>, AllocError> {
    let (first, last) = subnet.spec.host_bounds();
    let mut cand = u32::from(subnet.hint.max(first));
    let last = u32::from(last);
    loop {
        let taken: Vec<(String,)> = sqlx::query_as(
            "SELECT host(address) FROM ip_leases WHERE subnet_id = $1 AND address >= $2::inet
             ORDER BY address LIMIT $3",
        )
        .bind(subnet.id)
        .bind(Ipv4Addr::from(cand).to_string())
        .bind(BATCH)
        .fetch_all(&mut *conn)
        .await?;
        let taken = taken
            .iter()
            .map(|(t,)| parse_addr(t).map(u32::from))
            .collect::<Result<Vec<_>, _>>()?;
        let mut taken_iter = taken.iter().copied().peekable();
        loop {
            if cand > last {
                return Ok(None);
            }
            while taken_iter.next_if(|t| *t < cand).is_some() {}
            match taken_iter.peek() {
                Some(t) if *t == cand => cand += 1,
                _ if !subnet.spec.is_allocatable(Ipv4Addr::from(cand)) => cand += 1,
                Some(_) => return Ok(Some(Ipv4Addr::from(cand))),
                // The batch ran out: a full batch may hide more leases further up.
                None if taken.len() as i64 == BATCH => break,
                None => return Ok(Some(Ipv4Addr::from(cand))),
            }
        }
    }
}

/// Inserts an active lease; false when the address is already leased.
async fn insert(
    conn: &mut PgConnection,
    subnet_id: i64,
    epg_id: i64,
    name: &str,
    addr: Ipv4Addr,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO ip_leases (subnet_id, address, epg_id, reservation, state)
         VALUES ($1, $2::inet, $3, $4, 'active') ON CONFLICT DO NOTHING",
    )
    .bind(subnet_id)
    .bind(addr.to_string())
    .bind(epg_id)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Quarantines the reservation's lease; returns its address, or None if there was none.
pub async fn release(
    conn: &mut PgConnection,
    epg_id: i64,
    name: &str,
    quarantine: std::time::Duration,
) -> Result<Option<Ipv4Addr>, AllocError> {
    let row: Option<(String,)> = sqlx::query_as(
        "UPDATE ip_leases SET state = 'quarantined', quarantined_until = now() + make_interval(secs => $3)
         WHERE epg_id = $1 AND reservation = $2 AND state = 'active' RETURNING host(address)",
    )
    .bind(epg_id)
    .bind(name)
    .bind(interval_secs(quarantine))
    .fetch_optional(conn)
    .await?;
    row.map(|(t,)| parse_addr(&t)).transpose()
}

fn next(a: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(a).saturating_add(1))
}

pub(crate) fn parse_addr(text: &str) -> Result<Ipv4Addr, AllocError> {
    text.parse().map_err(|e: std::net::AddrParseError| {
        AllocError::Database(sqlx::Error::Decode(Box::new(e)))
    })
}
