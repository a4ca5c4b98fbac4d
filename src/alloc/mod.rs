//! Race-free allocation of VLANs (per pool) and IPv4 addresses (per EPG subnet).
//!
//! Correctness across replicas comes from Postgres, never from process memory:
//! the allocator first takes a row lock on what it allocates from (the pool row, the EPG's
//! subnet rows, `FOR NO KEY UPDATE` so foreign-key checks of concurrent inserts do not
//! deadlock with it), then picks the lowest free value, and the primary keys
//! `(pool_id, vlan)` / `(subnet_id, address)` make a double allocation impossible even if
//! that lock were ever skipped. Released values stay `quarantined` until a timestamp.

pub mod ip;
pub mod vlan;

use std::time::Duration;

/// Why an allocation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// Nothing free is left (HTTP 409 `pool-exhausted`).
    #[error("{0}")]
    Exhausted(String),
    /// The requested value exists but is taken or not allocatable (HTTP 409).
    #[error("{0}")]
    Unavailable(String),
    /// A change would take away values still in use (HTTP 409 `in-use`).
    #[error("{0}")]
    InUse(String),
    /// What was allocated from went away meanwhile (HTTP 404).
    #[error("{0}")]
    Gone(String),
    /// The requested value is outside what can be allocated from (HTTP 422).
    #[error("{0}")]
    OutOfRange(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// How long released values stay out of circulation.
#[derive(Debug, Clone, Copy)]
pub struct Quarantine {
    pub vlan: Duration,
    pub ip: Duration,
}

/// Seconds as the float Postgres' `make_interval(secs => ...)` takes.
fn interval_secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
