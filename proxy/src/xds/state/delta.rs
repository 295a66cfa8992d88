//! Incremental (delta) xDS on the same state: a delta response names only
//! what changed, so it is turned into the state-of-the-world response it
//! stands for (clusters and listeners: everything held, with the changes
//! and removals applied; routes and endpoints: the changed ones, removals
//! applied to what is held) and goes through the same checks, NACKs and
//! publishing as [`State::on_response`]. What goes back is in delta terms:
//! the ACK or NACK by nonce, and subscriptions as names added and removed.
//!
//! ```text
//!  DeltaDiscoveryResponse ─► as SotW ─► on_response ─► Step ─► ACK/NACK + (un)subscribe deltas
//! ```
//! Each accepted resource's version is kept, so a new stream sends them
//! (`initial_resource_versions`) and the server sends only what changed
//! meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use weft_envoy_api::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryResponse};
use weft_envoy_api::pb::google::protobuf::Any;
use weft_envoy_api::prost::Message;

use super::{Kind, State, Step};
use crate::bootstrap::Loader;

/// What the delta protocol adds to the state: names subscribed per type
/// (as the server knows them) and the version of each accepted resource.
#[derive(Debug, Default)]
pub struct Delta {
    subscribed: BTreeMap<Kind, BTreeSet<String>>,
    versions: BTreeMap<Kind, BTreeMap<String, String>>,
}

impl State {
    /// A new delta stream: the node again; wildcard clusters and listeners
    /// and the routes and endpoints followed, each with the versions held.
    pub fn reconnect_delta(&mut self) -> Vec<DeltaDiscoveryRequest> {
        self.node_sent = false;
        self.delta.subscribed.clear();
        let kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.wildcard_by_default() || !self.tracks[k].names.is_empty()).collect();
        kinds
            .into_iter()
            .map(|kind| {
                let names: BTreeSet<String> = if kind.wildcard_by_default() { BTreeSet::new() } else { self.tracks[&kind].names.clone() };
                let mut request = self.delta_request(kind);
                request.resource_names_subscribe = names.iter().cloned().collect();
                request.initial_resource_versions = self.delta.versions.get(&kind).map(|v| v.clone().into_iter().collect()).unwrap_or_default();
                self.delta.subscribed.insert(kind, names);
                request
            })
            .collect()
    }

    pub fn on_delta_response(&mut self, resp: &DeltaDiscoveryResponse, loader: &Loader, now: Instant) -> Step<DeltaDiscoveryRequest> {
        let Some(kind) = Kind::from_type_url(&resp.type_url) else {
            tracing::warn!(type_url = %resp.type_url, "xDS delta response of a type weft-proxy does not subscribe to; ignored");
            return Step::default();
        };
        let removed: BTreeSet<&str> = resp.removed_resources.iter().map(String::as_str).collect();
        let updated: Vec<(&str, &Any)> = resp.resources.iter().filter_map(|r| Some((r.name.as_str(), r.resource.as_ref()?))).collect();
        let resources = match kind {
            // State of the world for these: all that is held, changed.
            Kind::Cluster | Kind::Listener => {
                let mut all: BTreeMap<String, Any> = self.held_resources(kind);
                all.retain(|name, _| !removed.contains(name.as_str()));
                for (name, any) in &updated {
                    all.insert(name.to_string(), (*any).clone());
                }
                all.into_values().collect()
            }
            // Merged by name; a removal is applied here.
            Kind::Route | Kind::Endpoint => {
                for name in &removed {
                    if kind == Kind::Route {
                        self.held.routes.remove(*name);
                    } else {
                        self.held.endpoints.remove(*name);
                    }
                }
                self.dirty |= !removed.is_empty();
                updated.iter().map(|(_, any)| (*any).clone()).collect()
            }
        };
        let version = if resp.system_version_info.is_empty() { resp.nonce.clone() } else { resp.system_version_info.clone() };
        let sotw = DiscoveryResponse { version_info: version, resources, type_url: resp.type_url.clone(), nonce: resp.nonce.clone(), ..Default::default() };
        let step = self.on_response(&sotw, loader, now);
        // The ACK or NACK of this response, in delta terms.
        let error = step.requests.iter().find(|r| r.type_url == resp.type_url && r.response_nonce == resp.nonce).and_then(|r| r.error_detail.clone());
        if error.is_none() {
            let versions = self.delta.versions.entry(kind).or_default();
            for name in &removed {
                versions.remove(*name);
            }
            for r in resp.resources.iter().filter(|r| r.resource.is_some()) {
                versions.insert(r.name.clone(), r.version.clone());
            }
        }
        let mut requests = Vec::new();
        // Routes and endpoints follow what the accepted listeners and
        // clusters name.
        for follow in [Kind::Endpoint, Kind::Route] {
            let wanted = self.tracks[&follow].names.clone();
            let had = self.delta.subscribed.get(&follow).cloned().unwrap_or_default();
            if wanted != had {
                let mut request = self.delta_request(follow);
                request.resource_names_subscribe = wanted.difference(&had).cloned().collect();
                request.resource_names_unsubscribe = had.difference(&wanted).cloned().collect();
                if let Some(versions) = self.delta.versions.get_mut(&follow) {
                    versions.retain(|name, _| wanted.contains(name));
                }
                self.delta.subscribed.insert(follow, wanted);
                requests.push(request);
            }
        }
        let mut ack = self.delta_request(kind);
        ack.response_nonce = resp.nonce.clone();
        ack.error_detail = error;
        requests.push(ack);
        Step { requests, config: step.config }
    }

    fn delta_request(&mut self, kind: Kind) -> DeltaDiscoveryRequest {
        let node = (!self.node_sent).then(|| self.node.clone());
        self.node_sent = true;
        DeltaDiscoveryRequest { node, type_url: kind.type_url().to_string(), ..Default::default() }
    }

    /// The held clusters or listeners as the `Any`s a response carries.
    fn held_resources(&self, kind: Kind) -> BTreeMap<String, Any> {
        let any = |name: &str, value: Vec<u8>| (name.to_string(), Any { type_url: kind.type_url().to_string(), value });
        match kind {
            Kind::Cluster => self.held.clusters.iter().map(|c| any(&c.name, c.encode_to_vec())).collect(),
            Kind::Listener => self.held.listeners.iter().map(|l| any(&l.name, l.encode_to_vec())).collect(),
            Kind::Route | Kind::Endpoint => BTreeMap::new(),
        }
    }
}
