//! Retry policies, timeouts and upstream failures: status, body and the
//! number of upstream attempts must match Envoy.

use std::time::{Duration, Instant};

use weft_e2e::{Kind, Proxy, Request, Upstream};

use crate::assert_same_on_both;

const RETRIES: &str = r#"
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
              retry_policy: { retry_on: "5xx", num_retries: 1 }
              routes:
              - match: { prefix: "/5xx" }
                route:
                  cluster: up
                  retry_policy:
                    retry_on: "5xx"
                    num_retries: 3
                    retry_back_off: { base_interval: 0.001s, max_interval: 0.002s }
              - match: { prefix: "/gateway" }
                route:
                  cluster: up
                  retry_policy:
                    retry_on: "gateway-error"
                    num_retries: 2
                    retry_back_off: { base_interval: 0.001s, max_interval: 0.002s }
              - match: { prefix: "/codes" }
                route:
                  cluster: up
                  retry_policy:
                    retry_on: "retriable-status-codes,retriable-4xx"
                    retriable_status_codes: [418]
                    num_retries: 2
                    retry_back_off: { base_interval: 0.001s, max_interval: 0.002s }
              - match: { prefix: "/vhost-policy" }
                route: { cluster: up }
              - match: { prefix: "/timeout" }
                route: { cluster: up, timeout: 0.3s }
              - match: { prefix: "/per-try" }
                route:
                  cluster: up
                  timeout: 5s
                  retry_policy:
                    retry_on: "5xx"
                    num_retries: 2
                    per_try_timeout: 0.2s
                    retry_back_off: { base_interval: 0.001s, max_interval: 0.002s }
              - match: { prefix: "/dead" }
                route:
                  cluster: dead
                  retry_policy: { retry_on: "connect-failure", num_retries: 2, retry_back_off: { base_interval: 0.001s } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: up
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${UP_up} } } }
  - name: dead
    connect_timeout: 1s
    load_assignment:
      cluster_name: dead
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } }
"#;

fn req(path: &str, key: &str) -> Request {
    Request::get(path).header("x-test-key", key)
}

#[tokio::test]
async fn retries_match_envoy() {
    let up = Upstream::start("up").await;
    // Keys are per proxy run: the upstream counts failures per key, and each
    // proxy gets a fresh upstream state because keys repeat per run.
    let requests = |run: &str| {
        vec![
            req("/5xx", &format!("{run}1"))
                .header("x-test-status", "503")
                .header("x-test-fail-times", "2"),
            req("/5xx", &format!("{run}2")).header("x-test-status", "500"),
            req("/gateway", &format!("{run}3")).header("x-test-status", "500"),
            req("/gateway", &format!("{run}4"))
                .header("x-test-status", "502")
                .header("x-test-fail-times", "1"),
            req("/codes", &format!("{run}5"))
                .header("x-test-status", "418")
                .header("x-test-fail-times", "1"),
            req("/codes", &format!("{run}6")).header("x-test-status", "409"),
            req("/codes", &format!("{run}7")).header("x-test-status", "404"),
            req("/vhost-policy", &format!("{run}8")).header("x-test-status", "503"),
            req("/5xx", &format!("{run}9"))
                .header("x-test-status", "503")
                .header("x-envoy-max-retries", "1"),
            req("/vhost-policy", &format!("{run}10"))
                .header("x-test-status", "502")
                .header("x-envoy-retry-on", "gateway-error")
                .header("x-envoy-max-retries", "2"),
        ]
    };
    let mut results = Vec::new();
    for (kind, run) in [(Kind::Envoy, "e"), (Kind::Weft, "w")] {
        results.push(crate::run(kind, RETRIES, &[&up], &requests(run)).await);
    }
    for (i, (e, w)) in results[0].iter().zip(&results[1]).enumerate() {
        assert_eq!(
            e.response, w.response,
            "request {i}: response differs (left Envoy)"
        );
        assert_eq!(
            e.upstream.len(),
            w.upstream.len(),
            "request {i}: upstream attempts differ (Envoy {}, weft {})",
            e.upstream.len(),
            w.upstream.len()
        );
        // The upstream sees the same request on every attempt, except the key.
        // The expected timeout shrinks by the time retries took, which
        // depends on jittered back-off: compared separately, within bounds.
        let strip = |s: &str| {
            s.lines()
                .filter(|l| {
                    !l.starts_with("x-test-key") && !l.starts_with("x-envoy-expected-rq-timeout-ms")
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        for (_, seen) in &w.upstream {
            let ms: u64 = seen
                .lines()
                .find_map(|l| l.strip_prefix("x-envoy-expected-rq-timeout-ms: "))
                .and_then(|v| v.parse().ok())
                .expect("weft-proxy sends x-envoy-expected-rq-timeout-ms");
            assert!(
                (14_000..=15_000).contains(&ms),
                "request {i}: expected timeout {ms}"
            );
        }
        assert_eq!(
            strip(&e.upstream[0].1),
            strip(&w.upstream[0].1),
            "request {i}: upstream request differs"
        );
    }
}

#[tokio::test]
async fn connect_failure_and_timeouts_match_envoy() {
    let up = Upstream::start("up").await;
    let requests = vec![
        req("/dead", "d"),
        req("/timeout", "t").header("x-test-delay-ms", "1000"),
    ];
    let outcomes = assert_same_on_both(RETRIES, &[&up], &requests).await;
    assert_eq!(outcomes[0].response.status, 503);
    assert_eq!(outcomes[1].response.status, 504);
}

#[tokio::test]
async fn per_try_timeout_retries_then_gives_up_like_envoy() {
    let up = Upstream::start("up").await;
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, RETRIES, &[&up]).await.expect("start");
        up.take();
        let start = Instant::now();
        let r = proxy
            .send(&req("/per-try", "p").header("x-test-delay-ms", "1000"))
            .await;
        let took = start.elapsed();
        assert_eq!(r.status, 504, "{kind:?}");
        assert_eq!(r.body_str(), "upstream request timeout", "{kind:?}");
        assert_eq!(up.take().len(), 3, "{kind:?}: 1 try + 2 retries");
        // 3 tries of 200 ms each, plus tiny back-offs.
        assert!(
            took >= Duration::from_millis(590) && took < Duration::from_millis(1500),
            "{kind:?}: {took:?}"
        );
    }
}

#[tokio::test]
async fn idle_timeouts_match_envoy() {
    use weft_e2e::bootstrap::{cluster, locality, single_route, upstream};
    let up = Upstream::start("up").await;
    let clusters = [cluster("up", "", &[locality(0, &[upstream("up")])])];
    let slow = || vec![Request::get("/slow").header("x-test-delay-ms", "800")];
    let stream_idle = |text: String| text.replace("stat_prefix: main", "stat_prefix: main\n          stream_idle_timeout: 0.3s");
    // The route's idle timeout, the connection manager's, and the route
    // turning the manager's off.
    let cases = [
        (single_route("cluster: up, idle_timeout: 0.3s", &clusters), 504),
        (stream_idle(single_route("cluster: up", &clusters)), 504),
        (stream_idle(single_route("cluster: up, idle_timeout: 0s", &clusters)), 200),
    ];
    for (template, status) in cases {
        let outcomes = assert_same_on_both(&template, &[&up], &slow()).await;
        assert_eq!(outcomes[0].response.status, status, "{template}");
        if status == 504 {
            assert_eq!(outcomes[0].response.body_str(), "stream timeout");
        }
    }
}

/// Istio puts the previous_hosts predicate on every retry policy: a retry
/// goes to another host. With one of two hosts refusing connections and
/// one retry, every request succeeds on both proxies (without the
/// predicate a quarter would fail under RANDOM).
#[tokio::test]
async fn retries_avoid_previous_hosts_like_envoy() {
    use weft_e2e::bootstrap::{cluster, endpoint, locality, single_route, upstream};
    let up = Upstream::start("up").await;
    let dead = weft_e2e::free_port().to_string();
    let route = r#"cluster: up, timeout: 0s, retry_policy: { retry_on: connect-failure, num_retries: 1,
        retry_host_predicate: [ { name: envoy.retry_host_predicates.previous_hosts,
          typed_config: { "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate } } ],
        host_selection_retry_max_attempts: 40 }"#;
    let hosts = locality(0, &[upstream("up"), endpoint("127.0.0.1", &dead, "")]);
    let template = single_route(route, &[cluster("up", "lb_policy: RANDOM\nconnect_timeout: 1s", &[hosts])]);
    let requests: Vec<Request> = (0..40).map(|i| Request::get(&format!("/r{i}"))).collect();
    let outcomes = assert_same_on_both(&template, &[&up], &requests).await;
    assert!(outcomes.iter().all(|o| o.response.status == 200), "every request recovers on the other host");
}
