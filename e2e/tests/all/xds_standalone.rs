//! The whole control plane on Istio resources: `weft-operator standalone`
//! on a directory, an ingress gateway and two sidecars started from
//! `weft-operator bootstrap`, apps on their workloads' own loopback
//! addresses. The same scenario on Envoy and on weft-proxy must look the
//! same to the client and the apps:
//! - gateway → VirtualService → subset v1 (through v1's sidecar);
//! - an app calls the service through its sidecar (`HTTP_PROXY` style), and
//!   the DestinationRule's consistent hash keeps each user on one host;
//! - editing the VirtualService moves traffic within a second;
//! - a file with an unsupported field is reported and changes nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use weft_e2e::client::send_to;
use weft_e2e::mesh::{until_body, Identity, Operator};
use weft_e2e::{free_port, replace_file, Kind, Request, Upstream};

const REGISTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: web }
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 9080, name: http, protocol: HTTP } ]
  workloadSelector: { labels: { app: web } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: chat }
spec:
  hosts: [chat.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 9090, name: grpc, protocol: GRPC } ]
  endpoints: [ { address: ${IP3} } ]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: web-v1 }
spec:
  address: ${IP1}
  labels: { app: web, version: v1, security.istio.io/tlsMode: istio }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: web-v2 }
spec:
  address: ${IP2}
  labels: { app: web, version: v2, security.istio.io/tlsMode: istio }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: web }
spec:
  host: web
  trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: x-user } } }
  subsets: [ { name: v1, labels: { version: v1 } }, { name: v2, labels: { version: v2 } } ]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw }
spec:
  selector: { istio: ingressgateway }
  servers: [ { port: { number: ${GW}, name: http, protocol: HTTP }, hosts: ["*"] } ]
"#;

fn route_to(subset: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: web }}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [ {{ uri: {{ prefix: /web }} }} ]
    route: [ {{ destination: {{ host: web, subset: {subset} }} }} ]
"#
    )
}

async fn scenario(kind: Kind, net: u8) -> Vec<String> {
    let (ip1, ip2) = (format!("127.200.{net}.1"), format!("127.200.{net}.2"));
    // A gRPC service without a sidecar: the callers' clusters reach it.
    let ip3 = format!("127.200.{net}.3");
    let gw_port = free_port();
    let dir: PathBuf = std::env::temp_dir().join(format!("weft-e2e-standalone-{}-{kind:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let registry = REGISTRY.replace("${IP1}", &ip1).replace("${IP2}", &ip2).replace("${IP3}", &ip3).replace("${GW}", &gw_port.to_string());
    replace_file(&dir, "registry.yaml", &registry);
    replace_file(&dir, "web.yaml", &route_to("v1"));
    let operator = Operator::start(&dir).await.unwrap_or_else(|e| panic!("{e}"));

    let v1 = Upstream::start_on("v1", format!("{ip1}:9080").parse().expect("addr")).await.expect("bind v1");
    let v2 = Upstream::start_on("v2", format!("{ip2}:9080").parse().expect("addr")).await.expect("bind v2");
    let chat = Upstream::start_on("chat", format!("{ip3}:9090").parse().expect("addr")).await.expect("bind chat");
    let _gateway = operator.proxy(kind, &Identity::INGRESS_GATEWAY).await;
    let _s1 = operator.proxy(kind, &Identity { role: "sidecar", workload: "web-v1", namespace: "default", ip: &ip1, labels: &[("app", "web"), ("version", "v1")] }).await;
    let _s2 = operator.proxy(kind, &Identity { role: "sidecar", workload: "web-v2", namespace: "default", ip: &ip2, labels: &[("app", "web"), ("version", "v2")] }).await;

    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().expect("addr");
    let what = format!("{kind:?}");
    let mut steps = Vec::new();
    let page = Request::get("/web/page").header("host", "shop.example");
    // Ready proxies serve at once: gateway → v1's sidecar inbound → v1.
    let r = send_to(gw, &page).await.expect("gateway answers");
    steps.push(format!("gateway: {} {}", r.status, r.body_str()));
    let seen = v1.take();
    steps.push(format!("v1 saw {:?} host {:?}", seen.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), seen.first().and_then(|s| s.header("host"))));
    let r = send_to(gw, &Request::get("/elsewhere")).await.expect("gateway answers");
    // Istio's path normalization: dot segments and escapes resolve before
    // routing, and the app sees the normalized path.
    let dotted = send_to(gw, &Request::get("/elsewhere/../web/%70age").header("host", "shop.example")).await.expect("gateway answers");
    let seen: Vec<String> = v1.take().into_iter().map(|s| s.path).collect();
    steps.push(format!("no route: {}; normalized: {} {seen:?}", r.status, dotted.status));
    // A WebSocket through the gateway and v1's sidecar: the operator lets
    // upgrades through, as Istio does.
    let (status, echoed) = weft_e2e::client::websocket_echo(gw, "shop.example", "/web/ws", "hello").await.expect("gateway answers");
    steps.push(format!("websocket: {status} {echoed:?}"));
    v1.take();

    // An app on v1 calls the service through its sidecar, as HTTP_PROXY
    // clients do (absolute form); no VirtualService for the mesh, so both
    // versions serve.
    let outbound: SocketAddr = format!("{ip1}:15001").parse().expect("addr");
    let mut versions = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let r = send_to(outbound, &Request::get("http://web:9080/api").header("host", "web:9080")).await.expect("sidecar answers");
        versions.insert(r.body_str().to_string());
    }
    steps.push(format!("mesh call reaches {versions:?}"));
    // The DestinationRule's consistent hash: each user sticks to a host,
    // the same one on Envoy and weft-proxy (the ring is Envoy's).
    let mut sticky = Vec::new();
    for user in 0..12 {
        let call = Request::get("http://web:9080/api").header("host", "web:9080").header("x-user", &format!("user-{user}"));
        let first = send_to(outbound, &call).await.expect("sidecar answers").body_str().to_string();
        let again = send_to(outbound, &call).await.expect("sidecar answers").body_str().to_string();
        assert_eq!(first, again, "{what}: user-{user} sticks to one host");
        sticky.push(first);
    }
    steps.push(format!("users land on {sticky:?}"));
    v1.take();
    v2.take();

    // gRPC through the mesh: a GRPC port's clusters speak HTTP/2, so the
    // call reaches the app as HTTP/2 and its status comes back.
    let call = Request::get("/weft.Echo/Say")
        .method("POST")
        .header("host", "chat:9090")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body("\0\0\0\0\x02hi");
    let tcp = tokio::net::TcpStream::connect(outbound).await.expect("connect");
    let r = weft_e2e::client::exchange_h2(tcp, &call, "http").await.expect("sidecar answers");
    let apps: Vec<String> = chat.take().iter().map(|s| format!("{} {}", s.path, s.header(":version").unwrap_or_default())).collect();
    let status: Vec<&(String, String)> = r.trailers.iter().filter(|(k, _)| k == "grpc-status").collect();
    steps.push(format!("grpc: {} {:?} {status:?}; the app saw {apps:?}", r.status, String::from_utf8_lossy(r.body.get(5..).unwrap_or_default())));

    // Editing the rule moves the traffic, within a second.
    replace_file(&dir, "web.yaml", &route_to("v2"));
    let took = until_body(gw, &page, "v2", &what).await;
    assert!(took < Duration::from_secs(1), "{what}: the change took {took:?}");
    steps.push("moved to v2".into());

    // An unsupported field: reported with its path; the rule's last good
    // version stays in effect.
    let bad = route_to("v1").replace("  http:\n", "  exportTo: [\".\"]\n  http:\n");
    replace_file(&dir, "web.yaml", &bad);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = send_to(gw, &page).await.expect("gateway answers");
    steps.push(format!("after a bad edit: {}", r.body_str()));
    assert_eq!(r.body_str(), "v2", "{what}: last good rule kept");
    assert!(operator.log_text().contains("spec.exportTo"), "{what}: the operator names the field: {}", operator.log_text());
    let status = operator.status().await;
    let web = &status["resources"]["VirtualService default/web"];
    assert_eq!(web["conditions"][0]["status"], "False", "{what}: {status}");
    assert_eq!(web["conditions"][0]["reason"], "UnsupportedField", "{what}: {status}");
    assert_eq!(web["validationMessages"][0]["path"], "spec.exportTo", "{what}: {status}");
    assert_eq!(status["resources"]["Gateway default/gw"]["conditions"][0]["status"], "True");
    assert_eq!(status["proxies"].as_array().map(Vec::len), Some(3), "{what}: gateway and two sidecars connected");
    assert!(status["nacks"].as_object().is_some_and(|n| n.is_empty()), "{what}: no proxy rejected anything: {status}");
    let _ = std::fs::remove_dir_all(&dir);
    steps
}

#[tokio::test]
async fn istio_resources_route_the_same_on_envoy_and_weft() {
    // The same addresses for both: a hash ring is built from them.
    let envoy = scenario(Kind::Envoy, 1).await;
    let weft = scenario(Kind::Weft, 1).await;
    assert_eq!(envoy, weft, "left Envoy, right weft-proxy");
    assert_eq!(envoy[0], "gateway: 200 v1");
    assert_eq!(envoy[1], r#"v1 saw ["/web/page"] host Some("shop.example")"#);
    assert_eq!(envoy[2], r#"no route: 404; normalized: 200 ["/web/page"]"#);
    assert_eq!(envoy[3], r#"websocket: HTTP/1.1 101 Switching Protocols "v1:hello""#);
    assert_eq!(envoy[4], r#"mesh call reaches {"v1", "v2"}"#);
    assert_eq!(envoy[6], r#"grpc: 200 "hi" [("grpc-status", "0")]; the app saw ["/weft.Echo/Say HTTP/2.0"]"#);
}

/// The operator reads the directory when something in it changes, not
/// when something reads it: its own reads once woke the watcher again, a
/// rescan every 10 ms while idle (a tenth of the CPU of each push in the
/// push benchmark).
#[tokio::test]
async fn an_idle_directory_is_not_read_again_and_again() {
    let dir = std::env::temp_dir().join(format!("weft-idle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let registry = REGISTRY.replace("${IP1}", "127.0.0.1").replace("${IP2}", "127.0.0.2").replace("${IP3}", "127.0.0.3").replace("${GW}", "8080");
    std::fs::write(dir.join("registry.yaml"), registry).unwrap_or_else(|e| panic!("{e}"));
    let operator = Operator::start_with_env(&dir, &[("RUST_LOG", "weft_operator::standalone=debug")]).await.unwrap_or_else(|e| panic!("{e}"));
    let reads = |log: &str| log.matches("reading the directory").count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = reads(&operator.log_text());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The 1 s poll reads it once or twice in that time.
    let idle = reads(&operator.log_text()) - settled;
    assert!(idle <= 2, "{idle} reads of an unchanged directory in 1.5 s:\n{}", operator.log_text());
    // A change is still heard at once.
    let edited = std::fs::read_to_string(dir.join("registry.yaml")).unwrap_or_default().replace("9080", "9081");
    replace_file(&dir, "registry.yaml", &edited);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let applied = operator.log_text().matches("configuration applied").count();
    assert_eq!(applied, 2, "the first read and the change:\n{}", operator.log_text());
    drop(operator);
    let _ = std::fs::remove_dir_all(&dir);
}
