//! Filter chains and Envoy's filter chain matching.
//!
//! A listener may hold several chains; each connection is given the most
//! specific match, criterion by criterion in Envoy's order (server name,
//! then transport protocol, then application protocols). At each step the
//! most specific candidates win and the search never backtracks: a chain
//! matching the exact server name hides wildcard chains even when it fails
//! a later criterion. No match: `default_filter_chain`, else the connection
//! is closed.

use std::collections::HashSet;
use std::sync::Arc;

use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;
use weft_envoy_api::pb::envoy::config::listener::v3 as xds_listener;
use weft_envoy_api::pb::envoy::extensions::transport_sockets::tls::v3 as xds_tls;

use super::listener::{unpack, HttpManager, HCM};
use super::{ConfigError, Refs, Result};
use crate::tcp::TcpProxy;
use crate::tls::inspector::Hello;
use crate::tls::{ServerTls, DOWNSTREAM_TLS, RAW_BUFFER};

/// The network filter a chain runs.
#[derive(Debug, Clone)]
pub enum NetworkFilter {
    Http(Arc<HttpManager>),
    Tcp(Arc<TcpProxy>),
}

#[derive(Debug, Clone)]
pub struct FilterChain {
    pub name: String,
    matcher: ChainMatch,
    /// Present when the chain terminates TLS.
    pub tls: Option<Arc<ServerTls>>,
    pub filter: NetworkFilter,
}

/// `filter_chain_match`, the criteria we implement.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
struct ChainMatch {
    /// Lower-case; `*.example.com` is a wildcard.
    server_names: Vec<String>,
    transport_protocol: String,
    application_protocols: Vec<String>,
}

impl FilterChain {
    pub fn compile(c: &xds_listener::FilterChain, path: &str, refs: &Refs<'_>) -> Result<Self> {
        let m = c.filter_chain_match.clone().unwrap_or_default();
        let matcher = ChainMatch {
            server_names: m.server_names.iter().map(|s| s.to_ascii_lowercase()).collect(),
            transport_protocol: m.transport_protocol.clone(),
            application_protocols: m.application_protocols.clone(),
        };
        if c.filters.len() != 1 {
            return Err(ConfigError::new(
                format!("{path}.filters"),
                "exactly one network filter (http_connection_manager or tcp_proxy) is required",
            ));
        }
        let fpath = format!("{path}.filters[0]");
        use xds_listener::filter::ConfigType;
        let Some(ConfigType::TypedConfig(any)) = &c.filters[0].config_type else {
            return Err(ConfigError::new(format!("{fpath}.typed_config"), "typed_config is required"));
        };
        let tpath = format!("{fpath}.typed_config");
        let filter = match weft_envoy_api::type_name(&any.type_url) {
            crate::tcp::TYPE => {
                NetworkFilter::Tcp(Arc::new(TcpProxy::compile(&unpack(any, crate::tcp::TYPE, &tpath)?, &tpath, refs.clusters)?))
            }
            _ => NetworkFilter::Http(Arc::new(HttpManager::compile(&unpack(any, HCM, &tpath)?, &tpath, refs)?)),
        };
        let tls = match &c.transport_socket {
            Some(ts) => downstream_tls(ts, &format!("{path}.transport_socket"))?,
            None => None,
        };
        Ok(FilterChain { name: c.name.clone(), matcher, tls, filter })
    }
}

fn downstream_tls(ts: &xds_core::TransportSocket, path: &str) -> Result<Option<Arc<ServerTls>>> {
    use xds_core::transport_socket::ConfigType;
    let Some(ConfigType::TypedConfig(any)) = &ts.config_type else {
        return Err(ConfigError::new(format!("{path}.typed_config"), "typed_config is required"));
    };
    let tpath = format!("{path}.typed_config");
    match weft_envoy_api::type_name(&any.type_url) {
        RAW_BUFFER => Ok(None),
        _ => {
            let ctx: xds_tls::DownstreamTlsContext = unpack(any, DOWNSTREAM_TLS, &tpath)?;
            Ok(Some(Arc::new(ServerTls::compile(&ctx, &tpath)?)))
        }
    }
}

/// A listener's chains and how to pick one.
#[derive(Debug, Clone)]
pub struct FilterChains {
    chains: Vec<FilterChain>,
    default: Option<FilterChain>,
}

impl FilterChains {
    pub fn new(chains: Vec<FilterChain>, default: Option<FilterChain>, path: &str) -> Result<Self> {
        // Envoy refuses two chains that would match the same connection.
        let mut seen = HashSet::new();
        for (i, c) in chains.iter().enumerate() {
            let names = if c.matcher.server_names.is_empty() { vec![String::new()] } else { c.matcher.server_names.clone() };
            let mut alpns = c.matcher.application_protocols.clone();
            alpns.sort();
            for name in names {
                if !seen.insert((name, c.matcher.transport_protocol.clone(), alpns.clone())) {
                    return Err(ConfigError::new(
                        format!("{path}.filter_chains[{i}].filter_chain_match"),
                        format!("multiple filter chains with the same matching rules are defined (chain \"{}\")", c.name),
                    ));
                }
            }
        }
        if chains.is_empty() && default.is_none() {
            return Err(ConfigError::new(format!("{path}.filter_chains"), "at least one filter chain is required"));
        }
        Ok(FilterChains { chains, default })
    }

    /// Whether any chain needs the ClientHello (SNI, ALPN or TLS-ness).
    pub fn needs_hello(&self) -> bool {
        self.chains.iter().any(|c| c.matcher != ChainMatch::default())
    }

    pub fn all(&self) -> impl Iterator<Item = &FilterChain> {
        self.chains.iter().chain(self.default.as_ref())
    }

    /// The chain for a connection, with its index in [`Self::all`]; `hello`
    /// is `None` without a TLS inspector (Envoy then sees no SNI and the
    /// `raw_buffer` transport).
    pub fn select(&self, hello: Option<&Hello>) -> Option<(usize, &FilterChain)> {
        let plain = Hello::default();
        let hello = hello.unwrap_or(&plain);
        let mut candidates: Vec<(usize, &FilterChain)> = self.chains.iter().enumerate().collect();
        candidates = by_server_name(candidates, hello.server_name.as_deref());
        candidates = narrow(candidates, |m| {
            if m.transport_protocol.is_empty() {
                None
            } else {
                Some(m.transport_protocol == hello.transport_protocol())
            }
        });
        candidates = narrow(candidates, |m| {
            if m.application_protocols.is_empty() {
                None
            } else {
                Some(m.application_protocols.iter().any(|p| hello.alpn.contains(p)))
            }
        });
        candidates.first().copied().or_else(|| self.default.as_ref().map(|d| (self.chains.len(), d)))
    }
}

/// Keeps the chains for which `test` says `Some(true)` if there are any,
/// else the chains that do not constrain this criterion (`None`).
fn narrow<'a>(candidates: Vec<Candidate<'a>>, test: impl Fn(&ChainMatch) -> Option<bool>) -> Vec<Candidate<'a>> {
    let specific: Vec<_> = candidates.iter().copied().filter(|(_, c)| test(&c.matcher) == Some(true)).collect();
    if !specific.is_empty() {
        return specific;
    }
    candidates.into_iter().filter(|(_, c)| test(&c.matcher).is_none()).collect()
}

type Candidate<'a> = (usize, &'a FilterChain);

/// Exact server name first, then the longest matching wildcard suffix,
/// then chains without server names.
fn by_server_name<'a>(candidates: Vec<Candidate<'a>>, sni: Option<&str>) -> Vec<Candidate<'a>> {
    if let Some(sni) = sni {
        let exact: Vec<_> = candidates.iter().copied().filter(|(_, c)| c.matcher.server_names.iter().any(|n| n == sni)).collect();
        if !exact.is_empty() {
            return exact;
        }
        // `*.example.com` matches any name ending in `.example.com`; the
        // longest such suffix wins.
        let mut rest = sni;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            let wildcard = format!("*.{rest}");
            let found: Vec<_> = candidates
                .iter()
                .copied()
                .filter(|(_, c)| c.matcher.server_names.contains(&wildcard))
                .collect();
            if !found.is_empty() {
                return found;
            }
        }
    }
    candidates.into_iter().filter(|(_, c)| c.matcher.server_names.is_empty()).collect()
}
