//! The compiled, immutable configuration the data path reads.
//!
//! ```text
//!  pb Bootstrap ──compile──► Config { listeners, clusters } ──ArcSwap──► workers
//! ```
//! Compilation checks everything a request would otherwise trip over (bad
//! regex, unknown cluster, duplicate names) and reports it with the field
//! path. A `Config` that compiled is safe to serve.

pub mod cluster;
pub mod filter_chain;
pub mod hash_policy;
pub mod header;
pub mod http2;
pub mod listener;
pub mod matcher;
pub mod path_normalization;
pub mod route;
pub mod upgrade;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use weft_envoy_api::pb::envoy::config::bootstrap::v3::Bootstrap;
use weft_envoy_api::pb::envoy::config::cluster::v3 as xds_cluster;
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;
use weft_envoy_api::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_envoy_api::pb::envoy::config::listener::v3 as xds_listener;
use weft_envoy_api::pb::envoy::config::route::v3 as xds_route;

pub use cluster::Cluster;
pub use listener::Listener;

/// A config error at a field path, e.g.
/// `static_resources.listeners[0].address: missing socket_address`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, ConfigError>;

/// Everything the proxy serves, compiled from one bootstrap (or one xDS snapshot).
#[derive(Debug)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub clusters: HashMap<String, Arc<Cluster>>,
    pub admin: Option<SocketAddr>,
    /// The xDS resources this config was compiled from, as `/config_dump`
    /// shows them (`None` without ADS).
    pub xds: Option<Arc<crate::xds::Held>>,
}

/// Resources from the bootstrap's `dynamic_resources` (files or the ADS
/// stream), compiled together with the static ones.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Dynamic {
    pub listeners: Vec<xds_listener::Listener>,
    pub clusters: Vec<xds_cluster::Cluster>,
    /// RDS: route configurations by name.
    pub routes: HashMap<String, xds_route::RouteConfiguration>,
    /// EDS: load assignments by service name.
    pub endpoints: HashMap<String, ClusterLoadAssignment>,
}

/// What a listener may refer to by name while it compiles.
pub struct Refs<'a> {
    pub clusters: &'a HashMap<String, Arc<Cluster>>,
    pub routes: &'a HashMap<String, xds_route::RouteConfiguration>,
}

impl Config {
    pub fn compile(bootstrap: &Bootstrap) -> Result<Config> {
        Self::compile_with(bootstrap, &Dynamic::default())
    }

    /// The bootstrap's static resources plus `dynamic` ones; a name used
    /// twice is an error wherever the two come from.
    pub fn compile_with(bootstrap: &Bootstrap, dynamic: &Dynamic) -> Result<Config> {
        let statics = bootstrap.static_resources.clone().unwrap_or_default();
        let mut clusters = HashMap::new();
        let all_clusters = statics
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("static_resources.clusters[{i}]"), c))
            .chain(dynamic.clusters.iter().enumerate().map(|(i, c)| (format!("cds.resources[{i}]"), c)));
        for (path, c) in all_clusters {
            let eds = Cluster::eds_service_name(c).and_then(|n| dynamic.endpoints.get(n));
            let cluster = Cluster::compile_with(c, &path, eds)?;
            if clusters.insert(cluster.name.clone(), Arc::new(cluster)).is_some() {
                return Err(ConfigError::new(format!("{path}.name"), format!("duplicate cluster name \"{}\"", c.name)));
            }
        }
        let mut listeners: Vec<Listener> = Vec::new();
        let all_listeners = statics
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("static_resources.listeners[{i}]"), l))
            .chain(dynamic.listeners.iter().enumerate().map(|(i, l)| (format!("lds.resources[{i}]"), l)));
        for (path, l) in all_listeners {
            let listener = Listener::compile(l, &path, &Refs { clusters: &clusters, routes: &dynamic.routes })?;
            if listeners.iter().any(|other| other.name == listener.name) {
                return Err(ConfigError::new(
                    format!("{path}.name"),
                    format!("duplicate listener name \"{}\"", listener.name),
                ));
            }
            if listeners.iter().any(|other| other.address == listener.address) {
                return Err(ConfigError::new(
                    format!("{path}.address"),
                    format!("duplicate listener address {}", listener.address),
                ));
            }
            listeners.push(listener);
        }
        let admin = match bootstrap.admin.as_ref().and_then(|a| a.address.as_ref()) {
            Some(addr) => Some(socket_address(Some(addr), "admin.address")?),
            None => None,
        };
        Ok(Config { listeners, clusters, admin, xds: None })
    }
}

/// An xDS config source weft-proxy can follow inside a resource (a
/// listener's `rds`, a cluster's `eds_config`): the ADS stream.
pub fn ads_only(source: Option<&xds_core::ConfigSource>, path: &str) -> Result<()> {
    use xds_core::config_source::ConfigSourceSpecifier as S;
    match source.and_then(|s| s.config_source_specifier.as_ref()) {
        Some(S::Ads(_)) => Ok(()),
        None => Err(ConfigError::new(path, "a config source is required")),
        Some(_) => Err(ConfigError::new(path, "only ads is supported by weft-proxy as a config source here")),
    }
}

/// A `core.v3.Address` as a socket address (TCP, literal IP).
pub fn socket_address(addr: Option<&xds_core::Address>, path: &str) -> Result<SocketAddr> {
    use xds_core::address::Address as Kind;
    use xds_core::socket_address::PortSpecifier;
    let Some(Kind::SocketAddress(sa)) = addr.and_then(|a| a.address.as_ref()) else {
        return Err(ConfigError::new(path, "missing socket_address"));
    };
    let port = match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) if p <= u16::MAX as u32 => p as u16,
        Some(PortSpecifier::PortValue(p)) => {
            return Err(ConfigError::new(
                format!("{path}.socket_address.port_value"),
                format!("port {p} is out of range"),
            ))
        }
        _ => {
            return Err(ConfigError::new(
                format!("{path}.socket_address"),
                "missing port_value",
            ))
        }
    };
    if sa.protocol != xds_core::socket_address::Protocol::Tcp as i32 {
        return Err(ConfigError::new(
            format!("{path}.socket_address.protocol"),
            "only TCP is supported by weft-proxy",
        ));
    }
    let ip: std::net::IpAddr = sa.address.parse().map_err(|_| {
        ConfigError::new(
            format!("{path}.socket_address.address"),
            format!(
                "\"{}\" is not an IP address (use a STRICT_DNS cluster for names)",
                sa.address
            ),
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// A `google.protobuf.Duration` as a std Duration.
pub fn duration(d: &weft_envoy_api::pb::google::protobuf::Duration) -> std::time::Duration {
    std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
}

/// Envoy's `HttpProtocolOptions` limits, read the same way for a
/// connection manager (downstream) and a cluster (upstream): 0 (or unset)
/// means no limit, except that an unset idle timeout takes the caller's
/// default.
pub struct ConnectionLimits {
    /// `idle_timeout`: `None` when unset, `Some(None)` when disabled (`0s`).
    pub idle_timeout: Option<Option<std::time::Duration>>,
    pub max_requests: Option<u32>,
    pub max_duration: Option<std::time::Duration>,
}

impl ConnectionLimits {
    pub fn compile(o: Option<&weft_envoy_api::pb::envoy::config::core::v3::HttpProtocolOptions>) -> Self {
        let positive = |d: &weft_envoy_api::pb::google::protobuf::Duration| Some(duration(d)).filter(|d| !d.is_zero());
        ConnectionLimits {
            idle_timeout: o.and_then(|o| o.idle_timeout.as_ref()).map(positive),
            max_requests: o.and_then(|o| o.max_requests_per_connection.as_ref()).map(|m| m.value).filter(|m| *m > 0),
            max_duration: o.and_then(|o| o.max_connection_duration.as_ref()).and_then(positive),
        }
    }
}

/// A `FractionalPercent`: numerator over 100, 10 000 or 1 000 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    pub numerator: u64,
    pub denominator: u64,
}

impl Fraction {
    pub const NEVER: Fraction = Fraction { numerator: 0, denominator: 100 };
    pub const ALWAYS: Fraction = Fraction { numerator: 100, denominator: 100 };

    /// `path` names the FractionalPercent; `unset` applies when it is absent.
    pub fn compile(
        p: Option<&weft_envoy_api::pb::envoy::r#type::v3::FractionalPercent>,
        path: &str,
        unset: Fraction,
    ) -> Result<Self> {
        let Some(p) = p else { return Ok(unset) };
        let denominator = match p.denominator {
            0 => 100,
            1 => 10_000,
            2 => 1_000_000,
            n => return Err(ConfigError::new(format!("{path}.denominator"), format!("unknown denominator {n}"))),
        };
        Ok(Fraction { numerator: (p.numerator as u64).min(denominator), denominator })
    }

    /// Draws whether this request falls in the fraction.
    pub fn roll(self) -> bool {
        self.numerator > 0 && rand::random::<u64>() % self.denominator < self.numerator
    }
}
