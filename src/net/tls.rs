//! Certificates and TLS: the cluster CA, node certificates, and the rustls
//! configurations for mutual TLS over QUIC.
//!
//! Owns: creating a cluster CA (`meridian ca init`), issuing node
//! certificates signed by it (`meridian ca issue`) that carry the node's name
//! and region and serve for both server and client authentication, loading
//! them from PEM files, and building the quinn server and client configs
//! that accept only peers whose certificate chains to the cluster CA. The
//! cluster id is derived from the CA certificate, so another CA is another
//! cluster. Also reads the PEM files the API's HTTPS and its clients use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use super::deny::{DenyList, DenyingClientVerifier, DenyingServerVerifier};
use crate::core::codec::ClusterId;
use crate::core::types::NodeId;

/// The name every node certificate carries, and that a dialing node asks for.
pub const SERVER_NAME: &str = "meridian.cluster";
/// The hosts every node certificate is also issued for, so that HTTPS
/// clients on the node's own machine accept its API (`meridian ca issue
/// --host` adds more).
pub const DEFAULT_API_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Most hosts `meridian ca issue --host` may add to one certificate.
pub const HOSTS_MAX: usize = 64;
/// The ALPN protocol of the replication transport.
pub const ALPN: &[u8] = b"meridian/1";
/// The round trip QUIC assumes before it has measured one (quinn's default
/// is 333 ms). It paces the handshake's retransmissions: after a partition
/// heals, a handshake begun during the cut gets through at its next resend,
/// so a lower guess reconnects sooner, at the cost of an early resend of the
/// first packet on links slower than this.
pub const INITIAL_RTT_MS: u64 = 100;
/// The dialing side of a connection sends a keep-alive when it has sent
/// nothing for this long.
pub const KEEP_ALIVE_MS: u64 = 1_000;
/// A connection silent this long is lost.
pub const IDLE_TIMEOUT_MS: u64 = 5_000;
/// An edge's keep-alive towards its server (half the idle timeout, as the
/// server sends nothing to an idle edge for a few beats).
pub const EDGE_KEEP_ALIVE_MS: u64 = 2_000;

/// The QUIC transport of one side: `keep_alive_ms` (`None`: this side sends
/// none), and the peer asked to acknowledge every `ack_every` packets (at
/// most 25 ms later).
pub fn transport(keep_alive_ms: Option<u64>, ack_every: u32) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(keep_alive_ms.map(std::time::Duration::from_millis));
    t.initial_rtt(std::time::Duration::from_millis(INITIAL_RTT_MS));
    // Forwarded API requests, one stream each (the replication streams are unidirectional).
    t.max_concurrent_bidi_streams(super::forward::FORWARDS_PER_CONNECTION_MAX.into());
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        IDLE_TIMEOUT_MS as u32,
    ))));
    if ack_every > 1 {
        let mut f = quinn::AckFrequencyConfig::default();
        f.ack_eliciting_threshold(quinn::VarInt::from_u32(ack_every - 1))
            .max_ack_delay(Some(std::time::Duration::from_millis(25)));
        t.ack_frequency_config(Some(f));
    }
    t
}

/// Why certificates or TLS could not be set up.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file or directory could not be read, written or created.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold the PEM object expected.
    #[error("{path}: not a valid PEM {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What it should hold (`certificate`, `private key`).
        what: &'static str,
    },
    /// A key could not be generated or parsed, or a certificate not made.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// The node's certificate names another node or region than the node
    /// was configured with: its peers would refuse it.
    #[error(
        "the certificate is for {}, but this node is configured as {configured_name:?} in {configured_region:?}: issue one for this name and region (`meridian ca issue`)",
        certified.as_ref().map_or("no node name and region".to_string(), |(n, r)| format!("{n:?} in {r:?}"))
    )]
    Identity {
        /// The name and region the certificate carries, if any.
        certified: Option<(String, String)>,
        /// The node's configured name.
        configured_name: String,
        /// The node's configured region.
        configured_region: String,
    },
    /// rustls or quinn refused the certificates or settings.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// A cluster, node or region name is not 1-64 characters of a-z, A-Z, 0-9, `-`, `_` or `.`.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which name (`cluster`, `name` or `region`).
        field: &'static str,
        /// The value, and what it must be.
        reason: String,
    },
}

/// A cluster certificate authority.
pub struct Ca {
    /// The cluster's name, in the CA's subject.
    pub cluster: String,
    /// The CA's self-signed certificate, PEM (`ca.pem`).
    pub cert_pem: String,
    /// The CA's private key, PEM (`ca.key`): it signs node certificates.
    pub key_pem: String,
}

/// A node's certificate and key, and the CA it chains to.
#[derive(Clone)]
pub struct NodeIdentity {
    /// The node's certificate, PEM (`node.pem`): its common name is the
    /// node's name, its organizational unit the node's region.
    pub cert_pem: String,
    /// The node's private key, PEM (`node.key`).
    pub key_pem: String,
    /// The cluster CA's certificate, PEM (`ca.pem`): peers must chain to it,
    /// and the cluster id is derived from it.
    pub ca_pem: String,
    /// Peer certificates refused even though they chain to the CA (revoked
    /// keys); empty unless [`NodeIdentity::with_deny_list`].
    pub denied: Arc<DenyList>,
}

/// The node name and region a node certificate carries (its common name and
/// organizational unit), from its DER; `None` when it carries no such names
/// or does not parse.
pub fn certified_names(der: &[u8]) -> Option<(String, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?;
    let region = subject.iter_organizational_unit().next()?.as_str().ok()?;
    Some((name.to_string(), region.to_string()))
}

/// The subject alternative name URI that binds a certificate to its node
/// id: peers refuse a connection whose preamble names another id.
fn node_uri(node: NodeId) -> String {
    format!("{NODE_URI_PREFIX}{node}")
}

/// What a node id URI starts with (the id follows, 16 hex digits).
const NODE_URI_PREFIX: &str = "urn:meridian:node:";

/// A new random node id (never 0).
pub fn random_node_id() -> NodeId {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // Without OS randomness no key pair could be made either: this
    // fallback only keeps the id unique enough.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b = blake3::hash(&t.to_le_bytes()).as_bytes()[..8]
            .try_into()
            .unwrap_or([1; 8]);
    }
    NodeId(u64::from_le_bytes(b) | 1)
}

/// The node id a certificate is bound to (see [`Ca::issue_node`]), from
/// its DER; `None` for a certificate issued before ids were bound, or one
/// that does not parse.
pub fn certified_node(der: &[u8]) -> Option<NodeId> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(u) => {
            let hex = u.strip_prefix(NODE_URI_PREFIX)?;
            let id = u64::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.len() == 16)?;
            (id != 0).then_some(NodeId(id))
        }
        _ => None,
    })
}

/// The node id of the certificate the peer on `connection` authenticated
/// with (see [`certified_node`]).
pub fn peer_node(connection: &quinn::Connection) -> Option<NodeId> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certified_node(certs.first()?.as_ref())
}

/// The DNS names and IP addresses a certificate is issued for (its
/// subject alternative names), from its DER; empty when it has none or does
/// not parse.
pub fn certified_hosts(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The name and region of the certificate the peer on `connection`
/// authenticated with (see [`certified_names`]).
pub fn peer_names(connection: &quinn::Connection) -> Option<(String, String)> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certified_names(certs.first()?.as_ref())
}

fn ca_params(cluster: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "meridian");
    dn.push(DnType::CommonName, format!("meridian CA {cluster}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// A DNS name a certificate may be issued for: dot-separated labels of
/// 1-63 letters, digits and inner hyphens, 253 bytes at most, the first
/// label possibly `*`.
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn check_name(field: &'static str, value: &str) -> Result<(), TlsError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(TlsError::Invalid {
            field,
            reason: format!("{value:?} must be 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.'"),
        })
    }
}

impl Ca {
    /// Creates a new CA for the cluster `cluster`.
    pub fn generate(cluster: &str) -> Result<Ca, TlsError> {
        check_name("cluster", cluster)?;
        let key = KeyPair::generate()?;
        let cert = ca_params(cluster).self_signed(&key)?;
        Ok(Ca {
            cluster: cluster.to_string(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem`, `ca.key` (owner-only) and `cluster` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        write(&dir.join("ca.pem"), &self.cert_pem, false)?;
        write(&dir.join("ca.key"), &self.key_pem, true)?;
        write(&dir.join("cluster"), &format!("{}\n", self.cluster), false)
    }

    /// Reads a CA saved by [`Ca::save`].
    pub fn load(dir: &Path) -> Result<Ca, TlsError> {
        Ok(Ca {
            cluster: read(&dir.join("cluster"))?.trim().to_string(),
            cert_pem: read(&dir.join("ca.pem"))?,
            key_pem: read(&dir.join("ca.key"))?,
        })
    }

    /// Issues a certificate for node `name` in `region` under a new random
    /// node id, valid as server and client, for the hosts of
    /// [`DEFAULT_API_HOSTS`].
    pub fn issue(&self, name: &str, region: &str) -> Result<NodeIdentity, TlsError> {
        self.issue_for(name, region, &[])
    }

    /// Like [`Ca::issue`], with `hosts` (DNS names or IP addresses) added to
    /// the certificate's names, so that HTTPS clients reaching the node's API
    /// by one of them accept it.
    pub fn issue_for(
        &self,
        name: &str,
        region: &str,
        hosts: &[String],
    ) -> Result<NodeIdentity, TlsError> {
        self.issue_node(name, region, random_node_id(), hosts)
    }

    /// Like [`Ca::issue_for`], under the node id `node`: the id a node
    /// already holds (its data directory's `node.id`) when its certificate
    /// is issued again.
    pub fn issue_node(
        &self,
        name: &str,
        region: &str,
        node: NodeId,
        hosts: &[String],
    ) -> Result<NodeIdentity, TlsError> {
        if node == NodeId(0) {
            return Err(TlsError::Invalid {
                field: "node id",
                reason: "0 is no node's id".to_string(),
            });
        }
        self.issue_with(name, region, Some(node), hosts)
    }

    /// A certificate bound to no node id, as `ca issue` made them before
    /// ids were bound. Such certificates still work (peers cannot check the
    /// id their holder claims, and the node warns at start): this makes
    /// one to show it.
    pub fn issue_unbound(&self, name: &str, region: &str) -> Result<NodeIdentity, TlsError> {
        self.issue_with(name, region, None, &[])
    }

    fn issue_with(
        &self,
        name: &str,
        region: &str,
        node: Option<NodeId>,
        hosts: &[String],
    ) -> Result<NodeIdentity, TlsError> {
        check_name("name", name)?;
        check_name("region", region)?;
        if hosts.len() > HOSTS_MAX {
            return Err(TlsError::Invalid {
                field: "host",
                reason: format!("at most {HOSTS_MAX} hosts per certificate"),
            });
        }
        let mut sans = vec![SanType::DnsName(SERVER_NAME.try_into()?)];
        if let Some(node) = node {
            sans.push(SanType::URI(node_uri(node).try_into()?));
        }
        for h in DEFAULT_API_HOSTS
            .iter()
            .copied()
            .chain(hosts.iter().map(String::as_str))
        {
            let not_a_host = || TlsError::Invalid {
                field: "host",
                reason: format!("{h:?} is neither an IP address nor a DNS name"),
            };
            let san = match h.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) if is_dns_name(h) => {
                    SanType::DnsName(h.try_into().map_err(|_| not_a_host())?)
                }
                Err(_) => return Err(not_a_host()),
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::new(ca_params(&self.cluster), ca_key);
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "meridian");
        dn.push(DnType::OrganizationalUnitName, region);
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.subject_alt_names = sans;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        Ok(NodeIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
            denied: Arc::default(),
        })
    }
}

impl NodeIdentity {
    /// Writes `node.pem`, `node.key` (owner-only) and `ca.pem` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        write(&dir.join("node.pem"), &self.cert_pem, false)?;
        write(&dir.join("node.key"), &self.key_pem, true)?;
        write(&dir.join("ca.pem"), &self.ca_pem, false)
    }

    /// Reads the files written by [`NodeIdentity::save`].
    pub fn load(dir: &Path) -> Result<NodeIdentity, TlsError> {
        Ok(NodeIdentity {
            cert_pem: read(&dir.join("node.pem"))?,
            key_pem: read(&dir.join("node.key"))?,
            ca_pem: read(&dir.join("ca.pem"))?,
            denied: Arc::default(),
        })
    }

    /// Refuses peers whose certificate `deny` lists, in the handshake.
    pub fn with_deny_list(mut self, deny: DenyList) -> NodeIdentity {
        self.denied = Arc::new(deny);
        self
    }

    fn ca_der(&self) -> Result<CertificateDer<'static>, TlsError> {
        ca_der(&self.ca_pem)
    }

    /// Checks that the certificate names node `name` in `region`, as its
    /// peers will check it.
    pub fn check_names(&self, name: &str, region: &str) -> Result<(), TlsError> {
        let certified = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .ok()
            .and_then(|der| certified_names(der.as_ref()));
        if certified.as_ref().map(|(n, r)| (n.as_str(), r.as_str())) == Some((name, region)) {
            return Ok(());
        }
        Err(TlsError::Identity {
            certified,
            configured_name: name.to_string(),
            configured_region: region.to_string(),
        })
    }

    /// The node id the certificate is bound to, if it is bound to one.
    pub fn node_id(&self) -> Option<NodeId> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .ok()
            .and_then(|der| certified_node(der.as_ref()))
    }

    /// Whether the certificate is issued for `host` (a DNS name or an IP
    /// address), so that HTTPS clients dialing it accept the node's API.
    pub fn names_host(&self, host: &str) -> bool {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map(|der| certified_hosts(der.as_ref()).iter().any(|h| h == host))
            .unwrap_or(false)
    }

    /// The cluster id: derived from the CA certificate.
    pub fn cluster_id(&self) -> Result<ClusterId, TlsError> {
        cluster_id(&self.ca_pem)
    }

    /// quinn server and client configurations for mutual TLS 1.3 within the cluster.
    pub fn quic_configs(&self) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TlsError> {
        let cfg = |e: &dyn std::fmt::Display| TlsError::Config(e.to_string());
        let cert = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(|_| {
            TlsError::Pem {
                path: PathBuf::from("node.pem"),
                what: "certificate",
            }
        })?;
        let key =
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|_| TlsError::Pem {
                path: PathBuf::from("node.key"),
                what: "private key",
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()?).map_err(|e| cfg(&e))?;
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| cfg(&e))?;
        let verifier = Arc::new(DenyingClientVerifier {
            inner: chain,
            deny: self.denied.clone(),
        });
        let server_chain =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| cfg(&e))?;
        let server_verifier = Arc::new(DenyingServerVerifier {
            inner: server_chain,
            deny: self.denied.clone(),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| cfg(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.clone()], key.clone_key())
            .map_err(|e| cfg(&e))?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| cfg(&e))?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier)
            .with_client_auth_cert(vec![cert], key)
            .map_err(|e| cfg(&e))?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        let server =
            quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(|e| cfg(&e))?;
        let client =
            quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(|e| cfg(&e))?;
        // The side that dialed keeps a connection alive; the side that
        // accepted does not (a server with a thousand edges would send a
        // thousand pings a second). Members exchange heartbeats every
        // second anyway.
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
        server.transport_config(Arc::new(transport(None, 4)));
        let mut client = quinn::ClientConfig::new(Arc::new(client));
        client.transport_config(Arc::new(transport(Some(KEEP_ALIVE_MS), 1)));
        Ok((server, client))
    }
}

/// Reads every certificate of a PEM file (a chain: the leaf first).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read(path)?;
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|_| TlsError::Pem {
        path: path.to_path_buf(),
        what: "private key",
    })
}

/// A root store holding every certificate of the PEM file at `path`.
pub fn read_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(path)? {
        roots
            .add(c)
            .map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

fn ca_der(ca_pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|_| TlsError::Pem {
        path: PathBuf::from("ca.pem"),
        what: "certificate",
    })
}

/// The cluster id of the cluster whose CA certificate is `ca_pem`: the
/// first 16 bytes of blake3 over its DER.
pub fn cluster_id(ca_pem: &str) -> Result<ClusterId, TlsError> {
    let der = ca_der(ca_pem)?;
    let h = blake3::hash(der.as_ref());
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.as_bytes()[..16]);
    Ok(ClusterId(id))
}

fn io(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let _ = secret;
    let mut f = opts.open(path).map_err(|e| io(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_build_tls_configs_and_share_the_cluster_id() {
        let ca = Ca::generate("prod").unwrap();
        let a = ca.issue("n1", "us-east").unwrap();
        let b = ca.issue("n2", "eu-west").unwrap();
        // Every node certificate serves the API on the node's own machine.
        for host in DEFAULT_API_HOSTS {
            assert!(a.names_host(host), "{host}");
        }
        assert!(!a.names_host("db.example.com"));
        let c = ca
            .issue_for(
                "n3",
                "eu-west",
                &["db.example.com".into(), "10.0.0.7".into()],
            )
            .unwrap();
        assert!(c.names_host("db.example.com") && c.names_host("10.0.0.7"));
        assert!(ca.issue_for("n4", "r", &["not a host".into()]).is_err());
        a.quic_configs().unwrap();
        assert_eq!(a.cluster_id().unwrap(), b.cluster_id().unwrap());
        let other = Ca::generate("prod")
            .unwrap()
            .issue("n1", "us-east")
            .unwrap();
        assert_ne!(a.cluster_id().unwrap(), other.cluster_id().unwrap());
        assert!(matches!(
            ca.issue("bad name", "r"),
            Err(TlsError::Invalid { field: "name", .. })
        ));
    }
}
