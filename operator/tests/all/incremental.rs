//! Incremental pushes: each edit is validated, indexed and translated
//! reusing what it did not touch, and must produce exactly what a
//! translation from scratch produces.

use std::sync::Arc;

use weft_crds::Resource;
use weft_operator::index::Index;
use weft_operator::translate::Translation;
use weft_operator::validate::{key_of, validate, Validator};
use weft_operator::xds::hub::Generator;
use weft_operator::xds::{Kind, Role};

use crate::bookinfo;
use crate::translate::proxy;

type Edit = dyn Fn(&[Arc<Resource>]) -> Vec<Arc<Resource>>;

/// `resources` with `yaml`'s resources in place of those of the same
/// kind, namespace and name (appended when new); each a new allocation,
/// as the workspace makes when a file is read again.
fn edit(resources: &[Arc<Resource>], yaml: &str) -> Vec<Arc<Resource>> {
    let mut out = resources.to_vec();
    for r in weft_crds::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}")) {
        let r = Arc::new(r);
        match out.iter().position(|o| key_of(o) == key_of(&r)) {
            Some(i) => out[i] = r,
            None => out.push(r),
        }
    }
    out
}

fn without(resources: &[Arc<Resource>], kind: &str, name: &str) -> Vec<Arc<Resource>> {
    resources.iter().filter(|r| !(key_of(r).kind == kind && key_of(r).name == name)).cloned().collect()
}

const REVIEWS_50_50: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
  - route:
    - { destination: { host: reviews, subset: v1 }, weight: 50 }
    - { destination: { host: reviews, subset: v3 }, weight: 50 }
";

const REVIEWS_HASHED: &str = "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews }
spec:
  host: reviews
  trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: x-user } } }
  subsets: [ { name: v1, labels: { version: v1 } }, { name: v3, labels: { version: v3 } } ]
";

/// Routes for ratings that depend on the calling workload's labels.
const RATINGS_BY_SOURCE: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ratings }
spec:
  hosts: [ratings]
  http:
  - match: [ { sourceLabels: { app: productpage } } ]
    route: [ { destination: { host: ratings, subset: v2 } } ]
  - route: [ { destination: { host: ratings, subset: v1 } } ]
";

/// details' sidecar routes delegated to another VirtualService, and that
/// one as edited next.
const DETAILS_DELEGATED: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: details }
spec:
  hosts: [details]
  http:
  - match: [ { uri: { prefix: /details } } ]
    delegate: { name: details-routes }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: details-routes }
spec:
  http:
  - route: [ { destination: { host: details, subset: v1 } } ]
";

const DETAILS_ROUTES_EDITED: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: details-routes }
spec:
  http:
  - route: [ { destination: { host: details, subset: v2 } } ]
";

const BROKEN: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: details }
spec:
  hosts: [details]
  http:
  - route: [ { destination: { host: details, subset: v9 } } ]
";

#[test]
fn every_edit_translates_as_from_scratch_and_reuses_what_it_did_not_touch() {
    let sidecar = proxy(Role::Sidecar, "127.0.1.1", "default", &[("app", "productpage"), ("version", "v1")]);
    let gateway = proxy(Role::Gateway, "127.0.0.1", "istio-system", &[("istio", "ingressgateway")]);
    let start: Vec<Arc<Resource>> = bookinfo().into_iter().map(Arc::new).collect();
    // Each step edits the resources of the one before.
    let edits: [(&str, &Edit); 8] = [
        ("a VirtualService edited", &|r| edit(r, REVIEWS_50_50)),
        ("a VirtualService on source labels added", &|r| edit(r, RATINGS_BY_SOURCE)),
        ("a delegating VirtualService added", &|r| edit(r, DETAILS_DELEGATED)),
        ("a delegate VirtualService edited", &|r| edit(r, DETAILS_ROUTES_EDITED)),
        ("a VirtualService removed", &|r| without(without(r, "VirtualService", "details").as_slice(), "VirtualService", "details-routes")),
        ("a DestinationRule edited", &|r| edit(r, REVIEWS_HASHED)),
        ("a workload removed", &|r| without(r, "WorkloadEntry", "reviews-v2")),
        ("an invalid VirtualService added", &|r| edit(r, BROKEN)),
    ];
    let mut validator = Validator::default();
    let mut previous = Translation::new(Arc::new(validator.validate(&start).index));
    let mut resources = start.clone();
    for (what, change) in edits {
        resources = change(&resources);
        // As the hub does, the previous translation served every proxy.
        let before = previous.snapshot(&sidecar);
        previous.snapshot(&gateway);
        let next = Translation::after(Arc::new(validator.validate(&resources).index), Some(&previous));
        let plain: Vec<Resource> = resources.iter().map(|r| (**r).clone()).collect();
        let scratch = Translation::new(Arc::new(Index::build(&validate(&plain).accepted)));
        for p in [&sidecar, &gateway] {
            let (got, want) = (next.snapshot(p).to_json(), scratch.snapshot(p).to_json());
            assert!(got == want, "{what}: {} differs from a translation from scratch in {}", p.id, first_difference(&got, &want));
            // The same bytes too (versions hash them).
            for kind in Kind::ALL {
                assert_eq!(next.snapshot(p).version(kind), scratch.snapshot(p).version(kind), "{what}: {kind:?} of {}", p.id);
            }
        }
        let after = next.snapshot(&sidecar);
        // A service's clusters are rebuilt when its registry entry or its
        // DestinationRule changed (both edits here are reviews'), and only
        // then.
        let reused = |host: &str| {
            let cluster = format!("outbound|9080||{host}.default.svc.cluster.local");
            matches!((before.get(Kind::Cluster, &cluster), after.get(Kind::Cluster, &cluster)), (Some(a), Some(b)) if Arc::ptr_eq(a, b))
        };
        let reviews_changed = what.contains("DestinationRule") || what.contains("workload");
        assert_eq!(reused("reviews"), !reviews_changed, "{what}: reviews' clusters reused");
        assert!(reused("details"), "{what}: details' clusters reused");
        previous = next;
    }
}

/// The kind and name of the first resource that differs.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> String {
    let empty = serde_json::Map::new();
    let kinds = |v: &serde_json::Value| v.as_object().cloned().unwrap_or_default();
    let (a, b) = (kinds(a), kinds(b));
    for kind in a.keys().chain(b.keys()) {
        let (ra, rb) = (a.get(kind).and_then(|v| v.as_object()).unwrap_or(&empty), b.get(kind).and_then(|v| v.as_object()).unwrap_or(&empty));
        if let Some(name) = ra.keys().chain(rb.keys()).find(|n| ra.get(*n) != rb.get(*n)) {
            return format!("{kind} {name}: {:?} vs {:?}", ra.get(name), rb.get(name));
        }
    }
    "nothing".into()
}
