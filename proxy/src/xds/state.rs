//! What the ADS client holds, and how one response changes it. Pure: a
//! response in; ACK/NACK and subscription requests, and perhaps a config
//! to serve, out. The stream glue (`stream`) does the I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use weft_envoy_api::pb::envoy::config::bootstrap::v3::Bootstrap;
use weft_envoy_api::pb::envoy::config::cluster::v3::Cluster as XdsCluster;
use weft_envoy_api::pb::envoy::config::core::v3::Node;
use weft_envoy_api::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_envoy_api::pb::envoy::config::listener::v3::Listener as XdsListener;
use weft_envoy_api::pb::envoy::config::route::v3::RouteConfiguration;
use weft_envoy_api::pb::envoy::extensions::filters::network::http_connection_manager::v3 as xds_hcm;
use weft_envoy_api::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use weft_envoy_api::pb::google::rpc::Status;
use weft_envoy_api::prost::Message;

use crate::bootstrap::{LoadError, Loader};
use crate::model::route::RouteTable;
use crate::model::{Cluster, Config, ConfigError, Dynamic};
use crate::sources::{accept_clusters, accept_listeners};

/// How long a listener waits for its route configuration, or a cluster
/// for its endpoints, before it is served without (Envoy's default
/// `initial_fetch_timeout`).
pub const INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// gRPC's INVALID_ARGUMENT, the code Envoy puts in a NACK.
const INVALID_ARGUMENT: i32 = 3;

pub use weft_envoy_api::ResourceType as Kind;

mod delta;


/// Per type: the version accepted, the nonce of the last response and
/// (endpoints, routes) the names subscribed.
#[derive(Debug, Default)]
struct Track {
    version: String,
    nonce: String,
    names: BTreeSet<String>,
}

/// When a resource last changed, and in which response version: what
/// Envoy's `/config_dump` reports for each dynamic resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    pub version: String,
    pub updated: std::time::SystemTime,
}

/// The accepted xDS resources a served config was compiled from.
#[derive(Debug, Default)]
pub struct Held {
    pub resources: Dynamic,
    /// Per type: the version accepted last (`version_info` of the dump).
    pub versions: BTreeMap<Kind, String>,
    /// Per type and name.
    pub stamps: BTreeMap<Kind, BTreeMap<String, Stamp>>,
}

/// What one response leads to.
#[derive(Debug, Default)]
pub struct Step<R = DiscoveryRequest> {
    /// ACK/NACK and subscriptions, state-of-the-world or delta requests.
    pub requests: Vec<R>,
    pub config: Option<Config>,
}

pub struct State {
    bootstrap: Bootstrap,
    node: Node,
    node_sent: bool,
    held: Dynamic,
    /// When each held resource last changed.
    stamps: BTreeMap<Kind, BTreeMap<String, Stamp>>,
    tracks: BTreeMap<Kind, Track>,
    /// Accepted changes not yet served.
    dirty: bool,
    /// Since when a listener or cluster has waited for its routes or
    /// endpoints.
    waiting_since: Option<Instant>,
    /// Subscriptions and resource versions, when the stream is delta xDS.
    delta: delta::Delta,
}

impl State {
    pub fn new(bootstrap: Bootstrap) -> State {
        State {
            node: bootstrap.node.clone().unwrap_or_default(),
            bootstrap,
            node_sent: false,
            held: Dynamic::default(),
            stamps: BTreeMap::new(),
            tracks: Kind::ALL.into_iter().map(|k| (k, Track::default())).collect(),
            dirty: false,
            waiting_since: None,
            delta: delta::Delta::default(),
        }
    }

    /// A new stream: the node again, and every subscription with the
    /// versions held, so the server sends only what changed meanwhile.
    pub fn reconnect(&mut self) -> Vec<DiscoveryRequest> {
        self.node_sent = false;
        for t in self.tracks.values_mut() {
            t.nonce.clear();
        }
        let kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.wildcard_by_default() || !self.tracks[k].names.is_empty()).collect();
        kinds.into_iter().map(|k| self.request(k, None)).collect()
    }

    fn request(&mut self, kind: Kind, error: Option<String>) -> DiscoveryRequest {
        let node = (!self.node_sent).then(|| self.node.clone());
        self.node_sent = true;
        let t = &self.tracks[&kind];
        DiscoveryRequest {
            version_info: t.version.clone(),
            node,
            resource_names: t.names.iter().cloned().collect(),
            type_url: kind.type_url().to_string(),
            response_nonce: t.nonce.clone(),
            error_detail: error.map(|message| Status { code: INVALID_ARGUMENT, message, details: Vec::new() }),
            ..Default::default()
        }
    }

    pub fn on_response(&mut self, resp: &DiscoveryResponse, loader: &Loader, now: Instant) -> Step {
        let Some(kind) = Kind::from_type_url(&resp.type_url) else {
            tracing::warn!(type_url = %resp.type_url, "xDS response of a type weft-proxy does not subscribe to; ignored");
            return Step::default();
        };
        if let Some(t) = self.tracks.get_mut(&kind) {
            t.nonce = resp.nonce.clone();
        }
        let before = self.held.clone();
        let mut errors = match kind {
            Kind::Cluster => self.merge_clusters(resp, loader),
            Kind::Endpoint => self.merge_endpoints(resp, loader),
            Kind::Listener => self.merge_listeners(resp, loader),
            Kind::Route => self.merge_routes(resp, loader),
        };
        // The resources were checked one by one; the whole must compile too.
        // That compiled config is the one served, if it is served now
        // (follow_names below only drops routes and endpoints nothing
        // refers to, which the compiled config does not use).
        let compiled = match Config::compile_with(&self.bootstrap, &self.held) {
            Ok(config) => Some(config),
            Err(e) => {
                self.held = before.clone();
                errors.push(e);
                None
            }
        };
        let mut requests = self.follow_names();
        self.restamp(kind, &before, &resp.version_info);
        if errors.is_empty() {
            if let Some(t) = self.tracks.get_mut(&kind) {
                t.version = resp.version_info.clone();
            }
            requests.push(self.request(kind, None));
        } else {
            let message = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            tracing::warn!(source = kind.api(), version = %resp.version_info, error = %message, "xDS update rejected (NACK); keeping the last good resources");
            requests.push(self.request(kind, Some(message)));
        }
        self.dirty |= self.held != before;
        Step { requests, config: self.publish_compiled(now, compiled) }
    }

    /// When the held config should be served even though something is
    /// still missing.
    pub fn deadline(&self) -> Option<Instant> {
        self.waiting_since.map(|since| since + INITIAL_FETCH_TIMEOUT)
    }

    /// The config to serve, when there are accepted changes and nothing
    /// waits for its routes or endpoints (or has waited long enough).
    pub fn publish(&mut self, now: Instant) -> Option<Config> {
        self.publish_compiled(now, None)
    }

    /// [`publish`](Self::publish) with the held resources already compiled.
    fn publish_compiled(&mut self, now: Instant, compiled: Option<Config>) -> Option<Config> {
        if !self.dirty {
            return None;
        }
        let missing = |kind: Kind, held: &dyn Fn(&str) -> bool| self.tracks[&kind].names.iter().any(|n| !held(n));
        let waiting = missing(Kind::Route, &|n| self.held.routes.contains_key(n))
            || missing(Kind::Endpoint, &|n| self.held.endpoints.contains_key(n));
        if waiting {
            let since = *self.waiting_since.get_or_insert(now);
            if now.duration_since(since) < INITIAL_FETCH_TIMEOUT {
                return None;
            }
            tracing::warn!("routes or endpoints not received within the initial fetch timeout; serving without them");
        }
        self.waiting_since = None;
        self.dirty = false;
        let mut config = compiled.or_else(|| Config::compile_with(&self.bootstrap, &self.held).ok())?;
        config.xds = Some(std::sync::Arc::new(Held {
            resources: self.held.clone(),
            versions: self.tracks.iter().map(|(k, t)| (*k, t.version.clone())).collect(),
            stamps: self.stamps.clone(),
        }));
        Some(config)
    }

    /// Stamps the held resources of `kind` (what a response of that kind
    /// can change) that differ from `before` with `version` and now, and
    /// forgets those of `kind` no longer held. (Routes and endpoints that
    /// nothing names any more keep their stamps until their kind's next
    /// response; the dump only shows what is held.)
    fn restamp(&mut self, kind: Kind, before: &Dynamic, version: &str) {
        let (b, h) = (before, &self.held);
        let (changed, present) = match kind {
            Kind::Cluster => diff(b.clusters.iter().map(|c| (c.name.as_str(), c)), h.clusters.iter().map(|c| (c.name.as_str(), c))),
            Kind::Listener => diff(b.listeners.iter().map(|l| (l.name.as_str(), l)), h.listeners.iter().map(|l| (l.name.as_str(), l))),
            Kind::Route => diff(b.routes.iter().map(|(n, r)| (n.as_str(), r)), h.routes.iter().map(|(n, r)| (n.as_str(), r))),
            Kind::Endpoint => diff(b.endpoints.iter().map(|(n, e)| (n.as_str(), e)), h.endpoints.iter().map(|(n, e)| (n.as_str(), e))),
        };
        let stamp = Stamp { version: version.to_string(), updated: std::time::SystemTime::now() };
        let stamps = self.stamps.entry(kind).or_default();
        stamps.retain(|name, _| present.contains(name.as_str()));
        for name in changed {
            stamps.insert(name.to_string(), stamp.clone());
        }
    }

    /// Subscriptions follow the accepted clusters (EDS service names) and
    /// listeners (RDS names); what nothing names any more is dropped.
    fn follow_names(&mut self) -> Vec<DiscoveryRequest> {
        let eds: BTreeSet<String> = self.held.clusters.iter().filter_map(Cluster::eds_service_name).map(str::to_string).collect();
        let rds: BTreeSet<String> = self.held.listeners.iter().flat_map(rds_names).collect();
        self.held.endpoints.retain(|name, _| eds.contains(name));
        self.held.routes.retain(|name, _| rds.contains(name));
        let mut requests = Vec::new();
        for (kind, names) in [(Kind::Endpoint, eds), (Kind::Route, rds)] {
            if self.tracks[&kind].names != names {
                if let Some(t) = self.tracks.get_mut(&kind) {
                    t.names = names;
                }
                requests.push(self.request(kind, None));
            }
        }
        requests
    }

    fn merge_clusters(&mut self, resp: &DiscoveryResponse, loader: &Loader) -> Vec<ConfigError> {
        match decode_all::<XdsCluster>(resp, Kind::Cluster, loader) {
            Ok(update) => {
                let (clusters, errors) = accept_clusters(update, &self.held.clusters, &self.held.endpoints, "cds");
                self.held.clusters = clusters;
                errors
            }
            Err(e) => vec![e],
        }
    }

    fn merge_listeners(&mut self, resp: &DiscoveryResponse, loader: &Loader) -> Vec<ConfigError> {
        match decode_all::<XdsListener>(resp, Kind::Listener, loader) {
            Ok(update) => {
                let (listeners, errors) = accept_listeners(update, &self.held.listeners, &self.bootstrap, &self.held, "lds");
                self.held.listeners = listeners;
                errors
            }
            Err(e) => vec![e],
        }
    }

    fn merge_routes(&mut self, resp: &DiscoveryResponse, loader: &Loader) -> Vec<ConfigError> {
        let update = match decode_all::<RouteConfiguration>(resp, Kind::Route, loader) {
            Ok(u) => u,
            Err(e) => return vec![e],
        };
        let others = Dynamic { listeners: Vec::new(), ..self.held.clone() };
        let clusters = match Config::compile_with(&self.bootstrap, &others) {
            Ok(config) => config.clusters,
            Err(e) => return vec![e],
        };
        let mut errors = Vec::new();
        for rc in update {
            match RouteTable::compile(&rc, &format!("rds[{}]", rc.name), &clusters, false) {
                Ok(_) => {
                    self.held.routes.insert(rc.name.clone(), rc);
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    fn merge_endpoints(&mut self, resp: &DiscoveryResponse, loader: &Loader) -> Vec<ConfigError> {
        let update = match decode_all::<ClusterLoadAssignment>(resp, Kind::Endpoint, loader) {
            Ok(u) => u,
            Err(e) => return vec![e],
        };
        let mut errors = Vec::new();
        for cla in update {
            match crate::model::cluster::check_assignment(&cla, &format!("eds[{}]", cla.cluster_name)) {
                Ok(()) => {
                    self.held.endpoints.insert(cla.cluster_name.clone(), cla);
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }
}

/// The names in `after` that are new or different from `before`, and all
/// the names in `after`.
fn diff<'a, T: PartialEq + 'a>(
    before: impl Iterator<Item = (&'a str, &'a T)>,
    after: impl Iterator<Item = (&'a str, &'a T)>,
) -> (Vec<&'a str>, BTreeSet<&'a str>) {
    let before: std::collections::HashMap<&str, &T> = before.collect();
    let mut changed = Vec::new();
    let mut present = BTreeSet::new();
    for (name, r) in after {
        if before.get(name) != Some(&r) {
            changed.push(name);
        }
        present.insert(name);
    }
    (changed, present)
}

/// Decodes every resource of a response; one that does not decode or is
/// outside the supported subset rejects the whole response.
fn decode_all<M: Message + Default>(resp: &DiscoveryResponse, kind: Kind, loader: &Loader) -> Result<Vec<M>, ConfigError> {
    resp.resources
        .iter()
        .enumerate()
        .map(|(i, any)| {
            let path = format!("{}.resources[{i}]", kind.api());
            loader.decode_resource::<M>(any, kind.message(), &path).map_err(|e| load_error(e, &path))
        })
        .collect()
}

/// A decoding error as a config error at its path.
fn load_error(e: LoadError, path: &str) -> ConfigError {
    match e {
        LoadError::Unsupported(u) => ConfigError::new(u.path, format!("{} is not supported by weft-proxy", u.what)),
        LoadError::Syntax { origin, message } => ConfigError::new(origin, message),
        other => ConfigError::new(path, other.to_string()),
    }
}

/// The route configuration names a listener's connection managers fetch
/// over RDS.
fn rds_names(l: &XdsListener) -> Vec<String> {
    use xds_hcm::http_connection_manager::RouteSpecifier;
    const HCM: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
    l.filter_chains
        .iter()
        .chain(l.default_filter_chain.iter())
        .flat_map(|c| c.filters.iter())
        .filter_map(|f| match &f.config_type {
            Some(weft_envoy_api::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any))
                if weft_envoy_api::type_name(&any.type_url) == HCM =>
            {
                xds_hcm::HttpConnectionManager::decode(any.value.as_slice()).ok()
            }
            _ => None,
        })
        .filter_map(|hcm| match hcm.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_envoy_api::pb::envoy::config::core::v3::{self as xds_core, config_source::ConfigSourceSpecifier};
    use weft_envoy_api::pb::envoy::config::listener::v3::{filter, Filter, FilterChain};
    use weft_envoy_api::pb::google::protobuf::Any;

    fn any<M: Message + weft_envoy_api::prost::Name>(m: &M) -> Any {
        Any { type_url: M::type_url(), value: m.encode_to_vec() }
    }

    fn ads() -> Option<xds_core::ConfigSource> {
        Some(xds_core::ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::Ads(Default::default())),
            ..Default::default()
        })
    }

    fn response(kind: Kind, version: &str, resources: Vec<Any>) -> DiscoveryResponse {
        DiscoveryResponse { version_info: version.into(), resources, type_url: kind.type_url().to_string(), nonce: format!("n{version}"), ..Default::default() }
    }

    fn eds_cluster(name: &str) -> XdsCluster {
        use weft_envoy_api::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig};
        XdsCluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig { eds_config: ads(), service_name: String::new() }),
            ..Default::default()
        }
    }

    fn rds_listener(name: &str, port: u32, routes: &str) -> XdsListener {
        use xds_hcm::http_connection_manager::RouteSpecifier;
        let router = weft_envoy_api::pb::envoy::extensions::filters::http::router::v3::Router::default();
        let hcm = xds_hcm::HttpConnectionManager {
            stat_prefix: name.into(),
            route_specifier: Some(RouteSpecifier::Rds(xds_hcm::Rds { config_source: ads(), route_config_name: routes.into() })),
            http_filters: vec![xds_hcm::HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(xds_hcm::http_filter::ConfigType::TypedConfig(any(&router))),
                ..Default::default()
            }],
            ..Default::default()
        };
        XdsListener {
            name: name.into(),
            address: Some(xds_core::Address {
                address: Some(xds_core::address::Address::SocketAddress(xds_core::SocketAddress {
                    address: "127.0.0.1".into(),
                    port_specifier: Some(xds_core::socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            filter_chains: vec![FilterChain {
                filters: vec![Filter { name: "hcm".into(), config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))) }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn state() -> (State, Loader) {
        let bootstrap = Bootstrap { node: Some(Node { id: "n".into(), ..Default::default() }), ..Default::default() };
        (State::new(bootstrap), Loader::new())
    }

    #[test]
    fn connects_with_the_node_once_and_wildcards() {
        let (mut s, _) = state();
        let first = s.reconnect();
        let kinds: Vec<_> = first.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(kinds, [Kind::Cluster.type_url(), Kind::Listener.type_url()]);
        assert!(first[0].node.is_some() && first[1].node.is_none(), "node on the first message only");
        assert!(first.iter().all(|r| r.resource_names.is_empty()));
    }

    #[test]
    fn eds_cluster_subscribes_and_waits_for_its_endpoints() {
        let (mut s, loader) = state();
        s.reconnect();
        let t0 = Instant::now();
        let step = s.on_response(&response(Kind::Cluster, "1", vec![any(&eds_cluster("up"))]), &loader, t0);
        let eds = step.requests.iter().find(|r| r.type_url == Kind::Endpoint.type_url()).expect("EDS subscription");
        assert_eq!(eds.resource_names, ["up"]);
        let ack = step.requests.iter().find(|r| r.type_url == Kind::Cluster.type_url()).expect("CDS ACK");
        assert_eq!((ack.version_info.as_str(), ack.response_nonce.as_str(), ack.error_detail.is_none()), ("1", "n1", true));
        assert!(step.config.is_none(), "the cluster warms until its endpoints arrive");
        let cla = ClusterLoadAssignment { cluster_name: "up".into(), ..Default::default() };
        let step = s.on_response(&response(Kind::Endpoint, "1", vec![any(&cla)]), &loader, t0);
        assert!(step.config.is_some_and(|c| c.clusters.contains_key("up")));
    }

    #[test]
    fn listener_waits_for_routes_at_most_the_initial_fetch_timeout() {
        let (mut s, loader) = state();
        s.reconnect();
        let t0 = Instant::now();
        let step = s.on_response(&response(Kind::Listener, "1", vec![any(&rds_listener("l", 1, "main"))]), &loader, t0);
        assert!(step.requests.iter().any(|r| r.type_url == Kind::Route.type_url() && r.resource_names == ["main"]));
        assert!(step.config.is_none());
        assert_eq!(s.deadline(), Some(t0 + INITIAL_FETCH_TIMEOUT));
        assert!(s.publish(t0 + Duration::from_secs(1)).is_none());
        assert!(s.publish(t0 + INITIAL_FETCH_TIMEOUT).is_some_and(|c| c.listeners.len() == 1));
    }

    #[test]
    fn unsupported_field_is_nacked_with_its_path_and_the_rest_kept() {
        let (mut s, loader) = state();
        s.reconnect();
        let mut bad = rds_listener("bad", 2, "main");
        bad.per_connection_buffer_limit_bytes = Some(weft_envoy_api::pb::google::protobuf::UInt32Value { value: 1024 });
        let step = s.on_response(&response(Kind::Listener, "1", vec![any(&bad)]), &loader, Instant::now());
        let nack = step.requests.iter().find(|r| r.type_url == Kind::Listener.type_url()).expect("LDS NACK");
        let message = nack.error_detail.as_ref().map(|e| e.message.as_str()).unwrap_or_default();
        assert!(message.contains("lds.resources[0].per_connection_buffer_limit_bytes"), "{message}");
        assert!(message.contains("not supported by weft-proxy"), "{message}");
        assert_eq!(nack.version_info, "", "a NACK carries the version still held");
        assert!(s.held.listeners.is_empty());
    }

    fn delta(kind: Kind, nonce: &str, resources: Vec<(&str, &str, Any)>, removed: &[&str]) -> weft_envoy_api::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse {
        use weft_envoy_api::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
        DeltaDiscoveryResponse {
            type_url: kind.type_url().to_string(),
            nonce: nonce.into(),
            resources: resources.into_iter().map(|(name, version, any)| Resource { name: name.into(), version: version.into(), resource: Some(any), ..Default::default() }).collect(),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn delta_subscribes_to_what_clusters_name_and_unsubscribes_what_they_drop() {
        let (mut s, loader) = state();
        let first = s.reconnect_delta();
        let kinds: Vec<_> = first.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(kinds, [Kind::Cluster.type_url(), Kind::Listener.type_url()]);
        assert!(first[0].node.is_some() && first[1].node.is_none(), "node on the first message only");
        assert!(first.iter().all(|r| r.resource_names_subscribe.is_empty()), "wildcard");
        let t0 = Instant::now();
        let step = s.on_delta_response(&delta(Kind::Cluster, "c1", vec![("up", "v1", any(&eds_cluster("up"))), ("other", "v1", any(&eds_cluster("other")))], &[]), &loader, t0);
        let eds = step.requests.iter().find(|r| r.type_url == Kind::Endpoint.type_url()).expect("EDS subscription");
        assert_eq!(eds.resource_names_subscribe, ["other", "up"]);
        let ack = step.requests.last().expect("ACK");
        assert_eq!((ack.type_url.as_str(), ack.response_nonce.as_str(), ack.error_detail.is_none()), (Kind::Cluster.type_url(), "c1", true));
        // Only what changed comes next: "other" goes, "up" stays.
        let step = s.on_delta_response(&delta(Kind::Cluster, "c2", vec![], &["other"]), &loader, t0);
        let eds = step.requests.iter().find(|r| r.type_url == Kind::Endpoint.type_url()).expect("EDS change");
        assert!(eds.resource_names_subscribe.is_empty());
        assert_eq!(eds.resource_names_unsubscribe, ["other"]);
        let names: Vec<&str> = s.held.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["up"], "the removal applied, the rest kept");
        let cla = ClusterLoadAssignment { cluster_name: "up".into(), ..Default::default() };
        let step = s.on_delta_response(&delta(Kind::Endpoint, "e1", vec![("up", "e-v1", any(&cla))], &[]), &loader, t0);
        assert!(step.config.is_some_and(|c| c.clusters.contains_key("up")), "served once its endpoints are in");
        // A new stream says what it holds, so only changes are sent.
        let again = s.reconnect_delta();
        let cds = again.iter().find(|r| r.type_url == Kind::Cluster.type_url()).expect("CDS");
        assert_eq!(cds.initial_resource_versions.get("up").map(String::as_str), Some("v1"));
        assert!(!cds.initial_resource_versions.contains_key("other"));
        let eds = again.iter().find(|r| r.type_url == Kind::Endpoint.type_url()).expect("EDS");
        assert_eq!((eds.resource_names_subscribe.clone(), eds.initial_resource_versions.get("up").cloned()), (vec!["up".to_string()], Some("e-v1".into())));
    }

    #[test]
    fn a_rejected_delta_update_is_nacked_and_its_version_not_kept() {
        let (mut s, loader) = state();
        s.reconnect_delta();
        let mut bad = rds_listener("bad", 2, "main");
        bad.per_connection_buffer_limit_bytes = Some(weft_envoy_api::pb::google::protobuf::UInt32Value { value: 1024 });
        let step = s.on_delta_response(&delta(Kind::Listener, "l1", vec![("bad", "v1", any(&bad))], &[]), &loader, Instant::now());
        let nack = step.requests.last().expect("NACK");
        assert_eq!(nack.response_nonce, "l1");
        assert!(nack.error_detail.as_ref().is_some_and(|e| e.message.contains("per_connection_buffer_limit_bytes")), "{nack:?}");
        assert!(s.held.listeners.is_empty());
        let again = s.reconnect_delta();
        assert!(again.iter().all(|r| r.initial_resource_versions.is_empty()), "nothing accepted, nothing claimed");
    }
}

