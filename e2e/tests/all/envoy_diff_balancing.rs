//! Load balancing policies, compared with Envoy by their effect.

use std::time::Duration;

use weft_e2e::bootstrap::{cluster, endpoint, locality, single_route, upstream};
use weft_e2e::{Kind, Proxy, Request, Upstream};

fn bootstrap(policy: &str) -> String {
    let endpoints = [upstream("slow"), upstream("fast")];
    single_route("cluster: up", &[cluster("up", &format!("lb_policy: {policy}"), &[locality(0, &endpoints)])])
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

/// Four hosts behind a hashing policy; the route hashes on `hash`
/// (a flow sequence of `hash_policy` entries).
fn hashing_bootstrap(policy: &str, lb_config: &str, hash: &str) -> String {
    weighted_bootstrap(policy, lb_config, hash, &[1, 1, 1, 1])
}

/// Four hosts with the given `load_balancing_weight`s.
fn weighted_bootstrap(policy: &str, lb_config: &str, hash: &str, weights: &[u32; 4]) -> String {
    let endpoints: Vec<String> = (0..4)
        .map(|i| endpoint("127.0.0.1", &format!("${{UP_h{i}}}"), &format!("load_balancing_weight: {}, ", weights[i])))
        .collect();
    let fields = format!("lb_policy: {policy}\n{lb_config}");
    single_route(&format!("cluster: up, hash_policy: {hash}"), &[cluster("up", &fields, &[locality(0, &endpoints)])])
}

/// Which host answered each request, on one proxy.
async fn hosts_by_request(kind: Kind, template: &str, ups: &[&Upstream], requests: &[Request]) -> Vec<String> {
    let proxy = Proxy::start(kind, template, ups).await.unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for r in requests {
        out.push(proxy.send(r).await.body_str());
    }
    out
}

#[tokio::test]
async fn ring_hash_and_maglev_pick_the_same_host_as_envoy() {
    let hosts = [Upstream::start("h0").await, Upstream::start("h1").await, Upstream::start("h2").await, Upstream::start("h3").await];
    let ups: Vec<&Upstream> = hosts.iter().collect();
    let users: Vec<Request> = (0..60).map(|i| Request::get("/").header("x-user", &format!("user-{i}"))).collect();
    let by_query: Vec<Request> = (0..30).map(|i| Request::get(&format!("/p?a=1&session={i}&session=x"))).collect();
    // Both policies: the header when present (terminal), else the query.
    let mixed: Vec<Request> = (0..30)
        .map(|i| {
            let r = Request::get(&format!("/m?session={}", i % 7));
            if i % 2 == 0 { r.header("x-user", &format!("u{i}")) } else { r }
        })
        .collect();
    let cases = [
        ("RING_HASH", "", "[ { header: { header_name: x-user } } ]", &users),
        ("RING_HASH", "ring_hash_lb_config: { minimum_ring_size: 64 }", "[ { header: { header_name: x-user } } ]", &users),
        ("MAGLEV", "", "[ { header: { header_name: x-user } } ]", &users),
        ("MAGLEV", "maglev_lb_config: { table_size: 251 }", "[ { query_parameter: { name: session } } ]", &by_query),
        ("RING_HASH", "", "[ { header: { header_name: x-user }, terminal: true }, { query_parameter: { name: session } } ]", &mixed),
    ];
    for (policy, config, hash, requests) in cases {
        let template = hashing_bootstrap(policy, config, hash);
        let envoy = hosts_by_request(Kind::Envoy, &template, &ups, requests).await;
        let weft = hosts_by_request(Kind::Weft, &template, &ups, requests).await;
        assert_eq!(envoy, weft, "{policy} {config} {hash}: left Envoy, right weft-proxy");
        // The keys really spread over the hosts.
        let distinct: std::collections::HashSet<_> = weft.iter().collect();
        assert!(distinct.len() >= 3, "{policy} {hash}: {weft:?}");
    }
    // The client's address (always 127.0.0.1 here): one host, Envoy's.
    let template = hashing_bootstrap("RING_HASH", "", "[ { connection_properties: { source_ip: true } } ]");
    let envoy = hosts_by_request(Kind::Envoy, &template, &ups, &users[..10]).await;
    let weft = hosts_by_request(Kind::Weft, &template, &ups, &users[..10]).await;
    assert_eq!(envoy, weft, "source_ip: left Envoy, right weft-proxy");
    assert!(weft.iter().all(|h| *h == weft[0]), "{weft:?}");
}

#[tokio::test]
async fn weighted_hosts_get_their_share_and_the_same_hash_hosts_as_envoy() {
    let hosts = [Upstream::start("h0").await, Upstream::start("h1").await, Upstream::start("h2").await, Upstream::start("h3").await];
    let ups: Vec<&Upstream> = hosts.iter().collect();
    let users: Vec<Request> = (0..60).map(|i| Request::get("/").header("x-user", &format!("user-{i}"))).collect();
    let by_user = "[ { header: { header_name: x-user } } ]";
    for policy in ["RING_HASH", "MAGLEV"] {
        let template = weighted_bootstrap(policy, "", by_user, &[1, 2, 5, 1]);
        let envoy = hosts_by_request(Kind::Envoy, &template, &ups, &users).await;
        let weft = hosts_by_request(Kind::Weft, &template, &ups, &users).await;
        assert_eq!(envoy, weft, "{policy} weighted: left Envoy, right weft-proxy");
    }
    // Round robin over weights 1:1:5:1 (no hashing): h2 gets 5/8.
    let template = weighted_bootstrap("ROUND_ROBIN", "", "[]", &[1, 1, 5, 1]);
    let plain: Vec<Request> = (0..160).map(|i| Request::get(&format!("/rr{i}"))).collect();
    for kind in Kind::BOTH {
        let picks = hosts_by_request(kind, &template, &ups, &plain).await;
        let share = picks.iter().filter(|h| *h == "h2").count() as f64 / picks.len() as f64;
        assert!((0.55..=0.70).contains(&share), "{kind:?}: h2 got {share:.2} of requests, weight 5/8");
    }
}
