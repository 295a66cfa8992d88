//! The mesh as translation reads it: services with their instances (the
//! registry: ServiceEntry + WorkloadEntry in standalone mode), and the
//! traffic rules by what they apply to.
//!
//! Host names follow Istio: a short name in a VirtualService or
//! DestinationRule means `NAME.NAMESPACE.svc.cluster.local` in the rule's
//! namespace; ServiceEntry hosts are taken as written.

pub mod gateway;
pub mod wasm_plugin;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use weft_crds::common::Labels;
use weft_crds::networking::service_entry::{Location, Resolution, ServicePort};
use weft_crds::networking::{DestinationRuleSpec, GatewaySpec, VirtualServiceSpec, WorkloadEntrySpec};
use weft_crds::Resource;

use wasm_plugin::{Module, Plugin};

/// Istio's inbound capture port: a workload with a sidecar receives the
/// mesh's traffic there (without iptables, peers dial it directly).
pub const INBOUND_PORT: u32 = 15006;
/// The sidecar's outbound listener, used by apps as their `HTTP_PROXY`.
pub const OUTBOUND_PORT: u32 = 15001;
/// The label Istio puts on workloads that have a sidecar.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// A resource's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One address serving a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// An IP address, or for DNS services a host name the proxies resolve.
    pub address: String,
    pub labels: Labels,
    /// Service port name → endpoint port (WorkloadEntry `ports`).
    pub ports: BTreeMap<String, u32>,
    pub weight: Option<u32>,
}

impl Instance {
    /// Whether a sidecar fronts this workload.
    pub fn has_sidecar(&self) -> bool {
        self.labels.get(TLS_MODE_LABEL).is_some_and(|m| m == "istio")
    }

    /// The port peers dial for `port`: the entry's own mapping, else the
    /// sidecar's inbound port, else the service's target port.
    pub fn endpoint_port(&self, port: &ServicePort) -> u32 {
        match self.ports.get(&port.name) {
            Some(p) => *p,
            None if self.has_sidecar() => INBOUND_PORT,
            None => port.target_port.unwrap_or(port.number),
        }
    }

    fn from_entry(e: &WorkloadEntrySpec) -> Option<Instance> {
        Some(Instance { address: e.address.clone()?, labels: e.labels.clone(), ports: e.ports.clone(), weight: e.weight })
    }

    /// A DNS ServiceEntry without endpoints or selector: its host itself,
    /// on each port's target port (istiod's conversion).
    fn from_host(host: &str) -> Instance {
        Instance { address: host.to_string(), labels: Labels::new(), ports: BTreeMap::new(), weight: None }
    }

    /// Whether the address is an IP address (not a name to resolve).
    pub fn has_ip(&self) -> bool {
        self.address.parse::<std::net::IpAddr>().is_ok()
    }
}

/// A service of the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub host: String,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    pub external: bool,
    pub instances: Vec<Instance>,
}

impl Service {
    /// HTTP-family ports (HTTP, HTTP2, GRPC), which get routes.
    pub fn is_http(port: &ServicePort) -> bool {
        let protocol = port.protocol.as_deref().unwrap_or("TCP").to_ascii_uppercase();
        matches!(protocol.as_str(), "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB")
    }

    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// Whether the proxies resolve the instances' names themselves
    /// (`DNS`, `DNS_ROUND_ROBIN`) rather than receive addresses over EDS.
    pub fn resolves_by_dns(&self) -> bool {
        is_dns(self.resolution)
    }
}

/// `DNS` and `DNS_ROUND_ROBIN`: the resolutions whose clusters resolve
/// names (`DYNAMIC_DNS` resolves per request and is not supported).
pub fn is_dns(resolution: Resolution) -> bool {
    matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
}

/// A rule and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule<T> {
    pub key: Key,
    pub spec: T,
}

/// The indexed mesh. Each section is shared (`Arc`) and rebuilt only when
/// the resources it is made of changed: an edit of one VirtualService
/// reuses the registry and the DestinationRules as they were, and so does
/// translation (the clusters of an unchanged registry and rule set are the
/// previous translation's).
#[derive(Debug, Default, Clone)]
pub struct Index {
    /// By host.
    pub services: Arc<BTreeMap<String, Service>>,
    pub virtual_services: Arc<Vec<Rule<VirtualServiceSpec>>>,
    /// Host (as written, and qualified) → the VirtualServices bound to the
    /// sidecars ("mesh") that name it, as indices into `virtual_services`
    /// in their order: translating a sidecar looks up every service's host.
    pub mesh_virtual_services: Arc<HashMap<String, Vec<usize>>>,
    pub destination_rules: Arc<Vec<Rule<DestinationRuleSpec>>>,
    pub gateways: Arc<Vec<Rule<GatewaySpec>>>,
    /// By priority (highest first), then namespace/name: each phase's
    /// chain order.
    pub wasm_plugins: Arc<Vec<Plugin>>,
    /// Service host → index in `destination_rules` of the rule for it.
    rule_for: Arc<BTreeMap<String, usize>>,
    /// The resources each section was built from.
    sources: Sources,
}

/// The inputs of each section of an [`Index`], in order. Holding them
/// keeps their allocations alive, so pointer equality means "the same
/// resource, unchanged" (the workspace keeps an unchanged file's resources).
#[derive(Debug, Default, Clone)]
struct Sources {
    registry: Vec<Arc<Resource>>,
    virtual_services: Vec<Arc<Resource>>,
    destination_rules: Vec<Arc<Resource>>,
    gateways: Vec<Arc<Resource>>,
    wasm_plugins: Vec<Arc<Resource>>,
}

impl Sources {
    fn of(resources: &[Arc<Resource>]) -> Sources {
        let mut s = Sources::default();
        for r in resources {
            let section = match &**r {
                Resource::ServiceEntry(_) | Resource::WorkloadEntry(_) => &mut s.registry,
                Resource::VirtualService(_) => &mut s.virtual_services,
                Resource::DestinationRule(_) => &mut s.destination_rules,
                Resource::Gateway(_) => &mut s.gateways,
                Resource::WasmPlugin(_) => &mut s.wasm_plugins,
                Resource::Mesh(_) => continue,
            };
            section.push(r.clone());
        }
        s
    }
}

fn same(a: &[Arc<Resource>], b: &[Arc<Resource>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

pub fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_else(|| "default".into())
}

fn key(kind: &'static str, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    Key { kind, namespace: namespace_of(meta), name: meta.name.clone().unwrap_or_default() }
}

/// Whether a VirtualService's `gateways` bind it to the sidecars: when
/// empty (Istio's default) or naming "mesh".
pub fn binds_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == "mesh")
}

/// A host as a rule in `namespace` means it.
pub fn qualify(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.contains('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.cluster.local")
    }
}

impl Index {
    /// Indexes resources already validated.
    pub fn build(resources: &[Arc<Resource>]) -> Index {
        Index::rebuild(resources, &Index::default())
    }

    /// Indexes resources already validated, reusing the sections of
    /// `previous` whose resources are the same.
    pub fn rebuild(resources: &[Arc<Resource>], previous: &Index) -> Index {
        let sources = Sources::of(resources);
        let services = if same(&sources.registry, &previous.sources.registry) {
            previous.services.clone()
        } else {
            Arc::new(services(&sources.registry))
        };
        let (virtual_services, mesh_virtual_services) = if same(&sources.virtual_services, &previous.sources.virtual_services) {
            (previous.virtual_services.clone(), previous.mesh_virtual_services.clone())
        } else {
            let rules = rules(&sources.virtual_services, |r| match r {
                Resource::VirtualService(vs) => Some(Rule { key: key("VirtualService", &vs.metadata), spec: vs.spec.clone() }),
                _ => None,
            });
            let by_host = mesh_hosts(&rules);
            (Arc::new(rules), Arc::new(by_host))
        };
        // Which rule is a service's depends on the services too.
        let (destination_rules, rule_for) = if same(&sources.destination_rules, &previous.sources.destination_rules) && Arc::ptr_eq(&services, &previous.services) {
            (previous.destination_rules.clone(), previous.rule_for.clone())
        } else {
            let rules = rules(&sources.destination_rules, |r| match r {
                Resource::DestinationRule(dr) => Some(Rule { key: key("DestinationRule", &dr.metadata), spec: dr.spec.clone() }),
                _ => None,
            });
            let mut rule_for = BTreeMap::new();
            for (i, r) in rules.iter().enumerate() {
                if let Some(service) = service_of(&services, &r.spec.host, &r.key.namespace) {
                    rule_for.entry(service.host.clone()).or_insert(i);
                }
            }
            (Arc::new(rules), Arc::new(rule_for))
        };
        let gateways = if same(&sources.gateways, &previous.sources.gateways) {
            previous.gateways.clone()
        } else {
            Arc::new(rules(&sources.gateways, |r| match r {
                Resource::Gateway(g) => Some(Rule { key: key("Gateway", &g.metadata), spec: g.spec.clone() }),
                _ => None,
            }))
        };
        let wasm_plugins = if same(&sources.wasm_plugins, &previous.sources.wasm_plugins) {
            previous.wasm_plugins.clone()
        } else {
            let mut plugins: Vec<Plugin> = sources
                .wasm_plugins
                .iter()
                .filter_map(|r| match &**r {
                    // A module that does not parse was reported by validation.
                    Resource::WasmPlugin(w) => Module::parse(&w.spec.url, w.spec.sha256.as_deref())
                        .ok()
                        .map(|module| Plugin { key: key("WasmPlugin", &w.metadata), spec: w.spec.clone(), module }),
                    _ => None,
                })
                .collect();
            plugins.sort_by(Plugin::order);
            Arc::new(plugins)
        };
        Index { services, virtual_services, mesh_virtual_services, destination_rules, gateways, wasm_plugins, rule_for, sources }
    }

    /// Whether `other` has the same registry and DestinationRules (the
    /// same sections, not equal ones), all that clusters are made of.
    pub fn same_services_and_rules(&self, other: &Index) -> bool {
        Arc::ptr_eq(&self.services, &other.services) && Arc::ptr_eq(&self.destination_rules, &other.destination_rules)
    }

    /// Whether some VirtualService delegates (its routes then depend on
    /// another VirtualService's).
    pub fn has_delegation(&self) -> bool {
        self.virtual_services.iter().any(|vs| vs.spec.http.iter().any(|h| h.delegate.is_some()))
    }

    /// The service a rule in `namespace` means by `host`.
    pub fn service(&self, host: &str, namespace: &str) -> Option<&Service> {
        service_of(&self.services, host, namespace)
    }

    /// The DestinationRule for a service (the first by name, as Istio
    /// merges none).
    pub fn destination_rule(&self, service: &Service) -> Option<&Rule<DestinationRuleSpec>> {
        self.rule_for.get(&service.host).map(|i| &self.destination_rules[*i])
    }
}

fn service_of<'a>(services: &'a BTreeMap<String, Service>, host: &str, namespace: &str) -> Option<&'a Service> {
    services.get(&qualify(host, namespace)).or_else(|| services.get(host))
}

/// The rules of one kind, sorted: Istio resolves conflicts by age; without
/// timestamps, by name.
fn rules<T>(sources: &[Arc<Resource>], rule: impl Fn(&Resource) -> Option<Rule<T>>) -> Vec<Rule<T>> {
    let mut rules: Vec<Rule<T>> = sources.iter().filter_map(|r| rule(r)).collect();
    rules.sort_by(|a, b| a.key.cmp(&b.key));
    rules
}

/// Host → the VirtualServices bound to the sidecars that name it.
fn mesh_hosts(rules: &[Rule<VirtualServiceSpec>]) -> HashMap<String, Vec<usize>> {
    let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, vs) in rules.iter().enumerate() {
        if !binds_mesh(&vs.spec.gateways) {
            continue;
        }
        for h in &vs.spec.hosts {
            for name in [qualify(h, &vs.key.namespace), h.clone()] {
                let list = by_host.entry(name).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
    }
    by_host
}

/// The registry: every ServiceEntry host, with the instances its
/// endpoints or workload selector give it.
fn services(registry: &[Arc<Resource>]) -> BTreeMap<String, Service> {
    let mut services = BTreeMap::new();
    let entries: Vec<(String, &WorkloadEntrySpec)> = registry
        .iter()
        .filter_map(|r| match &**r {
            Resource::WorkloadEntry(w) => Some((namespace_of(&w.metadata), &w.spec)),
            _ => None,
        })
        .collect();
    let mut by_label: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
    for (i, (ns, e)) in entries.iter().enumerate() {
        for (k, v) in &e.labels {
            by_label.entry((ns.as_str(), k.as_str(), v.as_str())).or_default().push(i);
        }
    }
    for r in registry {
        let Resource::ServiceEntry(se) = &**r else { continue };
        let namespace = namespace_of(&se.metadata);
        let spec = &se.spec;
        let instances: Vec<Instance> = match &spec.workload_selector {
            Some(sel) => {
                // Candidates by the selector's first label, then the rest.
                let candidates: &[usize] = match sel.labels.iter().next() {
                    Some((k, v)) => by_label.get(&(namespace.as_str(), k.as_str(), v.as_str())).map_or(&[], Vec::as_slice),
                    None => &[],
                };
                candidates
                    .iter()
                    .map(|i| entries[*i].1)
                    .filter(|e| sel.labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
                    .filter_map(Instance::from_entry)
                    .collect()
            }
            None => spec.endpoints.iter().filter_map(Instance::from_entry).collect(),
        };
        let resolution = spec.resolution.unwrap_or(Resolution::None);
        // Without endpoints or selector, a DNS entry's hosts are their own
        // endpoints.
        let by_host = is_dns(resolution) && spec.endpoints.is_empty() && spec.workload_selector.is_none();
        for host in &spec.hosts {
            services.insert(
                host.clone(),
                Service {
                    host: host.clone(),
                    namespace: namespace.clone(),
                    ports: spec.ports.clone(),
                    resolution,
                    external: spec.location != Some(Location::MeshInternal),
                    instances: if by_host { vec![Instance::from_host(host)] } else { instances.clone() },
                },
            );
        }
    }
    services
}
