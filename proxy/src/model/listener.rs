//! Listeners and their network filters (`http_connection_manager`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;
use weft_envoy_api::pb::envoy::config::listener::v3 as xds_listener;
use weft_envoy_api::pb::envoy::extensions::filters::network::http_connection_manager::v3 as xds_hcm;
use weft_envoy_api::pb::google::protobuf::Any;
use weft_envoy_api::prost;

use super::filter_chain::{FilterChain, FilterChains};
use super::route::RouteTable;
use super::{ads_only, socket_address, ConfigError, Refs, Result};
use weft_envoy_api::pb::envoy::config::route::v3 as xds_route;
use crate::access_log::AccessLog;
use crate::http::xfcc::ClientCertPolicy;
use crate::filter::HttpFilter;
use crate::stats::HttpStats;

pub const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
const TLS_INSPECTOR: &str = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    /// `tls_inspector` is configured: read the ClientHello before choosing
    /// a filter chain.
    pub inspect_tls: bool,
    pub chains: FilterChains,
    /// What it was compiled from: an update with the same definition keeps
    /// the listener's sockets and connections.
    pub definition: xds_listener::Listener,
}

/// A compiled `http_connection_manager`.
#[derive(Debug)]
pub struct HttpManager {
    /// `codec_type: AUTO` accepts HTTP/2 prior knowledge (h2c); `HTTP1` does not.
    pub h2c: bool,
    pub server_name: http::HeaderValue,
    pub generate_request_id: bool,
    pub routes: RouteTable,
    /// Filters before the router, by name, in order.
    pub filters: Vec<(String, HttpFilter)>,
    pub access_logs: Vec<AccessLog>,
    pub stats: HttpStats,
    /// `forward_client_cert_details` and `set_current_client_cert_details`.
    pub client_cert: ClientCertPolicy,
    /// An edge proxy: the client's address goes into x-forwarded-for and
    /// client-sent x-envoy-* headers are not trusted.
    pub use_remote_address: bool,
    /// `stream_idle_timeout` (Envoy: 5 minutes; `None` when disabled).
    pub stream_idle_timeout: Option<Duration>,
    /// `common_http_protocol_options.idle_timeout`: a connection with no
    /// request in flight for this long is closed (Envoy: 1 hour; `None`
    /// when disabled).
    pub idle_timeout: Option<Duration>,
    /// `common_http_protocol_options.max_requests_per_connection`: an
    /// HTTP/1.1 connection closes after that many requests, an HTTP/2 one
    /// gets GOAWAY once it has opened that many streams (`None`: no limit).
    pub max_requests_per_connection: Option<u32>,
    /// `max_request_headers_kb`, in bytes: a larger request header is
    /// answered 431 (HTTP/1.1) or its stream reset (HTTP/2), as Envoy
    /// (default 60 KiB).
    pub max_request_header_bytes: usize,
    /// `common_http_protocol_options.max_connection_duration`: a connection
    /// drains once it has lived that long (`None`: no limit).
    pub max_connection_duration: Option<Duration>,
    /// `drain_timeout`: how long a connection drains before it closes
    /// (Envoy: 5 s).
    pub drain_timeout: Duration,
    /// `delayed_close_timeout`: how long a closing connection waits for the
    /// client to close first (Envoy: 1 s; 0 disables it).
    pub delayed_close_timeout: Duration,
    /// `upgrade_configs`: the HTTP/1.1 upgrades let through (a route may
    /// override them).
    pub upgrades: super::upgrade::Upgrades,
    /// `normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action`.
    pub path_normalization: super::path_normalization::PathNormalization,
    /// `http2_protocol_options`: the downstream HTTP/2 connections' limits.
    pub http2: super::http2::Http2Options,
}

impl Listener {
    pub fn compile(
        l: &xds_listener::Listener,
        path: &str,
        refs: &Refs<'_>,
    ) -> Result<Self> {
        let address = socket_address(l.address.as_ref(), &format!("{path}.address"))?;
        let name = if l.name.is_empty() {
            address.to_string()
        } else {
            l.name.clone()
        };
        let mut inspect_tls = false;
        for (i, f) in l.listener_filters.iter().enumerate() {
            let fpath = format!("{path}.listener_filters[{i}]");
            use xds_listener::listener_filter::ConfigType;
            match &f.config_type {
                Some(ConfigType::TypedConfig(any)) if weft_envoy_api::type_name(&any.type_url) == TLS_INSPECTOR => {
                    inspect_tls = true
                }
                Some(ConfigType::TypedConfig(any)) => {
                    return Err(ConfigError::new(
                        format!("{fpath}.typed_config"),
                        format!("listener filter {} is not supported by weft-proxy", weft_envoy_api::type_name(&any.type_url)),
                    ))
                }
                _ => return Err(ConfigError::new(format!("{fpath}.typed_config"), "typed_config is required")),
            }
        }
        let chains = l
            .filter_chains
            .iter()
            .enumerate()
            .map(|(i, c)| FilterChain::compile(c, &format!("{path}.filter_chains[{i}]"), refs))
            .collect::<Result<Vec<_>>>()?;
        let default = l
            .default_filter_chain
            .as_ref()
            .map(|c| FilterChain::compile(c, &format!("{path}.default_filter_chain"), refs))
            .transpose()?;
        let chains = FilterChains::new(chains, default, path)?;
        Ok(Listener { name, address, inspect_tls: inspect_tls && chains.needs_hello(), chains, definition: l.clone() })
    }
}

impl HttpManager {
    pub fn compile(
        hcm: &xds_hcm::HttpConnectionManager,
        path: &str,
        refs: &Refs<'_>,
    ) -> Result<Self> {
        use xds_hcm::http_connection_manager::RouteSpecifier;
        if hcm.stat_prefix.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.stat_prefix"),
                "stat_prefix is required",
            ));
        }
        let routes = match &hcm.route_specifier {
            Some(RouteSpecifier::RouteConfig(rc)) => RouteTable::compile(rc, &format!("{path}.route_config"), refs.clusters, true)?,
            Some(RouteSpecifier::Rds(rds)) => {
                let rpath = format!("{path}.rds");
                ads_only(rds.config_source.as_ref(), &format!("{rpath}.config_source"))?;
                let name = &rds.route_config_name;
                match refs.routes.get(name) {
                    Some(rc) => RouteTable::compile(rc, &format!("rds[{name}]"), refs.clusters, false)?,
                    // Not sent yet (the xDS client holds listeners back
                    // until it is, as Envoy warms them): no routes, 404.
                    None => RouteTable::compile(
                        &xds_route::RouteConfiguration { name: name.clone(), ..Default::default() },
                        &rpath,
                        refs.clusters,
                        false,
                    )?,
                }
            }
            _ => {
                return Err(ConfigError::new(
                    format!("{path}.route_config"),
                    "route_config or rds is required (scoped routes are not supported by weft-proxy)",
                ))
            }
        };
        // The router must be the last filter, as in Envoy.
        let filters = &hcm.http_filters;
        let mut http_filters = Vec::new();
        for (i, f) in filters.iter().enumerate() {
            let fpath = format!("{path}.http_filters[{i}]");
            use xds_hcm::http_filter::ConfigType;
            let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
                return Err(ConfigError::new(format!("{fpath}.typed_config"), "typed_config is required"));
            };
            let is_router = weft_envoy_api::type_name(&any.type_url) == ROUTER;
            if is_router != (i + 1 == filters.len()) {
                return Err(ConfigError::new(fpath, "the router filter must be the last HTTP filter"));
            }
            if !is_router {
                let filter = HttpFilter::compile(any, &format!("{fpath}.typed_config"), &hcm.stat_prefix, refs.clusters)?;
                http_filters.push((f.name.clone(), filter));
            }
        }
        if filters.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.http_filters"),
                "the router filter is required",
            ));
        }
        let server_name = if hcm.server_name.is_empty() {
            "envoy"
        } else {
            hcm.server_name.as_str()
        };
        use xds_hcm::http_connection_manager::CodecType;
        let h2c = match CodecType::try_from(hcm.codec_type) {
            Ok(CodecType::Auto) => true,
            Ok(CodecType::Http1) => false,
            Ok(other) => {
                return Err(ConfigError::new(
                    format!("{path}.codec_type"),
                    format!("{} is not supported by weft-proxy yet", other.as_str_name()),
                ))
            }
            Err(_) => return Err(ConfigError::new(format!("{path}.codec_type"), format!("unknown codec_type {}", hcm.codec_type))),
        };
        let limits = super::ConnectionLimits::compile(hcm.common_http_protocol_options.as_ref());
        Ok(HttpManager {
            h2c,
            server_name: http::HeaderValue::from_str(server_name).map_err(|_| {
                ConfigError::new(format!("{path}.server_name"), "invalid header value")
            })?,
            generate_request_id: hcm
                .generate_request_id
                .as_ref()
                .map(|b| b.value)
                .unwrap_or(true),
            routes,
            filters: http_filters,
            access_logs: hcm
                .access_log
                .iter()
                .enumerate()
                .map(|(i, l)| AccessLog::compile(l, &format!("{path}.access_log[{i}]")))
                .collect::<Result<_>>()?,
            stats: HttpStats::new(&hcm.stat_prefix),
            client_cert: ClientCertPolicy::compile(hcm, path)?,
            use_remote_address: hcm.use_remote_address.as_ref().is_some_and(|b| b.value),
            stream_idle_timeout: match &hcm.stream_idle_timeout {
                Some(d) => Some(super::duration(d)).filter(|d| !d.is_zero()),
                None => Some(Duration::from_secs(300)),
            },
            idle_timeout: limits.idle_timeout.unwrap_or(Some(Duration::from_secs(3600))),
            max_requests_per_connection: limits.max_requests,
            max_request_header_bytes: match &hcm.max_request_headers_kb {
                // Envoy's validation: 1 to 8192 KiB.
                Some(kb) if !(1..=8192).contains(&kb.value) => {
                    return Err(ConfigError::new(format!("{path}.max_request_headers_kb"), "value must be between 1 and 8192"))
                }
                Some(kb) => kb.value as usize * 1024,
                None => crate::http::downstream::h1::MAX_HEADER_BYTES,
            },
            max_connection_duration: limits.max_duration,
            drain_timeout: hcm.drain_timeout.as_ref().map_or(Duration::from_secs(5), super::duration),
            delayed_close_timeout: hcm.delayed_close_timeout.as_ref().map_or(Duration::from_secs(1), super::duration),
            upgrades: super::upgrade::Upgrades::compile_manager(&hcm.upgrade_configs, &format!("{path}.upgrade_configs"))?,
            path_normalization: super::path_normalization::PathNormalization::compile(hcm, path)?,
            http2: super::http2::Http2Options::compile(hcm.http2_protocol_options.as_ref(), &format!("{path}.http2_protocol_options"))?,
        })
    }

    /// How long an HTTP/1.1 connection past its idle timeout lives on:
    /// its drain, then the delayed close (Envoy closes the socket then if
    /// the client has not).
    pub fn idle_drain(&self) -> Duration {
        self.drain_timeout + self.delayed_close_timeout
    }
}

/// Decodes an `Any` of the expected type.
pub fn unpack<M: Message + Default>(any: &Any, expected: &str, path: &str) -> Result<M> {
    let got = weft_envoy_api::type_name(&any.type_url);
    if got != expected {
        return Err(ConfigError::new(
            path,
            format!("expected {expected}, got {got}"),
        ));
    }
    M::decode(any.value.as_slice())
        .map_err(|e| ConfigError::new(path, format!("cannot decode {expected}: {e}")))
}

/// Reads a `DataSource` (inline string/bytes or a file).
pub fn data_source(ds: &xds_core::DataSource, path: &str) -> Result<Bytes> {
    use xds_core::data_source::Specifier as S;
    match &ds.specifier {
        Some(S::InlineString(s)) => Ok(Bytes::from(s.clone())),
        Some(S::InlineBytes(b)) => Ok(Bytes::from(b.clone())),
        Some(S::Filename(f)) => std::fs::read(f).map(Bytes::from).map_err(|e| {
            ConfigError::new(format!("{path}.filename"), format!("cannot read {f}: {e}"))
        }),
        Some(_) => Err(ConfigError::new(
            path,
            "this data source is not supported by weft-proxy",
        )),
        None => Ok(Bytes::new()),
    }
}
