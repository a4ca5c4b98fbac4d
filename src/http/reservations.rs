//! `/api/v1/epgs/{tenant}/{app}/{epg}/reservations/{name}`: addresses held for a client name,
//! for pipelines that need an address before a container exists.

use std::net::Ipv4Addr;

use actix_web::web::{self, Json};
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::epgs::key;
use super::{ApiPath, ApiQuery, OptionalJson, Page, Paging, Put};
use crate::alloc::ip;
use crate::auth::{Auth, Operator, Viewer};
use crate::db::{audit, epgs};
use crate::domain::{ApicName, EpgKey, Ipv4Cidr};
use crate::error::{ApiError, ApiResult, Problem};
use crate::startup::AppState;

/// Registers this resource's routes (and their documentation).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_reservations)
        .service(get_reservation)
        .service(put_reservation)
        .service(delete_reservation);
}

/// Optional wishes for a reservation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationSpec {
    /// A specific address; honoured when free, otherwise 409.
    #[schema(value_type = Option<String>, example = "10.1.2.50")]
    pub address: Option<Ipv4Addr>,
}

/// An address held for a name, with what a client needs to configure it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reservation {
    pub name: ApicName,
    #[schema(value_type = String, example = "10.1.2.2")]
    pub address: Ipv4Addr,
    pub subnet: Ipv4Cidr,
    #[schema(value_type = String, example = "10.1.2.1")]
    pub gateway: Ipv4Addr,
    pub created_at: DateTime<Utc>,
}

/// An active reservation as read, before its text columns are parsed.
struct Row {
    /// The address as a number: the paging cursor.
    pos: i64,
    name: String,
    address: String,
    cidr: String,
    gateway: String,
    created_at: DateTime<Utc>,
}

/// `query_as!` into [`Row`] of the EPG `$1`'s active reservations, followed by `$tail` (a string
/// literal) and its arguments; a macro because sqlx checks only literal SQL.
macro_rules! select_reservations {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Row,
            r#"SELECT l.address - '0.0.0.0'::inet AS "pos!", l.reservation AS "name!",
                   host(l.address) AS "address!", s.cidr::text AS "cidr!", host(s.gateway) AS "gateway!",
                   l.created_at
               FROM ip_leases l JOIN subnets s ON s.id = l.subnet_id
               WHERE l.epg_id = $1 AND l.state = 'active' AND l.reservation IS NOT NULL "# + $tail
            $(, $arg)*
        )
    };
}

fn decode(row: Row) -> ApiResult<Reservation> {
    let addr = |t: &str| {
        t.parse::<Ipv4Addr>()
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored address {t}: {e}")))
    };
    Ok(Reservation {
        name: ApicName::parse(&row.name)?,
        address: addr(&row.address)?,
        subnet: Ipv4Cidr::parse(&row.cidr)?,
        gateway: addr(&row.gateway)?,
        created_at: row.created_at,
    })
}

async fn load(
    conn: &mut PgConnection,
    epg_id: i64,
    name: &ApicName,
) -> ApiResult<Option<Reservation>> {
    let row = select_reservations!("AND l.reservation = $2", epg_id, name.as_str())
        .fetch_optional(conn)
        .await?;
    row.map(decode).transpose()
}

async fn epg_id(conn: &mut PgConnection, key: &EpgKey) -> ApiResult<i64> {
    let ids = epgs::ids_of(conn, key).await?;
    ids.map(|(id, _)| id)
        .ok_or_else(|| ApiError::NotFound(format!("no EPG {key}")))
}

fn resource(key: &EpgKey, name: &ApicName) -> String {
    format!("epgs/{key}/reservations/{name}")
}

type EpgPath = (String, String, String);
type ReservationPath = (String, String, String, String);

fn split((t, a, e, n): ReservationPath) -> ApiResult<(EpgKey, ApicName)> {
    Ok((key((t, a, e))?, ApicName::parse(&n)?))
}

#[utoipa::path(get, path = "/api/v1/epgs/{tenant}/{app}/{epg}/reservations", impl_for = list_reservations, tag = "reservations",
    params(("tenant" = ApicName, Path), ("app" = ApicName, Path), ("epg" = ApicName, Path), Paging),
    responses((status = 200, body = Page<Reservation>), (status = 404, body = Problem)))]
#[actix_web::get("/api/v1/epgs/{tenant}/{app}/{epg}/reservations")]
async fn list_reservations(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiPath(path): ApiPath<EpgPath>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<Page<Reservation>>> {
    let key = key(path)?;
    let (after, limit) = paging.resolve()?;
    let mut conn = st.db.acquire().await?;
    let id = epg_id(&mut conn, &key).await?;
    // Leases have no serial id; they are paged in address order, the address number as cursor.
    let rows = select_reservations!(
        "AND l.address - '0.0.0.0'::inet > $2 ORDER BY l.address LIMIT $3",
        id,
        after.unwrap_or(-1),
        limit + 1,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(Page::decode(rows, limit, |r| {
        Ok((r.pos, decode(r)?))
    })?))
}

#[utoipa::path(get, path = "/api/v1/epgs/{tenant}/{app}/{epg}/reservations/{name}", impl_for = get_reservation, tag = "reservations",
    params(("tenant" = ApicName, Path), ("app" = ApicName, Path), ("epg" = ApicName, Path), ("name" = ApicName, Path)),
    responses((status = 200, body = Reservation), (status = 404, body = Problem)))]
#[actix_web::get("/api/v1/epgs/{tenant}/{app}/{epg}/reservations/{name}")]
async fn get_reservation(
    _auth: Auth<Viewer>,
    st: web::Data<AppState>,
    ApiPath(path): ApiPath<ReservationPath>,
) -> ApiResult<Json<Reservation>> {
    let (key, name) = split(path)?;
    let mut conn = st.db.acquire().await?;
    let id = epg_id(&mut conn, &key).await?;
    load(&mut conn, id, &name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no reservation `{name}` in EPG {key}")))
}

/// Reserves an address for `name` (the same name always gets the same address). The body is
/// optional. 409 `pool-exhausted` when no address is left.
#[utoipa::path(put, path = "/api/v1/epgs/{tenant}/{app}/{epg}/reservations/{name}", impl_for = put_reservation, tag = "reservations",
    params(("tenant" = ApicName, Path), ("app" = ApicName, Path), ("epg" = ApicName, Path), ("name" = ApicName, Path)),
    request_body(content = Option<ReservationSpec>),
    responses((status = 200, body = Reservation, description = "already held"), (status = 201, body = Reservation, description = "reserved"),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
#[actix_web::put("/api/v1/epgs/{tenant}/{app}/{epg}/reservations/{name}")]
async fn put_reservation(
    auth: Auth<Operator>,
    st: web::Data<AppState>,
    ApiPath(path): ApiPath<ReservationPath>,
    OptionalJson(spec): OptionalJson<ReservationSpec>,
) -> ApiResult<Put<Reservation>> {
    let (key, name) = split(path)?;
    let mut tx = st.db.begin().await?;
    let id = epg_id(&mut tx, &key).await?;
    // 404 too when the EPG is deleted while this request waits for its lock.
    let (lease, outcome) = ip::reserve(&mut tx, id, name.as_str(), spec.address).await?;
    let after = Reservation {
        name: name.clone(),
        address: lease.address,
        subnet: lease.subnet,
        gateway: lease.gateway,
        created_at: lease.created_at,
    };
    let created = outcome == ip::Outcome::Created;
    // A repeated PUT of a held reservation changes nothing and is not recorded.
    if created {
        audit::record(
            &mut tx,
            auth.actor(),
            "reservation.put",
            &resource(&key, &name),
            None::<&Reservation>,
            Some(&after),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Put(created, after))
}

/// Releases the address into quarantine. Releasing a missing reservation is a no-op.
#[utoipa::path(delete, path = "/api/v1/epgs/{tenant}/{app}/{epg}/reservations/{name}", impl_for = delete_reservation, tag = "reservations",
    params(("tenant" = ApicName, Path), ("app" = ApicName, Path), ("epg" = ApicName, Path), ("name" = ApicName, Path)),
    responses((status = 204, description = "released or absent")))]
#[actix_web::delete("/api/v1/epgs/{tenant}/{app}/{epg}/reservations/{name}")]
async fn delete_reservation(
    auth: Auth<Operator>,
    st: web::Data<AppState>,
    ApiPath(path): ApiPath<ReservationPath>,
) -> ApiResult<HttpResponse> {
    let (key, name) = split(path)?;
    let mut tx = st.db.begin().await?;
    let Some((id, _)) = epgs::ids_of(&mut tx, &key).await? else {
        return Ok(HttpResponse::NoContent().finish());
    };
    let before = load(&mut tx, id, &name).await?;
    if ip::release(&mut tx, id, name.as_str(), st.quarantine.ip)
        .await?
        .is_some()
    {
        audit::record(
            &mut tx,
            auth.actor(),
            "reservation.delete",
            &resource(&key, &name),
            before.as_ref(),
            None::<&Reservation>,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
