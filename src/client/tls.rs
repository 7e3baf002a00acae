//! HTTPS for the client: which server certificates it trusts (a CA file,
//! else the system's roots), the client certificate it presents when the
//! API requires one, and the name it checks the server's certificate for.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::ClientError;
use crate::net::tls::{read_certs, read_key, read_roots};

/// A client's TLS settings, shared by every request it makes.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub(super) config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry; `None`: the host of
    /// the address dialed.
    pub(super) server_name: Option<ServerName<'static>>,
    /// Whether a client certificate is presented.
    pub(super) presents_cert: bool,
}

impl ClientTls {
    /// Trusts the certificates of `ca_file` (else the system's roots),
    /// presents `client` (certificate file, key file) when given, and
    /// checks the server's certificate for `server_name` (else the host
    /// dialed).
    pub fn new(
        ca_file: Option<&Path>,
        client: Option<(&Path, &Path)>,
        server_name: Option<&str>,
    ) -> Result<ClientTls, ClientError> {
        let tls = |m: String| ClientError::Tls(m);
        let roots = match ca_file {
            Some(path) => read_roots(path).map_err(|e| tls(e.to_string()))?,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = read_certs(cert).map_err(|e| tls(e.to_string()))?;
                let key = read_key(key).map_err(|e| tls(e.to_string()))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| tls(format!("{}: {e}", cert.display())))?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = match server_name {
            None => None,
            Some(n) => Some(
                ServerName::try_from(n.to_string())
                    .map_err(|_| tls(format!("{n:?} is not a valid TLS server name")))?,
            ),
        };
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
            presents_cert: client.is_some(),
        })
    }

    /// The name to check the certificate of `host` for.
    pub(super) fn name_for(&self, host: &str) -> Result<ServerName<'static>, ClientError> {
        if let Some(n) = &self.server_name {
            return Ok(n.clone());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string())
            .map_err(|_| ClientError::Tls(format!("{host:?} is not a valid TLS server name")))
    }
}

/// The system's trusted roots (an https:// address given no CA file).
fn system_roots() -> Result<rustls::RootCertStore, ClientError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or("none found".to_string(), |e| e.to_string());
        return Err(ClientError::Tls(format!(
            "no trusted roots in the system ({why}): give the CA with --ca-cert"
        )));
    }
    Ok(roots)
}
