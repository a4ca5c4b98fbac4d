//! Weft's central service: REST API, allocation and (later) the workflows that keep the ACI
//! fabric and the hosts in step. `main.rs` is only the command line around this library.

pub mod alloc;
pub mod apic;
pub mod auth;
pub mod bench;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod openapi;
pub mod startup;
pub mod telemetry;
pub mod workflow;
