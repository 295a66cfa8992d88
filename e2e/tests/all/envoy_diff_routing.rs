//! Virtual hosts, route matching, route actions and header mutations.

use weft_e2e::{Kind, Request, Upstream};

use crate::{assert_same_on_both, run};

const ROUTING: &str = include_str!("bootstraps/routing.yaml");

fn api(path: &str) -> Request {
    Request::get(path).header("host", "api.example.com")
}

#[tokio::test]
async fn routing_matches_envoy() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let requests = vec![
        // virtual host selection
        api("/"),
        Request::get("/").header("host", "API.Example.com"),
        Request::get("/").header("host", "api.example.com:8080"),
        Request::get("/").header("host", "api.example.com:9090"),
        Request::get("/").header("host", "www.example.com"),
        Request::get("/").header("host", "x.deep.example.com"),
        Request::get("/").header("host", "static.cdn.net"),
        Request::get("/only").header("host", "unknown.net"),
        Request::get("/nothing").header("host", "unknown.net"),
        // path matching
        api("/exact"),
        api("/exact?x=1"),
        api("/exact/more"),
        api("/items/42"),
        api("/items/42?q"),
        api("/items/x"),
        api("/sep"),
        api("/sep/x"),
        api("/separate"),
        api("/case/x"),
        api("/CASE/y"),
        // header matching
        api("/h").header("x-exact", "yes"),
        api("/h").header("x-exact", "no"),
        api("/h").header("x-pre", "abc").header("x-suf", "XYZ"),
        api("/h").header("x-range", "15"),
        api("/h").header("x-range", "20"),
        api("/h").header("x-range", "abc"),
        api("/h").header("x-present", ""),
        api("/h").header("x-present", "1").header("x-absent", "1"),
        api("/h")
            .header("x-re", "v12")
            .header("x-contains", "amidst"),
        api("/h")
            .header("x-re", "v12x")
            .header("x-contains", "amidst"),
        // query parameters
        api("/q?debug&mode=full"),
        api("/q?mode=full"),
        api("/q?debug=1&mode=partial"),
        // rewrites and redirects
        api("/rewrite/thing?x=1"),
        api("/regex-rewrite/abc/def"),
        api("/host/path"),
        api("/redirect/x?y=1"),
        api("/https/p?q=1"),
        api("/old/page?q=2"),
        // header mutations at every level
        api("/headers")
            .header("x-remove-me", "1")
            .header("x-only-if", "orig")
            .header("x-client", "mine"),
        api("/headers").header("x-global", "client"),
        // direct responses with and without bodies, methods
        api("/").method("POST").body("payload"),
        api("/").method("HEAD"),
        // empty requests: content-length: 0 upstream unless the method has no body
        api("/").method("POST"),
        api("/").method("OPTIONS"),
        api("/").method("PUT"),
        api("/").method("DELETE"),
        api("/").method("TRACE"),
    ];
    let outcomes = assert_same_on_both(ROUTING, &[&a, &b], &requests).await;
    // Header value formatters, so that two proxies ignoring them cannot pass.
    let headers = requests.iter().position(|r| r.path == "/headers").expect("a /headers request");
    let seen = &outcomes[headers].upstream[0].1;
    assert!(seen.contains("x-client-ip: 127.0.0.1\n") && seen.contains("x-via: HTTP/1.1 on "), "{seen}");
    assert!(seen.contains(" at 127.0.0.1, 100%\n"), "{seen}");
    assert_eq!(outcomes[headers].response.header("x-resp-client"), Some("127.0.0.1/HTTP/1.1:3"));
}

#[tokio::test]
async fn weighted_split_matches_envoy_proportions() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    const N: usize = 1000;
    let requests: Vec<Request> = (0..N)
        .map(|_| Request::get("/").header("host", "split.test"))
        .collect();
    for kind in Kind::BOTH {
        let outcomes = run(kind, ROUTING, &[&a, &b], &requests).await;
        let to_a = outcomes
            .iter()
            .filter(|o| o.response.body_str() == "a")
            .count();
        // 80/20 over 1000 requests: 5 standard deviations is ±63.
        assert!(
            (737..=863).contains(&to_a),
            "{kind:?}: {to_a} of {N} went to a, expected ~800"
        );
        // the weighted cluster's own headers reach the chosen upstream only
        for o in &outcomes {
            let (name, seen) = &o.upstream[0];
            assert!(
                seen.contains(&format!("x-split: {name}")),
                "{kind:?}: {seen}"
            );
        }
    }
}

#[tokio::test]
async fn h2c_downstream_matches_envoy() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let requests = [api("/"), api("/items/7"), api("/h").header("x-range", "12"), api("/nothing").header("host", "unknown.net")];
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = weft_e2e::Proxy::start(kind, ROUTING, &[&a, &b]).await.expect("start");
        a.take();
        b.take();
        let mut outcomes = Vec::new();
        for req in &requests {
            let resp = weft_e2e::client::send_h2c(proxy.port, req).await.expect("h2c request").normalized();
            let upstream: Vec<String> = a.take().iter().chain(b.take().iter()).map(crate::describe).collect();
            outcomes.push((resp, upstream));
        }
        seen.push(outcomes);
    }
    for (i, (e, w)) in seen[0].iter().zip(&seen[1]).enumerate() {
        assert_eq!(e, w, "h2c request {i} differs (left Envoy)");
    }
}

/// Sequential requests reuse one upstream connection on both proxies
/// (HTTP/1.1 keep-alive pooling), and `connection: close` from the
/// upstream is respected.
#[tokio::test]
async fn upstream_connections_are_reused_like_envoy() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    for kind in Kind::BOTH {
        let proxy = weft_e2e::Proxy::start(kind, ROUTING, &[&a, &b]).await.expect("start");
        let before = a.connections.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..20 {
            assert_eq!(proxy.send(&api("/")).await.status, 200);
        }
        let used = a.connections.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert_eq!(used, 1, "{kind:?} opened {used} upstream connections for 20 sequential requests");
    }
}

/// Requests in absolute form (`GET http://host/path`), as clients send them
/// through an HTTP proxy (`HTTP_PROXY`): the URL's host picks the virtual
/// host, and the upstream gets origin form.
#[tokio::test]
async fn absolute_form_requests_match_envoy() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let mut absolute = Request::get("http://api.example.com/items/9?x=1");
    absolute.headers.retain(|(k, _)| k != "host");
    let requests = vec![
        absolute.clone().header("host", "api.example.com"),
        Request::get("http://www.example.com/").header("host", "www.example.com"),
        Request::get("http://api.example.com/exact").header("host", "api.example.com"),
    ];
    assert_same_on_both(ROUTING, &[&a, &b], &requests).await;
}

/// Mirrored requests reach the shadow cluster with `-shadow` on the host;
/// the client sees only the primary's response.
#[tokio::test]
async fn mirroring_matches_envoy() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = weft_e2e::Proxy::start(kind, ROUTING, &[&a, &b]).await.expect("start");
        a.take();
        b.take();
        let response = proxy.send(&api("/mirror/x").method("POST").body("payload")).await.normalized();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while b.count() == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let primary: Vec<String> = a.take().iter().map(crate::describe).collect();
        let shadow: Vec<String> = b.take().iter().map(crate::describe).collect();
        // Half of the requests to /mirror-half are mirrored.
        for _ in 0..200 {
            proxy.send(&api("/mirror-half")).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mirrored = b.take().len();
        assert!((60..=140).contains(&mirrored), "{kind:?}: {mirrored} of 200 mirrored, expected ~100");
        seen.push((response, primary, shadow));
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert!(seen[1].2[0].contains("host: api.example.com-shadow"), "{:?}", seen[1].2);
}

/// Mirror policies at the route configuration and virtual host levels:
/// each route gets the most specific non-empty list (its own, else its
/// virtual host's, else the route configuration's), as in Envoy.
#[tokio::test]
async fn mirror_policies_inherit_like_envoy() {
    use weft_e2e::bootstrap::{cluster, locality, upstream};
    let names = ["up", "own", "host", "table"];
    let mut ups = Vec::new();
    for name in names {
        ups.push(Upstream::start(name).await);
    }
    let clusters: Vec<String> = names.iter().map(|n| cluster(n, "", &[locality(0, &[upstream(n)])])).collect();
    let route_config = r#"request_mirror_policies: [{ cluster: table }]
virtual_hosts:
- name: mirrored
  domains: ["a.example.com"]
  request_mirror_policies: [{ cluster: host }]
  routes:
  - { match: { prefix: "/own" }, route: { cluster: up, request_mirror_policies: [{ cluster: own }] } }
  - { match: { prefix: "/" }, route: { cluster: up } }
- name: plain
  domains: ["*"]
  routes: [{ match: { prefix: "/" }, route: { cluster: up } }]"#;
    let template = weft_e2e::bootstrap::with_route_config("", route_config, &clusters);
    let refs: Vec<&Upstream> = ups.iter().collect();
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = weft_e2e::Proxy::start(kind, &template, &refs).await.unwrap_or_else(|e| panic!("{e}"));
        let mut outcome = Vec::new();
        for (host, path) in [("a.example.com", "/own"), ("a.example.com", "/other"), ("b.example.com", "/")] {
            for up in &ups {
                up.take();
            }
            let status = proxy.send(&Request::get(path).header("host", host)).await.status;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while ups[1..].iter().all(|u| u.count() == 0) && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            // Any second copy would have come by now too.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mirrored: Vec<&str> = ups[1..].iter().filter(|u| u.count() > 0).map(|u| u.name.as_str()).collect();
            outcome.push(format!("{host}{path}: {status}, mirrored to {mirrored:?}"));
        }
        seen.push(outcome);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1], ["a.example.com/own: 200, mirrored to [\"own\"]", "a.example.com/other: 200, mirrored to [\"host\"]", "b.example.com/: 200, mirrored to [\"table\"]"]);
}

/// An edge proxy (`use_remote_address: true`): what it appends to
/// x-forwarded-for, which client-sent x-envoy-* headers it drops, and the
/// headers it sets for an external request.
#[tokio::test]
async fn edge_proxy_headers_match_envoy() {
    let up = Upstream::start("up").await;
    let template = include_str!("bootstraps/simple.yaml")
        .replace("stat_prefix: main", "stat_prefix: main\n          use_remote_address: true");
    let spoofed = |r: Request| {
        r.header("x-forwarded-proto", "https")
            .header("x-envoy-internal", "true")
            .header("x-envoy-external-address", "6.6.6.6")
            .header("x-envoy-downstream-service-cluster", "spoof")
            .header("x-envoy-downstream-service-node", "spoof")
            .header("x-envoy-original-path", "/spoof")
            .header("x-envoy-decorator-operation", "spoof")
            .header("x-envoy-hedge-on-per-try-timeout", "true")
            .header("x-envoy-custom", "kept?")
            .header("x-request-id", "client-chosen")
    };
    let requests = vec![
        Request::get("/plain"),
        Request::get("/xff").header("x-forwarded-for", "1.2.3.4, 5.6.7.8"),
        spoofed(Request::get("/spoofed")),
    ];
    let seen = assert_same_on_both(&template, &[&up], &requests).await;
    // The cases did what they name (same on Envoy, checked above).
    let spoof = &seen[2].upstream[0].1;
    assert!(spoof.contains("x-forwarded-proto: http\n") && !spoof.contains("x-envoy-internal"), "{spoof}");
    assert!(spoof.contains("x-envoy-external-address: 127.0.0.1") && !spoof.contains("6.6.6.6"), "{spoof}");
    assert!(seen[1].upstream[0].1.contains("x-forwarded-for: 1.2.3.4, 5.6.7.8,"), "{:?}", seen[1].upstream);
    // An external request's id is replaced (the comparison above masks ids).
    for kind in Kind::BOTH {
        let proxy = weft_e2e::Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        up.take();
        proxy.send(&Request::get("/id").header("x-request-id", "client-chosen")).await;
        let id = up.take()[0].header("x-request-id").map(str::to_string);
        assert!(id.as_ref().is_some_and(|id| id != "client-chosen" && id.len() == 36), "{kind:?}: {id:?}");
    }
}
