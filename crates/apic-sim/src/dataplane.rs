//! The simulated data plane: the topology's leaf ports as real veth links on one Linux bridge
//! in a network namespace of the simulator's own, forwarding only what the APIC tree allows.
//!
//! Model (ACI semantics on one bridge): every leaf port is a bridge port named
//! `f<node>-<port>` (e.g. `f101-1-1` for `eth1/1` of leaf 101) whose veth peer
//! `h<node>-<port>` is the cable handed to a host. A tagged frame entering port P with VLAN V
//! is classified to the EPG that holds a deployed `fvRsPathAtt` with `encap vlan-V` on P
//! (nftables map `ingress`, `iifname . vlan id -> mark`), and delivered only to ports where
//! (port, V) maps to the same EPG (set `egress`, `oifname . vlan id . mark`); everything else,
//! untagged frames included, is dropped. A vPC binding enables the VLAN on the member port of
//! each of its two leaves (no bonding in this kernel: a host cables both members itself).
//! A `fvRsNodeAtt` enables the VLAN on every port of its leaf. A binding with an F0467 fault on
//! a leaf is not deployed there, so it forwards nothing.
//! Not modelled: VLAN rewrite between leaves (an EPG forwards only between ports where it holds
//! the same VLAN), `untagged`/`native` modes (such bindings forward nothing: without tc
//! `act_vlan` the fabric cannot push or pop a tag), FEX ports.

use crate::dn;
use crate::faults;
use crate::topology::Topology;
use crate::tree::Mit;
use crate::validate::parse_vlan;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The nftables table (bridge family) holding the forwarding decision.
const TABLE: &str = "bridge weft";
/// The bridge that joins all leaf ports.
const BRIDGE: &str = "fabric";

/// Where the data plane lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPlaneConfig {
    /// Network namespace created for the fabric (must not exist yet); parallel simulators
    /// need different names.
    pub netns: String,
}

/// Why the data plane could not be built or updated.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("link name {0:?} is not 1-15 of [A-Za-z0-9-] (rename the port in the topology)")]
    LinkName(String),
}

/// (link, VLAN) -> EPG mark: the whole forwarding state.
type Rules = BTreeMap<(String, u16), u32>;

struct Rendered {
    rules: Rules,
    /// Bindings the data plane cannot render (`untagged`/`native`), each warned about once.
    unmodelled: BTreeSet<String>,
    /// EPG DN -> mark, stable for the life of the data plane so unchanged bindings keep
    /// their elements across updates.
    marks: BTreeMap<String, u32>,
}

/// A running fabric; dropping it deletes its namespace and every link in it.
pub struct DataPlane {
    netns: String,
    /// (node, port) -> fabric-side link name.
    ports: BTreeMap<(u32, String), String>,
    /// vPC name -> its fabric-side member links.
    vpcs: BTreeMap<String, Vec<String>>,
    state: Mutex<Rendered>,
    removed: AtomicBool,
}

/// The link-name part of a port: `eth1/1` -> `1-1`.
fn port_suffix(port: &str) -> String {
    port.trim_start_matches("eth").replace('/', "-")
}

fn link(prefix: char, node: u32, port: &str) -> Result<String, DataPlaneError> {
    let name = format!("{prefix}{node}-{}", port_suffix(port));
    // The name goes into `ip` arguments and nft scripts: only characters that need no quoting.
    if name.len() > 15 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(DataPlaneError::LinkName(name));
    }
    Ok(name)
}

/// Runs a command, with `stdin` fed to it, and fails with its stderr.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), DataPlaneError> {
    let spawn_err = |source| DataPlaneError::Spawn {
        program: program.to_string(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        return Ok(());
    }
    Err(DataPlaneError::Command {
        command: format!("{program} {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

impl DataPlane {
    /// Creates the namespace, the bridge, one veth pair per leaf port and the empty nftables
    /// table (drop everything). On error whatever was created is removed again.
    pub fn create(topology: &Topology, config: &DataPlaneConfig) -> Result<Self, DataPlaneError> {
        let mut ports = BTreeMap::new();
        for node in topology.nodes.iter().filter(|n| n.role == "leaf") {
            for port in &node.ports {
                ports.insert((node.id, port.clone()), link('f', node.id, port)?);
            }
        }
        let mut vpcs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for vpc in &topology.vpcs {
            for node in vpc.nodes {
                for port in &vpc.ports {
                    let name = link('f', node, port)?;
                    ports.insert((node, port.clone()), name.clone());
                    vpcs.entry(vpc.name.clone()).or_default().push(name);
                }
            }
        }
        run("ip", &["netns", "add", &config.netns], None)?;
        let dp = DataPlane {
            netns: config.netns.clone(),
            ports,
            vpcs,
            state: Mutex::new(Rendered {
                rules: Rules::new(),
                unmodelled: BTreeSet::new(),
                marks: BTreeMap::new(),
            }),
            removed: AtomicBool::new(false),
        };
        dp.build().inspect_err(|_| dp.remove())?;
        tracing::info!(netns = %dp.netns, ports = dp.ports.len(), "data plane ready");
        Ok(dp)
    }

    fn ip(&self, args: &[&str]) -> Result<(), DataPlaneError> {
        let mut all = vec!["-n", self.netns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all, None)
    }

    fn nft(&self, script: &str) -> Result<(), DataPlaneError> {
        run(
            "ip",
            &["netns", "exec", &self.netns, "nft", "-f", "-"],
            Some(script),
        )
    }

    fn build(&self) -> Result<(), DataPlaneError> {
        self.ip(&["link", "set", "lo", "up"])?;
        self.ip(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        self.nft(&format!(
            "table {TABLE} {{
  map ingress {{ typeof iifname . vlan id : meta mark; }}
  set egress {{ typeof oifname . vlan id . meta mark; }}
  chain forward {{
    type filter hook forward priority 0; policy drop;
    meta mark set 0
    meta mark set iifname . vlan id map @ingress
    oifname . vlan id . meta mark @egress accept
  }}
}}
"
        ))?;
        for ((node, port), fabric) in &self.ports {
            let host = link('h', *node, port)?;
            self.ip(&["link", "add", fabric, "type", "veth", "peer", "name", &host])?;
            self.ip(&["link", "set", fabric, "master", BRIDGE, "up"])?;
        }
        self.ip(&["link", "set", BRIDGE, "up"])
    }

    /// Deletes the namespace with all leaf ports (their host sides vanish with them); later
    /// updates fail and are logged. Runs on drop; call it when the process may exit before the
    /// simulator's state is dropped.
    pub fn remove(&self) {
        if self.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = run("ip", &["netns", "del", &self.netns], None) {
            tracing::warn!(netns = %self.netns, error = %e, "cannot remove the fabric namespace");
        }
    }

    /// The namespace the fabric lives in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The host side of a leaf port (a veth in the fabric namespace): cable a host by moving
    /// it into the host's namespace, e.g. with [`DataPlane::cable`] or
    /// `ip -n <fabric netns> link set <link> netns <host netns>`.
    pub fn port_link(&self, node: u32, port: &str) -> Option<String> {
        self.ports
            .contains_key(&(node, port.to_string()))
            .then(|| link('h', node, port).ok())
            .flatten()
    }

    /// Moves the host side of a leaf port into `host_netns` as `name`, up.
    pub fn cable(
        &self,
        node: u32,
        port: &str,
        host_netns: &str,
        name: &str,
    ) -> Result<(), DataPlaneError> {
        let Some(peer) = self.port_link(node, port) else {
            return Err(DataPlaneError::Command {
                command: format!("cable leaf {node} {port}"),
                stderr: "no such leaf port".into(),
            });
        };
        self.ip(&["link", "set", &peer, "netns", host_netns, "name", name])?;
        run("ip", &["-n", host_netns, "link", "set", name, "up"], None)
    }

    /// The forwarding state the tree asks for: deployed bindings' (link, VLAN) -> EPG mark.
    /// Also collects the bindings it cannot render into `unmodelled`.
    fn desired(
        &self,
        mit: &Mit,
        marks: &mut BTreeMap<String, u32>,
        unmodelled: &mut BTreeSet<String>,
    ) -> Rules {
        let mut rules = Rules::new();
        let bindings = mit
            .iter()
            .filter(|(_, m)| matches!(m.class.name, "fvRsPathAtt" | "fvRsNodeAtt"));
        for (binding, mo) in bindings {
            let attr = |k: &str| mo.attrs.get(k).map(String::as_str).unwrap_or_default();
            if !matches!(attr("mode"), "" | "regular") {
                unmodelled.insert(binding.clone());
                continue;
            }
            let (Some(epg), Some(vlan)) = (dn::parent(binding), parse_vlan(attr("encap"))) else {
                continue;
            };
            let path = attr("tDn");
            for (leaf, link) in self.links_of(path) {
                if mit.contains(&faults::fault_dn(&epg, path, &leaf.to_string())) {
                    continue;
                }
                let next = marks.len() as u32 + 1;
                let mark = *marks.entry(epg.clone()).or_insert(next);
                rules.insert((link, vlan), mark);
            }
        }
        rules
    }

    /// The (leaf, fabric link) pairs a path DN lands on: one port, a vPC's members, or every
    /// port of a leaf (`topology/pod-P/node-N`, the target of `fvRsNodeAtt`).
    fn links_of(&self, path: &str) -> Vec<(u32, String)> {
        let last = path.rsplit('/').next().unwrap_or_default();
        if let Some(node) = last.strip_prefix("node-").and_then(|n| n.parse().ok()) {
            return self
                .ports
                .iter()
                .filter(|((n, _), _)| *n == node)
                .map(|(_, l)| (node, l.clone()))
                .collect();
        }
        let Some((head, name)) = path
            .rsplit_once("/pathep-[")
            .and_then(|(h, n)| Some((h, n.strip_suffix(']')?)))
        else {
            return Vec::new();
        };
        let cont = head.rsplit('/').next().unwrap_or_default();
        if let Some(node) = cont.strip_prefix("paths-").and_then(|n| n.parse().ok()) {
            return self
                .ports
                .get(&(node, name.to_string()))
                .map(|l| vec![(node, l.clone())])
                .unwrap_or_default();
        }
        if cont.starts_with("protpaths-") {
            return self
                .vpcs
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|l| {
                    let node = l[1..].split('-').next()?.parse().ok()?;
                    Some((node, l.clone()))
                })
                .collect();
        }
        Vec::new()
    }

    /// Brings the kernel in line with `mit`: one atomic `nft -f` transaction holding only the
    /// elements that changed, so flows whose binding did not change never see a gap. On
    /// failure the previous state is kept (and logged) and the next change retries the diff.
    pub fn sync(&self, mit: &Mit) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut marks = st.marks.clone();
        let mut unmodelled = BTreeSet::new();
        let want = self.desired(mit, &mut marks, &mut unmodelled);
        for binding in unmodelled.difference(&st.unmodelled) {
            tracing::warn!(%binding, "untagged/native bindings are not modelled by the data plane: it forwards nothing");
        }
        st.unmodelled = unmodelled;
        let mut script = String::new();
        for ((link, vlan), mark) in &st.rules {
            if want.get(&(link.clone(), *vlan)) != Some(mark) {
                script.push_str(&format!(
                    "delete element {TABLE} ingress {{ \"{link}\" . {vlan} }}\n\
                     delete element {TABLE} egress {{ \"{link}\" . {vlan} . {mark} }}\n"
                ));
            }
        }
        for ((link, vlan), mark) in &want {
            if st.rules.get(&(link.clone(), *vlan)) != Some(mark) {
                script.push_str(&format!(
                    "add element {TABLE} ingress {{ \"{link}\" . {vlan} : {mark} }}\n\
                     add element {TABLE} egress {{ \"{link}\" . {vlan} . {mark} }}\n"
                ));
            }
        }
        if script.is_empty() {
            return;
        }
        match self.nft(&script) {
            Ok(()) => {
                tracing::debug!(netns = %self.netns, entries = want.len(), "data plane updated");
                st.rules = want;
                st.marks = marks;
            }
            Err(e) => tracing::error!(netns = %self.netns, error = %e, "data plane update failed"),
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_are_short_and_need_no_quoting() {
        assert_eq!(link('f', 101, "eth1/1").unwrap(), "f101-1-1");
        assert_eq!(link('h', 1101, "eth1/1/10").unwrap(), "h1101-1-1-10");
        for bad in ["eth1/1\"; flush ruleset", "eth1/1 x", "eth100/100/100/1"] {
            assert!(
                matches!(link('f', 101, bad), Err(DataPlaneError::LinkName(_))),
                "{bad}"
            );
        }
    }
}
