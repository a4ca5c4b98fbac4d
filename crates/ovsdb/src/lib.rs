//! A small async client for the OVSDB management protocol (RFC 7047) and a
//! typed, batching API over the Open_vSwitch database, so the Weft agent can
//! manage OVS ports without forking `ovs-vsctl` per operation.
//!
//! Layers: [`rpc`] (JSON-RPC framing over a unix or TCP socket), [`Client`]
//! (`transact`, `monitor`, `get_schema`), [`op`] and [`datum`] (typed
//! operations and values), and [`Vswitch`] (bridges, trunk and access ports).
//! [`private::PrivateOvs`] runs a switch of its own for tests, benchmarks and the lab.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use weft_ovsdb::{AccessPort, DatapathType, Vswitch, VswitchOptions};
//!
//! # async fn demo() -> weft_ovsdb::Result<()> {
//! let vs = Vswitch::connect("unix:/var/run/openvswitch/db.sock", VswitchOptions::default()).await?;
//! vs.ensure_bridge("br-weft", DatapathType::System).await?;
//! vs.ensure_trunk_port("br-weft", "eth1").await?;
//! // Concurrent calls from many tasks are coalesced into one transaction;
//! // each returns once ovs-vswitchd has the port in its datapath.
//! let port = AccessPort {
//!     name: "wv1a2b3c".into(),
//!     iface: "wv1a2b3c".into(),
//!     tag: 181,
//!     external_ids: BTreeMap::from([("weft-attachment".into(), "1a2b3c".into())]),
//! };
//! vs.ensure_access_ports("br-weft", &[port]).await?;
//! let ours: Vec<_> = vs
//!     .list_ports("br-weft")
//!     .await?
//!     .into_iter()
//!     .filter(|p| p.external_ids.contains_key("weft-attachment"))
//!     .collect();
//! vs.remove_ports("br-weft", &["wv1a2b3c"]).await?;
//! # let _ = ours;
//! # Ok(())
//! # }
//! ```

mod client;
pub mod datum;
mod error;
pub mod op;
pub mod private;
pub mod rpc;
mod vswitch;

pub use client::Client;
pub use error::{Error, Result};
pub use vswitch::{AccessPort, DatapathType, Outcome, PortInfo, Vswitch, VswitchOptions};
