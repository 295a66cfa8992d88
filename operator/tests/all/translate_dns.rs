//! DNS ServiceEntries (`resolution: DNS` / `DNS_ROUND_ROBIN`): STRICT_DNS
//! and LOGICAL_DNS clusters with their endpoints' names inline, as istiod
//! builds them, compared with a golden file; their validation.

use std::sync::Arc;

use weft_operator::index::Index;
use weft_operator::translate::snapshot;
use weft_operator::validate::validate;
use weft_operator::xds::Role;

use crate::translate::{compare_golden, proxy};
use crate::{bookinfo, repo};

const ENTRIES: &str = r#"
# Endpoints by name (one by IP), mapped ports, labels for subsets.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: db }
spec:
  hosts: [db.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [ { number: 5432, name: tcp-pg, protocol: TCP }, { number: 80, name: http, protocol: HTTP, targetPort: 8080 } ]
  endpoints:
  - { address: db-1.example.com, labels: { version: v1 }, ports: { http: 9090 } }
  - { address: db-2.example.com, labels: { version: v2 } }
  - { address: 10.1.0.3, labels: { version: v2 } }
---
# No endpoints: each host is its own endpoint.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: api }
spec:
  hosts: [api.example.com, www.example.com]
  ports: [ { number: 443, name: https, protocol: HTTPS } ]
  resolution: DNS
---
# DNS_ROUND_ROBIN: LOGICAL_DNS, one endpoint.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: rr }
spec:
  hosts: [rr.example.com]
  ports: [ { number: 80, name: http, protocol: HTTP, targetPort: 8000 } ]
  resolution: DNS_ROUND_ROBIN
---
# WorkloadEntries selected by a DNS entry (one by name, one by IP) and by
# a STATIC one (which, as istiod, leaves the name out of EDS).
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: vms }
spec:
  hosts: [vms.example.com]
  location: MESH_INTERNAL
  ports: [ { number: 80, name: http, protocol: HTTP } ]
  resolution: DNS
  workloadSelector: { labels: { app: vm } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: vms-static }
spec:
  hosts: [vms-static.example.com]
  location: MESH_INTERNAL
  ports: [ { number: 80, name: http, protocol: HTTP } ]
  resolution: STATIC
  workloadSelector: { labels: { app: vm } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: vm-1 }
spec: { address: vm-1.example.com, labels: { app: vm }, ports: { http: 8081 } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: vm-2 }
spec: { address: 10.2.0.2, labels: { app: vm } }
---
# A policy and subsets over a DNS entry; v3 selects no endpoint.
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: db }
spec:
  host: db.example.com
  trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN }, connectionPool: { tcp: { maxConnections: 10 } } }
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 }, trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: x-user } } } }
  - { name: v3, labels: { version: v3 } }
"#;

/// Bookinfo, the entries above and the egress sample of bookinfo-rules.
fn resources() -> Vec<weft_crds::Resource> {
    let mut resources = bookinfo();
    resources.extend(weft_crds::from_yaml(ENTRIES).expect("reads"));
    let sample = std::fs::read_to_string(repo("config/samples/bookinfo-rules/service-entry-googleapis.yaml")).expect("sample");
    resources.extend(weft_crds::from_yaml(&sample).expect("reads"));
    resources
}

fn is_bookinfo(name: &str) -> bool {
    name.ends_with(".default.svc.cluster.local") || name.starts_with("inbound|")
}

#[test]
fn dns_entries_become_dns_clusters_with_inline_endpoints() {
    let validated = validate(&resources());
    let findings: Vec<String> = validated.findings.iter().map(ToString::to_string).collect();
    assert_eq!(findings.len(), 2, "{findings:#?}");
    assert!(findings[0].starts_with("Warning [WFT0002] (ServiceEntry default/vms) spec.workloadSelector: workloadSelector should not be set"), "istioctl's warning: {findings:#?}");
    assert!(findings[1].starts_with("Warning [WFT0002] (ServiceEntry default/vms-static) spec.workloadSelector: selects a WorkloadEntry whose address \"vm-1.example.com\""), "{findings:#?}");
    let index = Arc::new(Index::build(&validated.accepted));
    let json = snapshot(&index, &proxy(Role::Sidecar, "127.0.1.1", "default", &[("app", "productpage"), ("version", "v1")])).to_json();
    let ours = |kind: &str| -> serde_json::Map<String, serde_json::Value> {
        json[kind].as_object().expect(kind).iter().filter(|(n, _)| !is_bookinfo(n)).map(|(n, v)| (n.clone(), v.clone())).collect()
    };
    let (clusters, endpoints) = (ours("Cluster"), ours("Endpoint"));
    let kinds: Vec<String> = clusters.iter().map(|(n, c)| format!("{n} {}", c["type"].as_str().unwrap_or("?"))).collect();
    assert_eq!(
        kinds,
        [
            "outbound|443||api.example.com STRICT_DNS",
            "outbound|443||www.example.com STRICT_DNS",
            "outbound|443||www.googleapis.com STRICT_DNS",
            "outbound|5432|v1|db.example.com STRICT_DNS",
            "outbound|5432|v2|db.example.com STRICT_DNS",
            "outbound|5432||db.example.com STRICT_DNS",
            "outbound|80|v1|db.example.com STRICT_DNS",
            "outbound|80|v2|db.example.com STRICT_DNS",
            "outbound|80||db.example.com STRICT_DNS",
            "outbound|80||rr.example.com LOGICAL_DNS",
            "outbound|80||vms-static.example.com EDS",
            "outbound|80||vms.example.com STRICT_DNS",
        ],
        "a cluster per port and subset, none for the subset without endpoints (v3)"
    );
    let names: Vec<&String> = endpoints.keys().collect();
    assert_eq!(names, ["outbound|80||vms-static.example.com"], "EDS only for the STATIC entry");
    assert_eq!(endpoints["outbound|80||vms-static.example.com"]["endpoints"][0]["lb_endpoints"].as_array().map(Vec::len), Some(1), "the name is left out of EDS");
    compare_golden("dns-service-entries", &serde_json::json!({ "Cluster": clusters, "Endpoint": endpoints }));
}

#[test]
fn dns_clusters_resolve_the_proxy_s_family() {
    let index = Arc::new(Index::build(&validate(&resources()).accepted));
    let family = |ip: &str, cluster: &str| {
        let json = snapshot(&index, &proxy(Role::Gateway, ip, "istio-system", &[("istio", "ingressgateway")])).to_json();
        json["Cluster"][cluster]["dns_lookup_family"].as_str().unwrap_or("AUTO").to_string()
    };
    assert_eq!(family("127.0.0.1", "outbound|443||www.googleapis.com"), "V4_ONLY");
    assert_eq!(family("fd00::1", "outbound|443||www.googleapis.com"), "V6_ONLY");
    assert_eq!(family("fd00::1", "outbound|80|v1|db.example.com"), "V6_ONLY");
    assert_eq!(family("fd00::1", "outbound|9080||reviews.default.svc.cluster.local"), "AUTO", "EDS clusters resolve nothing");
}
