//! A gateway's listeners, one per port of the servers merged on it
//! (`index::gateway::merge`), as istiod builds them:
//!
//! ```text
//!  HTTP             0.0.0.0_N ─RDS http.N─► a virtual host per VirtualService host
//!  TCP              0.0.0.0_N ─tcp_proxy─► the first tcp route that applies
//!  TLS passthrough  0.0.0.0_N + tls_inspector ─SNI (server_names)─► a chain per tls match ─tcp_proxy─►
//! ```
//! `tcp_proxy` goes to one cluster (stat prefix: the cluster's name) or
//! to weighted clusters (stat prefix: `NAME.NAMESPACE` of the
//! VirtualService). TLS is passed through, never terminated. A TCP or
//! TLS port that no route serves gets no listener, as in istiod.

use std::collections::{BTreeMap, BTreeSet};

use weft_crds::networking::virtual_service::RouteDestination;
use weft_crds::networking::VirtualServiceSpec;
use weft_envoy_api::pb::envoy::config::listener::v3 as xds_listener;
use weft_envoy_api::pb::envoy::config::route::v3 as xds_route;
use weft_envoy_api::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use weft_envoy_api::pb::envoy::extensions::filters::network::tcp_proxy::v3 as xds_tcp;

use super::envoy::{any, network_filter, socket, TCP_PROXY, TLS_INSPECTOR};
use super::route::{self, Scope, Unresolved};
use crate::index::gateway::{self, host_matches, names_gateway, Listener, Protocol};
use crate::index::{Index, Rule};
use crate::xds::Proxy;

/// The ports of the Gateways that select `proxy`.
pub fn ports<'a>(index: &'a Index, proxy: &Proxy) -> BTreeMap<u32, Listener<'a>> {
    let selecting = index.gateways.iter().filter(|g| g.spec.selector.iter().all(|(k, v)| proxy.labels.get(k) == Some(v)));
    gateway::merge(selecting).0
}

/// The route configurations of a gateway's HTTP ports: the
/// VirtualServices that name the Gateways serving each port.
pub fn routes(index: &Index, proxy: &Proxy) -> BTreeMap<u32, xds_route::RouteConfiguration> {
    let mut out = BTreeMap::new();
    for (port, listener) in ports(index, proxy).into_iter().filter(|(_, l)| l.protocol == Protocol::Http) {
        let mut vhosts: Vec<xds_route::VirtualHost> = Vec::new();
        for (gateway, server) in &listener.servers {
            let scope = Scope { index, labels: &proxy.labels, port, gateway: Some(gateway.clone()) };
            for vs in index.virtual_services.iter() {
                if !vs.spec.gateways.iter().any(|g| names_gateway(g, &vs.key.namespace, Some(gateway))) {
                    continue;
                }
                for host in vs.spec.hosts.iter().filter(|h| server.hosts.iter().any(|sh| host_matches(sh, h))) {
                    if vhosts.iter().any(|v| v.name == *host) {
                        continue; // an earlier VirtualService has this host (validation reports it)
                    }
                    let Ok(routes) = route::routes(&scope, vs) else { continue };
                    let domains = if host == "*" { vec!["*".to_string()] } else { vec![host.clone(), format!("{host}:*")] };
                    vhosts.push(xds_route::VirtualHost { name: host.clone(), domains, routes, ..Default::default() });
                }
            }
        }
        out.insert(port, xds_route::RouteConfiguration { name: format!("http.{port}"), virtual_hosts: vhosts, ..Default::default() });
    }
    out
}

/// The listener of a TCP or TLS passthrough port; `None` when no route
/// serves it.
pub fn network_listener(index: &Index, proxy: &Proxy, port: u32, listener: &Listener<'_>) -> Option<xds_listener::Listener> {
    let mut chains = Vec::new();
    // Each SNI host selects one chain (Envoy refuses two): the first wins.
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for (gateway, server) in &listener.servers {
        let scope = Scope { index, labels: &proxy.labels, port, gateway: Some(gateway.clone()) };
        for vs in index.virtual_services.iter() {
            match listener.protocol {
                Protocol::Tcp => {
                    let Some((i, tcp)) = gateway::tcp_route(vs, gateway, server) else { continue };
                    let Ok(filter) = tcp_proxy(&scope, vs, &tcp.route, &format!("spec.tcp[{i}]")) else { continue };
                    chains.push(xds_listener::FilterChain { filters: vec![filter], ..Default::default() });
                    break; // the first VirtualService's route serves the port
                }
                Protocol::Passthrough => {
                    for ((i, _), tls, m) in gateway::tls_matches(vs, gateway, server) {
                        if m.sni_hosts.iter().any(|h| names.contains(h.as_str())) {
                            continue; // validation reports the conflict
                        }
                        let Ok(filter) = tcp_proxy(&scope, vs, &tls.route, &format!("spec.tls[{i}]")) else { continue };
                        names.extend(m.sni_hosts.iter().map(String::as_str));
                        chains.push(xds_listener::FilterChain {
                            filter_chain_match: sni_match(&m.sni_hosts),
                            filters: vec![filter],
                            ..Default::default()
                        });
                    }
                }
                Protocol::Http => return None,
            }
        }
        if listener.protocol == Protocol::Tcp {
            break; // one server per TCP port
        }
    }
    if chains.is_empty() {
        return None;
    }
    let listener_filters = if chains.iter().any(|c| c.filter_chain_match.is_some()) {
        vec![xds_listener::ListenerFilter {
            name: TLS_INSPECTOR.into(),
            config_type: Some(xds_listener::listener_filter::ConfigType::TypedConfig(any(&TlsInspector::default()))),
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    Some(xds_listener::Listener {
        name: format!("0.0.0.0_{port}"),
        address: Some(socket(&proxy.ip, port)),
        listener_filters,
        filter_chains: chains,
        ..Default::default()
    })
}

/// istiod's match for a passthrough chain: the SNI names, sorted; none
/// (any connection) when `*` is one of them.
fn sni_match(hosts: &[String]) -> Option<xds_listener::FilterChainMatch> {
    if hosts.iter().any(|h| h == "*") {
        return None;
    }
    let mut server_names = hosts.to_vec();
    server_names.sort();
    Some(xds_listener::FilterChainMatch { server_names, ..Default::default() })
}

/// The `tcp_proxy` filter for a route's destinations.
fn tcp_proxy(
    scope: &Scope<'_>,
    vs: &Rule<VirtualServiceSpec>,
    destinations: &[RouteDestination],
    path: &str,
) -> Result<xds_listener::Filter, Unresolved> {
    use xds_tcp::tcp_proxy::{weighted_cluster::ClusterWeight, ClusterSpecifier, WeightedCluster};
    let resolve = |j: usize, d: &RouteDestination| route::resolve(scope, &vs.key.namespace, &d.destination, &format!("{path}.route[{j}].destination"));
    let config = match destinations {
        [only] => {
            let cluster = resolve(0, only)?;
            xds_tcp::TcpProxy { stat_prefix: cluster.clone(), cluster_specifier: Some(ClusterSpecifier::Cluster(cluster)), ..Default::default() }
        }
        _ => {
            let mut clusters = Vec::new();
            for (j, d) in destinations.iter().enumerate() {
                let name = resolve(j, d)?;
                let weight = d.weight.unwrap_or(0).max(0) as u32;
                if weight > 0 {
                    clusters.push(ClusterWeight { name, weight, ..Default::default() });
                }
            }
            xds_tcp::TcpProxy {
                stat_prefix: format!("{}.{}", vs.key.name, vs.key.namespace),
                cluster_specifier: Some(ClusterSpecifier::WeightedClusters(WeightedCluster { clusters })),
                ..Default::default()
            }
        }
    };
    Ok(network_filter(TCP_PROXY, &config))
}
