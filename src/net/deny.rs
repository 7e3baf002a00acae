//! Revoked certificates: the deny list (SHA-256 fingerprints of
//! certificates, one per line, from `meridian ca revoke`) and the rustls
//! verifiers that refuse a listed certificate during the handshake, on
//! both sides of a peer connection and for the API's client certificates.
//! A listed certificate is refused even though it chains to the CA: that
//! is what revoking a lost node key needs.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::tls::TlsError;

/// Most fingerprints a deny list may hold.
pub const DENY_LIST_MAX: usize = 100_000;

/// The SHA-256 fingerprint of a certificate's DER, the deny list's unit.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A fingerprint as the deny list writes it: 64 lowercase hex digits.
pub fn fingerprint_hex(der: &[u8]) -> String {
    fingerprint(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The certificates refused whatever their chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenyList {
    denied: HashSet<[u8; 32]>,
}

impl DenyList {
    /// Parses the file's text: one fingerprint per line (64 hex digits,
    /// colons and a `sha256:` prefix allowed), `#` starts a comment.
    pub fn parse(text: &str, path: &Path) -> Result<DenyList, TlsError> {
        let mut denied = HashSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let hex: String = line
                .trim_start_matches("sha256:")
                .chars()
                .filter(|c| *c != ':')
                .collect();
            let bad = || {
                TlsError::Config(format!(
                    "{}: line {}: not a SHA-256 fingerprint (64 hex digits): {line:?}",
                    path.display(),
                    n + 1
                ))
            };
            if hex.len() != 64 {
                return Err(bad());
            }
            let mut fp = [0u8; 32];
            for (i, b) in fp.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
            }
            if denied.len() == DENY_LIST_MAX {
                return Err(TlsError::Config(format!(
                    "{}: more than {DENY_LIST_MAX} fingerprints",
                    path.display()
                )));
            }
            denied.insert(fp);
        }
        Ok(DenyList { denied })
    }

    /// Reads the deny list at `path`.
    pub fn load(path: &Path) -> Result<DenyList, TlsError> {
        let text = std::fs::read_to_string(path).map_err(|source| TlsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        DenyList::parse(&text, path)
    }

    /// Whether `der` is listed.
    pub fn denies(&self, der: &[u8]) -> bool {
        !self.denied.is_empty() && self.denied.contains(&fingerprint(der))
    }

    /// How many certificates it lists.
    pub fn len(&self) -> usize {
        self.denied.len()
    }

    /// Whether it lists none.
    pub fn is_empty(&self) -> bool {
        self.denied.is_empty()
    }
}

fn revoked() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Revoked)
}

/// A client-certificate verifier that refuses listed certificates, then
/// asks `inner` (the CA chain).
#[derive(Debug)]
pub struct DenyingClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) deny: Arc<DenyList>,
}

impl ClientCertVerifier for DenyingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.deny.denies(end_entity.as_ref()) {
            return Err(revoked());
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server-certificate verifier that refuses listed certificates, then
/// asks `inner` (the CA chain and the name).
#[derive(Debug)]
pub struct DenyingServerVerifier {
    pub(crate) inner: Arc<dyn ServerCertVerifier>,
    pub(crate) deny: Arc<DenyList>,
}

impl ServerCertVerifier for DenyingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.deny.denies(end_entity.as_ref()) {
            return Err(revoked());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_their_usual_spellings() {
        let der = b"a certificate";
        let hex = fingerprint_hex(der);
        let colons: Vec<String> = hex
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8(c.to_vec()).unwrap().to_uppercase())
            .collect();
        let text = format!(
            "# lost laptop\n{hex}\n\nsha256:{}  # again\n",
            colons.join(":")
        );
        let l = DenyList::parse(&text, Path::new("deny")).unwrap();
        assert_eq!(l.len(), 1);
        assert!(l.denies(der) && !l.denies(b"another"));
        let e = DenyList::parse("abc\n", Path::new("deny")).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(!DenyList::default().denies(der));
    }
}
