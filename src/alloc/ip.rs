//! IPv4 address leases in an EPG's subnets, keyed by a reservation name.

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{interval_secs, AllocError};
use crate::db::subnets::{self, StoredSubnet};
use crate::domain::Ipv4Cidr;

/// Addresses fetched per round trip while skipping taken ones.
const BATCH: i64 = 256;

/// An address held by a reservation, with what a client needs to configure it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub subnet: Ipv4Cidr,
    pub gateway: Ipv4Addr,
    pub created_at: DateTime<Utc>,
}

/// Whether a reservation PUT created the reservation or found it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was not held before this call: new, or taken back from quarantine.
    Created,
    /// It was already held, with this very lease.
    Held,
}

/// Returns the lease of reservation `name` in the EPG, creating it when needed: an existing
/// (or still quarantined) reservation keeps its address, a requested address is honoured only
/// when it is free and allocatable, otherwise the lowest free address of the first subnet that
/// has one is taken. The [`Outcome`] is decided under the subnet lock, so of concurrent
/// identical requests exactly one is told `Created`.
///
/// Work that needs no lock (the idempotent repeat, expiring quarantine) runs before the subnet
/// lock, so the serialized part is short: lock, find, insert (+ hint), and the caller's commit.
pub async fn reserve(
    conn: &mut PgConnection,
    epg_id: i64,
    name: &str,
    requested: Option<Ipv4Addr>,
) -> Result<(Lease, Outcome), AllocError> {
    if let Some((lease, true)) = find(conn, epg_id, name).await? {
        return check_requested(lease, Outcome::Held, name, requested);
    }
    let freed = expire_quarantine(conn, epg_id).await?;
    // Serializes every allocation in this EPG across replicas.
    let mut subnets = subnets::lock_for_epg(conn, epg_id).await?;
    // An EPG deleted while this request waited for the lock has no subnets left (a live one
    // has at least one): nothing to allocate from, and the answer is that it is gone.
    if subnets.is_empty() {
        return Err(AllocError::Gone("the EPG was deleted meanwhile".into()));
    }
    // Held or quarantined now, whatever `find` saw before the lock.
    if let Some((lease, outcome)) = reactivate(conn, epg_id, name).await? {
        return check_requested(lease, outcome, name, requested);
    }
    lower_hints(conn, &mut subnets, &freed).await?;

    let Some((subnet, addr)) = candidate(conn, &subnets, requested).await? else {
        return Err(AllocError::Exhausted(
            "no free address is left in the EPG's subnets".into(),
        ));
    };
    let advance = requested.is_none().then(|| next(addr));
    match insert(
        conn,
        subnet.id,
        epg_id,
        Owner::Reservation(name),
        addr,
        advance,
    )
    .await?
    {
        Some(created_at) => Ok((
            Lease {
                address: addr,
                subnet: subnet.spec.cidr,
                gateway: subnet.spec.gateway,
                created_at,
            },
            Outcome::Created,
        )),
        None => Err(AllocError::Unavailable(format!(
            "{addr} is already leased or quarantined"
        ))),
    }
}

/// The subnet and address to lease: the requested one if allocatable, else the lowest free.
async fn candidate<'a>(
    conn: &mut PgConnection,
    subnets: &'a [StoredSubnet],
    requested: Option<Ipv4Addr>,
) -> Result<Option<(&'a StoredSubnet, Ipv4Addr)>, AllocError> {
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
        return Ok(Some((subnet, want)));
    }
    for subnet in subnets {
        if let Some(addr) = lowest_free(conn, subnet).await? {
            return Ok(Some((subnet, addr)));
        }
    }
    Ok(None)
}

fn check_requested(
    lease: Lease,
    outcome: Outcome,
    name: &str,
    requested: Option<Ipv4Addr>,
) -> Result<(Lease, Outcome), AllocError> {
    match requested {
        Some(want) if want != lease.address => Err(AllocError::Unavailable(format!(
            "reservation `{name}` already holds {}; delete it first to move it to {want}",
            lease.address
        ))),
        _ => Ok((lease, outcome)),
    }
}

/// A lease as read, before its text columns are parsed.
struct LeaseRow {
    address: String,
    cidr: String,
    gateway: String,
    created_at: DateTime<Utc>,
    active: bool,
}

fn decode(row: LeaseRow) -> Result<(Lease, bool), AllocError> {
    let bad = |m: String| AllocError::Database(sqlx::Error::Decode(m.into()));
    let lease = Lease {
        address: parse_addr(&row.address)?,
        subnet: Ipv4Cidr::parse(&row.cidr).map_err(|e| bad(e.0))?,
        gateway: parse_addr(&row.gateway)?,
        created_at: row.created_at,
    };
    Ok((lease, row.active))
}

/// The reservation's lease and whether it is active (false: quarantined).
async fn find(
    conn: &mut PgConnection,
    epg_id: i64,
    name: &str,
) -> Result<Option<(Lease, bool)>, AllocError> {
    let row = sqlx::query_as!(
        LeaseRow,
        r#"SELECT host(l.address) AS "address!", s.cidr::text AS "cidr!", host(s.gateway) AS "gateway!",
               l.created_at, l.state = 'active' AS "active!"
           FROM ip_leases l JOIN subnets s ON s.id = l.subnet_id
           WHERE l.epg_id = $1 AND l.reservation = $2"#,
        epg_id,
        name,
    )
    .fetch_optional(conn)
    .await?;
    row.map(decode).transpose()
}

/// Takes the reservation's lease (quarantined or not) back into use; `Held` when it already
/// was active. The caller holds the subnet lock, so the state read is the state replaced.
async fn reactivate(
    conn: &mut PgConnection,
    epg_id: i64,
    name: &str,
) -> Result<Option<(Lease, Outcome)>, AllocError> {
    let row = sqlx::query_as!(
        LeaseRow,
        r#"WITH old AS (SELECT subnet_id, address, state FROM ip_leases
                        WHERE epg_id = $1 AND reservation = $2)
           UPDATE ip_leases l SET state = 'active', quarantined_until = NULL FROM old, subnets s
           WHERE (l.subnet_id, l.address) = (old.subnet_id, old.address) AND s.id = l.subnet_id
           RETURNING host(l.address) AS "address!", s.cidr::text AS "cidr!",
               host(s.gateway) AS "gateway!", l.created_at, old.state = 'active' AS "active!""#,
        epg_id,
        name,
    )
    .fetch_optional(conn)
    .await?;
    let Some((lease, was_active)) = row.map(decode).transpose()? else {
        return Ok(None);
    };
    let outcome = if was_active {
        Outcome::Held
    } else {
        Outcome::Created
    };
    Ok(Some((lease, outcome)))
}

/// Deletes the EPG's leases whose quarantine ended; returns (subnet id, address) of each.
/// Runs before the subnet lock: the rows are dead either way, only the hints need the lock.
async fn expire_quarantine(
    conn: &mut PgConnection,
    epg_id: i64,
) -> Result<Vec<(i64, Ipv4Addr)>, AllocError> {
    let freed = sqlx::query!(
        r#"DELETE FROM ip_leases WHERE epg_id = $1 AND state = 'quarantined' AND quarantined_until <= now()
           RETURNING subnet_id, host(address) AS "address!""#,
        epg_id
    )
    .fetch_all(conn)
    .await?;
    freed
        .into_iter()
        .map(|r| Ok((r.subnet_id, parse_addr(&r.address)?)))
        .collect()
}

/// Lowers scan hints below freed addresses; the caller holds the subnet locks.
async fn lower_hints(
    conn: &mut PgConnection,
    subnets: &mut [StoredSubnet],
    freed: &[(i64, Ipv4Addr)],
) -> Result<(), AllocError> {
    for (id, addr) in freed {
        if let Some(s) = subnets.iter_mut().find(|s| s.id == *id) {
            if *addr < s.hint {
                s.hint = *addr;
                subnets::set_hint(conn, *id, *addr).await?;
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
        let taken = sqlx::query_scalar!(
            r#"SELECT host(address) AS "address!" FROM ip_leases
               WHERE subnet_id = $1 AND address >= $2::text::inet ORDER BY address LIMIT $3"#,
            subnet.id,
            Ipv4Addr::from(cand).to_string(),
            BATCH,
        )
        .fetch_all(&mut *conn)
        .await?;
        let taken = taken
            .iter()
            .map(|t| parse_addr(t).map(u32::from))
            .collect::<Result<Vec<_>, _>>()?;
        let mut taken_iter = taken.iter().copied().peekable();
        loop {
            if cand > last {
                return Ok(None);
            }
            while taken_iter.next_if(|t| *t < cand).is_some() {}
            match taken_iter.peek() {
                Some(t) if *t == cand => cand += 1,
                _ if !subnet.spec.is_allocatable(Ipv4Addr::from(cand)) => {
                    // Jump over a whole reserved range at once; it may be large.
                    let end = subnet
                        .spec
                        .reserved_until(Ipv4Addr::from(cand))
                        .map_or(cand, u32::from);
                    cand = end.saturating_add(1);
                }
                Some(_) => return Ok(Some(Ipv4Addr::from(cand))),
                // The batch ran out: a full batch may hide more leases further up.
                None if taken.len() as i64 == BATCH => break,
                None => return Ok(Some(Ipv4Addr::from(cand))),
            }
        }
    }
}

/// Inserts an active lease and, when `advance` is set, moves the subnet's scan hint there, in
/// one statement. None when the address or the name is already taken.
async fn insert(
    conn: &mut PgConnection,
    subnet_id: i64,
    epg_id: i64,
    owner: Owner<'_>,
    addr: Ipv4Addr,
    advance: Option<Ipv4Addr>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let (reservation, attachment) = match owner {
        Owner::Reservation(name) => (Some(name), None),
        Owner::Attachment(id) => (None, Some(id)),
    };
    sqlx::query_scalar!(
        r#"WITH lease AS (
             INSERT INTO ip_leases (subnet_id, address, epg_id, reservation, attachment_id, state)
             VALUES ($1, $2::text::inet, $3, $4, $6, 'active') ON CONFLICT DO NOTHING RETURNING created_at),
         hint AS (
             UPDATE subnets SET alloc_hint = $5::text::inet
             WHERE id = $1 AND $5::text IS NOT NULL AND EXISTS (SELECT 1 FROM lease))
         SELECT created_at AS "created_at!" FROM lease"#,
        subnet_id,
        addr.to_string(),
        epg_id,
        reservation,
        advance.map(|a| a.to_string()),
        attachment,
    )
    .fetch_optional(conn)
    .await
}

/// Who holds a lease: a reservation (by name) or an attachment.
#[derive(Debug, Clone, Copy)]
enum Owner<'a> {
    Reservation(&'a str),
    Attachment(uuid::Uuid),
}

/// Quarantines the reservation's lease; returns its address, or None if there was none.
pub async fn release(
    conn: &mut PgConnection,
    epg_id: i64,
    name: &str,
    quarantine: std::time::Duration,
) -> Result<Option<Ipv4Addr>, AllocError> {
    let row = sqlx::query_scalar!(
        r#"UPDATE ip_leases SET state = 'quarantined', quarantined_until = now() + make_interval(secs => $3)
           WHERE epg_id = $1 AND reservation = $2 AND state = 'active' RETURNING host(address) AS "address!""#,
        epg_id,
        name,
        interval_secs(quarantine),
    )
    .fetch_optional(conn)
    .await?;
    row.map(|t| parse_addr(&t)).transpose()
}

fn next(a: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(a).saturating_add(1))
}

pub(crate) fn parse_addr(text: &str) -> Result<Ipv4Addr, AllocError> {
    text.parse().map_err(|e: std::net::AddrParseError| {
        AllocError::Database(sqlx::Error::Decode(Box::new(e)))
    })
}

/// Returns the address leased to attachment `id` in the EPG, leasing one when needed: the
/// attachment's own lease (active, or taken back from quarantine) first, then a requested
/// address when free and allocatable, else the lowest free one. Idempotent, so the workflow's
/// lease step can run again after a crash; the caller's transaction holds the subnet lock.
pub async fn lease_attachment(
    conn: &mut PgConnection,
    epg_id: i64,
    id: uuid::Uuid,
    requested: Option<Ipv4Addr>,
) -> Result<Lease, AllocError> {
    let freed = expire_quarantine(conn, epg_id).await?;
    let mut subnets = subnets::lock_for_epg(conn, epg_id).await?;
    if let Some(lease) = reactivate_attachment(conn, id).await? {
        return check_requested(lease, Outcome::Held, &id.to_string(), requested)
            .map(|(lease, _)| lease);
    }
    lower_hints(conn, &mut subnets, &freed).await?;
    let Some((subnet, addr)) = candidate(conn, &subnets, requested).await? else {
        return Err(AllocError::Exhausted(
            "no free address is left in the EPG's subnets".into(),
        ));
    };
    let advance = requested.is_none().then(|| next(addr));
    let created_at = insert(
        conn,
        subnet.id,
        epg_id,
        Owner::Attachment(id),
        addr,
        advance,
    )
    .await?
    .ok_or_else(|| AllocError::Unavailable(format!("{addr} is already leased or quarantined")))?;
    Ok(Lease {
        address: addr,
        subnet: subnet.spec.cidr,
        gateway: subnet.spec.gateway,
        created_at,
    })
}

/// Takes attachment `id`'s lease (quarantined or not) back into use.
async fn reactivate_attachment(
    conn: &mut PgConnection,
    id: uuid::Uuid,
) -> Result<Option<Lease>, AllocError> {
    let row = sqlx::query_as!(
        LeaseRow,
        r#"UPDATE ip_leases l SET state = 'active', quarantined_until = NULL FROM subnets s
           WHERE s.id = l.subnet_id AND l.attachment_id = $1
           RETURNING host(l.address) AS "address!", s.cidr::text AS "cidr!",
               host(s.gateway) AS "gateway!", l.created_at, true AS "active!""#,
        id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(decode).transpose()?.map(|(lease, _)| lease))
}

/// Quarantines attachment `id`'s lease and lets go of it (the attachment row may go; the
/// address stays out of circulation until the quarantine ends). Idempotent.
pub async fn release_attachment(
    conn: &mut PgConnection,
    id: uuid::Uuid,
    quarantine: std::time::Duration,
) -> Result<Option<Ipv4Addr>, AllocError> {
    let row = sqlx::query_scalar!(
        r#"UPDATE ip_leases SET state = 'quarantined', attachment_id = NULL,
               quarantined_until = now() + make_interval(secs => $2)
           WHERE attachment_id = $1 RETURNING host(address) AS "address!""#,
        id,
        interval_secs(quarantine),
    )
    .fetch_optional(conn)
    .await?;
    row.map(|t| parse_addr(&t)).transpose()
}

/// The active address of reservation `name` in the EPG, with its subnet and gateway.
pub async fn reservation_lease(
    conn: &mut PgConnection,
    epg_id: i64,
    name: &str,
) -> Result<Option<Lease>, AllocError> {
    Ok(match find(conn, epg_id, name).await? {
        Some((lease, true)) => Some(lease),
        _ => None,
    })
}
