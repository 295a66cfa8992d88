//! Load balancing policies, compared with Envoy by their effect.

use std::time::Duration;

use weft_e2e::{Kind, Proxy, Request, Upstream};

fn bootstrap(policy: &str) -> String {
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: ${{ADMIN}} }} }}
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: ${{LISTEN}} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          route_config:
            virtual_hosts:
            - {{ name: all, domains: ["*"], routes: [ {{ match: {{ prefix: "/" }}, route: {{ cluster: up }} }} ] }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: up
    lb_policy: {policy}
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: ${{UP_slow}} }} }} }}
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: ${{UP_fast}} }} }} }}
"#
    )
}

/// Share of requests the slow host got, with requests arriving faster
/// than it answers (so it always has requests in flight).
async fn slow_share(kind: Kind, policy: &str) -> f64 {
    let slow = Upstream::start_slow("slow", Duration::from_millis(400)).await;
    let fast = Upstream::start("fast").await;
    let proxy = Proxy::start(kind, &bootstrap(policy), &[&slow, &fast]).await.expect("start");
    const N: usize = 80;
    let mut tasks = Vec::new();
    for _ in 0..N {
        let port = proxy.port;
        tasks.push(tokio::spawn(async move { weft_e2e::client::send(port, &Request::get("/")).await }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("response").status, 200);
    }
    slow.count() as f64 / N as f64
}

#[tokio::test]
async fn least_request_avoids_the_busy_host_like_envoy() {
    for kind in Kind::BOTH {
        let least = slow_share(kind, "LEAST_REQUEST").await;
        let round_robin = slow_share(kind, "ROUND_ROBIN").await;
        // Two choices out of two hosts: the busy one wins only when drawn
        // twice (~25%); round robin gives it half.
        assert!(least < 0.42, "{kind:?}: LEAST_REQUEST sent {least:.2} to the slow host");
        assert!((0.40..=0.60).contains(&round_robin), "{kind:?}: ROUND_ROBIN sent {round_robin:.2} to the slow host");
    }
}
