//! `x-forwarded-client-cert` (XFCC), as Envoy's connection manager writes
//! it: by default the header is removed; with mutual TLS it can be
//! forwarded, appended to or replaced with the client certificate's
//! details (`By=…;Hash=…;Subject="…";URI=…;DNS=…`).

use http::HeaderValue;
use pingora_http::RequestHeader;
use weft_envoy_api::pb::envoy::extensions::filters::network::http_connection_manager::v3 as xds_hcm;

use crate::model::{ConfigError, Result};
use crate::tls::PeerIdentity;

const XFCC: &str = "x-forwarded-client-cert";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Sanitize,
    ForwardOnly,
    AppendForward,
    SanitizeSet,
    AlwaysForwardOnly,
}

/// What `set_current_client_cert_details` asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Details {
    pub subject: bool,
    pub uri: bool,
    pub dns: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct ClientCertPolicy {
    mode: Mode,
    details: Details,
}

impl ClientCertPolicy {
    pub fn compile(hcm: &xds_hcm::HttpConnectionManager, path: &str) -> Result<Self> {
        use xds_hcm::http_connection_manager::ForwardClientCertDetails as F;
        let mode = match F::try_from(hcm.forward_client_cert_details) {
            Ok(F::Sanitize) => Mode::Sanitize,
            Ok(F::ForwardOnly) => Mode::ForwardOnly,
            Ok(F::AppendForward) => Mode::AppendForward,
            Ok(F::SanitizeSet) => Mode::SanitizeSet,
            Ok(F::AlwaysForwardOnly) => Mode::AlwaysForwardOnly,
            Err(_) => {
                return Err(ConfigError::new(
                    format!("{path}.forward_client_cert_details"),
                    format!("unknown value {}", hcm.forward_client_cert_details),
                ))
            }
        };
        let d = hcm.set_current_client_cert_details.unwrap_or_default();
        let details = Details { subject: d.subject.is_some_and(|v| v.value), uri: d.uri, dns: d.dns };
        Ok(ClientCertPolicy { mode, details })
    }

    /// Applies the policy to a request that arrived on a connection with
    /// this peer (`None`: not TLS).
    pub fn apply(&self, peer: Option<&PeerIdentity>, req: &mut RequestHeader) {
        if self.mode == Mode::AlwaysForwardOnly {
            return;
        }
        let mutual = peer.filter(|p| p.presented);
        let Some(peer) = mutual.filter(|_| self.mode != Mode::Sanitize) else {
            // Removal costs two map updates in Pingora's header: skip it
            // when there is nothing to remove (every request goes here).
            if req.headers.contains_key(XFCC) {
                req.remove_header(XFCC);
            }
            return;
        };
        let value = match self.mode {
            Mode::ForwardOnly => return,
            Mode::AppendForward => match req.headers.get(XFCC).and_then(|v| v.to_str().ok()) {
                Some(prev) => format!("{prev},{}", self.describe(peer)),
                None => self.describe(peer),
            },
            _ => self.describe(peer),
        };
        match HeaderValue::from_str(&value) {
            Ok(v) => {
                let _ = req.insert_header(XFCC, v);
            }
            Err(_) => {
                req.remove_header(XFCC);
            }
        }
    }

    /// One XFCC element, fields in Envoy's order.
    fn describe(&self, peer: &PeerIdentity) -> String {
        let mut parts = Vec::new();
        if let Some(by) = peer.local_uri_sans.first() {
            parts.push(format!("By={by}"));
        }
        if !peer.hash.is_empty() {
            parts.push(format!("Hash={}", peer.hash));
        }
        if self.details.subject {
            parts.push(format!("Subject=\"{}\"", peer.subject.replace('"', "\\\"")));
        }
        if self.details.uri {
            // Envoy reports the first URI SAN only.
            parts.push(format!("URI={}", peer.uri_sans.first().map_or("", String::as_str)));
        }
        if self.details.dns {
            for dns in &peer.dns_sans {
                parts.push(format!("DNS={dns}"));
            }
        }
        parts.join(";")
    }
}
