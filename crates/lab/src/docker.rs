//! Containers of a lab: started `--net=none` from the offline test image (never pulled),
//! labelled with the lab's prefix so a later lab can remove leftovers.

use crate::{run, LabError};

/// The offline busybox image `scripts/services.sh` builds with `docker import`.
pub const IMAGE: &str = "weft-test/busybox:local";
/// The label carrying the lab's prefix.
const LABEL: &str = "weft-lab";

/// Why containers cannot run here (printed as SKIPPED by tests).
pub fn unavailable() -> Option<String> {
    match run("docker", &["image", "inspect", "-f", "{{.Id}}", IMAGE]) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "Docker or the image {IMAGE} is missing (scripts/services.sh builds it): {e}"
        )),
    }
}

/// Starts container `name` with no network (the agent wires it) and the lab's label.
pub fn start(name: &str, prefix: &str) -> Result<(), LabError> {
    let label = format!("{LABEL}={prefix}");
    run(
        "docker",
        &[
            "run",
            "-d",
            "--net=none",
            "--name",
            name,
            "--label",
            &label,
            IMAGE,
            "sleep",
            "2147483647",
        ],
    )
    .map(drop)
}

/// The PID of the container's init (its network namespace is `/proc/<pid>/ns/net`).
pub fn pid(name: &str) -> Result<u32, LabError> {
    let out = run("docker", &["inspect", "-f", "{{.State.Pid}}", name])?;
    match out.trim().parse() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(LabError::Command {
            command: format!("docker inspect {name}"),
            stderr: format!("container is not running (pid {:?})", out.trim()),
        }),
    }
}

/// `docker restart`: the same container, a new network namespace.
pub fn restart(name: &str) -> Result<(), LabError> {
    run("docker", &["restart", "-t", "0", name]).map(drop)
}

/// Removes container `name` (running or not).
pub fn remove(name: &str) -> Result<(), LabError> {
    run("docker", &["rm", "-f", name]).map(drop)
}

/// Removes every container carrying the lab's label.
pub fn remove_labelled(prefix: &str) {
    let filter = format!("label={LABEL}={prefix}");
    let Ok(ids) = run("docker", &["ps", "-aq", "--filter", &filter]) else {
        return;
    };
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        if let Err(e) = run("docker", &args) {
            tracing::warn!(error = %e, "cannot remove the lab's containers");
        }
    }
}

/// Names of the containers carrying the lab's label.
pub fn labelled(prefix: &str) -> Vec<String> {
    let filter = format!("label={LABEL}={prefix}");
    run(
        "docker",
        &["ps", "-a", "--format", "{{.Names}}", "--filter", &filter],
    )
    .map(|s| s.split_whitespace().map(str::to_owned).collect())
    .unwrap_or_default()
}

/// The container's `eth0` as the kernel has it: (IPv4 address with prefix, MAC).
pub fn eth0(name: &str) -> Result<(String, String), LabError> {
    let net = format!("--net=/proc/{}/ns/net", pid(name)?);
    let addr = run(
        "nsenter",
        &[&net, "ip", "-4", "-o", "addr", "show", "dev", "eth0"],
    )?;
    let link = run(
        "nsenter",
        &[&net, "ip", "-o", "link", "show", "dev", "eth0"],
    )?;
    let after = |text: &str, key: &str| {
        text.split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_default()
    };
    Ok((after(&addr, "inet"), after(&link, "link/ether")))
}
