//! TLS client configuration shared by the MQTT connection and HTTPS snapshot downloads.
//!
//! The crypto provider is *ring*, chosen explicitly per config instead of a process-wide
//! default: aws-lc makes ARM cross builds slow, and an explicit provider cannot be forgotten
//! by one code path and not another.

use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} holds no PEM certificate; expected a file starting with -----BEGIN CERTIFICATE-----"
    )]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{path}: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no trusted root certificates: none in the system store and no CA file configured")]
    NoRoots,
}

/// The process's crypto provider (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Certificates of a PEM file (a CA bundle or a client chain).
pub fn load_certs(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    let pem = read("certificate file", path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, TlsError> {
    let pem = read("private key", path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: path.to_path_buf(),
        })
}

/// Trust anchors: the configured CA file only (pinning central's CA), or the system store.
pub fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path)? {
                roots.add(cert)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::NoRoots);
            }
        }
    }
    Ok(roots)
}

/// A client configuration: server verified against `ca_file` (or the system roots), and a
/// client certificate for mutual TLS when both files are given.
pub fn client_config(
    ca_file: Option<&Path>,
    client_identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_file)?);
    Ok(match client_identity {
        Some((cert, key)) => builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?,
        None => builder.with_no_client_auth(),
    })
}

/// A broker password kept in a file: its first line, without the line ending (files written
/// by `echo` or an editor end with one; the password does not).
pub fn read_password_file(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// Redirects followed only within the origin (scheme, host, port) a download or upload was
/// aimed at, at most 5: a snapshot server or an upload endpoint cannot send the agent, and its
/// client certificate, to another host.
pub fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().cloned();
        match first {
            _ if attempt.previous().len() > 5 => attempt.error("more than 5 redirects"),
            Some(first) if same_origin(&first, attempt.url()) => attempt.follow(),
            _ => attempt.stop(),
        }
    })
}

/// Scheme, host and port equal (the port as the scheme defaults it).
pub fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

#[cfg(test)]
mod redirect_tests {
    use super::same_origin;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_snapshot_server_redirecting_to_another_host_or_scheme_is_not_followed() {
        let from = url("https://central.example/snapshots/manifest.json");
        assert!(same_origin(
            &from,
            &url("https://central.example:443/v2/manifest.json")
        ));
        assert!(!same_origin(
            &from,
            &url("https://evil.example/manifest.json")
        ));
        assert!(!same_origin(
            &from,
            &url("http://central.example/manifest.json")
        ));
        assert!(!same_origin(
            &from,
            &url("https://central.example:8443/manifest.json")
        ));
    }
}
