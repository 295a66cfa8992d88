//! The identity of a downstream TLS peer, taken once after the handshake
//! and attached to the connection (Pingora's `SslDigest` extension) so the
//! HTTP layer can build `x-forwarded-client-cert` as Envoy does.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::tls::hash::MessageDigest;
use pingora_core::tls::ssl::NameType;
use pingora_core::tls::x509::X509Ref;

#[derive(Debug, Default, Clone)]
pub struct PeerIdentity {
    /// Whether the peer presented a (verified) certificate at all.
    pub presented: bool,
    /// SHA-256 of the peer certificate's DER, lower-case hex.
    pub hash: String,
    /// The peer's subject, RFC 2253 (`CN=client,O=weft`).
    pub subject: String,
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    /// URI SANs of our own certificate (XFCC's `By`).
    pub local_uri_sans: Vec<String>,
    /// The server name the client asked for (SNI), if any: not the
    /// peer's identity, but recorded with it at the handshake.
    pub server_name: Option<Arc<str>>,
}

impl PeerIdentity {
    fn of(ssl: &TlsRef) -> PeerIdentity {
        let local_uri_sans = ssl.certificate().map(|c| sans(c).0).unwrap_or_default();
        let server_name = ssl.servername(NameType::HOST_NAME).map(Arc::from);
        let Some(peer) = ssl.peer_certificate() else {
            return PeerIdentity { local_uri_sans, server_name, ..PeerIdentity::default() };
        };
        let hash = peer
            .digest(MessageDigest::sha256())
            .map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default();
        let subject = peer
            .subject_name()
            .print_ex(pingora_core::tls::ssl_sys::XN_FLAG_RFC2253)
            .unwrap_or_default();
        let (uri_sans, dns_sans) = sans(&peer);
        PeerIdentity { presented: true, hash, subject, uri_sans, dns_sans, local_uri_sans, server_name }
    }
}

/// URI and DNS SANs of a certificate.
fn sans(cert: &X509Ref) -> (Vec<String>, Vec<String>) {
    let (mut uris, mut dns) = (Vec::new(), Vec::new());
    for name in cert.subject_alt_names().iter().flat_map(|s| s.iter()) {
        if let Some(u) = name.uri() {
            uris.push(u.to_string());
        } else if let Some(d) = name.dnsname() {
            dns.push(d.to_string());
        }
    }
    (uris, dns)
}

/// Handshake callbacks that record the peer identity.
pub struct RecordPeer;

#[async_trait]
impl TlsAccept for RecordPeer {
    async fn handshake_complete_callback(&self, ssl: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::new(PeerIdentity::of(ssl)))
    }
}
