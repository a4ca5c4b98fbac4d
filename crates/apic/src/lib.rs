//! weft-apic: Weft's typed Cisco APIC REST client.
//!
//! Follows `shared/reference/apic-api.md`: cookie sessions with refresh and one re-login on
//! token errors, controller failover, bounded jittered retries (never for 4xx), a client-side
//! rate limit, batched bindings, pre-flight checks for the F0467 cases, and fabric discovery.
//! Tested against `apic-sim` over real HTTP.

mod access;
mod client;
pub mod config;
mod discovery;
pub mod error;
pub mod mo;
pub mod model;
mod ops;
pub use ops::fault_on;
mod preflight;
pub mod rate;

pub use client::{query_value, ApicClient};
pub use config::{ApicConfig, RateLimit, RetryPolicy, Secret};
pub use discovery::{
    match_uplinks, names_host, Fabric, FabricNode, FabricPath, LldpNeighbour, Uplink,
    UplinkAgreement, UplinkReport, UplinkSource,
};
pub use error::ApicError;
pub use mo::Mo;
pub use model::{Binding, Fault, ManagedEpg, OwnedBinding, OWNER_ANNOTATION};
pub use preflight::{PreflightError, PreflightReport, PreflightRequest};
pub use weft_domain::{BindingMode, Encap, EpgKey, Immediacy, PathDn, PathKind, VlanId};
