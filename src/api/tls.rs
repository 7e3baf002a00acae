//! HTTPS for the API: the rustls server configuration built from a
//! certificate, its key and, when clients must present certificates
//! (`verify_incoming`), the CA their certificates must chain to.
//!
//! The server loop ([`super::server`]) runs the handshakes; this file only
//! decides what they accept.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::net::deny::{DenyList, DenyingClientVerifier};
use crate::net::tls::{read_certs, read_key, read_roots, TlsError};

/// Where the API's TLS material is, and whether clients must present a
/// certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTls {
    /// The server's certificate chain, PEM (the leaf first).
    pub cert_file: PathBuf,
    /// Its private key, PEM.
    pub key_file: PathBuf,
    /// When set, every client must present a certificate that chains to a
    /// certificate of this PEM file; connections without one are refused
    /// during the handshake.
    pub client_ca_file: Option<PathBuf>,
    /// Client certificates refused whatever their chain (revoked).
    pub denied: Arc<DenyList>,
}

/// The protocols the API speaks over TLS (HTTP/1.1 only).
const ALPN_HTTP1: &[u8] = b"http/1.1";

impl ApiTls {
    /// The rustls server configuration: TLS 1.3 and 1.2, HTTP/1.1 by ALPN,
    /// client certificates required when `client_ca_file` is set.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = read_certs(&self.cert_file)?;
        let key = read_key(&self.key_file)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config)?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let chain = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(read_roots(ca)?),
                    provider,
                )
                .build()
                .map_err(config)?;
                builder.with_client_cert_verifier(Arc::new(DenyingClientVerifier {
                    inner: chain,
                    deny: self.denied.clone(),
                }))
            }
        };
        let mut server = builder.with_single_cert(certs, key).map_err(|e| {
            TlsError::Config(format!(
                "{} and {}: {e}",
                self.cert_file.display(),
                self.key_file.display()
            ))
        })?;
        server.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(Arc::new(server))
    }

    /// The node's own certificate and key in `tls_dir` (from `meridian ca
    /// issue`), and the cluster CA for client certificates when
    /// `verify_incoming`.
    pub fn node_files(tls_dir: &Path, verify_incoming: bool) -> ApiTls {
        ApiTls {
            cert_file: tls_dir.join("node.pem"),
            key_file: tls_dir.join("node.key"),
            client_ca_file: verify_incoming.then(|| tls_dir.join("ca.pem")),
            denied: Arc::default(),
        }
    }
}

fn config(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}
