//! Bookinfo translated for the ingress gateway and a sidecar, compared
//! with checked-in golden files (regenerate with WEFT_UPDATE_GOLDEN=1).

use std::collections::BTreeMap;

use weft_operator::index::Index;
use weft_operator::translate::snapshot;
use weft_operator::validate::validate;
use weft_operator::xds::{Proxy, Role};

use crate::{bookinfo, repo};

pub fn proxy(role: Role, ip: &str, namespace: &str, labels: &[(&str, &str)]) -> Proxy {
    Proxy {
        id: format!("{}~{ip}~x.{namespace}~{namespace}.svc.cluster.local", role.id_prefix()),
        role,
        ip: ip.into(),
        workload: "x".into(),
        namespace: namespace.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }
}

/// Bookinfo's ingress gateway.
fn ingress() -> Proxy {
    proxy(Role::Gateway, "127.0.0.1", "istio-system", &[("istio", "ingressgateway")])
}

/// Bookinfo plus `extra`, all valid, indexed.
fn with_bookinfo(extra: &str) -> std::sync::Arc<Index> {
    let mut resources = bookinfo();
    resources.extend(weft_crds::from_yaml(extra).expect("reads"));
    let validated = validate(&resources);
    assert!(validated.findings.is_empty(), "{:?}", validated.findings);
    std::sync::Arc::new(Index::build(&validated.accepted))
}

fn golden(name: &str, proxy: &Proxy) {
    let index = std::sync::Arc::new(Index::build(&validate(&bookinfo()).accepted));
    compare_golden(name, &snapshot(&index, proxy).to_json());
}

pub fn compare_golden(name: &str, json: &serde_json::Value) {
    let actual = serde_json::to_string_pretty(json).expect("json") + "\n";
    let path = repo(&format!("operator/tests/golden/{name}.json"));
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(expected == actual, "{name}: translation differs from {} (WEFT_UPDATE_GOLDEN=1 regenerates it; review the diff)", path.display());
}

#[test]
fn bookinfo_ingress_gateway() {
    golden("bookinfo-gateway", &ingress());
}

#[test]
fn bookinfo_productpage_sidecar() {
    golden("bookinfo-productpage-sidecar", &proxy(Role::Sidecar, "127.0.1.1", "default", &[("app", "productpage"), ("version", "v1")]));
}

/// What `proxy` is sent for the resources in `yaml` (which must all be
/// accepted).
fn translated(yaml: &str, proxy: &Proxy) -> serde_json::Value {
    let resources = weft_crds::from_yaml(yaml).expect("reads");
    let validated = validate(&resources);
    assert!(validated.findings.is_empty(), "{:?}", validated.findings);
    let index = std::sync::Arc::new(Index::build(&validated.accepted));
    snapshot(&index, proxy).to_json()
}

#[test]
fn consistent_hash_and_port_level_settings() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: web }
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 80, name: http, protocol: HTTP }, { number: 81, name: http-admin, protocol: HTTP } ]
  endpoints: [ { address: 10.0.0.1, labels: { version: v1 } } ]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: web }
spec:
  host: web
  trafficPolicy:
    loadBalancer: { consistentHash: { httpHeaderName: x-user } }
    portLevelSettings:
    - port: { number: 81 }
      loadBalancer: { simple: ROUND_ROBIN }
  subsets:
  - name: v1
    labels: { version: v1 }
    trafficPolicy: { loadBalancer: { consistentHash: { maglev: { tableSize: 65537 }, useSourceIp: true } } }
"#;
    let json = translated(yaml, &proxy(Role::Sidecar, "10.0.0.9", "default", &[]));
    // Proto3 JSON leaves out defaults: no lb_policy is ROUND_ROBIN.
    let lb = |name: &str| json["Cluster"][name]["lb_policy"].as_str().unwrap_or("ROUND_ROBIN").to_string();
    assert_eq!(lb("outbound|80||web.default.svc.cluster.local"), "RING_HASH");
    assert_eq!(lb("outbound|81||web.default.svc.cluster.local"), "ROUND_ROBIN", "port 81's own setting");
    assert_eq!(lb("outbound|80|v1|web.default.svc.cluster.local"), "MAGLEV", "the subset's own policy");
    let vhosts = json["Route"]["http_proxy"]["virtual_hosts"].as_array().expect("vhosts").clone();
    let hash = |vhost: &str| vhosts.iter().find(|v| v["name"] == vhost).map(|v| v["routes"][0]["route"]["hash_policy"].clone());
    assert_eq!(hash("web.default.svc.cluster.local:80"), Some(serde_json::json!([{ "header": { "header_name": "x-user" } }])));
    assert_eq!(hash("web.default.svc.cluster.local:81"), Some(serde_json::Value::Null), "no hashing where the port balances round robin");
}

/// As istiod: gRPC and HTTP/2 ports get HTTP/2 clusters (outbound, and
/// inbound to the app), an HTTP port whose DestinationRule upgrades it
/// too, and the connection pool's idle timeout, requests per connection
/// and connection lifetime become the cluster's common HTTP protocol
/// options.
#[test]
fn grpc_ports_and_http_connection_pools() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: echo }
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 90, name: grpc, protocol: GRPC }, { number: 80, name: http, protocol: HTTP }, { number: 81, name: tcp, protocol: TCP } ]
  endpoints: [ { address: 10.0.0.9, labels: { version: v1 } } ]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: echo }
spec:
  host: echo
  trafficPolicy:
    connectionPool: { http: { maxRequestsPerConnection: 1, idleTimeout: 30s }, tcp: { maxConnectionDuration: 10m, tcpKeepalive: { time: 300s, interval: 5s, probes: 3 } } }
  subsets:
  - name: v1
    labels: { version: v1 }
    trafficPolicy: { connectionPool: { http: { h2UpgradePolicy: UPGRADE } } }
"#;
    let json = translated(yaml, &proxy(Role::Sidecar, "10.0.0.9", "default", &[("version", "v1")]));
    let options = |name: &str| json["Cluster"][name]["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].clone();
    let protocol = |name: &str| {
        let o = options(name);
        match (o["explicit_http_config"]["http2_protocol_options"].is_object(), o["explicit_http_config"]["http_protocol_options"].is_object()) {
            (true, _) => "h2",
            (_, true) => "http/1.1",
            _ => "unset",
        }
    };
    assert_eq!(protocol("outbound|90||echo.default.svc.cluster.local"), "h2");
    assert_eq!(protocol("outbound|80||echo.default.svc.cluster.local"), "http/1.1");
    assert_eq!(protocol("outbound|80|v1|echo.default.svc.cluster.local"), "h2", "the subset upgrades");
    assert_eq!(protocol("outbound|81||echo.default.svc.cluster.local"), "unset", "TCP");
    assert_eq!(protocol("inbound|90||"), "h2", "to the gRPC app");
    assert_eq!(protocol("inbound|80||"), "unset");
    let common = options("outbound|80||echo.default.svc.cluster.local")["common_http_protocol_options"].clone();
    assert_eq!(common, serde_json::json!({ "idle_timeout": "30s", "max_requests_per_connection": 1, "max_connection_duration": "600s" }));
    let keepalive = json["Cluster"]["outbound|80||echo.default.svc.cluster.local"]["upstream_connection_options"]["tcp_keepalive"].clone();
    assert_eq!(keepalive, serde_json::json!({ "keepalive_probes": 3, "keepalive_time": 300, "keepalive_interval": 5 }));
}

#[test]
fn delegated_routes_merge_under_their_root() {
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: shop }
spec:
  hosts: [shop.example]
  gateways: [bookinfo-gateway]
  http:
  - match: [ { uri: { prefix: /reviews } } ]
    delegate: { name: reviews-routes }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews-routes }
spec:
  http:
  - match: [ { uri: { prefix: /reviews/v2 }, headers: { x-beta: { exact: "1" } } } ]
    route: [ { destination: { host: reviews, subset: v2 } } ]
  - match: [ { uri: { prefix: /elsewhere } } ]
    route: [ { destination: { host: reviews, subset: v3 } } ]
  - route: [ { destination: { host: reviews, subset: v1 } } ]
"#;
    let index = with_bookinfo(extra);
    let json = snapshot(&index, &ingress()).to_json();
    let vhosts = json["Route"]["http.8080"]["virtual_hosts"].as_array().expect("vhosts").clone();
    let shop = vhosts.iter().find(|v| v["name"] == "shop.example").expect("the root's host");
    let routes: Vec<String> = shop["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| format!("{} {} -> {}", r["match"]["prefix"], r["match"]["headers"].as_array().map_or(0, Vec::len), r["route"]["cluster"]))
        .collect();
    assert_eq!(
        routes,
        [
            r#""/reviews/v2" 1 -> "outbound|9080|v2|reviews.default.svc.cluster.local""#,
            r#""/reviews" 0 -> "outbound|9080|v1|reviews.default.svc.cluster.local""#,
        ],
        "the /elsewhere route lies outside the root's /reviews and is dropped"
    );
    // A delegate that does not exist is an error on the root.
    let broken = extra.replace("delegate: { name: reviews-routes }", "delegate: { name: nowhere }");
    let mut resources = bookinfo();
    resources.extend(weft_crds::from_yaml(&broken).expect("reads"));
    let paths: Vec<_> = validate(&resources).findings.iter().map(|f| f.message.path.clone().unwrap_or_default()).collect();
    assert_eq!(paths, ["spec.http[0].delegate"]);
}

/// Bookinfo plus WasmPlugins: mesh-wide from the root namespace, by
/// selector in `default`, of several phases and priorities.
const WASM_PLUGINS: &str = r#"
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: { name: auth, namespace: istio-system }
spec:
  url: http://10.0.0.5:8000/auth.wasm
  sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  phase: AUTHN
  failStrategy: FAIL_CLOSE
  match: [ { mode: CLIENT } ]
  vmConfig: { env: [ { name: REGION, value: eu }, { name: HOSTNAME, valueFrom: HOST }, { name: ZONE, value: eu-1 } ] }
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: { name: tagger, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  url: file:///opt/wasm/tagger.wasm
  pluginName: tagger_root
  pluginConfig: { tag: gateway, list: [1, 2] }
  priority: -5
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: { name: stats-low, namespace: default }
spec:
  url: file:///opt/wasm/stats.wasm
  phase: STATS
  priority: 1
  failStrategy: FAIL_OPEN
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: { name: stats-high, namespace: default }
spec:
  selector: { matchLabels: { app: productpage } }
  url: file:///opt/wasm/stats.wasm
  phase: STATS
  priority: 5
  pluginConfig: {}
  match: [ { mode: SERVER } ]
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: { name: reviews-only, namespace: default }
spec:
  selector: { matchLabels: { app: reviews } }
  url: file:///opt/wasm/reviews.wasm
"#;

#[test]
fn wasm_plugins_by_selector_phase_and_priority() {
    let index = with_bookinfo(WASM_PLUGINS);
    let proxies = [
        ("gateway", ingress()),
        ("sidecar", proxy(Role::Sidecar, "127.0.1.1", "default", &[("app", "productpage"), ("version", "v1")])),
    ];
    let mut chains = Vec::new();
    let mut golden = serde_json::Map::new();
    for (role, p) in &proxies {
        let json = snapshot(&index, p).to_json();
        for (name, listener) in json["Listener"].as_object().expect("listeners") {
            let filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"].as_array().expect("http filters");
            let names: Vec<&str> = filters.iter().filter_map(|f| f["name"].as_str()).collect();
            chains.push(format!("{role} {name}: {}", names.join(", ")));
        }
        // The plugins' part of the snapshot: listeners and fetch clusters.
        let clusters: serde_json::Map<_, _> =
            json["Cluster"].as_object().expect("clusters").iter().filter(|(n, _)| n.starts_with("wasm-fetch")).map(|(n, c)| (n.clone(), c.clone())).collect();
        golden.insert(role.to_string(), serde_json::json!({ "Cluster": clusters, "Listener": json["Listener"] }));
    }
    assert_eq!(
        chains,
        [
            "gateway 0.0.0.0_8080: istio-system.auth, envoy.filters.http.cors, envoy.filters.http.fault, istio-system.tagger, envoy.filters.http.router",
            "sidecar virtualInbound: envoy.filters.http.cors, envoy.filters.http.fault, default.stats-high, default.stats-low, envoy.filters.http.router",
            "sidecar virtualOutbound: istio-system.auth, envoy.filters.http.cors, envoy.filters.http.fault, default.stats-low, envoy.filters.http.router",
        ],
        "AUTHN first; STATS by priority, then UNSPECIFIED_PHASE; CLIENT is the gateway and outbound, SERVER inbound; \
         selection by namespace (istio-system is mesh-wide) and labels"
    );
    compare_golden("wasm-plugins", &serde_json::Value::Object(golden));
}

#[test]
fn gateway_tcp_and_tls_passthrough() {
    let index = with_bookinfo(&crate::gateway_tcp_tls());
    let json = snapshot(&index, &ingress()).to_json();
    let listeners = json["Listener"].as_object().expect("listeners");
    assert_eq!(listeners.keys().collect::<Vec<_>>(), ["0.0.0.0_31400", "0.0.0.0_8080", "0.0.0.0_8443"], "HTTP beside TCP and TLS");
    // The gateway's own part of the snapshot: its TCP and TLS listeners.
    let mut golden = listeners.clone();
    golden.remove("0.0.0.0_8080");
    compare_golden("gateway-tcp-tls", &serde_json::Value::Object(golden));
}

#[test]
fn gateways_selected_by_different_labels_get_their_own_routes() {
    use weft_operator::translate::Translation;
    use weft_operator::xds::hub::Generator;
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: internal, namespace: istio-system }
spec:
  selector: { istio: internalgateway }
  servers: [ { port: { number: 8080, name: http, protocol: HTTP }, hosts: ["*"] } ]
"#;
    // One translation serves both, as in the xDS server: its route cache
    // must tell them apart although no rule matches on their labels.
    let translation = Translation::new(with_bookinfo(extra));
    let hosts = |labels: &[(&str, &str)]| {
        let json = translation.snapshot(&proxy(Role::Gateway, "127.0.0.1", "istio-system", labels)).to_json();
        json["Route"]["http.8080"]["virtual_hosts"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(hosts(&[("istio", "ingressgateway")]), 1, "Bookinfo's gateway routes *");
    assert_eq!(hosts(&[("istio", "internalgateway")]), 0, "no VirtualService names the internal gateway");
}
