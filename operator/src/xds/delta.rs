//! Incremental (delta) ADS: per resource, what the proxy holds; a response
//! carries only resources whose version changed and the names removed.
//! Pure, like `sotw`.
//!
//! What the proxy holds is updated when a response is sent; a NACK leaves
//! it so (the proxy keeps its old copy, and re-sending the same bytes would
//! be rejected again), so only a new version of a rejected resource goes
//! out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use weft_envoy_api::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as WireResource,
};

use super::snapshot::{Kind, Snapshot};
use super::Event;

#[derive(Debug, Default)]
pub struct Stream {
    watches: BTreeMap<Kind, Watch>,
    nonces: u64,
}

#[derive(Debug, Default)]
struct Watch {
    wildcard: bool,
    names: BTreeSet<String>,
    /// name → version the proxy has (or was last sent). A hash map: each
    /// push looks up every resource of the kind.
    held: HashMap<String, String>,
    /// Versions of the last response, reported in ACK/NACK events.
    last: Option<(String, String)>,
    /// The snapshot's version of the kind when last compared; unchanged
    /// and no subscription change means nothing to send.
    seen_kind_version: Option<String>,
}

impl Stream {
    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snapshot: &Snapshot,
    ) -> (Vec<DeltaDiscoveryResponse>, Option<Event>) {
        let Some(kind) = Kind::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "delta request for a type the operator does not serve");
            return (Vec::new(), None);
        };
        let first = !self.watches.contains_key(&kind);
        let watch = self.watches.entry(kind).or_default();
        let mut event = None;
        if first {
            watch.wildcard = kind.wildcard_by_default() && req.resource_names_subscribe.is_empty();
            watch.held = req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        } else if !req.response_nonce.is_empty() {
            if let Some((nonce, version)) = &watch.last {
                if *nonce == req.response_nonce {
                    event = Some(match &req.error_detail {
                        Some(status) => Event::Nack {
                            kind,
                            version: version.clone(),
                            message: status.message.clone(),
                        },
                        None => Event::Ack {
                            kind,
                            version: version.clone(),
                        },
                    });
                }
            }
        }
        if !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty() || first {
            watch.seen_kind_version = None;
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                watch.wildcard = true;
            } else {
                watch.names.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                watch.wildcard = false;
            } else {
                watch.names.remove(name);
            }
            watch.held.remove(name);
        }
        let response = self.respond(kind, snapshot);
        (response.into_iter().collect(), event)
    }

    pub fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        Kind::ALL
            .into_iter()
            .filter_map(|kind| self.respond(kind, snapshot))
            .collect()
    }

    fn respond(&mut self, kind: Kind, snapshot: &Snapshot) -> Option<DeltaDiscoveryResponse> {
        let watch = self.watches.get_mut(&kind)?;
        let kind_version = snapshot.version(kind);
        if watch.seen_kind_version.as_deref() == Some(kind_version) {
            return None;
        }
        watch.seen_kind_version = Some(kind_version.to_string());
        let subscribed = |name: &str| watch.wildcard || watch.names.contains(name);
        let mut present = 0;
        let changed: Vec<WireResource> = snapshot
            .of(kind)
            .filter(|r| subscribed(&r.name))
            .inspect(|_| present += 1)
            .filter(|r| watch.held.get(&r.name) != Some(&r.version))
            .map(|r| WireResource {
                name: r.name.clone(),
                version: r.version.clone(),
                resource: Some(r.body()),
                ..Default::default()
            })
            .collect();
        // Once the changed are held, a proxy holding exactly as many as are
        // present holds nothing that is gone: no need to look for it.
        let new = changed.iter().filter(|r| !watch.held.contains_key(&r.name)).count();
        let mut removed: Vec<String> = if watch.held.len() + new == present {
            Vec::new()
        } else {
            watch.held.keys().filter(|name| subscribed(name) && snapshot.get(kind, name).is_none()).cloned().collect()
        };
        removed.sort();
        if changed.is_empty() && removed.is_empty() {
            return None;
        }
        for r in &changed {
            watch.held.insert(r.name.clone(), r.version.clone());
        }
        for name in &removed {
            watch.held.remove(name);
        }
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        let version = kind_version.to_string();
        watch.last = Some((nonce.clone(), version.clone()));
        Some(DeltaDiscoveryResponse {
            system_version_info: version,
            resources: changed,
            type_url: kind.type_url().to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::testing::{cluster, endpoints};

    fn delta(kind: Kind, subscribe: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: kind.type_url().into(),
            resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_changes_and_removals_are_sent() {
        let mut s = Stream::default();
        let mut snap = Snapshot::default();
        snap.insert(Kind::Cluster, cluster("a"));
        snap.insert(Kind::Cluster, cluster("b"));
        let (out, _) = s.on_request(&delta(Kind::Cluster, &[], ""), &snap);
        assert_eq!(out[0].resources.len(), 2);
        let (none, ev) = s.on_request(&delta(Kind::Cluster, &[], &out[0].nonce), &snap);
        assert!(none.is_empty());
        assert!(matches!(ev, Some(Event::Ack { .. })));

        let mut next = Snapshot::default();
        next.insert(Kind::Cluster, cluster("a"));
        next.insert(Kind::Cluster, cluster("c"));
        let out = s.on_snapshot(&next);
        assert_eq!(out.len(), 1);
        let sent: Vec<_> = out[0].resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(sent, ["c"], "a is unchanged");
        assert_eq!(out[0].removed_resources, ["b"]);
    }

    #[test]
    fn initial_versions_are_not_resent_and_nack_is_reported() {
        let mut snap = Snapshot::default();
        snap.insert(Kind::Endpoint, endpoints("x"));
        snap.insert(Kind::Endpoint, endpoints("y"));
        let held = snap
            .get(Kind::Endpoint, "x")
            .map(|r| r.version.clone())
            .unwrap_or_default();
        let mut req = delta(Kind::Endpoint, &["x", "y"], "");
        req.initial_resource_versions.insert("x".into(), held);
        let mut s = Stream::default();
        let (out, _) = s.on_request(&req, &snap);
        let sent: Vec<_> = out[0].resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(sent, ["y"]);
        let mut nack = delta(Kind::Endpoint, &[], &out[0].nonce);
        nack.error_detail = Some(weft_envoy_api::pb::google::rpc::Status {
            code: 3,
            message: "no".into(),
            details: vec![],
        });
        let (again, ev) = s.on_request(&nack, &snap);
        assert!(again.is_empty());
        assert!(matches!(ev, Some(Event::Nack { .. })));
    }

    #[test]
    fn unsubscribe_stops_updates() {
        let mut snap = Snapshot::default();
        snap.insert(Kind::Endpoint, endpoints("x"));
        let mut s = Stream::default();
        let (out, _) = s.on_request(&delta(Kind::Endpoint, &["x"], ""), &snap);
        assert_eq!(out.len(), 1);
        let mut unsub = delta(Kind::Endpoint, &[], &out[0].nonce);
        unsub.resource_names_unsubscribe = vec!["x".into()];
        s.on_request(&unsub, &snap);
        let mut next = Snapshot::default();
        next.insert(Kind::Endpoint, endpoints("x2"));
        assert!(s.on_snapshot(&next).is_empty());
    }
}
