//! State-of-the-world ADS: what one stream has asked for, what it was sent,
//! and what to send next. Pure: requests and snapshots in, responses and
//! ACK/NACK events out; the gRPC glue lives in `server`.
//!
//! ```text
//!  request(type, names, nonce) ─► stale nonce? ignore
//!                                 error_detail? NACK (keep what was sent: never re-send it)
//!                                 else ACK ─► watch open ─► differs from what was sent? respond
//!  snapshot ─► for each open watch, in push order: differs? respond
//! ```
//! One response per type is outstanding at a time: the next goes out when
//! the proxy has ACKed or NACKed the previous one (its request re-opens the
//! watch), so a proxy never sees two versions race.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;

use weft_envoy_api::pb::envoy::service::discovery::v3::DiscoveryRequest;

use super::wire::Outgoing;

use super::snapshot::{set_version, Kind, Resource, Snapshot};
use super::Event;

/// One SotW stream's subscriptions.
#[derive(Debug, Default)]
pub struct Stream {
    watches: BTreeMap<Kind, Watch>,
    nonces: u64,
}

#[derive(Debug, Default)]
struct Watch {
    wildcard: bool,
    names: BTreeSet<String>,
    /// The proxy is waiting for a response (it answered the last one).
    open: bool,
    /// Nonce and version (of its contents) of the last response.
    sent: Option<(String, String)>,
    /// The version the proxy said it has when the stream opened (a
    /// reconnecting proxy already holding the current config is not sent
    /// it again).
    initial_version: String,
    /// The snapshot's version of the whole kind when this watch was last
    /// answered, and whether its names changed since: when neither did,
    /// nothing it asks for can have changed (no need to look).
    seen_kind_version: String,
    names_changed: bool,
}

impl Stream {
    /// Handles one request; returns the responses to send and what the
    /// request said about the previous response.
    pub fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snapshot: &Snapshot,
    ) -> (Vec<Outgoing>, Option<Event>) {
        let Some(kind) = Kind::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "request for a type the operator does not serve");
            return (Vec::new(), None);
        };
        let watch = self.watches.entry(kind).or_insert_with(|| Watch {
            initial_version: req.version_info.clone(),
            ..Watch::default()
        });
        let event = match &watch.sent {
            // A response we have since replaced: its answer is stale.
            Some((nonce, _)) if !req.response_nonce.is_empty() && *nonce != req.response_nonce => {
                return (Vec::new(), None);
            }
            Some(_) if !req.response_nonce.is_empty() => Some(match &req.error_detail {
                Some(status) => Event::Nack {
                    kind,
                    version: req.version_info.clone(),
                    message: status.message.clone(),
                },
                None => Event::Ack {
                    kind,
                    version: req.version_info.clone(),
                },
            }),
            _ => None,
        };
        watch.wildcard = kind.wildcard_by_default() && req.resource_names.is_empty()
            || req.resource_names.iter().any(|n| n == "*");
        // Proxies repeat their whole subscription in every request (an EDS
        // request names every cluster): compare before copying it.
        let named = || req.resource_names.iter().filter(|n| *n != "*");
        // Envoy lists them sorted, as the set iterates: one pass.
        let same = named().eq(watch.names.iter())
            || named().count() == watch.names.len() && named().all(|n| watch.names.contains(n.as_str()));
        if !same {
            watch.names = named().cloned().collect();
            watch.names_changed = true;
        }
        watch.open = true;
        let response = self.respond(kind, snapshot);
        (response.into_iter().collect(), event)
    }

    /// A new snapshot: responses for every open watch whose resources
    /// changed, clusters first.
    pub fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<Outgoing> {
        Kind::ALL
            .into_iter()
            .filter_map(|kind| self.respond(kind, snapshot))
            .collect()
    }

    fn respond(&mut self, kind: Kind, snapshot: &Snapshot) -> Option<Outgoing> {
        let watch = self.watches.get_mut(&kind)?;
        if !watch.open {
            return None;
        }
        let kind_version = snapshot.version(kind);
        if watch.sent.is_some() && !watch.names_changed && watch.seen_kind_version == kind_version {
            return None;
        }
        watch.seen_kind_version = kind_version.to_string();
        watch.names_changed = false;
        let wanted: Vec<Arc<Resource>> = if watch.wildcard {
            snapshot.of(kind).cloned().collect()
        } else {
            watch.names.iter().filter_map(|n| snapshot.get(kind, n)).cloned().collect()
        };
        // A wildcard watch gets the whole kind, whose version the snapshot
        // has already computed (once for all the proxies sharing its layer).
        // (A kind the snapshot lacks has no version: the set's, of nothing,
        // still answers the proxy's first request.)
        let version = match watch.wildcard && !kind_version.is_empty() {
            true => kind_version.to_string(),
            false => set_version(wanted.iter().map(|r| &**r)),
        };
        match &watch.sent {
            Some((_, sent)) if *sent == version => return None,
            None if version == watch.initial_version => return None,
            // Named resources that do not exist yet: the proxy waits for
            // them (an empty answer would not remove anything anyway).
            None if wanted.is_empty() && !watch.wildcard => return None,
            _ => {}
        }
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        watch.open = false;
        watch.sent = Some((nonce.clone(), version.clone()));
        Some(Outgoing { version_info: version, resources: wanted, type_url: kind.type_url().to_string(), nonce })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::testing::{cluster, endpoints, request};

    fn names(r: &Outgoing) -> usize {
        r.resources.len()
    }

    #[test]
    fn wildcard_then_ack_then_update() {
        let mut s = Stream::default();
        let mut snap = Snapshot::default();
        snap.insert(Kind::Cluster, cluster("a"));
        let (out, ev) = s.on_request(&request(Kind::Cluster, &[], "", ""), &snap);
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), 1);
        assert!(ev.is_none());
        // No change while the response is outstanding, even on a new snapshot.
        snap.insert(Kind::Cluster, cluster("b"));
        assert!(s.on_snapshot(&snap).is_empty());
        // The ACK re-opens the watch; the pending change goes out at once.
        let (out2, ev) = s.on_request(
            &request(Kind::Cluster, &[], &out[0].version_info, &out[0].nonce),
            &snap,
        );
        assert!(matches!(
            ev,
            Some(Event::Ack {
                kind: Kind::Cluster,
                ..
            })
        ));
        assert_eq!(out2.len(), 1);
        assert_eq!(names(&out2[0]), 2);
        // ACK of that one, then an identical snapshot: nothing to send.
        let (out3, _) = s.on_request(
            &request(Kind::Cluster, &[], &out2[0].version_info, &out2[0].nonce),
            &snap,
        );
        assert!(out3.is_empty());
        assert!(s.on_snapshot(&snap.clone()).is_empty());
    }

    #[test]
    fn nack_is_reported_and_not_resent() {
        let mut s = Stream::default();
        let mut snap = Snapshot::default();
        snap.insert(Kind::Cluster, cluster("a"));
        let (out, _) = s.on_request(&request(Kind::Cluster, &[], "", ""), &snap);
        let mut nack = request(Kind::Cluster, &[], "", &out[0].nonce);
        nack.error_detail = Some(weft_envoy_api::pb::google::rpc::Status {
            code: 3,
            message: "bad cluster".into(),
            details: vec![],
        });
        let (again, ev) = s.on_request(&nack, &snap);
        assert!(again.is_empty(), "the rejected version is not re-sent");
        match ev {
            Some(Event::Nack { message, .. }) => assert_eq!(message, "bad cluster"),
            other => panic!("expected a NACK, got {other:?}"),
        }
        // A fixed snapshot goes out.
        snap.insert(Kind::Cluster, cluster("b"));
        assert_eq!(s.on_snapshot(&snap).len(), 1);
    }

    #[test]
    fn stale_nonce_is_ignored() {
        let mut s = Stream::default();
        let mut snap = Snapshot::default();
        snap.insert(Kind::Cluster, cluster("a"));
        let (out, _) = s.on_request(&request(Kind::Cluster, &[], "", ""), &snap);
        let (r, ev) = s.on_request(&request(Kind::Cluster, &[], "", "not-the-nonce"), &snap);
        assert!(r.is_empty() && ev.is_none());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn named_resources_only_and_only_when_they_exist() {
        let mut s = Stream::default();
        let mut snap = Snapshot::default();
        snap.insert(Kind::Endpoint, endpoints("x"));
        let (out, _) = s.on_request(&request(Kind::Endpoint, &["y"], "", ""), &snap);
        assert!(out.is_empty(), "y does not exist yet");
        snap.insert(Kind::Endpoint, endpoints("y"));
        let out = s.on_snapshot(&snap);
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), 1, "only the subscribed name");
        // A change to a resource the proxy did not ask for is not pushed.
        let (_, _) = s.on_request(
            &request(Kind::Endpoint, &["y"], &out[0].version_info, &out[0].nonce),
            &snap,
        );
        snap.insert(Kind::Endpoint, endpoints("x2"));
        assert!(s.on_snapshot(&snap).is_empty());
    }

    #[test]
    fn a_new_name_is_answered_although_nothing_changed() {
        let mut s = Stream::default();
        let mut snap = Snapshot::default();
        snap.insert(Kind::Endpoint, endpoints("x"));
        snap.insert(Kind::Endpoint, endpoints("y"));
        let (out, _) = s.on_request(&request(Kind::Endpoint, &["x"], "", ""), &snap);
        assert_eq!(names(&out[0]), 1);
        // The ACK that also asks for y, which was there all along.
        let (out, _) = s.on_request(&request(Kind::Endpoint, &["x", "y"], &out[0].version_info, &out[0].nonce), &snap);
        assert_eq!(out.len(), 1, "y is sent");
        assert_eq!(names(&out[0]), 2);
    }

    #[test]
    fn reconnect_with_current_version_is_not_resent() {
        let mut snap = Snapshot::default();
        snap.insert(Kind::Cluster, cluster("a"));
        let version = snap.version(Kind::Cluster).to_string();
        let mut s = Stream::default();
        let (out, _) = s.on_request(&request(Kind::Cluster, &[], &version, ""), &snap);
        assert!(out.is_empty());
        snap.insert(Kind::Cluster, cluster("b"));
        assert_eq!(s.on_snapshot(&snap).len(), 1);
    }

    #[test]
    fn pushes_clusters_before_listeners() {
        let mut s = Stream::default();
        let snap = Snapshot::default();
        // Open both watches with empty (wildcard) answers acknowledged.
        for kind in [Kind::Listener, Kind::Cluster] {
            let (out, _) = s.on_request(&request(kind, &[], "", ""), &snap);
            s.on_request(
                &request(kind, &[], &out[0].version_info, &out[0].nonce),
                &snap,
            );
        }
        let mut snap = Snapshot::default();
        snap.insert(Kind::Listener, crate::xds::testing::listener("l"));
        snap.insert(Kind::Cluster, cluster("c"));
        let out = s.on_snapshot(&snap);
        let kinds: Vec<_> = out
            .iter()
            .map(|r| Kind::from_type_url(&r.type_url))
            .collect();
        assert_eq!(kinds, [Some(Kind::Cluster), Some(Kind::Listener)]);
    }
}
