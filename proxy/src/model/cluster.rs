//! Upstream clusters: hosts, load balancing and connect settings.
//!
//! STATIC clusters have fixed hosts. STRICT_DNS and LOGICAL_DNS clusters
//! name hosts by DNS; `server` resolves them before serving and refreshes
//! them every `dns_refresh_rate`, swapping the host list atomically.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use weft_envoy_api::pb::envoy::config::cluster::v3 as xds_cluster;
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;
use weft_envoy_api::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

use super::{duration, socket_address, ConfigError, Result};
use super::listener::unpack;
use crate::stats::ClusterStats;
use crate::tls::{ClientTls, RAW_BUFFER, UPSTREAM_TLS};
use weft_envoy_api::pb::envoy::extensions::transport_sockets::tls::v3 as xds_tls;
use weft_envoy_api::pb::envoy::extensions::upstreams::http::v3 as xds_http;

mod consistent_hash;
pub mod health;
mod hosts;

pub use consistent_hash::Table;
pub use hosts::{Endpoint, Host, HostSet, InFlight};
use health::{HealthCheck, OutlierDetection, Reason};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LbPolicy {
    RoundRobin,
    Random,
    /// Envoy's power-of-N-choices: the least busy of `choices` random hosts.
    LeastRequest { choices: u32 },
    /// RING_HASH or MAGLEV: the request's hash (route `hash_policy`) picks
    /// the host; requests without one get a random hash, as in Envoy.
    Hash(consistent_hash::Kind),
}

/// Which resolved addresses a DNS cluster uses (`dns_lookup_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv6 if there is any, else IPv4 (Envoy's AUTO).
    Auto,
    V4Only,
    V6Only,
    /// IPv4 if there is any, else IPv6.
    V4Preferred,
    All,
}

impl Family {
    pub fn select(self, addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let (v4, v6): (Vec<_>, Vec<_>) = addrs.into_iter().partition(SocketAddr::is_ipv4);
        match self {
            Family::V4Only => v4,
            Family::V6Only => v6,
            Family::Auto if !v6.is_empty() => v6,
            Family::Auto => v4,
            Family::V4Preferred if !v4.is_empty() => v4,
            Family::V4Preferred => v6,
            Family::All => v4.into_iter().chain(v6).collect(),
        }
    }
}

/// How a DNS cluster finds its hosts.
#[derive(Debug, Clone)]
pub struct Dns {
    pub names: Vec<(String, u16)>,
    /// Priority and weight of each name's hosts (parallel to `names`).
    pub placement: Vec<(u32, u32)>,
    pub family: Family,
    pub refresh: Duration,
    /// LOGICAL_DNS: one host, the first address of the latest answer.
    pub logical: bool,
}

impl Dns {
    /// The host list from the answers for each name (same order as `names`).
    pub fn hosts(&self, answers: Vec<Vec<SocketAddr>>) -> Vec<Endpoint> {
        let mut hosts: Vec<Endpoint> = answers
            .into_iter()
            .zip(self.placement.iter().zip(&self.names))
            .flat_map(|(a, ((priority, weight), (name, _)))| {
                self.family.select(a).into_iter().map(move |addr| Endpoint {
                    addr,
                    priority: *priority,
                    weight: *weight,
                    hostname: Some(name.clone()),
                })
            })
            .collect();
        if self.logical {
            hosts.truncate(1);
        }
        hosts
    }
}

/// `circuit_breakers` thresholds at DEFAULT priority, with Envoy's defaults.
#[derive(Debug)]
pub struct Breakers {
    pub max_requests: usize,
    pub max_retries: usize,
    pub active_requests: AtomicUsize,
    pub active_retries: AtomicUsize,
    /// max_connections and max_pending_requests.
    pub connections: Arc<ConnectionBudget>,
}

/// Upstream connections of a cluster, across workers (max_connections),
/// and the requests waiting for one (max_pending_requests).
#[derive(Debug)]
pub struct ConnectionBudget {
    max: usize,
    active: AtomicUsize,
    max_pending: usize,
    pending: AtomicUsize,
    /// Signalled when a connection closes or goes back to a pool.
    released: tokio::sync::Notify,
}

impl ConnectionBudget {
    fn new(max: usize, max_pending: usize) -> Self {
        ConnectionBudget { max, active: AtomicUsize::new(0), max_pending, pending: AtomicUsize::new(0), released: tokio::sync::Notify::new() }
    }

    /// A slot for a new connection, held for the connection's life.
    pub fn try_open(self: &Arc<Self>) -> Option<ConnectionSlot> {
        take(&self.active, self.max).then(|| ConnectionSlot(self.clone()))
    }

    /// Waits for a connection to be released, as one of at most
    /// `max_pending` waiters; `false` when the queue is full (overflow).
    pub async fn wait(&self) -> bool {
        let notified = self.released.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some(_queued) = Breakers::try_acquire(&self.pending, self.max_pending) else { return false };
        // A slot may have been freed before we enabled the notification.
        if self.active.load(Ordering::Acquire) < self.max {
            return true;
        }
        notified.await;
        true
    }

    /// A connection went back to an idle pool: a waiter may take it.
    pub fn idle(&self) {
        self.released.notify_waiters();
    }
}

/// One open upstream connection counted against max_connections.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<ConnectionBudget>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.released.notify_waiters();
    }
}

impl Breakers {
    fn compile(cb: Option<&xds_cluster::CircuitBreakers>, path: &str) -> Result<Self> {
        let mut b = Breakers {
            max_requests: 1024,
            max_retries: 3,
            active_requests: AtomicUsize::new(0),
            active_retries: AtomicUsize::new(0),
            connections: Arc::new(ConnectionBudget::new(1024, 1024)),
        };
        let Some(cb) = cb else { return Ok(b) };
        let (mut max_connections, mut max_pending) = (1024, 1024);
        for (i, t) in cb.thresholds.iter().enumerate() {
            let tpath = format!("{path}.circuit_breakers.thresholds[{i}]");
            if t.priority != xds_core::RoutingPriority::Default as i32 {
                return Err(ConfigError::new(format!("{tpath}.priority"), "only DEFAULT priority is supported by weft-proxy"));
            }
            if let Some(v) = &t.max_requests {
                b.max_requests = v.value as usize;
            }
            if let Some(v) = &t.max_retries {
                b.max_retries = v.value as usize;
            }
            if let Some(v) = &t.max_connections {
                max_connections = v.value as usize;
            }
            if let Some(v) = &t.max_pending_requests {
                max_pending = v.value as usize;
            }
        }
        b.connections = Arc::new(ConnectionBudget::new(max_connections, max_pending));
        Ok(b)
    }

    /// Takes a slot of `active` if fewer than `max` are taken.
    pub fn try_acquire<'a>(active: &'a AtomicUsize, max: usize) -> Option<Slot<'a>> {
        take(active, max).then(|| Slot(active))
    }
}

/// Increments `active` if it is below `max`.
fn take(active: &AtomicUsize, max: usize) -> bool {
    let mut current = active.load(Ordering::Relaxed);
    loop {
        if current >= max {
            return false;
        }
        match active.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => current = now,
        }
    }
}

/// A taken circuit-breaker slot, released on drop.
#[derive(Debug)]
pub struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub breakers: Breakers,
    /// The current hosts; replaced as a whole when DNS answers change.
    pub hosts: ArcSwap<HostSet>,
    pub dns: Option<Dns>,
    pub outlier: Option<OutlierDetection>,
    pub health_check: Option<HealthCheck>,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    /// `transport_socket` with an `UpstreamTlsContext`.
    pub tls: Option<Arc<ClientTls>>,
    /// Speak HTTP/2 to the hosts (`http2_protocol_options`, or
    /// `HttpProtocolOptions.explicit_http_config`): h2c, or ALPN h2 on TLS.
    pub http2: bool,
    /// That HTTP/2's streams per connection and windows.
    pub http2_options: super::http2::Http2Options,
    /// How connections are reused (`HttpProtocolOptions.common_http_protocol_options`).
    pub reuse: crate::upstream::Reuse,
    /// `upstream_connection_options.tcp_keepalive`: SO_KEEPALIVE, and the
    /// probes' timing where set (else the system's).
    pub tcp_keepalive: Option<socket2::TcpKeepalive>,
    pub stats: ClusterStats,
    /// A name routes use that no cluster has (RDS routes are not checked
    /// against the clusters, as in Envoy): requests get 503, flag NC.
    pub not_found: bool,
    rr_next: AtomicUsize,
}

/// The endpoints of an EDS cluster, from the `ClusterLoadAssignment` of
/// its service name (`None` until EDS has sent one: no hosts).
pub type Eds<'a> = Option<&'a ClusterLoadAssignment>;

impl Cluster {
    pub fn compile(c: &xds_cluster::Cluster, path: &str) -> Result<Self> {
        Self::compile_with(c, path, None)
    }

    /// How to reach `addr`, one of this cluster's hosts: its connect
    /// timeout, TLS, reuse limits and keep-alive, outside its connection
    /// budget (the router opts in).
    pub fn target(&self, addr: SocketAddr) -> crate::upstream::Target<'_> {
        crate::upstream::Target {
            addr,
            connect_timeout: self.connect_timeout,
            tls: self.tls.as_deref(),
            budget: None,
            reuse: self.reuse,
            h2: self.http2_options,
            keepalive: self.tcp_keepalive.as_ref(),
        }
    }

    /// The placeholder a route gets for a cluster that does not exist.
    /// Its counters are detached: Envoy shows no stats for such a name.
    pub fn not_found(name: &str) -> Self {
        let mut c = Self::build(&xds_cluster::Cluster { name: name.to_string(), ..Default::default() }, "", None, ClusterStats::detached)
            .expect("invariant: a cluster with only a name compiles");
        c.not_found = true;
        c
    }

    /// The name EDS knows a cluster by: `eds_cluster_config.service_name`,
    /// else the cluster's name. `None` for clusters not of type EDS.
    pub fn eds_service_name(c: &xds_cluster::Cluster) -> Option<&str> {
        use xds_cluster::cluster::{ClusterDiscoveryType as D, DiscoveryType};
        if c.cluster_discovery_type != Some(D::Type(DiscoveryType::Eds as i32)) {
            return None;
        }
        let service = c.eds_cluster_config.as_ref().map_or("", |e| e.service_name.as_str());
        Some(if service.is_empty() { &c.name } else { service })
    }

    pub fn compile_with(c: &xds_cluster::Cluster, path: &str, eds: Eds<'_>) -> Result<Self> {
        Self::build(c, path, eds, ClusterStats::new)
    }

    fn build(c: &xds_cluster::Cluster, path: &str, eds: Eds<'_>, stats: fn(&str) -> ClusterStats) -> Result<Self> {
        use xds_cluster::cluster::{ClusterDiscoveryType as D, DiscoveryType};
        if c.name.is_empty() {
            return Err(ConfigError::new(format!("{path}.name"), "name is required"));
        }
        let kind = match &c.cluster_discovery_type {
            None => DiscoveryType::Static,
            Some(D::Type(t)) => match DiscoveryType::try_from(*t) {
                Ok(k @ (DiscoveryType::Static | DiscoveryType::StrictDns | DiscoveryType::LogicalDns)) => k,
                Ok(DiscoveryType::Eds) => {
                    // Its endpoints come from the ADS stream only.
                    let source = c.eds_cluster_config.as_ref().and_then(|e| e.eds_config.as_ref());
                    super::ads_only(source, &format!("{path}.eds_cluster_config.eds_config"))?;
                    DiscoveryType::Eds
                }
                Ok(other) => {
                    return Err(ConfigError::new(
                        format!("{path}.type"),
                        format!("cluster type {} is not supported by weft-proxy yet", other.as_str_name()),
                    ))
                }
                Err(_) => return Err(ConfigError::new(format!("{path}.type"), format!("unknown cluster type {t}"))),
            },
            Some(_) => {
                return Err(ConfigError::new(format!("{path}.cluster_type"), "custom cluster types are not supported by weft-proxy"))
            }
        };
        let lb = match xds_cluster::cluster::LbPolicy::try_from(c.lb_policy) {
            Ok(xds_cluster::cluster::LbPolicy::RoundRobin) => LbPolicy::RoundRobin,
            Ok(xds_cluster::cluster::LbPolicy::Random) => LbPolicy::Random,
            Ok(xds_cluster::cluster::LbPolicy::LeastRequest) => {
                use xds_cluster::cluster::LbConfig;
                let choices = match &c.lb_config {
                    Some(LbConfig::LeastRequestLbConfig(l)) => l.choice_count.as_ref().map_or(2, |n| n.value),
                    _ => 2,
                };
                if choices < 2 {
                    return Err(ConfigError::new(
                        format!("{path}.least_request_lb_config.choice_count"),
                        "must be at least 2",
                    ));
                }
                LbPolicy::LeastRequest { choices }
            }
            Ok(xds_cluster::cluster::LbPolicy::RingHash) => {
                use xds_cluster::cluster::LbConfig;
                let (mut min, mut max) = (consistent_hash::DEFAULT_MIN_RING, consistent_hash::DEFAULT_MAX_RING);
                if let Some(LbConfig::RingHashLbConfig(r)) = &c.lb_config {
                    let rpath = format!("{path}.ring_hash_lb_config");
                    if r.hash_function != xds_cluster::cluster::ring_hash_lb_config::HashFunction::XxHash as i32 {
                        return Err(ConfigError::new(format!("{rpath}.hash_function"), "only XX_HASH is supported by weft-proxy"));
                    }
                    min = r.minimum_ring_size.as_ref().map_or(min, |v| v.value);
                    max = r.maximum_ring_size.as_ref().map_or(max, |v| v.value);
                    if min > max {
                        return Err(ConfigError::new(rpath, format!("ring hash: minimum_ring_size ({min}) > maximum_ring_size ({max})")));
                    }
                    if min == 0 {
                        return Err(ConfigError::new(format!("{rpath}.minimum_ring_size"), "must be at least 1"));
                    }
                }
                LbPolicy::Hash(consistent_hash::Kind::Ring { min, max })
            }
            Ok(xds_cluster::cluster::LbPolicy::Maglev) => {
                use xds_cluster::cluster::LbConfig;
                let mut size = consistent_hash::DEFAULT_MAGLEV_TABLE;
                if let Some(LbConfig::MaglevLbConfig(m)) = &c.lb_config {
                    size = m.table_size.as_ref().map_or(size, |v| v.value);
                }
                if !consistent_hash::is_prime(size) {
                    return Err(ConfigError::new(
                        format!("{path}.maglev_lb_config.table_size"),
                        "The table size of maglev must be prime number",
                    ));
                }
                LbPolicy::Hash(consistent_hash::Kind::Maglev { size })
            }
            Ok(other) => {
                return Err(ConfigError::new(
                    format!("{path}.lb_policy"),
                    format!("{} is not supported by weft-proxy yet", other.as_str_name()),
                ))
            }
            Err(_) => return Err(ConfigError::new(format!("{path}.lb_policy"), format!("unknown lb_policy {}", c.lb_policy))),
        };
        let addresses = match kind {
            DiscoveryType::Eds => endpoint_addresses(eds, &format!("eds[{}]", Self::eds_service_name(c).unwrap_or_default()))?,
            _ => endpoint_addresses(c.load_assignment.as_ref(), &format!("{path}.load_assignment"))?,
        };
        if matches!(lb, LbPolicy::LeastRequest { .. }) && addresses.windows(2).any(|w| w[0].weight != w[1].weight) {
            // Envoy's weighted least-request (dynamic EDF weights) is not
            // implemented: refuse rather than balance differently.
            return Err(ConfigError::new(
                format!("{path}.load_assignment"),
                "load_balancing_weight with LEAST_REQUEST is not supported by weft-proxy yet",
            ));
        }
        let (hosts, dns) = if matches!(kind, DiscoveryType::Static | DiscoveryType::Eds) {
            let hosts = addresses
                .iter()
                .map(|e| {
                    let addr = socket_address(Some(&e.address), &e.path)?;
                    Ok(Endpoint { addr, priority: e.priority, weight: e.weight, hostname: e.hostname.clone() })
                })
                .collect::<Result<Vec<_>>>()?;
            (hosts, None)
        } else {
            let logical = kind == DiscoveryType::LogicalDns;
            if logical && addresses.len() != 1 {
                return Err(ConfigError::new(
                    format!("{path}.load_assignment"),
                    format!("LOGICAL_DNS clusters must have exactly one endpoint, found {}", addresses.len()),
                ));
            }
            let names = addresses
                .iter()
                .map(|e| host_port(&e.address, &e.path))
                .collect::<Result<Vec<_>>>()?;
            let placement = addresses.iter().map(|e| (e.priority, e.weight)).collect();
            let family = match xds_cluster::cluster::DnsLookupFamily::try_from(c.dns_lookup_family) {
                Ok(xds_cluster::cluster::DnsLookupFamily::Auto) => Family::Auto,
                Ok(xds_cluster::cluster::DnsLookupFamily::V4Only) => Family::V4Only,
                Ok(xds_cluster::cluster::DnsLookupFamily::V6Only) => Family::V6Only,
                Ok(xds_cluster::cluster::DnsLookupFamily::V4Preferred) => Family::V4Preferred,
                Ok(xds_cluster::cluster::DnsLookupFamily::All) => Family::All,
                Err(_) => {
                    return Err(ConfigError::new(
                        format!("{path}.dns_lookup_family"),
                        format!("unknown dns_lookup_family {}", c.dns_lookup_family),
                    ))
                }
            };
            #[allow(deprecated)] // still Envoy's field for DNS clusters
            let refresh = c.dns_refresh_rate.as_ref().map(duration).unwrap_or(Duration::from_secs(5));
            if refresh < Duration::from_millis(1) {
                return Err(ConfigError::new(format!("{path}.dns_refresh_rate"), "must be at least 1ms"));
            }
            (Vec::new(), Some(Dns { names, placement, family, refresh, logical }))
        };
        let outlier = c
            .outlier_detection
            .as_ref()
            .map(|o| OutlierDetection::compile(o, &format!("{path}.outlier_detection")))
            .transpose()?;
        let health_check = HealthCheck::compile(&c.health_checks, &format!("{path}.health_checks"))?;
        if c.connect_timeout.as_ref().is_some_and(|d| d.seconds < 0 || (d.seconds == 0 && d.nanos <= 0)) {
            // Envoy's proto validation, in its words.
            return Err(ConfigError::new(format!("{path}.connect_timeout"), "Invalid duration: Expected positive duration"));
        }
        let connect_timeout = c.connect_timeout.as_ref().map(duration).unwrap_or(Duration::from_secs(5));
        let (http2, http2_options, reuse) = protocol(c, path)?;
        Ok(Cluster {
            breakers: Breakers::compile(c.circuit_breakers.as_ref(), path)?,
            name: c.name.clone(),
            hosts: ArcSwap::from_pointee(HostSet::new(
                hosts.into_iter().map(|e| new_host(e, health_check.is_some())).collect(),
                lb.hashing(),
            )),
            outlier,
            health_check,
            dns,
            lb,
            connect_timeout,
            tls: upstream_tls(c.transport_socket.as_ref(), &format!("{path}.transport_socket"), http2)?,
            http2,
            http2_options,
            reuse,
            tcp_keepalive: c.upstream_connection_options.as_ref().and_then(|o| o.tcp_keepalive.as_ref()).map(keepalive),
            stats: stats(&c.name),
            not_found: false,
            rr_next: AtomicUsize::new(rand::random::<u32>() as usize),
        })
    }

    /// Picks a host for a request, or `None` when the cluster has none:
    /// a priority level by load, then a host of that level by the policy.
    pub fn pick(&self, hash: Option<u64>) -> Option<InFlight> {
        self.pick_avoiding(hash, &[], 1)
    }

    /// [`pick`](Self::pick), drawing again (up to `attempts` draws in all)
    /// while the host is one of `avoid`; the last draw stands, as Envoy's
    /// retry host predicates do.
    pub fn pick_avoiding(&self, hash: Option<u64>, avoid: &[SocketAddr], attempts: u32) -> Option<InFlight> {
        let mut host = self.pick_once(hash)?;
        for _ in 1..attempts.max(1) {
            if !avoid.contains(&host.addr()) {
                break;
            }
            host = self.pick_once(hash)?;
        }
        Some(host)
    }

    fn pick_once(&self, hash: Option<u64>) -> Option<InFlight> {
        let set = self.hosts.load();
        let level = set.level()?;
        let hosts = &level.candidates;
        if hosts.is_empty() {
            return None;
        }
        let random = || rand::random::<u32>() as usize % hosts.len();
        // Unequal weights: walk the weighted cycle instead of the hosts.
        let weighted = |n: usize| level.schedule.as_ref().map_or(n % hosts.len(), |s| s[n % s.len()] as usize);
        let i = match self.lb {
            LbPolicy::RoundRobin => weighted(self.rr_next.fetch_add(1, Ordering::Relaxed)),
            LbPolicy::Random => weighted(rand::random::<u32>() as usize),
            LbPolicy::LeastRequest { choices } => {
                // Candidates drawn with replacement; the first of the least
                // busy wins, as in Envoy.
                let mut best = random();
                for _ in 1..choices {
                    let candidate = random();
                    if hosts[candidate].active() < hosts[best].active() {
                        best = candidate;
                    }
                }
                best
            }
            LbPolicy::Hash(_) => {
                let hash = hash.unwrap_or_else(rand::random::<u64>);
                level.table.as_ref().and_then(|t| t.lookup(hash)).unwrap_or(0)
            }
        };
        hosts.get(i).cloned().map(InFlight::start)
    }

    /// Replaces the hosts (a DNS answer), keeping the state of those that stay.
    pub fn set_hosts(&self, endpoints: Vec<Endpoint>) {
        let current = self.hosts.load();
        if current.hosts.iter().map(|h| h.endpoint()).eq(endpoints.iter().cloned()) {
            return;
        }
        let hosts = endpoints
            .into_iter()
            .map(|e| {
                let kept = current.hosts.iter().find(|h| h.endpoint() == e).cloned();
                kept.unwrap_or_else(|| new_host(e, self.health_check.is_some()))
            })
            .collect();
        self.hosts.store(Arc::new(HostSet::new(hosts, self.lb.hashing())));
    }

    /// The host with this address, if the cluster has it.
    pub fn host(&self, addr: SocketAddr) -> Option<Arc<Host>> {
        self.hosts.load().hosts.iter().find(|h| h.addr == addr).cloned()
    }

    /// Rebuilds the host set after a health flag changed.
    fn rebuild(&self) {
        let current = self.hosts.load();
        self.hosts.store(Arc::new(HostSet::new(current.hosts.clone(), self.lb.hashing())));
    }

    /// Outlier detection: one attempt's status on a host (local failures as
    /// Envoy maps them: connect failure 503, timeout 504).
    pub fn record_outcome(&self, host: &Host, status: u16) {
        let Some(outlier) = &self.outlier else { return };
        let Some(reason) = outlier.record(host, status) else { return };
        let set = self.hosts.load();
        let ejected = set.hosts.iter().filter(|h| h.flag(hosts::EJECTED)).count();
        let share = (ejected * 100 / set.hosts.len().max(1)) as u32;
        if outlier.eject(host, reason, share) {
            tracing::info!(cluster = %self.name, host = %host.addr, ?reason, "outlier ejected");
            self.stats.ejections_enforced_total.inc();
            self.stats.ejections_active.inc();
            match reason {
                Reason::Consecutive5xx => self.stats.ejections_enforced_5xx.inc(),
                Reason::ConsecutiveGatewayFailure => self.stats.ejections_enforced_gateway.inc(),
            }
            self.rebuild();
        }
    }

    /// The outlier detection interval: returns ejected hosts whose time is up.
    pub fn sweep_ejections(&self) {
        let Some(outlier) = &self.outlier else { return };
        let set = self.hosts.load();
        let mut back = 0;
        for h in &set.hosts {
            if outlier.sweep(h) {
                tracing::info!(cluster = %self.name, host = %h.addr, "outlier ejection over");
                back += 1;
            }
        }
        if back > 0 {
            self.stats.ejections_active.sub(back);
            self.rebuild();
        }
    }

    /// An active health check's result for a host.
    pub fn record_health(&self, host: &Host, ok: bool, first: bool) {
        let Some(hc) = &self.health_check else { return };
        if ok {
            self.stats.health_check_success.inc();
        } else {
            self.stats.health_check_failure.inc();
        }
        if hc.record(host, ok, first) {
            tracing::info!(cluster = %self.name, host = %host.addr, healthy = ok, "health check changed host health");
            self.rebuild();
        }
    }
}

/// A host of a cluster; with active health checking it starts unhealthy
/// until its first check passes, as in Envoy.
fn new_host(endpoint: Endpoint, health_checked: bool) -> Arc<Host> {
    let host = Host::new(endpoint);
    if health_checked {
        host.flags.store(hosts::FAILED_HEALTH_CHECK, Ordering::Relaxed);
    }
    host
}

impl LbPolicy {
    fn hashing(self) -> Option<consistent_hash::Kind> {
        match self {
            LbPolicy::Hash(kind) => Some(kind),
            _ => None,
        }
    }
}

/// Every endpoint address of the load assignment, with its path.
/// A `load_assignment` endpoint as configured.
struct EndpointSpec {
    address: xds_core::Address,
    path: String,
    priority: u32,
    weight: u32,
    hostname: Option<String>,
}

/// Checks an EDS load assignment on its own: every endpoint a literal
/// address with a port, weights at least 1.
pub fn check_assignment(la: &ClusterLoadAssignment, path: &str) -> Result<()> {
    for e in endpoint_addresses(Some(la), path)? {
        socket_address(Some(&e.address), &e.path)?;
    }
    Ok(())
}

/// A load assignment's endpoints; `path` names the assignment.
fn endpoint_addresses(la: Option<&ClusterLoadAssignment>, path: &str) -> Result<Vec<EndpointSpec>> {
    use weft_envoy_api::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    let mut out = Vec::new();
    let Some(la) = la else {
        return Ok(out);
    };
    for (i, locality) in la.endpoints.iter().enumerate() {
        for (j, lb_ep) in locality.lb_endpoints.iter().enumerate() {
            let epath = format!("{path}.endpoints[{i}].lb_endpoints[{j}]");
            let Some(HostIdentifier::Endpoint(ep)) = &lb_ep.host_identifier else {
                return Err(ConfigError::new(format!("{epath}.endpoint"), "endpoint is required"));
            };
            let Some(addr) = &ep.address else {
                return Err(ConfigError::new(format!("{epath}.endpoint.address"), "address is required"));
            };
            let weight = lb_ep.load_balancing_weight.as_ref().map_or(1, |w| w.value);
            if weight == 0 {
                return Err(ConfigError::new(format!("{epath}.load_balancing_weight"), "must be at least 1"));
            }
            out.push(EndpointSpec {
                address: addr.clone(),
                path: format!("{epath}.endpoint.address"),
                priority: locality.priority,
                weight,
                hostname: (!ep.hostname.is_empty()).then(|| ep.hostname.clone()),
            });
        }
    }
    Ok(out)
}

/// A socket address whose `address` may be a DNS name.
fn host_port(addr: &xds_core::Address, path: &str) -> Result<(String, u16)> {
    use xds_core::address::Address as Kind;
    use xds_core::socket_address::PortSpecifier;
    let Some(Kind::SocketAddress(sa)) = &addr.address else {
        return Err(ConfigError::new(path, "missing socket_address"));
    };
    match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) if p <= u16::MAX as u32 && !sa.address.is_empty() => Ok((sa.address.clone(), p as u16)),
        Some(PortSpecifier::PortValue(p)) if p > u16::MAX as u32 => {
            Err(ConfigError::new(format!("{path}.socket_address.port_value"), format!("port {p} is out of range")))
        }
        _ => Err(ConfigError::new(format!("{path}.socket_address"), "address and port_value are required")),
    }
}

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Envoy's `TcpKeepalive`: each field set overrides the system's value.
fn keepalive(k: &weft_envoy_api::pb::envoy::config::core::v3::TcpKeepalive) -> socket2::TcpKeepalive {
    let mut out = socket2::TcpKeepalive::new();
    if let Some(time) = &k.keepalive_time {
        out = out.with_time(Duration::from_secs(time.value.into()));
    }
    if let Some(interval) = &k.keepalive_interval {
        out = out.with_interval(Duration::from_secs(interval.value.into()));
    }
    if let Some(probes) = &k.keepalive_probes {
        out = out.with_retries(probes.value);
    }
    out
}

/// Whether the cluster speaks HTTP/2 upstream (and with which options),
/// and how it reuses its connections.
fn protocol(c: &xds_cluster::Cluster, path: &str) -> Result<(bool, super::http2::Http2Options, crate::upstream::Reuse)> {
    use super::http2::Http2Options;
    #[allow(deprecated)] // Envoy still honours the cluster-level field
    let cluster_level = c.http2_protocol_options.as_ref();
    let mut http2 = cluster_level.is_some();
    let mut h2_options = Http2Options::compile(cluster_level, &format!("{path}.http2_protocol_options"))?;
    let mut reuse = crate::upstream::Reuse::DEFAULT;
    for (name, any) in &c.typed_extension_protocol_options {
        let opath = format!("{path}.typed_extension_protocol_options[\"{name}\"]");
        if name != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" {
            return Err(ConfigError::new(opath, "only envoy.extensions.upstreams.http.v3.HttpProtocolOptions is supported by weft-proxy"));
        }
        let options: xds_http::HttpProtocolOptions = unpack(any, HTTP_PROTOCOL_OPTIONS, &opath)?;
        let limits = super::ConnectionLimits::compile(options.common_http_protocol_options.as_ref());
        reuse.idle_timeout = limits.idle_timeout.unwrap_or(reuse.idle_timeout);
        reuse.max_requests = limits.max_requests;
        reuse.max_duration = limits.max_duration;
        use xds_http::http_protocol_options::explicit_http_config::ProtocolConfig;
        use xds_http::http_protocol_options::UpstreamProtocolOptions;
        match options.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
                Some(ProtocolConfig::Http2ProtocolOptions(o)) => {
                    http2 = true;
                    h2_options = Http2Options::compile(Some(&o), &format!("{opath}.explicit_http_config.http2_protocol_options"))?;
                }
                Some(ProtocolConfig::HttpProtocolOptions(_)) => http2 = false,
                _ => return Err(ConfigError::new(format!("{opath}.explicit_http_config"), "HTTP/1 or HTTP/2 is required (HTTP/3 is not supported by weft-proxy)")),
            },
            _ => {
                return Err(ConfigError::new(
                    format!("{opath}.upstream_protocol_options"),
                    "only explicit_http_config is supported by weft-proxy yet",
                ))
            }
        }
    }
    Ok((http2, h2_options, reuse))
}

/// A cluster's `transport_socket`: TLS, or plaintext (`raw_buffer`).
/// HTTP/2 clusters offer ALPN `h2` when the context names no protocols,
/// as Envoy's connection pool does.
fn upstream_tls(ts: Option<&xds_core::TransportSocket>, path: &str, http2: bool) -> Result<Option<Arc<ClientTls>>> {
    use xds_core::transport_socket::ConfigType;
    let Some(ts) = ts else { return Ok(None) };
    let Some(ConfigType::TypedConfig(any)) = &ts.config_type else {
        return Err(ConfigError::new(format!("{path}.typed_config"), "typed_config is required"));
    };
    let tpath = format!("{path}.typed_config");
    if weft_envoy_api::type_name(&any.type_url) == RAW_BUFFER {
        return Ok(None);
    }
    let mut ctx: xds_tls::UpstreamTlsContext = unpack(any, UPSTREAM_TLS, &tpath)?;
    if http2 {
        let common = ctx.common_tls_context.get_or_insert_with(Default::default);
        if common.alpn_protocols.is_empty() {
            common.alpn_protocols.push("h2".into());
        }
    }
    Ok(Some(Arc::new(ClientTls::compile(&ctx, &tpath)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_cluster_shows_no_stats() {
        let ghost = Cluster::not_found("ghost-cluster-for-stats-test");
        ghost.stats.rq_total.inc();
        ghost.stats.response(503, 1.0);
        let known = Cluster::compile(&xds_cluster::Cluster { name: "known-cluster-for-stats-test".into(), ..Default::default() }, "c")
            .expect("compiles");
        known.stats.rq_total.inc();
        let text = String::from_utf8(crate::stats::prometheus_text()).expect("utf-8");
        assert!(text.contains("known-cluster-for-stats-test"), "a real cluster is exported");
        assert!(!text.contains("ghost-cluster-for-stats-test"), "Envoy keeps no stats for a cluster that does not exist");
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().expect("addr")).collect()
    }

    #[test]
    fn lookup_families_choose_like_envoy() {
        let both = addrs(&["127.0.0.1:80", "[::1]:80"]);
        assert_eq!(Family::V4Only.select(both.clone()), addrs(&["127.0.0.1:80"]));
        assert_eq!(Family::V6Only.select(both.clone()), addrs(&["[::1]:80"]));
        assert_eq!(Family::Auto.select(both.clone()), addrs(&["[::1]:80"]));
        assert_eq!(Family::Auto.select(addrs(&["127.0.0.1:80"])), addrs(&["127.0.0.1:80"]));
        assert_eq!(Family::V4Preferred.select(both.clone()), addrs(&["127.0.0.1:80"]));
        assert_eq!(Family::V4Preferred.select(addrs(&["[::1]:80"])), addrs(&["[::1]:80"]));
        assert_eq!(Family::All.select(both).len(), 2);
    }

    #[test]
    fn a_refused_breaker_slot_leaves_the_count_alone() {
        let active = AtomicUsize::new(0);
        let first = Breakers::try_acquire(&active, 1);
        assert!(first.is_some());
        assert!(Breakers::try_acquire(&active, 1).is_none());
        assert_eq!(active.load(Ordering::Relaxed), 1);
        drop(first);
        assert_eq!(active.load(Ordering::Relaxed), 0);
        let budget = Arc::new(ConnectionBudget::new(1, 0));
        let slot = budget.try_open();
        assert!(slot.is_some() && budget.try_open().is_none());
        drop(slot);
        assert!(budget.try_open().is_some());
    }

    #[test]
    fn logical_dns_keeps_only_the_first_address() {
        let names = vec![("db.local".to_string(), 1)];
        let dns = Dns { names, placement: vec![(0, 1)], family: Family::All, refresh: Duration::from_secs(5), logical: true };
        let first = Endpoint { addr: addrs(&["127.0.0.2:1"])[0], priority: 0, weight: 1, hostname: Some("db.local".into()) };
        assert_eq!(dns.hosts(vec![addrs(&["127.0.0.2:1", "127.0.0.3:1"])]), vec![first]);
    }
}
