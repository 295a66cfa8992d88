//! The operator's ADS server driving a stock Envoy 1.40, over the
//! state-of-the-world and the delta protocol: a proxy started from
//! `weft-operator bootstrap` gets listeners, routes (RDS), clusters and
//! endpoints (EDS), takes updates without restart, and a resource it
//! rejects comes back as a NACK with its reason while it keeps serving the
//! last good config. A proxy is ready (admin `/ready`) only once its first
//! configuration is in place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weft_e2e::client::send;
use weft_e2e::{free_port, Kind, Proxy, Request, Upstream};
use weft_envoy_api::pb::envoy::config::cluster::v3::Cluster;
use weft_envoy_api::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_envoy_api::pb::envoy::config::listener::v3::Listener;
use weft_envoy_api::pb::envoy::config::route::v3::RouteConfiguration;
use weft_operator::bootstrap::{self, Identity};
use weft_operator::xds::hub::ProxyEvent;
use weft_operator::xds::{Event, Hub, Kind as XdsKind, Resource, Role, Snapshot};

/// Decodes an Envoy resource from its JSON form, as a bootstrap would.
fn message<M: prost::Message + Default>(full_name: &str, value: Value) -> M {
    let pool = weft_envoy_api::pool();
    let desc = pool.get_message_by_name(full_name).expect("known message");
    let dynamic = weft_envoy_api::decode_json(desc, &value).unwrap_or_else(|e| panic!("{full_name}: {e}"));
    dynamic.transcode_to().expect("transcode")
}

fn ads() -> Value {
    json!({ "ads": {}, "resource_api_version": "V3" })
}

/// A listener on `port` whose routes come from RDS (`main`), a cluster `up`
/// whose endpoints come from EDS, and those endpoints: `upstream`.
fn snapshot(port: u16, upstream: u16, connect_timeout: &str) -> Snapshot {
    let listener: Listener = message("envoy.config.listener.v3.Listener", json!({
        "name": "main",
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "main",
                "rds": { "route_config_name": "main", "config_source": ads() },
                "http_filters": [{ "name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }],
            },
        }] }],
    }));
    let routes: RouteConfiguration = message("envoy.config.route.v3.RouteConfiguration", json!({
        "name": "main",
        "virtual_hosts": [{ "name": "all", "domains": ["*"], "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": "up" } }] }],
    }));
    let cluster: Cluster = message("envoy.config.cluster.v3.Cluster", json!({
        "name": "up",
        "type": "EDS",
        "connect_timeout": connect_timeout,
        "eds_cluster_config": { "eds_config": ads() },
    }));
    let endpoints: ClusterLoadAssignment = message("envoy.config.endpoint.v3.ClusterLoadAssignment", json!({
        "cluster_name": "up",
        "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": upstream } } } }] }],
    }));
    let mut s = Snapshot::default();
    s.insert(XdsKind::Listener, Resource::new("main", &listener));
    s.insert(XdsKind::Route, Resource::new("main", &routes));
    s.insert(XdsKind::Cluster, Resource::new("up", &cluster));
    s.insert(XdsKind::Endpoint, Resource::new("up", &endpoints));
    s
}

fn serve(hub: &Arc<Hub>) -> u16 {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let port = std_listener.local_addr().expect("addr").port();
    let listener = tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
    tokio::spawn(weft_operator::xds::server::serve(hub.clone(), listener, std::future::pending()));
    port
}

/// The bootstrap `weft-operator bootstrap` prints, with the admin port
/// left for the test kit to fill in (proto JSON reads integers from strings).
fn bootstrap_template(xds_port: u16, delta: bool) -> String {
    let id = Identity {
        role: Role::Sidecar,
        workload: "productpage-v1".into(),
        namespace: "bookinfo".into(),
        ip: "127.0.0.1".into(),
        labels: [("app".to_string(), "productpage".to_string())].into(),
        xds: format!("127.0.0.1:{xds_port}").parse().expect("address"),
        admin_port: 0,
    };
    let mut b = bootstrap::render(&id);
    b["admin"]["address"]["socket_address"]["port_value"] = json!("${ADMIN}");
    b["dynamic_resources"]["ads_config"]["api_type"] = json!(if delta { "DELTA_GRPC" } else { "GRPC" });
    serde_json::to_string_pretty(&b).expect("json")
}

async fn until_body(port: u16, body: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = send(port, &Request::get("/")).await;
        if r.as_ref().is_ok_and(|o| o.body_str() == body) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not served by {body} within 10 s (last: {r:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next_nack(events: &mut tokio::sync::broadcast::Receiver<ProxyEvent>) -> (XdsKind, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(ProxyEvent { event: Event::Nack { kind, message, .. }, .. })) => return (kind, message),
            Ok(Ok(_)) => continue,
            other => panic!("no NACK within 10 s: {other:?}"),
        }
    }
}

async fn scenario(kind: Kind, delta: bool) {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (listen, a_port, b_port) = (free_port(), a.port(), b.port());
    let hub = Hub::new(Arc::new(move |_: &weft_operator::xds::Proxy| snapshot(listen, a_port, "1s")));
    let mut all_events = hub.events();
    let xds_port = serve(&hub);
    let proxy = Proxy::start(kind, &bootstrap_template(xds_port, delta), &[]).await.unwrap_or_else(|e| panic!("{e}"));
    let what = format!("{kind:?} delta={delta}");
    // Ready (/ready 200, which Proxy::start waits for) means initialized:
    // listeners, routes, clusters and endpoints all in place.
    let first = send(listen, &Request::get("/")).await;
    assert_eq!(first.map(|o| o.body_str().to_string()).ok().as_deref(), Some("a"), "{what}: served once ready");
    let connected = hub.proxies();
    assert_eq!(connected.len(), 1, "{what}: one stream");
    assert_eq!(connected[0].namespace, "bookinfo");
    assert_eq!(connected[0].labels.get("app").map(String::as_str), Some("productpage"));

    // An endpoint change alone (EDS) moves the traffic.
    hub.set_generator(Arc::new(move |_: &weft_operator::xds::Proxy| snapshot(listen, b_port, "1s")));
    until_body(listen, "b", &what).await;

    // A cluster the proxy rejects: NACK with its reason, traffic unchanged.
    let mut events = hub.events();
    hub.set_generator(Arc::new(move |_: &weft_operator::xds::Proxy| snapshot(listen, b_port, "-1s")));
    let (nacked, message) = next_nack(&mut events).await;
    assert_eq!(nacked, XdsKind::Cluster, "{what}: {message}");
    assert!(message.contains("duration"), "{what}: the reason says what is wrong: {message}");
    for _ in 0..5 {
        let r = send(listen, &Request::get("/")).await.expect("served");
        assert_eq!(r.body_str(), "b", "{what}: last good config kept");
    }
    // Which protocol the proxy spoke: a state-of-the-world NACK carries the
    // version still held (the last ACKed), a delta NACK the rejected one.
    let (mut acked, mut nacked) = (None, None);
    loop {
        let e = match all_events.try_recv() {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        };
        match e.event {
            Event::Ack { kind: XdsKind::Cluster, version } if nacked.is_none() => acked = Some(version),
            Event::Nack { kind: XdsKind::Cluster, version, .. } => nacked = Some(version),
            _ => {}
        }
    }
    assert!(acked.is_some() && nacked.is_some(), "{what}: {acked:?} {nacked:?}");
    assert_eq!(acked != nacked, delta, "{what}: ACKed {acked:?}, NACKed {nacked:?}");
    drop(proxy);
}

#[tokio::test]
async fn envoy_follows_the_operator_sotw() {
    scenario(Kind::Envoy, false).await;
}

#[tokio::test]
async fn envoy_follows_the_operator_delta() {
    scenario(Kind::Envoy, true).await;
}

#[tokio::test]
async fn weft_follows_the_operator_sotw() {
    scenario(Kind::Weft, false).await;
}

#[tokio::test]
async fn weft_follows_the_operator_delta() {
    scenario(Kind::Weft, true).await;
}

/// What `/config_dump?include_eds` says about the dynamic resources:
/// per type, each resource's name, version and content (for endpoints,
/// which Envoy rebuilds from its host set, the address), plus the types'
/// versions.
async fn dynamic_dump(proxy: &Proxy) -> Vec<String> {
    let r = send(proxy.admin, &Request::get("/config_dump?include_eds")).await.expect("config_dump");
    let dump: Value = serde_json::from_slice(&r.body).expect("config_dump is JSON");
    let configs = dump["configs"].as_array().cloned().unwrap_or_default();
    let of = |kind: &str| configs.iter().find(|c| c["@type"] == format!("type.googleapis.com/envoy.admin.v3.{kind}")).cloned().unwrap_or(Value::Null);
    let mut out = Vec::new();
    let (clusters, listeners, routes, endpoints) = (of("ClustersConfigDump"), of("ListenersConfigDump"), of("RoutesConfigDump"), of("EndpointsConfigDump"));
    out.push(format!("clusters version {}", clusters["version_info"]));
    for c in clusters["dynamic_active_clusters"].as_array().into_iter().flatten() {
        out.push(format!("cluster {} {} {}", c["cluster"]["name"], c["version_info"], c["cluster"]));
    }
    out.push(format!("listeners version {}", listeners["version_info"]));
    for l in listeners["dynamic_listeners"].as_array().into_iter().flatten() {
        out.push(format!("listener {} {} {}", l["name"], l["active_state"]["version_info"], l["active_state"]["listener"]));
    }
    for r in routes["dynamic_route_configs"].as_array().into_iter().flatten() {
        out.push(format!("routes {} {} {}", r["route_config"]["name"], r["version_info"], r["route_config"]));
    }
    for e in endpoints["dynamic_endpoint_configs"].as_array().into_iter().flatten() {
        // Envoy writes these from its host set (health status, weights,
        // no version): compare where they point.
        let address = &e["endpoint_config"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
        out.push(format!("endpoints {} {} {address}", e["endpoint_config"]["cluster_name"], e["version_info"]));
    }
    out
}

/// The same listener port and upstreams for both proxies: the versions
/// hash the resources, ports included.
async fn dump_scenario(kind: Kind, listen: u16, a_port: u16, b_port: u16) -> Vec<String> {
    let hub = Hub::new(Arc::new(move |_: &weft_operator::xds::Proxy| snapshot(listen, a_port, "1s")));
    let xds_port = serve(&hub);
    let proxy = Proxy::start(kind, &bootstrap_template(xds_port, false), &[]).await.unwrap_or_else(|e| panic!("{e}"));
    let mut steps = dynamic_dump(&proxy).await;
    // Only the endpoints change: only their version moves.
    hub.set_generator(Arc::new(move |_: &weft_operator::xds::Proxy| snapshot(listen, b_port, "1s")));
    until_body(listen, "b", &format!("{kind:?}")).await;
    steps.extend(dynamic_dump(&proxy).await);
    drop(proxy);
    steps
}

/// `/config_dump` shows the dynamic resources as Envoy's does: the same
/// names, contents and versions, a resource's version the one of the
/// response that last changed it.
#[tokio::test]
async fn config_dump_shows_dynamic_resources_like_envoy() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let listen = free_port();
    let envoy = dump_scenario(Kind::Envoy, listen, a.port(), b.port()).await;
    let weft = dump_scenario(Kind::Weft, listen, a.port(), b.port()).await;
    assert_eq!(envoy.len(), 12, "{envoy:#?}");
    for (e, w) in envoy.iter().zip(&weft) {
        assert_eq!(e, w, "left Envoy, right weft-proxy");
    }
    assert_eq!(envoy.len(), weft.len(), "{weft:#?}");
    // After the EDS change the cluster keeps its version, the endpoints do not.
    assert_eq!(envoy[1], envoy[7], "the cluster is unchanged");
    assert_ne!(envoy[5], envoy[11], "the endpoints changed");
}
