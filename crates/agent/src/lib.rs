//! weft-agent: builds VLAN segments on a host and wires containers into them, driven over
//! HTTP by the central Weft service.

pub mod agent;
pub mod backend;
pub mod bench;
pub mod config;
pub mod container;
pub mod docker;
mod error;
pub mod events;
mod garp;
pub mod http;
pub mod netlink;
pub mod netns;
pub mod state;
pub mod tls;

pub use error::{Error, ErrorList, Result};
