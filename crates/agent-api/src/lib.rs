//! Wire types and typed client of the weft-agent HTTP API.
//!
//! The central service drives agents only through [`AgentClient`]; the agent serves the
//! same types, so both sides agree on the JSON by construction.

mod client;
mod types;

pub use client::{AgentClient, ClientError, Token, REQUEST_ID};
pub use types::*;
/// The project's single definitions of these values (one parser each), shared with `weft`.
pub use weft_domain::{Backend, InterfaceName, Mtu, ParseError, VlanId};

/// Version of this wire contract, reported by the agent in [`Versions::api`].
pub const API_VERSION: &str = "1";
