//! BoringSSL contexts from Envoy's TLS context messages, with Envoy's
//! defaults: TLS 1.2 minimum; TLS 1.3 maximum for servers and 1.2 for
//! clients; Envoy's cipher list and curves; no upstream certificate check
//! unless a validation context is given; no hostname check (identity is
//! checked with `match_typed_subject_alt_names`, as Envoy does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pingora_core::tls::pkey::PKey;
use pingora_core::tls::error::ErrorStack;
use pingora_core::tls::ssl::{
    AlpnError, Ssl, SslAcceptor, SslConnector, SslContextBuilder, SslMethod, SslVerifyMode,
    SslVersion,
};
use pingora_core::tls::x509::store::X509StoreBuilder;
use pingora_core::tls::x509::{X509Ref, X509StoreContextRef, X509};
use weft_envoy_api::pb::envoy::extensions::transport_sockets::tls::v3 as xds_tls;

use crate::model::listener::data_source;
use crate::model::matcher::StringMatcher;
use crate::model::{ConfigError, Result};

/// Envoy's default cipher list (non-FIPS), the same for both directions.
/// Brackets are BoringSSL's equal-preference groups.
const DEFAULT_CIPHERS: &str = "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]:\
     [ECDHE-RSA-AES128-GCM-SHA256|ECDHE-RSA-CHACHA20-POLY1305]:\
     ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";
const DEFAULT_CURVES: &str = "X25519:P-256";

/// A listener's (filter chain's) TLS: what `DownstreamTlsContext` asks for.
pub struct ServerTls {
    pub acceptor: SslAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    pub fn compile(ctx: &xds_tls::DownstreamTlsContext, path: &str) -> Result<Self> {
        let cpath = format!("{path}.common_tls_context");
        let common = ctx.common_tls_context.clone().unwrap_or_default();
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
            .map_err(|e| ConfigError::new(path, format!("cannot create a TLS context: {e}")))?;
        apply_params(&mut b, common.tls_params.as_ref(), Role::Server, &cpath)?;
        if common.tls_certificates.is_empty() {
            return Err(ConfigError::new(
                format!("{cpath}.tls_certificates"),
                "a server TLS context needs a certificate",
            ));
        }
        apply_certificate(&mut b, &common, &cpath)?;
        let require = ctx.require_client_certificate.as_ref().is_some_and(|v| v.value);
        match validation(&common, &cpath)? {
            Some(v) => {
                for ca in &v.cas {
                    b.add_client_ca(ca).map_err(|e| ConfigError::new(v.path.clone(), e.to_string()))?;
                }
                let mut mode = SslVerifyMode::PEER;
                if require {
                    mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
                }
                b.set_cert_store(v.store()?);
                let sans = v.sans;
                b.set_verify_callback(mode, move |ok, chain| ok && sans.check(chain));
            }
            None if require => {
                return Err(ConfigError::new(
                    format!("{cpath}.validation_context"),
                    "require_client_certificate needs a validation_context with trusted_ca",
                ))
            }
            None => b.set_verify(SslVerifyMode::NONE),
        }
        if !common.alpn_protocols.is_empty() {
            let ours: Vec<Vec<u8>> = common.alpn_protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
            // Server preference, as OpenSSL's SSL_select_next_proto (Envoy);
            // no overlap: carry on without ALPN.
            b.set_alpn_select_callback(move |_, client| {
                ours.iter().find_map(|p| alpn_entries(client).find(|c| *c == p.as_slice())).ok_or(AlpnError::NOACK)
            });
        }
        Ok(ServerTls { acceptor: b.build() })
    }
}

/// A cluster's TLS: what `UpstreamTlsContext` asks for.
pub struct ClientTls {
    /// Tells connection pools apart: a pooled connection carries the
    /// identity it was made with.
    pub id: u64,
    connector: SslConnector,
    sni: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientTls(sni={:?})", self.sni)
    }
}

impl ClientTls {
    pub fn compile(ctx: &xds_tls::UpstreamTlsContext, path: &str) -> Result<Self> {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let cpath = format!("{path}.common_tls_context");
        let common = ctx.common_tls_context.clone().unwrap_or_default();
        let mut b = SslConnector::builder(SslMethod::tls())
            .map_err(|e| ConfigError::new(path, format!("cannot create a TLS context: {e}")))?;
        apply_params(&mut b, common.tls_params.as_ref(), Role::Client, &cpath)?;
        if !common.tls_certificates.is_empty() {
            apply_certificate(&mut b, &common, &cpath)?;
        }
        match validation(&common, &cpath)? {
            Some(v) => {
                b.set_cert_store(v.store()?);
                let sans = v.sans;
                b.set_verify_callback(SslVerifyMode::PEER, move |ok, chain| ok && sans.check(chain));
            }
            // Envoy accepts any server certificate without a validation context.
            None => b.set_verify(SslVerifyMode::NONE),
        }
        if !common.alpn_protocols.is_empty() {
            let mut wire = Vec::new();
            for (i, p) in common.alpn_protocols.iter().enumerate() {
                if p.is_empty() || p.len() > 255 {
                    return Err(ConfigError::new(format!("{cpath}.alpn_protocols[{i}]"), "invalid ALPN protocol"));
                }
                wire.push(p.len() as u8);
                wire.extend_from_slice(p.as_bytes());
            }
            b.set_alpn_protos(&wire).map_err(|e| ConfigError::new(format!("{cpath}.alpn_protocols"), e.to_string()))?;
        }
        Ok(ClientTls { id: IDS.fetch_add(1, Ordering::Relaxed), connector: b.build(), sni: ctx.sni.clone() })
    }

    /// A connection's TLS state: SNI when configured, never a hostname
    /// check (Envoy checks SANs only, as configured).
    pub fn ssl(&self) -> std::result::Result<Ssl, ErrorStack> {
        let mut conf = self.connector.configure()?;
        conf.set_verify_hostname(false);
        conf.set_use_server_name_indication(!self.sni.is_empty());
        conf.into_ssl(&self.sni)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Server,
    Client,
}

fn apply_params(b: &mut SslContextBuilder, params: Option<&xds_tls::TlsParameters>, role: Role, path: &str) -> Result<()> {
    let params = params.cloned().unwrap_or_default();
    let ppath = format!("{path}.tls_params");
    let version = |v: i32, field: &str, default: SslVersion| -> Result<SslVersion> {
        use xds_tls::tls_parameters::TlsProtocol as P;
        match P::try_from(v) {
            Ok(P::TlsAuto) => Ok(default),
            Ok(P::TlSv10) => Ok(SslVersion::TLS1),
            Ok(P::TlSv11) => Ok(SslVersion::TLS1_1),
            Ok(P::TlSv12) => Ok(SslVersion::TLS1_2),
            Ok(P::TlSv13) => Ok(SslVersion::TLS1_3),
            Err(_) => Err(ConfigError::new(format!("{ppath}.{field}"), format!("unknown TLS version {v}"))),
        }
    };
    let max_default = if role == Role::Server { SslVersion::TLS1_3 } else { SslVersion::TLS1_2 };
    let min = version(params.tls_minimum_protocol_version, "tls_minimum_protocol_version", SslVersion::TLS1_2)?;
    let max = version(params.tls_maximum_protocol_version, "tls_maximum_protocol_version", max_default)?;
    let err = |field: &str, e: ErrorStack| ConfigError::new(format!("{ppath}.{field}"), e.to_string());
    b.set_min_proto_version(Some(min)).map_err(|e| err("tls_minimum_protocol_version", e))?;
    b.set_max_proto_version(Some(max)).map_err(|e| err("tls_maximum_protocol_version", e))?;
    if params.cipher_suites.is_empty() {
        b.set_strict_cipher_list(DEFAULT_CIPHERS).map_err(|e| err("cipher_suites", e))?;
    } else {
        for (i, c) in params.cipher_suites.iter().enumerate() {
            // Name the bad entry, as Envoy does.
            if b.set_strict_cipher_list(c).is_err() {
                return Err(ConfigError::new(format!("{ppath}.cipher_suites[{i}]"), format!("unknown cipher suite \"{c}\"")));
            }
        }
        b.set_strict_cipher_list(&params.cipher_suites.join(":")).map_err(|e| err("cipher_suites", e))?;
    }
    let curves = if params.ecdh_curves.is_empty() { DEFAULT_CURVES.to_string() } else { params.ecdh_curves.join(":") };
    b.set_curves_list(&curves).map_err(|_| ConfigError::new(format!("{ppath}.ecdh_curves"), format!("unknown curve in \"{curves}\"")))?;
    Ok(())
}

fn apply_certificate(b: &mut SslContextBuilder, common: &xds_tls::CommonTlsContext, path: &str) -> Result<()> {
    if common.tls_certificates.len() > 1 {
        return Err(ConfigError::new(
            format!("{path}.tls_certificates"),
            "more than one certificate is not supported by weft-proxy yet",
        ));
    }
    let cpath = format!("{path}.tls_certificates[0]");
    let cert = &common.tls_certificates[0];
    let chain_pem = data_source(cert.certificate_chain.as_ref().unwrap_or(&Default::default()), &format!("{cpath}.certificate_chain"))?;
    let key_pem = data_source(cert.private_key.as_ref().unwrap_or(&Default::default()), &format!("{cpath}.private_key"))?;
    let chain = X509::stack_from_pem(&chain_pem)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ConfigError::new(format!("{cpath}.certificate_chain"), "no PEM certificate found"))?;
    let key = PKey::private_key_from_pem(&key_pem)
        .map_err(|_| ConfigError::new(format!("{cpath}.private_key"), "no PEM private key found"))?;
    let mut certs = chain.into_iter();
    let leaf = certs.next().ok_or_else(|| ConfigError::new(format!("{cpath}.certificate_chain"), "empty chain"))?;
    b.set_certificate(&leaf).map_err(|e| ConfigError::new(format!("{cpath}.certificate_chain"), e.to_string()))?;
    for intermediate in certs {
        b.add_extra_chain_cert(intermediate)
            .map_err(|e| ConfigError::new(format!("{cpath}.certificate_chain"), e.to_string()))?;
    }
    let mismatch = |e: ErrorStack| {
        ConfigError::new(format!("{cpath}.private_key"), format!("the private key does not match the certificate ({e})"))
    };
    b.set_private_key(&key).map_err(mismatch)?;
    b.check_private_key().map_err(mismatch)?;
    Ok(())
}

/// A compiled `CertificateValidationContext`.
struct Validation {
    path: String,
    cas: Vec<X509>,
    sans: SanMatchers,
}

impl Validation {
    fn store(&self) -> Result<pingora_core::tls::x509::store::X509Store> {
        let mut store = X509StoreBuilder::new().map_err(|e| ConfigError::new(self.path.clone(), e.to_string()))?;
        for ca in &self.cas {
            store.add_cert(ca.clone()).map_err(|e| ConfigError::new(self.path.clone(), e.to_string()))?;
        }
        Ok(store.build())
    }
}

fn validation(common: &xds_tls::CommonTlsContext, path: &str) -> Result<Option<Validation>> {
    use xds_tls::common_tls_context::ValidationContextType as V;
    let vpath = format!("{path}.validation_context");
    let v = match &common.validation_context_type {
        None => return Ok(None),
        Some(V::ValidationContext(v)) => v,
        Some(_) => return Err(ConfigError::new(path, "only an inline validation_context is supported by weft-proxy")),
    };
    let matchers = v
        .match_typed_subject_alt_names
        .iter()
        .enumerate()
        .map(|(i, m)| SanMatcher::compile(m, &format!("{vpath}.match_typed_subject_alt_names[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    let Some(ca) = &v.trusted_ca else {
        if !matchers.is_empty() {
            // Envoy refuses this too: a SAN is meaningless on an unverified chain.
            return Err(ConfigError::new(
                format!("{vpath}.trusted_ca"),
                "SAN-based verification of peer certificates without trusted CA is insecure and not allowed",
            ));
        }
        return Ok(None);
    };
    let cpath = format!("{vpath}.trusted_ca");
    let pem = data_source(ca, &cpath)?;
    let cas = X509::stack_from_pem(&pem)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ConfigError::new(cpath.clone(), "no PEM certificate found"))?;
    Ok(Some(Validation { path: cpath, cas, sans: SanMatchers(Arc::new(matchers)) }))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SanType {
    Dns,
    Uri,
    Email,
    Ip,
}

struct SanMatcher {
    kind: SanType,
    matcher: StringMatcher,
}

impl SanMatcher {
    fn compile(m: &xds_tls::SubjectAltNameMatcher, path: &str) -> Result<Self> {
        use xds_tls::subject_alt_name_matcher::SanType as T;
        let kind = match T::try_from(m.san_type) {
            Ok(T::Dns) => SanType::Dns,
            Ok(T::Uri) => SanType::Uri,
            Ok(T::Email) => SanType::Email,
            Ok(T::IpAddress) => SanType::Ip,
            Ok(T::OtherName) => {
                return Err(ConfigError::new(format!("{path}.san_type"), "OTHER_NAME is not supported by weft-proxy"))
            }
            _ => return Err(ConfigError::new(format!("{path}.san_type"), "san_type is required")),
        };
        let matcher = m
            .matcher
            .as_ref()
            .ok_or_else(|| ConfigError::new(format!("{path}.matcher"), "matcher is required"))?;
        Ok(SanMatcher { kind, matcher: StringMatcher::compile(matcher, &format!("{path}.matcher"))? })
    }

    fn matches(&self, kind: SanType, value: &str) -> bool {
        if kind != self.kind {
            return false;
        }
        if self.matcher.matches(value) {
            return true;
        }
        // A wildcard DNS SAN (`*.example.com`) covers one label, as Envoy's
        // exact DNS matching allows.
        kind == SanType::Dns
            && value.starts_with("*.")
            && self.matcher.exact().is_some_and(|want| {
                want.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(&value[2..]))
            })
    }
}

/// The SAN checks of a validation context: the leaf certificate must have
/// a SAN matching at least one matcher (none configured: any).
#[derive(Clone)]
struct SanMatchers(Arc<Vec<SanMatcher>>);

impl SanMatchers {
    /// Runs in the verify callback for every certificate of the chain;
    /// only the leaf (depth 0) is checked.
    fn check(&self, chain: &mut X509StoreContextRef) -> bool {
        if self.0.is_empty() || chain.error_depth() != 0 {
            return true;
        }
        chain.current_cert().is_some_and(|leaf| self.leaf_matches(leaf))
    }

    fn leaf_matches(&self, leaf: &X509Ref) -> bool {
        let Some(names) = leaf.subject_alt_names() else { return false };
        names.iter().any(|n| {
            let (kind, value) = if let Some(v) = n.uri() {
                (SanType::Uri, v.to_string())
            } else if let Some(v) = n.dnsname() {
                (SanType::Dns, v.to_string())
            } else if let Some(v) = n.email() {
                (SanType::Email, v.to_string())
            } else if let Some(ip) = n.ipaddress() {
                match ip_string(ip) {
                    Some(v) => (SanType::Ip, v),
                    None => return false,
                }
            } else {
                return false;
            };
            self.0.iter().any(|m| m.matches(kind, &value))
        })
    }
}

fn ip_string(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

/// The protocols of an ALPN wire list (length-prefixed strings).
fn alpn_entries(mut wire: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&len, rest) = wire.split_first()?;
        let len = len as usize;
        if rest.len() < len {
            return None;
        }
        let (proto, rest) = rest.split_at(len);
        wire = rest;
        Some(proto)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_wire_lists_are_split_and_truncation_is_safe() {
        let wire = b"\x02h2\x08http/1.1";
        assert_eq!(alpn_entries(wire).collect::<Vec<_>>(), vec![&b"h2"[..], &b"http/1.1"[..]]);
        assert_eq!(alpn_entries(b"\x05h2").count(), 0);
    }
}
