//! Translation: the indexed mesh → one proxy's xDS snapshot, following what
//! istiod produces so a stock Envoy behaves as an Istio sidecar or gateway.
//!
//! ```text
//!  sidecar  virtualOutbound IP:15001 (apps' HTTP_PROXY) ─RDS http_proxy─► vhost per service host:port ─► outbound|P|SUBSET|HOST (EDS; DNS services: STRICT/LOGICAL_DNS)
//!           virtualInbound  IP:15006 ─inline routes─► inbound|P|| ─► the app on IP:targetPort
//!  gateway  0.0.0.0_N       IP:N (Gateway servers) ─RDS http.N─► vhost per VirtualService host ─► outbound|…
//!                                                   ─tcp_proxy (TCP; TLS passthrough by SNI)─► outbound|…
//! ```
//! Without iptables, apps reach the mesh through their sidecar's outbound
//! listener (`HTTP_PROXY`), and peers reach a workload that has a sidecar
//! on its inbound port (see `index::Instance::endpoint_port`).
//! Every listener's HTTP filter chain carries the WasmPlugins that select
//! the proxy (see `wasm`).

mod cluster;
mod envoy;
mod gateway;
pub mod route;
mod wasm;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use weft_envoy_api::pb::envoy::config::cluster::v3 as xds_cluster;
use weft_envoy_api::pb::envoy::config::cluster::v3::cluster::DnsLookupFamily;
use weft_envoy_api::pb::envoy::config::endpoint::v3 as xds_endpoint;
use weft_envoy_api::pb::envoy::config::listener::v3 as xds_listener;
use weft_envoy_api::pb::envoy::config::route::v3 as xds_route;
use weft_envoy_api::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;

use crate::index::gateway::Protocol;
use crate::index::{Index, Rule, Service, INBOUND_PORT, OUTBOUND_PORT};
use prost::Message;
use weft_crds::networking::service_entry::ServicePort;
use weft_crds::networking::{DestinationRuleSpec, VirtualServiceSpec};
use crate::lock;
use crate::xds::hub::Generator;
use crate::xds::snapshot::Layer;
use crate::xds::{Kind, Proxy, Resource, Role, Snapshot};
use envoy::{ads, network_filter, socket};
use route::Scope;
use wasm::{Class, Plugins};

/// The route configuration of the sidecar's HTTP proxy listener (istiod's
/// name for the `proxyHttpPort` listener's routes).
pub const HTTP_PROXY_ROUTES: &str = "http_proxy";

/// One translation of the mesh, shared by every proxy: clusters and
/// endpoints are built once, route configurations once per distinct
/// (role, namespace, labels that rules match on); only listeners, which
/// bind the proxy's own address, are built per proxy.
pub struct Translation {
    index: Arc<Index>,
    /// Every service's clusters and endpoints, shared by every proxy.
    outbound: Arc<Outbound>,
    /// Label keys some rule matches on (`match.sourceLabels`): proxies
    /// that agree on these share their routes.
    label_keys: BTreeSet<String>,
    routes: Mutex<HashMap<RouteKey, Arc<Vec<Arc<Resource>>>>>,
    /// The sidecar virtual hosts built, encoded, by route key.
    vhosts: Mutex<HashMap<RouteKey, VirtualHosts>>,
    /// The previous translation's `vhosts` when its registry and
    /// DestinationRules are this one's: a virtual host whose
    /// VirtualServices are unchanged is taken from there, not rebuilt.
    reusable: HashMap<RouteKey, VirtualHosts>,
}

type RouteKey = (Role, String, Vec<(String, String)>);

/// The virtual hosts of one route key, by service host and port.
type VirtualHosts = HashMap<(String, u32), Arc<VirtualHost>>;

/// A sidecar virtual host, encoded, and the VirtualServices it was made
/// of (all that can change it while the registry and rules stay).
struct VirtualHost {
    rules: Vec<Rule<VirtualServiceSpec>>,
    encoded: bytes::Bytes,
}

impl Translation {
    pub fn new(index: Arc<Index>) -> Translation {
        Translation::after(index, None)
    }

    /// The translation of `index`, taking from `previous` what its
    /// unchanged sections make: an edit of a VirtualService rebuilds the
    /// routes, not a cluster.
    pub fn after(index: Arc<Index>, previous: Option<&Translation>) -> Translation {
        let label_keys = index
            .virtual_services
            .iter()
            .flat_map(|vs| vs.spec.http.iter().flat_map(|h| h.match_.iter().flat_map(|m| m.source_labels.keys().cloned())))
            .collect();
        let unchanged = previous.filter(|p| p.index.same_services_and_rules(&index));
        let outbound = match unchanged {
            Some(p) => p.outbound.clone(),
            None => Arc::new(Outbound::build(&index, previous.map(|p| &*p.outbound))),
        };
        // A delegating route depends on a VirtualService that is not its
        // host's: virtual hosts are not reused while there are any.
        let reusable = match unchanged {
            Some(p) if !index.has_delegation() && !p.index.has_delegation() => std::mem::take(&mut *lock(&p.vhosts)),
            _ => HashMap::new(),
        };
        Translation { index, outbound, label_keys, routes: Mutex::default(), vhosts: Mutex::default(), reusable }
    }

    /// The route configurations of proxies like `proxy`, built once. A
    /// gateway's depend on all its labels too: Gateways select by them.
    fn routes(&self, proxy: &Proxy) -> Arc<Vec<Arc<Resource>>> {
        let keep = |k: &String| proxy.role == Role::Gateway || self.label_keys.contains(k);
        let labels: Vec<(String, String)> = proxy.labels.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let key = (proxy.role, proxy.namespace.clone(), labels);
        let mut cache = lock(&self.routes);
        cache
            .entry(key)
            .or_insert_with_key(|key| {
                let configs = match proxy.role {
                    Role::Sidecar => vec![self.sidecar_routes(proxy, key)],
                    Role::Gateway => gateway::routes(&self.index, proxy).into_values().map(|rc| Resource::new(rc.name.clone(), &rc)).collect(),
                };
                Arc::new(configs.into_iter().map(Arc::new).collect())
            })
            .clone()
    }

    /// The sidecar's outbound routes: every HTTP service port, by
    /// host:port; each virtual host reused from the previous translation
    /// when it can be.
    fn sidecar_routes(&self, proxy: &Proxy, key: &RouteKey) -> Resource {
        let reusable = self.reusable.get(key);
        let mut built = VirtualHosts::new();
        let mut encoded = Vec::new();
        for service in self.index.services.values() {
            for port in service.ports.iter().filter(|p| Service::is_http(p)) {
                let id = (service.host.clone(), port.number);
                // Compared in place: a reused virtual host copies nothing.
                let same_rules = |v: &&Arc<VirtualHost>| v.rules.iter().eq(mesh_candidates(&self.index, &service.host));
                let vhost = match reusable.and_then(|r| r.get(&id)).filter(same_rules) {
                    Some(v) => v.clone(),
                    None => Arc::new(VirtualHost {
                        rules: mesh_candidates(&self.index, &service.host).cloned().collect(),
                        encoded: sidecar_vhost(&self.index, proxy, service, port).encode_to_vec().into(),
                    }),
                };
                encoded.push(vhost.encoded.clone());
                built.insert(id, vhost);
            }
        }
        lock(&self.vhosts).insert(key.clone(), built);
        route_configuration(HTTP_PROXY_ROUTES, &encoded)
    }
}

/// A `RouteConfiguration` named `name` with these virtual hosts, encoded
/// (fields in prost's order, so the bytes are those prost would write).
fn route_configuration(name: &str, vhosts: &[bytes::Bytes]) -> Resource {
    use prost::encoding::{bytes as field, string};
    let name_owned = name.to_string();
    let len = string::encoded_len(1, &name_owned) + vhosts.iter().map(|v| field::encoded_len(2, v)).sum::<usize>();
    Resource::encoded(name, <xds_route::RouteConfiguration as prost::Name>::type_url(), len, |buf| {
        string::encode(1, &name_owned, buf);
        for v in vhosts {
            field::encode(2, v, buf);
        }
    })
}

impl Generator for Translation {
    fn snapshot(&self, proxy: &Proxy) -> Snapshot {
        let mut s = Snapshot::default();
        s.share(Kind::Cluster, self.outbound.clusters.clone());
        if cluster::dns_family(&proxy.ip) == DnsLookupFamily::V6Only {
            for c in &self.outbound.dns_v6 {
                s.insert_shared(Kind::Cluster, c.clone());
            }
        }
        s.share(Kind::Endpoint, self.outbound.endpoints.clone());
        for rc in self.routes(proxy).iter() {
            s.insert_shared(Kind::Route, rc.clone());
        }
        let plugins = Plugins::selecting(&self.index, proxy);
        for c in plugins.clusters() {
            s.insert(Kind::Cluster, Resource::new(c.name.clone(), &c));
        }
        match proxy.role {
            Role::Sidecar => sidecar_listeners(&self.index, proxy, &plugins, &mut s),
            Role::Gateway => {
                let filters = plugins.http_filters(Class::Gateway);
                for (port, served) in gateway::ports(&self.index, proxy) {
                    let l = match served.protocol {
                        Protocol::Http => {
                            let routes = Routes::Rds(format!("http.{port}"));
                            listener(&format!("0.0.0.0_{port}"), &proxy.ip, port, &format!("outbound_0.0.0.0_{port}"), routes, filters.clone())
                        }
                        Protocol::Tcp | Protocol::Passthrough => {
                            let Some(l) = gateway::network_listener(&self.index, proxy, port, &served) else { continue };
                            l
                        }
                    };
                    s.insert(Kind::Listener, Resource::new(l.name.clone(), &l));
                }
            }
        }
        s
    }
}

/// Every service's outbound clusters, the same clusters as IPv6 proxies
/// get them (DNS ones only), and the endpoints.
struct Outbound {
    clusters: Layer,
    /// Shadow `clusters` for IPv6 proxies.
    dns_v6: Vec<Arc<Resource>>,
    endpoints: Layer,
    /// Each service's part, with what it was made from: the next
    /// translation reuses a service's when its registry entry and
    /// DestinationRule are equal.
    by_service: HashMap<String, Arc<ServiceClusters>>,
}

impl Outbound {
    /// A service unchanged since `previous` keeps its resources.
    fn build(index: &Index, previous: Option<&Outbound>) -> Outbound {
        let mut by_service = HashMap::with_capacity(index.services.len());
        for service in index.services.values() {
            let rule = index.destination_rule(service);
            let kept = previous.and_then(|p| p.by_service.get(&service.host)).filter(|p| p.service == *service && p.rule.as_ref() == rule);
            let part = match kept {
                Some(p) => p.clone(),
                None => Arc::new(ServiceClusters::build(index, service, rule)),
            };
            by_service.insert(service.host.clone(), part);
        }
        let all = |f: fn(&ServiceClusters) -> &Vec<Arc<Resource>>| by_service.values().flat_map(move |p| f(p).iter().cloned());
        let (clusters, endpoints) = (Layer::shared(all(|p| &p.clusters)), Layer::shared(all(|p| &p.endpoints)));
        let dns_v6 = all(|p| &p.dns_v6).collect();
        Outbound { clusters, dns_v6, endpoints, by_service }
    }
}

/// One service's part of the outbound clusters.
struct ServiceClusters {
    service: Service,
    rule: Option<Rule<DestinationRuleSpec>>,
    clusters: Vec<Arc<Resource>>,
    dns_v6: Vec<Arc<Resource>>,
    endpoints: Vec<Arc<Resource>>,
}

impl ServiceClusters {
    fn build(index: &Index, service: &Service, rule: Option<&Rule<DestinationRuleSpec>>) -> ServiceClusters {
        let mut part = ServiceClusters { service: service.clone(), rule: rule.cloned(), clusters: Vec::new(), dns_v6: Vec::new(), endpoints: Vec::new() };
        for port in &service.ports {
            for (c, cla) in cluster::outbound(index, service, port) {
                if let Some(cla) = cla {
                    part.endpoints.push(Arc::new(Resource::new(cla.cluster_name.clone(), &cla)));
                }
                if let Some(v6) = cluster::resolving(&c, DnsLookupFamily::V6Only) {
                    part.dns_v6.push(Arc::new(Resource::new(v6.name.clone(), &v6)));
                }
                part.clusters.push(Arc::new(Resource::new(c.name.clone(), &c)));
            }
        }
        part
    }
}

/// Everything one proxy should have (one-off; see [`Translation`]).
pub fn snapshot(index: &Arc<Index>, proxy: &Proxy) -> Snapshot {
    Translation::new(index.clone()).snapshot(proxy)
}

/// A sidecar's virtual host for one service port.
fn sidecar_vhost(index: &Index, proxy: &Proxy, service: &Service, port: &ServicePort) -> xds_route::VirtualHost {
    let scope = Scope { index, labels: &proxy.labels, port: port.number, gateway: None };
    let routes = mesh_routes(&scope, &service.host).unwrap_or_else(|| {
        let hash = cluster::hash_policy(cluster::policy(index, service, port.number, "").as_ref());
        vec![route::default_route_hashed(cluster::name(port.number, "", &service.host), hash)]
    });
    xds_route::VirtualHost {
        name: format!("{}:{}", service.host, port.number),
        domains: domains(service, port.number, &proxy.namespace),
        routes,
        ..Default::default()
    }
}

/// The sidecar's listeners (on its own address) and inbound clusters.
fn sidecar_listeners(index: &Index, proxy: &Proxy, plugins: &Plugins<'_>, s: &mut Snapshot) {
    let routes = Routes::Rds(HTTP_PROXY_ROUTES.into());
    let outbound = listener("virtualOutbound", &proxy.ip, OUTBOUND_PORT, "outbound", routes, plugins.http_filters(Class::SidecarOutbound));
    s.insert(Kind::Listener, Resource::new(outbound.name.clone(), &outbound));

    // Inbound: the services this workload serves, to the app beside it.
    let mut inbound_vhosts = Vec::new();
    let mut seen = BTreeSet::new();
    for service in index.services.values() {
        if !service.instances.iter().any(|i| i.address == proxy.ip) {
            continue;
        }
        for port in &service.ports {
            if !seen.insert(port.number) {
                continue;
            }
            let name = format!("inbound|{}||", port.number);
            let app = port.target_port.unwrap_or(port.number);
            let mut c = static_cluster(&name, &proxy.ip, app);
            // The app speaks the port's protocol: gRPC gets HTTP/2.
            cluster::set_protocol(&mut c, port, None);
            s.insert(Kind::Cluster, Resource::new(name.clone(), &c));
            inbound_vhosts.push(xds_route::VirtualHost {
                name: format!("inbound|http|{}", port.number),
                domains: vec![format!("*:{}", port.number)],
                routes: vec![route::default_route(name)],
                ..Default::default()
            });
        }
    }
    if let Some(first) = inbound_vhosts.first().cloned() {
        // Requests whose Host carries no port go to the first service port.
        inbound_vhosts.push(xds_route::VirtualHost { name: "inbound|http".into(), domains: vec!["*".into()], ..first });
        let rc = xds_route::RouteConfiguration {
            name: format!("inbound|{INBOUND_PORT}"),
            virtual_hosts: inbound_vhosts,
            ..Default::default()
        };
        let routes = Routes::Inline(Box::new(rc));
        let inbound = listener("virtualInbound", &proxy.ip, INBOUND_PORT, "inbound", routes, plugins.http_filters(Class::SidecarInbound));
        s.insert(Kind::Listener, Resource::new(inbound.name.clone(), &inbound));
    }
}

/// The VirtualServices bound to the sidecars ("mesh") that name `host`,
/// by namespace/name.
fn mesh_candidates<'a>(index: &'a Index, host: &str) -> impl Iterator<Item = &'a Rule<VirtualServiceSpec>> {
    index.mesh_virtual_services.get(host).into_iter().flatten().map(|&i| &index.virtual_services[i])
}

/// The routes of the first of `host`'s VirtualServices that resolves;
/// `None` when there is none.
fn mesh_routes(scope: &Scope<'_>, host: &str) -> Option<Vec<xds_route::Route>> {
    mesh_candidates(scope.index, host).find_map(|vs| route::routes(scope, vs).ok())
}

/// The names a service answers to on `port`: its host, and for a proxy in
/// the service's namespace the short forms Kubernetes DNS would resolve.
fn domains(service: &Service, port: u32, proxy_namespace: &str) -> Vec<String> {
    let mut names = vec![service.host.clone()];
    let suffix = format!(".{}.svc.cluster.local", service.namespace);
    if let Some(short) = service.host.strip_suffix(&suffix) {
        let ns = &service.namespace;
        names.extend([format!("{short}.{ns}.svc.cluster"), format!("{short}.{ns}.svc"), format!("{short}.{ns}")]);
        if service.namespace == proxy_namespace {
            names.push(short.to_string());
        }
    }
    let mut out: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
    if port == 80 {
        out.extend(names);
    }
    out
}

enum Routes {
    Rds(String),
    Inline(Box<xds_route::RouteConfiguration>),
}

fn listener(name: &str, ip: &str, port: u32, stat_prefix: &str, routes: Routes, http_filters: Vec<hcm::HttpFilter>) -> xds_listener::Listener {
    use hcm::http_connection_manager::RouteSpecifier;
    let route_specifier = match routes {
        Routes::Rds(name) => RouteSpecifier::Rds(hcm::Rds { config_source: Some(ads()), route_config_name: name }),
        Routes::Inline(rc) => RouteSpecifier::RouteConfig(*rc),
    };
    let manager = hcm::HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        route_specifier: Some(route_specifier),
        http_filters,
        // WebSocket upgrades pass, as through Istio's sidecars and gateways.
        upgrade_configs: vec![hcm::http_connection_manager::UpgradeConfig { upgrade_type: "websocket".into(), ..Default::default() }],
        // Istio's default path normalization (`BASE`): routes and policies
        // see `/a/../b` as `/b`, and so does the app.
        normalize_path: Some(weft_envoy_api::pb::google::protobuf::BoolValue { value: true }),
        ..Default::default()
    };
    xds_listener::Listener {
        name: name.to_string(),
        address: Some(socket(ip, port)),
        filter_chains: vec![xds_listener::FilterChain { filters: vec![network_filter(envoy::HCM, &manager)], ..Default::default() }],
        ..Default::default()
    }
}

/// A cluster with one fixed address (the app beside a sidecar, a plugin's
/// module server).
fn static_cluster(name: &str, ip: &str, port: u32) -> xds_cluster::Cluster {
    use xds_cluster::cluster::{ClusterDiscoveryType, DiscoveryType};
    xds_cluster::Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(envoy::duration(std::time::Duration::from_secs(10))),
        load_assignment: Some(xds_endpoint::ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![xds_endpoint::LocalityLbEndpoints {
                lb_endpoints: vec![xds_endpoint::LbEndpoint {
                    host_identifier: Some(xds_endpoint::lb_endpoint::HostIdentifier::Endpoint(xds_endpoint::Endpoint {
                        address: Some(socket(ip, port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}
