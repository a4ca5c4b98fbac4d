//! One error type for the crate. It is `Clone` because one failed batched
//! transaction has to be reported to every caller whose request was in it.

use std::sync::Arc;
use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to ovsdb-server or ovs-vswitchd.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("invalid OVSDB address {0:?}: expected unix:<path> or tcp:<host>:<port>")]
    Address(String),
    #[error("connecting to OVSDB at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("OVSDB connection lost: {0}")]
    Disconnected(String),
    #[error("OVSDB protocol error: {0}")]
    Protocol(String),
    #[error("OVSDB {method} request got no answer within {timeout:?}")]
    Timeout { method: String, timeout: Duration },
    #[error("OVSDB {method} failed: {error}")]
    Rpc { method: String, error: String },
    #[error("OVSDB transaction failed at operation {index} ({op}): {error}")]
    Transaction {
        index: usize,
        op: String,
        error: String,
    },
    #[error("the Open_vSwitch table has no row; initialise the database first (`ovs-vsctl --no-wait init`)")]
    NoRootRow,
    #[error("bridge {0:?} does not exist")]
    NoBridge(String),
    #[error("port {port:?} already exists on another bridge, {bridge:?}")]
    PortOnOtherBridge { port: String, bridge: String },
    #[error("port {port:?} exists with interfaces {existing:?}, not [{wanted:?}]")]
    PortInterfaceMismatch {
        port: String,
        existing: Vec<String>,
        wanted: String,
    },
    #[error("port {0:?} appears twice in one request")]
    DuplicatePort(String),
    #[error("VLAN {0} is outside 1..=4094")]
    InvalidVlan(u16),
    #[error("ovs-vswitchd did not apply configuration {wanted} within {timeout:?} (it has applied {applied})")]
    ApplyTimeout {
        wanted: i64,
        applied: i64,
        timeout: Duration,
    },
    #[error("ovs-vswitchd could not attach interface {iface:?}: {error}")]
    Interface { iface: String, error: String },
    #[error("the port batcher has stopped")]
    BatcherGone,
}
