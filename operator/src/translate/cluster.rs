//! Outbound clusters and their endpoints, named as istiod names them:
//! `outbound|PORT|SUBSET|HOST` (empty SUBSET for the whole service), one
//! EDS resource per cluster under the same name. A DestinationRule's
//! traffic policy (load balancer, connection pool, outlier detection) sets
//! the cluster's options; a subset's own policy overrides it.
//!
//! DNS services (`resolution: DNS` / `DNS_ROUND_ROBIN`) get STRICT_DNS /
//! LOGICAL_DNS clusters instead, their endpoints' names inline in
//! `load_assignment` (no EDS resource): each proxy resolves them itself.
//! As istiod, a DNS cluster (or subset) without endpoints is left out.

use std::time::Duration;

use weft_crds::common::Labels;
use weft_crds::networking::destination_rule::connection_pool::{ConnectionPoolSettings, H2UpgradePolicy, OutlierDetection};
use weft_crds::networking::destination_rule::load_balancer::SimpleLb;
use weft_crds::networking::destination_rule::TrafficPolicy;
use weft_crds::networking::service_entry::{Resolution, ServicePort};
use weft_envoy_api::pb::envoy::config::cluster::v3 as xds_cluster;
use weft_envoy_api::pb::envoy::config::endpoint::v3 as xds_endpoint;
use weft_envoy_api::pb::google::protobuf::UInt32Value;

use super::envoy::{ads, duration, socket};
use crate::index::{Index, Service};

/// Istio's default `connectTimeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Istio's default mesh `dnsRefreshRate`. (istiod also sets
/// `respect_dns_ttl`, which weft-proxy does not implement: names are
/// looked up again at this rate whatever their TTL.)
const DNS_REFRESH_RATE: Duration = Duration::from_secs(60);

/// One outbound cluster, and for an EDS cluster its endpoints (served
/// under the same name).
pub type Outbound = (xds_cluster::Cluster, Option<xds_endpoint::ClusterLoadAssignment>);

pub fn name(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// The clusters of one service port: the service, then each subset.
pub fn outbound(index: &Index, service: &Service, port: &ServicePort) -> Vec<Outbound> {
    let rule = index.destination_rule(service);
    let mut out: Vec<Outbound> = build(service, port, "", &Labels::new(), policy(index, service, port.number, "").as_ref()).into_iter().collect();
    for subset in rule.map(|r| r.spec.subsets.as_slice()).unwrap_or_default() {
        let merged = policy(index, service, port.number, &subset.name);
        out.extend(build(service, port, &subset.name, &subset.labels, merged.as_ref()));
    }
    out
}

/// The address family a DNS cluster resolves for a proxy, which istiod
/// picks from the proxy's addresses: IPv6 only for an IPv6 proxy, IPv4
/// only otherwise (istiod's ALL is for dual-stack proxies, and a weft
/// proxy has one address).
pub fn dns_family(proxy_ip: &str) -> xds_cluster::cluster::DnsLookupFamily {
    use xds_cluster::cluster::DnsLookupFamily;
    match proxy_ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => DnsLookupFamily::V6Only,
        _ => DnsLookupFamily::V4Only,
    }
}

/// `c` as a proxy of the family `family` gets it: DNS clusters resolve
/// that family; `None` for clusters that resolve nothing.
pub fn resolving(c: &xds_cluster::Cluster, family: xds_cluster::cluster::DnsLookupFamily) -> Option<xds_cluster::Cluster> {
    use xds_cluster::cluster::{ClusterDiscoveryType, DiscoveryType};
    let dns = [DiscoveryType::StrictDns as i32, DiscoveryType::LogicalDns as i32];
    let resolves = matches!(c.cluster_discovery_type, Some(ClusterDiscoveryType::Type(t)) if dns.contains(&t));
    resolves.then(|| xds_cluster::Cluster { dns_lookup_family: family as i32, ..c.clone() })
}

/// The traffic policy in effect for a service port and subset, merged as
/// istiod merges it: each part (load balancer, connection pool, outlier
/// detection, TLS) set by the subset wins over the same part of the rule,
/// and a port's `portLevelSettings` win over the level they are in.
pub fn policy(index: &Index, service: &Service, port: u32, subset: &str) -> Option<TrafficPolicy> {
    let rule = index.destination_rule(service)?;
    let mut merged = at_port(rule.spec.traffic_policy.clone().unwrap_or_default(), port);
    if let Some(sp) = rule.spec.subsets.iter().find(|s| s.name == subset).and_then(|s| s.traffic_policy.clone()) {
        let sp = at_port(sp, port);
        merged.load_balancer = sp.load_balancer.or(merged.load_balancer);
        merged.connection_pool = sp.connection_pool.or(merged.connection_pool);
        merged.outlier_detection = sp.outlier_detection.or(merged.outlier_detection);
        merged.tls = sp.tls.or(merged.tls);
    }
    Some(merged)
}

/// A policy with its settings for `port` applied over it.
fn at_port(mut p: TrafficPolicy, port: u32) -> TrafficPolicy {
    let settings = std::mem::take(&mut p.port_level_settings);
    if let Some(pl) = settings.into_iter().find(|pl| pl.port.as_ref().and_then(|s| s.number) == Some(port)) {
        p.load_balancer = pl.load_balancer.or(p.load_balancer);
        p.connection_pool = pl.connection_pool.or(p.connection_pool);
        p.outlier_detection = pl.outlier_detection.or(p.outlier_detection);
        p.tls = pl.tls.or(p.tls);
    }
    p
}

/// The route hash policy a consistent-hash load balancer needs.
pub fn hash_policy(policy: Option<&TrafficPolicy>) -> Vec<weft_envoy_api::pb::envoy::config::route::v3::route_action::HashPolicy> {
    use weft_envoy_api::pb::envoy::config::route::v3::route_action::hash_policy::{self as hp, PolicySpecifier};
    let Some(ch) = policy.and_then(|p| p.load_balancer.as_ref()).and_then(|l| l.consistent_hash.as_ref()) else {
        return Vec::new();
    };
    let specifier = if let Some(h) = &ch.http_header_name {
        PolicySpecifier::Header(hp::Header { header_name: h.clone(), ..Default::default() })
    } else if let Some(q) = &ch.http_query_parameter_name {
        PolicySpecifier::QueryParameter(hp::QueryParameter { name: q.clone() })
    } else if ch.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(hp::ConnectionProperties { source_ip: true })
    } else {
        return Vec::new();
    };
    vec![weft_envoy_api::pb::envoy::config::route::v3::route_action::HashPolicy { policy_specifier: Some(specifier), terminal: false }]
}

/// A service port's cluster (or a subset's: the instances with `labels`);
/// `None` for a DNS cluster without endpoints.
fn build(service: &Service, port: &ServicePort, subset: &str, labels: &Labels, policy: Option<&TrafficPolicy>) -> Option<Outbound> {
    use xds_cluster::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy};
    let name = name(port.number, subset, &service.host);
    let dns = service.resolves_by_dns();
    let endpoints = lb_endpoints(service, port, labels, dns);
    if dns && endpoints.is_empty() {
        return None;
    }
    let assignment = xds_endpoint::ClusterLoadAssignment {
        cluster_name: name.clone(),
        endpoints: vec![xds_endpoint::LocalityLbEndpoints { lb_endpoints: endpoints, ..Default::default() }],
        ..Default::default()
    };
    let balancer = policy.and_then(|p| p.load_balancer.as_ref());
    let lb = match (balancer.and_then(|l| l.simple), balancer.and_then(|l| l.consistent_hash.as_ref())) {
        (_, Some(ch)) if ch.maglev.is_some() => LbPolicy::Maglev,
        (_, Some(_)) => LbPolicy::RingHash,
        (Some(SimpleLb::RoundRobin), None) => LbPolicy::RoundRobin,
        (Some(SimpleLb::Random), None) => LbPolicy::Random,
        // Istio's default (and LEAST_CONN's meaning).
        _ => LbPolicy::LeastRequest,
    };
    let mut cluster = xds_cluster::Cluster {
        name: name.clone(),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        lb_policy: lb as i32,
        ..Default::default()
    };
    let eds = if dns {
        let kind = if service.resolution == Resolution::DnsRoundRobin { DiscoveryType::LogicalDns } else { DiscoveryType::StrictDns };
        cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(kind as i32));
        cluster.load_assignment = Some(assignment);
        // IPv4 proxies' family; IPv6 proxies get theirs (`resolving`).
        cluster.dns_lookup_family = xds_cluster::cluster::DnsLookupFamily::V4Only as i32;
        #[allow(deprecated)] // the field istiod sets, which Envoy still reads
        {
            cluster.dns_refresh_rate = Some(duration(DNS_REFRESH_RATE));
        }
        None
    } else {
        cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
        cluster.eds_cluster_config = Some(EdsClusterConfig { eds_config: Some(ads()), service_name: name });
        Some(assignment)
    };
    if let Some(ch) = balancer.and_then(|l| l.consistent_hash.as_ref()) {
        use xds_cluster::cluster::{LbConfig, MaglevLbConfig, RingHashLbConfig};
        let value = |v: u64| weft_envoy_api::pb::google::protobuf::UInt64Value { value: v };
        cluster.lb_config = Some(match &ch.maglev {
            Some(m) => LbConfig::MaglevLbConfig(MaglevLbConfig { table_size: m.table_size.map(value) }),
            // Istio's default ring: 1024 entries.
            None => LbConfig::RingHashLbConfig(RingHashLbConfig {
                minimum_ring_size: Some(value(ch.ring_hash.as_ref().and_then(|r| r.minimum_ring_size).or(ch.minimum_ring_size).unwrap_or(1024))),
                ..Default::default()
            }),
        });
    }
    if let Some(pool) = policy.and_then(|p| p.connection_pool.as_ref()) {
        apply_pool(&mut cluster, pool);
    }
    set_protocol(&mut cluster, port, policy.and_then(|p| p.connection_pool.as_ref()));
    if let Some(od) = policy.and_then(|p| p.outlier_detection.as_ref()) {
        cluster.outlier_detection = Some(outlier(od));
    }
    Some((cluster, eds))
}

/// The endpoints of the instances with `labels`: addresses for EDS (as
/// istiod, host names, from WorkloadEntries meant for DNS services, are
/// left out there), names as well for a DNS cluster to resolve.
fn lb_endpoints(service: &Service, port: &ServicePort, labels: &Labels, dns: bool) -> Vec<xds_endpoint::LbEndpoint> {
    service
        .instances
        .iter()
        .filter(|i| labels.iter().all(|(k, v)| i.labels.get(k) == Some(v)))
        .filter(|i| dns || i.has_ip())
        .map(|i| xds_endpoint::LbEndpoint {
            host_identifier: Some(xds_endpoint::lb_endpoint::HostIdentifier::Endpoint(xds_endpoint::Endpoint {
                address: Some(socket(&i.address, i.endpoint_port(port))),
                ..Default::default()
            })),
            load_balancing_weight: i.weight.filter(|w| *w > 0).map(|value| UInt32Value { value }),
            ..Default::default()
        })
        .collect()
}

fn apply_pool(cluster: &mut xds_cluster::Cluster, pool: &ConnectionPoolSettings) {
    use xds_cluster::circuit_breakers::Thresholds;
    let value = |v: Option<i32>| v.filter(|v| *v > 0).map(|v| UInt32Value { value: v as u32 });
    let tcp = pool.tcp.as_ref();
    let http = pool.http.as_ref();
    let thresholds = Thresholds {
        max_connections: value(tcp.and_then(|t| t.max_connections)),
        max_pending_requests: value(http.and_then(|h| h.http1_max_pending_requests)),
        max_requests: value(http.and_then(|h| h.http2_max_requests)),
        max_retries: value(http.and_then(|h| h.max_retries)),
        ..Default::default()
    };
    cluster.circuit_breakers = Some(xds_cluster::CircuitBreakers { thresholds: vec![thresholds], ..Default::default() });
    if let Some(timeout) = tcp.and_then(|t| t.connect_timeout.as_ref()) {
        cluster.connect_timeout = Some(duration(timeout.0));
    }
    if let Some(k) = tcp.and_then(|t| t.tcp_keepalive.as_ref()) {
        use weft_envoy_api::pb::envoy::config::core::v3::TcpKeepalive;
        // Envoy counts the times in whole seconds.
        let seconds = |d: Option<&weft_crds::common::Duration>| d.map(|d| UInt32Value { value: d.0.as_secs().min(u32::MAX as u64) as u32 });
        let keepalive = TcpKeepalive {
            keepalive_probes: k.probes.map(|value| UInt32Value { value }),
            keepalive_time: seconds(k.time.as_ref()),
            keepalive_interval: seconds(k.interval.as_ref()),
        };
        cluster.upstream_connection_options = Some(xds_cluster::UpstreamConnectionOptions { tcp_keepalive: Some(keepalive), ..Default::default() });
    }
}

/// The ports whose clusters speak HTTP/2 upstream, as istiod's
/// `IsHTTP2`: gRPC needs it end to end.
fn is_http2(port: &ServicePort) -> bool {
    let protocol = port.protocol.as_deref().unwrap_or_default().to_ascii_uppercase();
    matches!(protocol.as_str(), "HTTP2" | "GRPC" | "GRPC-WEB")
}

/// An HTTP port's cluster protocol options, as istiod sets them: HTTP/2
/// for HTTP/2 and gRPC ports (and HTTP ones a DestinationRule upgrades),
/// and the connection pool's idle timeout, requests per connection and
/// connection lifetime. Nothing for other ports, or an HTTP/1.1 port
/// without such settings.
pub fn set_protocol(cluster: &mut xds_cluster::Cluster, port: &ServicePort, pool: Option<&ConnectionPoolSettings>) {
    use weft_envoy_api::pb::envoy::config::core::v3::{Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as Common};
    use weft_envoy_api::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
    };
    use weft_envoy_api::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    if !Service::is_http(port) {
        return;
    }
    let http = pool.and_then(|p| p.http.as_ref());
    let upgrade = http.and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade);
    let http2 = is_http2(port) || upgrade;
    let common = Common {
        idle_timeout: http.and_then(|h| h.idle_timeout.as_ref()).map(|d| duration(d.0)),
        max_requests_per_connection: http.and_then(|h| h.max_requests_per_connection).filter(|m| *m > 0).map(|m| UInt32Value { value: m as u32 }),
        max_connection_duration: pool.and_then(|p| p.tcp.as_ref()).and_then(|t| t.max_connection_duration.as_ref()).map(|d| duration(d.0)),
        ..Default::default()
    };
    let common = Some(common).filter(|c| *c != Common::default());
    if !http2 && common.is_none() {
        return;
    }
    let protocol = if http2 {
        ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())
    } else {
        ProtocolConfig::HttpProtocolOptions(Http1ProtocolOptions::default())
    };
    let options = HttpProtocolOptions {
        common_http_protocol_options: common,
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig { protocol_config: Some(protocol) })),
        ..Default::default()
    };
    cluster.typed_extension_protocol_options.insert("envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(), super::envoy::any(&options));
}

fn outlier(od: &OutlierDetection) -> xds_cluster::OutlierDetection {
    let value = |v: Option<i32>| v.map(|v| UInt32Value { value: v.max(0) as u32 });
    // `consecutiveErrors` is Istio's older name for consecutive 5xx.
    let five_xx = od.consecutive_5xx_errors.map(|v| v as i32).or(od.consecutive_errors);
    xds_cluster::OutlierDetection {
        consecutive_5xx: value(five_xx),
        consecutive_gateway_failure: value(od.consecutive_gateway_errors.map(|v| v as i32)),
        interval: od.interval.as_ref().map(|d| duration(d.0)),
        base_ejection_time: od.base_ejection_time.as_ref().map(|d| duration(d.0)),
        max_ejection_percent: value(od.max_ejection_percent),
        ..Default::default()
    }
}
