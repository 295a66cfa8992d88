//! DNS ServiceEntries through the whole control plane: `weft-operator
//! standalone` turns them into STRICT_DNS / LOGICAL_DNS clusters, and a
//! gateway and a sidecar (bootstrapped by `weft-operator bootstrap`)
//! resolve the names themselves — `localhost` and `*.localhost`, the only
//! names this machine resolves. Envoy and weft-proxy must reach the same
//! upstreams:
//! - an entry with named endpoints and a DestinationRule's subsets over
//!   them (gateway → subset → the endpoint's own port);
//! - an entry without endpoints (its host resolves, on the service port),
//!   from the gateway and from an app through its sidecar;
//! - a DNS_ROUND_ROBIN entry (LOGICAL_DNS, the port's targetPort);
//! - editing an endpoint's port moves the traffic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use weft_e2e::client::send_to;
use weft_e2e::mesh::{until_body, Identity, Operator};
use weft_e2e::{free_port, replace_file, Kind, Request, Upstream};

const ENTRIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: backend }
spec:
  hosts: [backend.example]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [ { number: 80, name: http, protocol: HTTP } ]
  endpoints:
  - { address: localhost, ports: { http: ${V1} }, labels: { version: v1 } }
  - { address: v2.localhost, ports: { http: ${B} }, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: backend }
spec:
  host: backend.example
  subsets: [ { name: v1, labels: { version: v1 } }, { name: v2, labels: { version: v2 } } ]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: api }
spec:
  hosts: [api.localhost]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [ { number: ${C}, name: http, protocol: HTTP } ]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: rr }
spec:
  hosts: [rr.localhost]
  location: MESH_EXTERNAL
  resolution: DNS_ROUND_ROBIN
  ports: [ { number: 81, name: http, protocol: HTTP, targetPort: ${A} } ]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw }
spec:
  selector: { istio: ingressgateway }
  servers: [ { port: { number: ${GW}, name: http, protocol: HTTP }, hosts: ["*"] } ]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: edge }
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [ { uri: { prefix: /v1 } } ]
    route: [ { destination: { host: backend.example, subset: v1 } } ]
  - match: [ { uri: { prefix: /v2 } } ]
    route: [ { destination: { host: backend.example, subset: v2 } } ]
  - match: [ { uri: { prefix: /api } } ]
    route: [ { destination: { host: api.localhost } } ]
  - match: [ { uri: { prefix: /rr } } ]
    route: [ { destination: { host: rr.localhost } } ]
"#;

async fn scenario(kind: Kind, a: &Upstream, b: &Upstream, c: &Upstream) -> Vec<String> {
    let gw_port = free_port();
    let dir: PathBuf = std::env::temp_dir().join(format!("weft-e2e-dns-{}-{kind:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = |u: &Upstream| u.addr.port().to_string();
    let entries = |v1: &Upstream| {
        ENTRIES.replace("${V1}", &port(v1)).replace("${A}", &port(a)).replace("${B}", &port(b)).replace("${C}", &port(c)).replace("${GW}", &gw_port.to_string())
    };
    replace_file(&dir, "entries.yaml", &entries(a));
    let operator = Operator::start(&dir).await.unwrap_or_else(|e| panic!("{e}"));
    let _gateway = operator.proxy(kind, &Identity::INGRESS_GATEWAY).await;
    let sidecar_ip = "127.202.0.1";
    let _sidecar = operator.proxy(kind, &Identity { role: "sidecar", workload: "app", namespace: "default", ip: sidecar_ip, labels: &[("app", "app")] }).await;

    let what = format!("{kind:?}");
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().expect("addr");
    let mut steps = Vec::new();
    for path in ["/v1", "/v2", "/api", "/rr"] {
        let r = send_to(gw, &Request::get(path).header("host", "shop.example")).await.expect("gateway answers");
        steps.push(format!("gateway {path}: {} {}", r.status, r.body_str()));
    }
    // An app calls the services through its sidecar (HTTP_PROXY style).
    let outbound: SocketAddr = format!("{sidecar_ip}:15001").parse().expect("addr");
    for (url, host) in [(format!("http://api.localhost:{}/x", port(c)), format!("api.localhost:{}", port(c))), ("http://rr.localhost:81/x".into(), "rr.localhost:81".into())] {
        let r = send_to(outbound, &Request::get(&url).header("host", &host)).await.expect("sidecar answers");
        steps.push(format!("sidecar {host}: {} {}", r.status, r.body_str()));
    }
    let seen: Vec<String> = [a, b, c].iter().flat_map(|u| u.take().into_iter().map(|s| format!("{} {} host {:?}", u.name, s.path, s.header("host")))).collect();
    steps.push(format!("upstreams saw {seen:?}"));

    // The v1 endpoint moves to another port: traffic follows.
    replace_file(&dir, "entries.yaml", &entries(c));
    let took = until_body(gw, &Request::get("/v1"), "c", &what).await;
    assert!(took < Duration::from_secs(2), "{what}: the move took {took:?}");
    steps.push("v1 moved to c".into());
    let status = operator.status().await;
    assert_eq!(status["proxies"].as_array().map(Vec::len), Some(2), "{what}: gateway and sidecar connected: {status}");
    assert!(status["nacks"].as_object().is_some_and(|n| n.is_empty()), "{what}: no proxy rejected anything: {status}");
    for u in [a, b, c] {
        u.take();
    }
    let _ = std::fs::remove_dir_all(&dir);
    steps
}

#[tokio::test]
async fn dns_service_entries_route_the_same_on_envoy_and_weft() {
    let (a, b, c) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await);
    let envoy = scenario(Kind::Envoy, &a, &b, &c).await;
    let weft = scenario(Kind::Weft, &a, &b, &c).await;
    assert_eq!(envoy, weft, "left Envoy, right weft-proxy");
    let (pa, pc) = (a.addr.port(), c.addr.port());
    assert_eq!(
        envoy[..6],
        [
            "gateway /v1: 200 a".to_string(),
            "gateway /v2: 200 b".into(),
            "gateway /api: 200 c".into(),
            "gateway /rr: 200 a".into(),
            format!("sidecar api.localhost:{pc}: 200 c"),
            "sidecar rr.localhost:81: 200 a".into(),
        ],
        "subsets by endpoint labels, each endpoint's own port; hosts on the service port; DNS_ROUND_ROBIN on its targetPort (upstream a is {pa})"
    );
}
