//! Optional TLS on the API listener, so the bearer token does not cross the network in
//! cleartext. Errors name the files, never what is in them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::TlsFiles;

/// How long a client may take over its handshake; one that stalls holds nothing longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "set both --tls-cert (WEFT_AGENT_TLS_CERT) and --tls-key (WEFT_AGENT_TLS_KEY), or neither"
    )]
    Incomplete,
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no valid PEM certificate", path.display())]
    Certificate { path: PathBuf },
    #[error("{}: no valid PEM private key", path.display())]
    Key { path: PathBuf },
    #[error("certificate {} and key {} are not a usable pair: {source}", cert.display(), key.display())]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Reads the PEM files into the listener's TLS settings (ring provider, as reqwest uses);
/// called at start-up so a bad file stops the agent before it serves anything.
pub fn acceptor(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|chain| !chain.is_empty())
        .ok_or_else(|| TlsError::Certificate {
            path: files.cert.clone(),
        })?;
    // The parser's error can quote the file; only the path is reported.
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|_| TlsError::Key {
        path: files.key.clone(),
    })?;
    let pair = |source| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(pair)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(pair)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn bad_files_are_named_and_their_contents_never_shown() {
        let dir = std::env::temp_dir().join(format!("weft-agent-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let key_pem = key.serialize_pem();
        let cert_path = write(&dir, "cert.pem", &cert.pem());
        let key_path = write(&dir, "key.pem", &key_pem);
        let files = |cert: &Path, key: &Path| TlsFiles {
            cert: cert.into(),
            key: key.into(),
        };
        assert!(acceptor(&files(&cert_path, &key_path)).is_ok());

        let missing = dir.join("missing.pem");
        // A key with a corrupted body, and a key that belongs to another certificate.
        let mangled = write(&dir, "mangled.pem", &key_pem.replacen('M', "!", 1));
        let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let other = write(&dir, "other.pem", &other);
        let cases = [
            (files(&missing, &key_path), &missing, "read"),
            (
                files(&key_path, &key_path),
                &key_path,
                "no valid PEM certificate",
            ),
            (
                files(&cert_path, &cert_path),
                &cert_path,
                "no valid PEM private key",
            ),
            (
                files(&cert_path, &mangled),
                &mangled,
                "no valid PEM private key",
            ),
            (files(&cert_path, &other), &other, "not a usable pair"),
        ];
        for (files, path, why) in cases {
            let err = acceptor(&files).expect_err("refused");
            let shown = format!("{err} {err:?}");
            assert!(shown.contains(&*path.to_string_lossy()), "{shown}");
            assert!(shown.contains(why), "{shown}");
            for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!shown.contains(line), "key material shown: {shown}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
