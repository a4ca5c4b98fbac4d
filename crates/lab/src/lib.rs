//! weft-lab: a whole Weft installation on one machine, for the end-to-end proof
//! (`tests/api/proof.rs`) and the one-command demo (`scripts/run-local.sh` as root).
//!
//! A lab is apic-sim with its data plane (leaf ports as veths in a namespace of its own,
//! nftables forwarding only what deployed bindings allow), simulated hosts (network namespaces
//! cabled into leaf ports, each with a private Open vSwitch and a real `weft-agent` on the OVS
//! backend, reached over a management bridge), Docker containers started `--net=none` from the
//! offline test image, `weft serve` processes, and the ping matrix that checks the result in
//! packets. Every name starts with the lab's prefix, so labs running side by side never
//! collide, and a new lab first removes whatever a crashed one with its prefix left behind.
//!
//! vPC: this kernel cannot bond, so a host on a vPC path is cabled to one member port of the
//! pair; the data plane enables a vPC binding's VLAN on the member port of both leaves.

pub mod api;
pub mod demo;
pub mod docker;
pub mod lab;
pub mod matrix;
mod process;
pub mod weft;

pub use lab::{HostPlan, Lab, LabHost};

/// Why a lab step failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("apic-sim: {0}")]
    Sim(#[from] apic_sim::SimError),
    #[error("{what}: HTTP {status}: {body}")]
    Api {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: {source}")]
    Http {
        what: String,
        source: reqwest::Error,
    },
    #[error("{0}")]
    Timeout(String),
}

/// Runs a command and returns its stdout, or fails with its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|source| LabError::Spawn {
            program: program.into(),
            source,
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(LabError::Command {
        command: format!("{program} {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}
