//! Config updates without restart, against Envoy: listeners and clusters
//! from files (`path_config_source`) are replaced by `mv` while traffic
//! runs. Added, changed and removed listeners, a changed cluster, a bad
//! update (rejected, last good config kept) and a request in flight across
//! the swap must look the same to clients and upstreams on both proxies.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use weft_e2e::client::send;
use weft_e2e::{free_port, replace_file, Kind, Proxy, Request, Upstream};

const BOOTSTRAP: &str = r#"
node: { id: test-node, cluster: test }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: ${ADMIN} } }
dynamic_resources:
  cds_config: { resource_api_version: V3, path_config_source: { path: "${DIR}/cds.yaml" } }
  lds_config: { resource_api_version: V3, path_config_source: { path: "${DIR}/lds.yaml" } }
"#;

fn cluster(name: &str, port: u16) -> String {
    format!(
        r#"- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: {name}
  connect_timeout: 1s
  load_assignment:
    cluster_name: {name}
    endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }} ] }} ]
"#
    )
}

/// A listener whose single route is `route` (a RouteAction or a
/// direct_response, as a flow mapping entry) for paths matching `regex`.
fn listener(name: &str, port: u16, regex: &str, action: &str) -> String {
    format!(
        r#"- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: {name}
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: {name}
        route_config:
          virtual_hosts:
          - {{ name: all, domains: ["*"], routes: [ {{ match: {{ safe_regex: {{ regex: "{regex}" }} }}, {action} }} ] }}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#
    )
}

fn resources(items: &[String]) -> String {
    format!("resources:\n{}", items.concat())
}

/// Sends until `done` holds for the response (or the connection error),
/// within five seconds: how long an update takes to show is not compared.
async fn until(port: u16, req: &Request, done: impl Fn(&std::io::Result<weft_e2e::Observed>) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = send(port, req).await;
        if done(&r) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: update not applied within 5 s (last: {r:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the admin's /clusters lists `name`.
async fn cluster_known(proxy: &Proxy, name: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = send(proxy.admin, &Request::get("/clusters")).await.is_ok_and(|r| r.body_str().contains(&format!("{name}::")));
        if listed {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: cluster {name} not added within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn from(r: &std::io::Result<weft_e2e::Observed>, body: &str) -> bool {
    r.as_ref().is_ok_and(|o| o.body_str() == body)
}

/// One step's view: the response (or "refused") and which upstreams saw it.
fn outcome(r: std::io::Result<weft_e2e::Observed>, ups: &[&Upstream]) -> String {
    let response = match r {
        Ok(o) => format!("{:?}", o.normalized()),
        Err(_) => "refused".into(),
    };
    let seen: Vec<String> = ups.iter().flat_map(|u| u.take().into_iter().map(|s| format!("{} {}", u.name, s.path))).collect();
    format!("{response} <- {seen:?}")
}

async fn scenario(kind: Kind, a: &Upstream, b: &Upstream) -> Vec<String> {
    let dir: PathBuf = std::env::temp_dir().join(format!("weft-e2e-dynamic-{}-{kind:?}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (l1, l2) = (free_port(), free_port());
    let ups = [a, b];
    let to = |c: &str| format!("route: {{ cluster: {c} }}");
    let answer = r#"direct_response: { status: 200, body: { inline_string: "two" } }"#;
    replace_file(&dir, "cds.yaml", &resources(&[cluster("ca", a.port())]));
    replace_file(&dir, "lds.yaml", &resources(&[listener("one", l1, "/.*", &to("ca"))]));
    let template = BOOTSTRAP.replace("${DIR}", &dir.display().to_string());
    let proxy = Proxy::start(kind, &template, &[]).await.unwrap_or_else(|e| panic!("{e}"));
    let get = |p: &str| Request::get(p).header("host", "svc.local");
    let mut steps = Vec::new();

    until(l1, &get("/warm"), |r| from(r, "a"), &format!("{kind:?} /warm on l1")).await;
    a.take();
    steps.push(outcome(send(l1, &get("/first")).await, &ups));

    // A request in flight while its listener is replaced.
    let slow = tokio::spawn(async move { send(l1, &Request::get("/slow").header("host", "svc.local").header("x-test-delay-ms", "1500")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    replace_file(&dir, "cds.yaml", &resources(&[cluster("ca", a.port()), cluster("cb", b.port())]));
    // Clusters first, as a control plane orders them: Envoy rejects a
    // listener whose routes name a cluster it does not have yet.
    cluster_known(&proxy, "cb", &format!("{kind:?}")).await;
    replace_file(&dir, "lds.yaml", &resources(&[listener("one", l1, "/.*", &to("cb")), listener("two", l2, "/.*", answer)]));
    until(l1, &get("/probe"), |r| from(r, "b"), &format!("{kind:?} /probe on l1")).await;
    until(l2, &get("/probe"), |r| from(r, "two"), &format!("{kind:?} /probe on l2")).await;
    ups.iter().for_each(|u| drop(u.take()));
    steps.push(outcome(slow.await.expect("join"), &ups));
    steps.push(outcome(send(l1, &get("/after")).await, &ups));
    steps.push(outcome(send(l2, &get("/new")).await, &ups));

    // A bad update changes nothing.
    replace_file(&dir, "lds.yaml", &resources(&[listener("one", l1, "/[unclosed", &to("ca"))]));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    steps.push(outcome(send(l1, &get("/kept")).await, &ups));
    steps.push(outcome(send(l2, &get("/kept")).await, &ups));

    // Removing a listener closes its port.
    replace_file(&dir, "lds.yaml", &resources(&[listener("one", l1, "/.*", &to("cb"))]));
    until(l2, &get("/gone"), |r| r.is_err(), &format!("{kind:?} /gone on l2")).await;
    ups.iter().for_each(|u| drop(u.take()));
    steps.push(outcome(send(l2, &get("/gone")).await, &ups));

    // A cluster change alone reaches the unchanged listener.
    replace_file(&dir, "cds.yaml", &resources(&[cluster("ca", a.port()), cluster("cb", a.port())]));
    until(l1, &get("/probe"), |r| from(r, "a"), &format!("{kind:?} /probe on l1")).await;
    ups.iter().for_each(|u| drop(u.take()));
    steps.push(outcome(send(l1, &get("/moved")).await, &ups));
    steps
}

#[tokio::test]
async fn listener_and_cluster_updates_from_files_match_envoy() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let envoy = scenario(Kind::Envoy, &a, &b).await;
    let weft = scenario(Kind::Weft, &a, &b).await;
    for (i, (e, w)) in envoy.iter().zip(&weft).enumerate() {
        assert_eq!(e, w, "step {i}: left Envoy, right weft-proxy");
    }
    // The steps showed what they name: the in-flight request finished on
    // the old route, the changed listener moved to b, a bad listener kept
    // its old version while the update still removed "two" (Envoy's
    // state-of-the-world update), and a cluster change alone took effect.
    let expect = [
        ("a /first", "body: b\"a\""),
        ("status: 200", "body: b\"a\""),
        ("b /after", "body: b\"b\""),
        ("[]", "body: b\"two\""),
        ("b /kept", "body: b\"b\""),
        ("refused", "refused"),
        ("refused", "refused"),
        ("a /moved", "body: b\"a\""),
    ];
    for (i, (step, (x, y))) in weft.iter().zip(expect).enumerate() {
        assert!(step.contains(x) && step.contains(y), "step {i}: {step}");
    }
}

/// An HTTP/2 connection open on a listener that an update replaces: what a
/// request on it finds right after, and whether the proxy closes it.
async fn h2_across_a_replace(kind: Kind, a: &Upstream, b: &Upstream) -> String {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let dir: PathBuf = std::env::temp_dir().join(format!("weft-e2e-h2-drain-{}-{kind:?}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let to = |c: &str| format!("route: {{ cluster: {c} }}");
    replace_file(&dir, "cds.yaml", &resources(&[cluster("ca", a.port()), cluster("cb", b.port())]));
    replace_file(&dir, "lds.yaml", &resources(&[listener("one", port, "/.*", &to("ca"))]));
    let template = BOOTSTRAP.replace("${DIR}", &dir.display().to_string());
    let proxy = Proxy::start(kind, &template, &[]).await.unwrap_or_else(|e| panic!("{e}"));
    let get = |p: &str| Request::get(p).header("host", "svc.local");
    until(port, &get("/warm"), |r| from(r, "a"), &format!("{kind:?} /warm")).await;

    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2 handshake");
    let mut conn = tokio::spawn(conn);
    let mut ask = async |path: &str| -> String {
        let req = hyper::Request::get(format!("http://svc.local{path}")).body(http_body_util::Empty::<bytes::Bytes>::new()).expect("request");
        match sender.send_request(req).await {
            Ok(resp) => String::from_utf8_lossy(&resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default()).into_owned(),
            Err(_) => "refused".into(),
        }
    };
    let before = ask("/before").await;
    replace_file(&dir, "lds.yaml", &resources(&[listener("one", port, "/.*", &to("cb"))]));
    until(port, &get("/probe"), |r| from(r, "b"), &format!("{kind:?} /probe")).await;
    let closed = tokio::time::timeout(Duration::from_secs(3), &mut conn).await.is_ok();
    let after = ask("/after").await;
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
    format!("before the update: {before}; closed by the proxy within 3s: {closed}; after: {after}")
}

/// A replaced listener drains its HTTP/2 connections with GOAWAY, as it
/// closes HTTP/1.1 ones after their request: a long-lived gRPC connection
/// would otherwise keep the old routes and filters (a new policy never
/// reaching it). Envoy drains too, but gradually over its drain time
/// (600 s by default): right after the update its connection still serves
/// the old routes. weft-proxy's drain of a replaced listener is at once,
/// on purpose, for both protocols.
#[tokio::test]
async fn a_replaced_listener_drains_its_http2_connections() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let envoy = h2_across_a_replace(Kind::Envoy, &a, &b).await;
    let weft = h2_across_a_replace(Kind::Weft, &a, &b).await;
    assert_eq!(envoy, "before the update: a; closed by the proxy within 3s: false; after: a");
    assert_eq!(weft, "before the update: a; closed by the proxy within 3s: true; after: refused");
}
