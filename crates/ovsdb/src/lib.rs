//! A small async client for the OVSDB management protocol (RFC 7047) and a
//! typed, batching API over the Open_vSwitch database, so the Weft agent can
//! manage OVS ports without forking `ovs-vsctl` per operation.
//!
//! Layers: [`rpc`] (JSON-RPC framing over a unix or TCP socket), [`Client`]
//! (`transact`, `monitor`, `get_schema`), [`op`] and [`datum`] (typed
//! operations and values), and [`Vswitch`] (bridges, trunk and access ports).

mod client;
pub mod datum;
mod error;
pub mod op;
pub mod rpc;
mod vswitch;

pub use client::Client;
pub use error::{Error, Result};
pub use vswitch::{AccessPort, DatapathType, Outcome, PortInfo, Vswitch, VswitchOptions};
