//! The local rate limit filter: the filter's bucket shared by every
//! request, per-route and per-virtual-host configs with their own buckets,
//! enforcement, x-ratelimit headers, per-connection buckets and the
//! statistics. Fill intervals are 60 s so that no token comes back during
//! a test: the first `max_tokens` requests pass, the rest are limited.

use tokio::net::TcpStream;
use weft_e2e::{Kind, Observed, Proxy, Request, Upstream};

use crate::{assert_same_on_both, describe, Outcome};

const RATELIMIT: &str = include_str!("bootstraps/ratelimit.yaml");

fn at(host: &str, path: &str) -> Request {
    Request::get(path).header("host", host)
}

/// Runs the requests on one proxy and reads its local rate limit counters.
async fn run_with_stats(kind: Kind, template: &str, up: &Upstream, requests: &[Request]) -> (Vec<Outcome>, Vec<String>) {
    let proxy = Proxy::start(kind, template, &[up]).await.expect("start");
    up.take();
    let mut outcomes = Vec::new();
    for req in requests {
        let response = proxy.send(req).await.normalized();
        let upstream = up.take().iter().map(|s| (up.name.clone(), describe(s))).collect();
        outcomes.push(Outcome { response, upstream });
    }
    let text = weft_e2e::client::send(proxy.admin, &Request::get("/stats/prometheus")).await.expect("stats").body_str();
    let mut stats: Vec<String> =
        text.lines().filter(|l| l.starts_with("envoy_http_local_rate_limit_")).map(str::to_string).collect();
    stats.sort();
    (outcomes, stats)
}

#[tokio::test]
async fn limits_and_stats_match_envoy() {
    let up = Upstream::start("up").await;
    let mut requests = vec![
        // 0-2: the filter's bucket (3 tokens), shared by every route
        // without a config of its own, direct responses and misses included
        Request::get("/"),
        Request::get("/direct"),
        at("narrow.example", "/only"),
        // 3-5: limited: the route's response headers only when it forwards
        Request::get("/"),
        Request::get("/direct"),
        at("narrow.example", "/missing"),
        // 6-7: a route's own bucket and status
        Request::get("/route"),
        Request::get("/route"),
        // 8: an empty bucket and a status below 400 (429 then)
        Request::get("/low-status"),
        // 9-12: x-ratelimit-* headers, added beside the route's
        Request::get("/xrl"),
        Request::get("/xrl"),
        Request::get("/xrl"),
        Request::get("/xrl"),
        // 13-14: not enforced: forwarded with request_headers_to_add_when_not_enforced
        Request::get("/not-enforced"),
        Request::get("/not-enforced"),
        // 15-19: the virtual host's config, a route's over it
        at("vhost.example", "/"),
        at("vhost.example", "/"),
        at("vhost.example", "/own"),
        at("vhost.example", "/own"),
        at("vhost.example", "/own"),
    ];
    // 20-22: filter_enabled 0%: never limited, never counted
    requests.extend((0..3).map(|_| Request::get("/disabled")));
    let (envoy, envoy_stats) = run_with_stats(Kind::Envoy, RATELIMIT, &up, &requests).await;
    let (weft, weft_stats) = run_with_stats(Kind::Weft, RATELIMIT, &up, &requests).await;
    for (i, (e, w)) in envoy.iter().zip(&weft).enumerate() {
        assert_eq!(e, w, "request {i} ({}) differs: left Envoy, right weft-proxy", requests[i].path);
    }
    let statuses: Vec<u16> = weft.iter().map(|o| o.response.status).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429, 429, 200, 503, 429, 200, 200, 200, 429, 200, 200, 200, 429, 200, 200, 429, 200, 200, 200]
    );
    let limited = &weft[3].response;
    assert_eq!(limited.body_str(), "local_rate_limited");
    assert_eq!(limited.header("x-rl"), Some("hit"));
    assert!(weft[3].upstream.is_empty());
    assert!(weft[14].upstream[0].1.contains("x-limited: 1"));
    assert_eq!(envoy_stats, weft_stats, "left Envoy, right weft-proxy");
    assert!(weft_stats.contains(&"envoy_http_local_rate_limit_rate_limited{envoy_local_http_ratelimit_prefix=\"global\"} 3".to_string()), "{weft_stats:?}");
}

#[tokio::test]
async fn grpc_clients_read_the_limit_like_envoy() {
    let up = Upstream::start("up").await;
    let grpc = |path: &str| Request::get(path).method("POST").header("content-type", "application/grpc").body("\0\0\0\0\0");
    // RESOURCE_EXHAUSTED where asked for, else the 429's UNAVAILABLE.
    let outcomes = assert_same_on_both(RATELIMIT, &[&up], &[grpc("/exhausted"), grpc("/low-status")]).await;
    let grpc_status = |o: &Outcome| (o.response.status, o.response.header("grpc-status").map(str::to_string));
    assert_eq!(grpc_status(&outcomes[0]), (200, Some("8".into())));
    assert_eq!(grpc_status(&outcomes[1]), (200, Some("14".into())));
}

#[tokio::test]
async fn filter_enabled_defaults_to_off() {
    let up = Upstream::start("up").await;
    let unset = RATELIMIT.replacen(
        "              filter_enabled: { default_value: { numerator: 100 } }\n              filter_enforced",
        "              filter_enforced",
        1,
    );
    assert_ne!(unset, RATELIMIT);
    let requests: Vec<Request> = (0..5).map(|_| Request::get("/")).collect();
    let outcomes = assert_same_on_both(&unset, &[&up], &requests).await;
    assert!(outcomes.iter().all(|o| o.response.status == 200));
}

#[tokio::test]
async fn a_filter_without_bucket_limits_nothing() {
    let up = Upstream::start("up").await;
    let no_bucket = RATELIMIT.replacen("              token_bucket: { max_tokens: 3, tokens_per_fill: 1, fill_interval: 60s }\n", "", 1);
    assert_ne!(no_bucket, RATELIMIT);
    let requests = vec![Request::get("/"), Request::get("/"), Request::get("/"), Request::get("/"), Request::get("/route"), Request::get("/route")];
    let outcomes = assert_same_on_both(&no_bucket, &[&up], &requests).await;
    let statuses: Vec<u16> = outcomes.iter().map(|o| o.response.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 503]);
}

/// Sends requests in turn on one connection.
async fn on_one_connection(port: u16, requests: &[Request]) -> Vec<Observed> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let mut out = Vec::new();
    for req in requests {
        let raw = weft_e2e::client::exchange_raw(&mut tcp, &req.to_bytes(), false).await.expect("exchange");
        out.push(weft_e2e::client::parse(&raw, false).expect("a whole response").normalized());
    }
    out
}

/// `local_rate_limit_per_downstream_connection`: each connection has one
/// bucket, made by the first config that needs it, which later configs
/// share whatever their own limits (Envoy 1.40 keys it by connection only).
#[tokio::test]
async fn per_connection_buckets_match_envoy() {
    let up = Upstream::start("up").await;
    let per_connection = RATELIMIT
        .replacen(
            "              stat_prefix: global\n",
            "              stat_prefix: global\n              local_rate_limit_per_downstream_connection: true\n",
            1,
        )
        .replacen(
            "                    stat_prefix: route_rl\n",
            "                    stat_prefix: route_rl\n                    local_rate_limit_per_downstream_connection: true\n",
            1,
        );
    let connections: Vec<Vec<Request>> = vec![
        (0..4).map(|_| Request::get("/")).collect(),
        (0..4).map(|_| Request::get("/")).collect(),
        vec![Request::get("/route"), Request::get("/"), Request::get("/route")],
        vec![Request::get("/"), Request::get("/route"), Request::get("/route"), Request::get("/")],
        // /xrl's bucket is the route's, shared by every connection
        vec![Request::get("/xrl"), Request::get("/"), Request::get("/xrl")],
    ];
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &per_connection, &[&up]).await.expect("start");
        let mut outcomes = Vec::new();
        for requests in &connections {
            outcomes.push(on_one_connection(proxy.port, requests).await);
        }
        seen.push(outcomes);
    }
    for (i, (e, w)) in seen[0].iter().zip(&seen[1]).enumerate() {
        assert_eq!(e, w, "connection {i} differs: left Envoy, right weft-proxy");
    }
    let statuses: Vec<Vec<u16>> = seen[1].iter().map(|c| c.iter().map(|r| r.status).collect()).collect();
    assert_eq!(statuses, [vec![200, 200, 200, 429], vec![200, 200, 200, 429], vec![200, 429, 503], vec![200, 200, 200, 429], vec![200, 200, 200]]);
}
