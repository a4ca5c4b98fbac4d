//! Agent configuration: what the host looks like and where things live.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use weft_agent_api::{Backend, InterfaceName, Mtu, Token, VlanId};
use weft_ovsdb::DatapathType;

use crate::tls::TlsError;

/// Everything the agent needs to know about its host; built by `main` from flags and env.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Bearer token callers must present.
    pub token: Token,
    /// Uplink interfaces; the first is the default for segments that name none.
    pub uplinks: Vec<String>,
    pub backend: Backend,
    pub naming: Naming,
    /// Default MTU of container interfaces and bridges.
    pub mtu: Mtu,
    /// OVSDB socket (`unix:/run/openvswitch/db.sock`), ovs backend only.
    pub ovs_db: String,
    /// `system` in production; `netdev` where only the userspace datapath exists.
    pub ovs_datapath: DatapathType,
    /// Desired state, rewritten atomically on every change.
    pub state_file: PathBuf,
    /// Docker engine socket; Docker targets and re-wiring are off when absent.
    pub docker_socket: Option<PathBuf>,
    /// Where container events are POSTed (`<url>` receives [`weft_agent_api::ContainerEvent`]).
    pub central_url: Option<Url>,
    pub central_token: Option<Token>,
    pub http: HttpLimits,
}

/// What the API listener allows a client, so a slow or greedy one cannot hold it
/// (a half-sent request, idle connections by the thousand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a client has to send a request's line and headers; a slower one is closed.
    /// actix-web checks it against a clock it updates every 500 ms, so keep it >= 1 s.
    pub request_head_timeout: Duration,
    /// How long an idle connection is kept open for a next request (zero: not at all).
    pub keep_alive: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            request_head_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            max_connections: 256,
        }
    }
}

/// PEM files the listener serves TLS with. Kept out of [`Config`]: only `main` and
/// [`crate::tls::acceptor`] need them, and the key is read once, at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, server certificate first.
    pub cert: PathBuf,
    /// Private key of the server certificate.
    pub key: PathBuf,
}

impl TlsFiles {
    /// TLS on when both settings are given, off when neither is; one alone is a mistake
    /// (serving plain HTTP would silently expose the token).
    pub fn new(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<Self>, TlsError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
            (None, None) => Ok(None),
            _ => Err(TlsError::Incomplete),
        }
    }
}

/// How the agent names what it creates. Names can collide with other links; the owner
/// mark ([`owner_mark`]) is what tells the agent's own links after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// Linux bridge per VLAN: `<prefix><vlan>`, e.g. `wbr181`.
    pub bridge_prefix: String,
    /// Host end of a container veth: `<prefix>` + hex of a hash of the attachment id,
    /// 15 bytes in all.
    pub veth_prefix: String,
    /// The single OVS integration bridge.
    pub ovs_bridge: String,
}

impl Default for Naming {
    fn default() -> Self {
        Naming {
            bridge_prefix: "wbr".into(),
            veth_prefix: "wf".into(),
            ovs_bridge: "br-weft".into(),
        }
    }
}

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAMSIZ_MAX: usize = 15;

const OWNER_MARK_PREFIX: &str = "weft-attachment=";

/// The `ifalias` the agent gives every link it makes for attachment `id` (the host end
/// of a veth, the container's interface): names can collide, the mark says whose a link is.
pub fn owner_mark(id: Uuid) -> String {
    format!("{OWNER_MARK_PREFIX}{id}")
}

/// The attachment a link belongs to, from its `ifalias`; `None` for links the agent did
/// not make.
pub fn owner_of(alias: Option<&str>) -> Option<Uuid> {
    Uuid::parse_str(alias?.strip_prefix(OWNER_MARK_PREFIX)?).ok()
}

impl Naming {
    pub fn bridge(&self, vlan: VlanId) -> String {
        format!("{}{vlan}", self.bridge_prefix)
    }

    pub fn sub_interface(uplink: &str, vlan: VlanId) -> String {
        format!("{uplink}.{vlan}")
    }

    /// `wf` + hex digits of a SHA-256 of the whole id, filling the 15-byte name limit.
    /// Ids that share their first digits (UUIDv7 from one millisecond) get different
    /// names. A 15-byte name cannot hold every id, so two ids can still meet one name:
    /// the owner mark ([`owner_mark`]) on the link tells whose it is, and the other
    /// attachment is refused.
    pub fn host_veth(&self, id: Uuid) -> String {
        let room = IFNAMSIZ_MAX.saturating_sub(self.veth_prefix.len());
        let hex: String = Sha256::digest(id.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{}{}", self.veth_prefix, &hex[..room.min(hex.len())])
    }

    /// Whether a link name follows the host-veth scheme.
    pub fn is_host_veth(&self, name: &str) -> bool {
        name.len() == IFNAMSIZ_MAX
            && name
                .strip_prefix(&self.veth_prefix)
                .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// Checks once at start-up, with the one interface-name parser, that every name the
    /// agent will make (longest VLAN id) is valid, instead of failing on the first request.
    pub fn validate(&self, uplinks: &[String]) -> Result<(), String> {
        if self.veth_prefix.is_empty() || self.veth_prefix.len() > 4 {
            return Err("veth prefix must be 1 to 4 bytes".into());
        }
        let widest = VlanId::new(VlanId::MAX).map_err(|e| e.to_string())?;
        let mut names = vec![
            ("veth prefix", self.host_veth(Uuid::nil())),
            ("bridge prefix", self.bridge(widest)),
        ];
        names.extend(
            uplinks
                .iter()
                .map(|u| ("uplink", Self::sub_interface(u, widest))),
        );
        for (what, name) in names {
            InterfaceName::parse(&name).map_err(|e| format!("{what} makes a bad name: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_fit_ifnamsiz_and_are_recognised() {
        let n = Naming::default();
        let id = Uuid::parse_str("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b").unwrap();
        let name = n.host_veth(id);
        assert_eq!(name.len(), IFNAMSIZ_MAX);
        assert_eq!(name, n.host_veth(id), "the name is stable across calls");
        assert!(n.is_host_veth(&name));
        assert!(!n.is_host_veth("eth0"));
        assert!(!n.is_host_veth("wfxyz"));
        assert_eq!(owner_of(Some(&owner_mark(id))), Some(id));
        assert_eq!(owner_of(Some("weft-attachment=nope")), None);
        assert_eq!(owner_of(Some("uplink to rack 4")), None);
        assert_eq!(owner_of(None), None);
    }

    /// Property: ids that differ only in their last bytes (UUIDv7 from one millisecond,
    /// sequential ids) still get distinct, well-formed host names.
    #[test]
    fn ids_sharing_long_prefixes_get_distinct_host_names() {
        use rand::{Rng, SeedableRng};
        let n = Naming::default();
        let seed = rand::random();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut seen = std::collections::HashMap::new();
        for _ in 0..20_000 {
            let mut a: [u8; 16] = rng.gen();
            let shared = rng.gen_range(8..16);
            let mut b = a;
            for byte in &mut b[shared..] {
                *byte = rng.gen();
            }
            if a == b {
                a[15] ^= 1;
            }
            for id in [Uuid::from_bytes(a), Uuid::from_bytes(b)] {
                let name = n.host_veth(id);
                assert!(n.is_host_veth(&name), "{name} (seed {seed})");
                if let Some(other) = seen.insert(name.clone(), id) {
                    assert_eq!(other, id, "{other} and {id} share {name} (seed {seed})");
                }
            }
        }
        // The pair from issue 10: the same millisecond, the same 13 leading hex digits.
        let first = Uuid::parse_str("0193a0c4-5e21-7a3f-9c1e-2b4d6f8a0b11").unwrap();
        let second = Uuid::parse_str("0193a0c4-5e21-7b90-8d2f-7c3e1a5b9f22").unwrap();
        assert_ne!(n.host_veth(first), n.host_veth(second));
    }

    #[test]
    fn tls_needs_both_cert_and_key_and_the_error_names_both_settings() {
        let (cert, key) = (PathBuf::from("/c.pem"), PathBuf::from("/k.pem"));
        for (c, k) in [(Some(cert.clone()), None), (None, Some(key.clone()))] {
            let msg = TlsFiles::new(c, k).unwrap_err().to_string();
            for name in [
                "--tls-cert",
                "WEFT_AGENT_TLS_CERT",
                "--tls-key",
                "WEFT_AGENT_TLS_KEY",
            ] {
                assert!(msg.contains(name), "{name} missing from {msg:?}");
            }
        }
        assert_eq!(TlsFiles::new(None, None).unwrap(), None);
        assert_eq!(
            TlsFiles::new(Some(cert.clone()), Some(key.clone())).unwrap(),
            Some(TlsFiles { cert, key })
        );
    }

    #[test]
    fn names_the_agent_would_make_are_checked_at_start_up() {
        let n = Naming::default();
        assert!(n.validate(&["enp0s31f6".into()]).is_ok());
        assert!(
            n.validate(&["enp0s31f6np0".into()]).is_err(),
            "no room for .4094"
        );
        assert!(n.validate(&["eth 0".into()]).is_err());
        let slash = Naming {
            bridge_prefix: "w/".into(),
            ..Naming::default()
        };
        assert!(slash.validate(&[]).is_err());
    }
}
