//! Circuit breakers: max_requests overflows with 503 and
//! x-envoy-overloaded; max_retries caps retries in flight; max_connections
//! makes requests wait for a connection, up to max_pending_requests.

use std::time::Duration;

use weft_e2e::{Kind, Proxy, Request, Upstream};

const BREAKERS: &str = r#"
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: ${ADMIN} } }
static_resources:
  listeners:
  - name: main
    address: { socket_address: { address: 127.0.0.1, port_value: ${LISTEN} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/no-retries" }
                route:
                  cluster: noretry
                  retry_policy: { retry_on: "5xx", num_retries: 3, retry_back_off: { base_interval: 0.001s } }
              - match: { prefix: "/pool" }
                route: { cluster: pool }
              - match: { prefix: "/" }
                route: { cluster: one }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: one
    circuit_breakers:
      thresholds:
      - { priority: DEFAULT, max_requests: 1 }
    load_assignment:
      cluster_name: one
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${UP_up} } } }
  - name: pool
    circuit_breakers:
      thresholds:
      - { max_connections: 1, max_pending_requests: 1 }
    load_assignment:
      cluster_name: pool
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${UP_up} } } }
  - name: noretry
    circuit_breakers:
      thresholds:
      - { max_retries: 0 }
    load_assignment:
      cluster_name: noretry
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${UP_up} } } }
"#;

#[tokio::test]
async fn breakers_match_envoy() {
    let up = Upstream::start("up").await;
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, BREAKERS, &[&up]).await.expect("start");
        up.take();
        let port = proxy.port;
        let slow = tokio::spawn(async move {
            weft_e2e::client::send(port, &Request::get("/").header("x-test-delay-ms", "500")).await
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        let overflow = proxy.send(&Request::get("/")).await.normalized();
        let first = slow.await.expect("join").expect("slow request").normalized();
        let after = proxy.send(&Request::get("/")).await.normalized();
        up.take();
        let no_retry = proxy.send(&Request::get("/no-retries").header("x-test-status", "503")).await.normalized();
        let attempts = up.take().len();
        seen.push((overflow, first.status, after.status, no_retry, attempts));
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    let (overflow, first, after, _, attempts) = &seen[1];
    assert_eq!(overflow.status, 503);
    assert_eq!(overflow.header("x-envoy-overloaded"), Some("true"));
    assert_eq!((*first, *after), (200, 200));
    assert_eq!(*attempts, 1, "max_retries: 0 allows no retry");
}

#[tokio::test]
async fn max_connections_queue_then_overflow_like_envoy() {
    let up = Upstream::start("up").await;
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, BREAKERS, &[&up]).await.expect("start");
        let before = up.connections.load(std::sync::atomic::Ordering::Relaxed);
        // One connection allowed: the first request takes it, the second
        // waits for it, the third finds the queue full.
        let mut tasks = Vec::new();
        for i in 0..3 {
            let port = proxy.port;
            tasks.push(tokio::spawn(async move {
                let r = Request::get(&format!("/pool/{i}")).header("x-test-delay-ms", "400");
                weft_e2e::client::send(port, &r).await
            }));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.expect("join").expect("response").normalized());
        }
        let connections = up.connections.load(std::sync::atomic::Ordering::Relaxed) - before;
        let overflow = proxy.stat("envoy_cluster_upstream_rq_pending_overflow{envoy_cluster_name=\"pool\"}").await;
        seen.push((outcomes, connections, overflow));
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    let (outcomes, connections, overflow) = &seen[1];
    let statuses: Vec<u16> = outcomes.iter().map(|o| o.status).collect();
    assert_eq!(statuses, [200, 200, 503]);
    assert_eq!(outcomes[2].header("x-envoy-overloaded"), Some("true"));
    assert_eq!((*connections, *overflow), (1, Some(1.0)));
}
