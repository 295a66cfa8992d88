//! The CORS filter: preflights answered locally, actual requests forwarded
//! with the allow-origin headers added, policies merged route over
//! virtual host field by field, disabled and shadow policies, and the
//! responses of other filters.

use weft_e2e::{Kind, Proxy, Request, Upstream};

use crate::{assert_same_on_both, run};

const CORS: &str = include_str!("bootstraps/cors.yaml");

fn from(path: &str, origin: &str) -> Request {
    Request::get(path).header("origin", origin)
}

fn preflight(path: &str, origin: &str, method: &str) -> Request {
    from(path, origin).method("OPTIONS").header("access-control-request-method", method)
}

#[tokio::test]
async fn preflights_match_envoy() {
    let up = Upstream::start("up").await;
    let requests = vec![
        // 0: allowed origin: answered here, with the virtual host's policy
        preflight("/", "https://app.example", "POST"),
        // 1: origin not allowed: forwarded like any OPTIONS request
        preflight("/", "https://evil.example", "POST"),
        // 2: no access-control-request-method: not a preflight
        from("/", "https://app.example").method("OPTIONS"),
        // 3: an empty one is none either
        preflight("/", "https://app.example", ""),
        // 4: no origin
        Request::get("/").method("OPTIONS").header("access-control-request-method", "GET"),
        // 5-6: the route's fields win, the virtual host fills the others
        preflight("/route", "https://a.route.example", "PUT"),
        preflight("/route", "https://app.example", "PUT"),
        // 7: the route sets no origins: the virtual host's
        preflight("/methods-only", "https://app.example", "PATCH"),
        // 8-10: `*` echoes what was asked, an empty allow-headers when nothing was
        preflight("/star", "https://anyone.example", "DELETE").header("access-control-request-headers", "x-a, x-b"),
        preflight("/star", "https://anyone.example", "DELETE"),
        preflight("/star", "https://anyone.example", "DELETE").header("access-control-request-headers", ""),
        // 11-13: the other origin matchers
        preflight("/", "https://caps.example", "GET"),
        preflight("/", "https://abc.regex.example", "GET"),
        preflight("/", "https://abc.regex.example.evil", "GET"),
        // 14-15: disabled, shadow mode: forwarded untouched
        preflight("/off", "https://app.example", "GET"),
        preflight("/shadow", "https://app.example", "GET"),
        // 16-18: forward_not_matching_preflights: false answers a bad origin
        // here, without allow-origin; private network access on request
        preflight("/strict", "https://evil.example", "GET"),
        preflight("/strict", "https://app.example", "GET").header("access-control-request-private-network", "true"),
        preflight("/strict", "https://app.example", "GET").header("access-control-request-private-network", "yes"),
        // 19-20: direct responses and redirects have no CORS
        preflight("/direct", "https://app.example", "GET"),
        preflight("/redirect", "https://app.example", "GET"),
        // 21: no route
        preflight("/missing", "https://app.example", "GET").header("host", "narrow.example"),
        preflight("/only", "https://app.example", "GET").header("host", "narrow.example"),
        // 23: no policy at all
        preflight("/", "https://app.example", "GET").header("host", "plain.example"),
    ];
    let outcomes = assert_same_on_both(CORS, &[&up], &requests).await;
    // Answered by CORS, or by the route (direct, redirect, none).
    let not_forwarded = [0, 5, 7, 8, 9, 10, 11, 12, 16, 17, 18, 19, 20, 21, 22];
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(o.upstream.is_empty(), not_forwarded.contains(&i), "request {i}: {o:?}");
    }
    assert_eq!(outcomes[0].response.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(outcomes[16].response.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn actual_requests_match_envoy() {
    let up = Upstream::start("up").await;
    let requests = vec![
        from("/", "https://app.example"),
        from("/", "https://evil.example"),
        Request::get("/"),
        from("/", ""),
        from("/", "https://app.example").method("POST").body("hello"),
        from("/", "https://app.example").method("HEAD"),
        // 6-7: the route's policy
        from("/route", "https://a.route.example"),
        from("/route", "https://app.example"),
        from("/star", "https://anyone.example"),
        from("/star", "https://a.example"),
        from("/off", "https://app.example"),
        from("/shadow", "https://app.example"),
        from("/strict", "https://evil.example"),
        // 13: CORS replaces the route's values of its headers
        from("/overwrite", "https://app.example"),
        from("/overwrite", "https://evil.example"),
        from("/direct", "https://app.example"),
        from("/redirect", "https://app.example"),
        // 17: upstream errors get the headers too
        from("/", "https://app.example").header("x-test-status", "503"),
        // 18: so do the local replies of filters after CORS
        from("/", "https://app.example").header("x-envoy-fault-abort-request", "429"),
        from("/only", "https://app.example").header("host", "narrow.example"),
        from("/", "https://app.example").header("host", "plain.example"),
    ];
    let outcomes = assert_same_on_both(CORS, &[&up], &requests).await;
    assert_eq!(outcomes[0].response.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(outcomes[13].response.header_all("access-control-allow-origin"), ["https://app.example"]);
    assert_eq!(outcomes[18].response.status, 429);
    assert!(outcomes[18].response.header("access-control-allow-origin").is_some());
}

/// Repeated Origin headers are read joined by `,`, by both.
///
/// Known difference, outside CORS: Envoy's codec joins every repeated
/// "inline" request header (origin, user-agent, cache-control, ...) before
/// forwarding, so its upstream sees one `origin` line; weft-proxy forwards
/// the lines as the client sent them.
#[tokio::test]
async fn repeated_origins_are_read_joined() {
    let up = Upstream::start("up").await;
    let mut req = from("/star", "https://a.example");
    req.headers.push(("origin".into(), "https://b.example".into()));
    let envoy = run(Kind::Envoy, CORS, &[&up], std::slice::from_ref(&req)).await;
    let weft = run(Kind::Weft, CORS, &[&up], std::slice::from_ref(&req)).await;
    assert_eq!(envoy[0].response, weft[0].response, "left Envoy, right weft-proxy");
    assert_eq!(weft[0].response.header("access-control-allow-origin"), Some("https://a.example,https://b.example"));
    assert!(envoy[0].upstream[0].1.contains("origin: https://a.example,https://b.example\n"), "{:?}", envoy[0].upstream);
    assert!(weft[0].upstream[0].1.contains("origin: https://a.example\norigin: https://b.example\n"), "{:?}", weft[0].upstream);
}

#[tokio::test]
async fn filters_before_cors_reply_without_its_headers() {
    let up = Upstream::start("up").await;
    let cors = "          - name: envoy.filters.http.cors\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors\n";
    let fault_first = CORS.replacen(cors, "", 1).replacen(
        "          - name: envoy.filters.http.router\n",
        &format!("{cors}          - name: envoy.filters.http.router\n"),
        1,
    );
    assert_ne!(fault_first, CORS);
    let requests = vec![
        from("/", "https://app.example").header("x-envoy-fault-abort-request", "429"),
        preflight("/", "https://app.example", "GET"),
        from("/", "https://app.example"),
    ];
    let outcomes = assert_same_on_both(&fault_first, &[&up], &requests).await;
    assert_eq!(outcomes[0].response.header("access-control-allow-origin"), None);
    assert_eq!(outcomes[1].response.header("access-control-allow-origin"), Some("https://app.example"));
}

#[tokio::test]
async fn h2c_preflight_matches_envoy() {
    let up = Upstream::start("up").await;
    let requests = [preflight("/", "https://app.example", "GET"), from("/", "https://app.example")];
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, CORS, &[&up]).await.expect("start");
        let mut outcomes = Vec::new();
        for req in &requests {
            outcomes.push(weft_e2e::client::send_h2c(proxy.port, req).await.expect("h2c request").normalized());
        }
        seen.push(outcomes);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1][0].header("content-length"), None, "an HTTP/2 preflight ends on its headers");
}

#[tokio::test]
async fn origin_stats_match_envoy() {
    let up = Upstream::start("up").await;
    let requests = [
        from("/", "https://app.example"),
        preflight("/", "https://app.example", "GET"),
        from("/", "https://evil.example"),
        from("/shadow", "https://app.example"),
        from("/off", "https://app.example"),
        Request::get("/"),
        from("/direct", "https://app.example"),
    ];
    let mut counts = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, CORS, &[&up]).await.expect("start");
        for req in &requests {
            proxy.send(req).await;
        }
        let valid = proxy.stat("envoy_http_cors_origin_valid{envoy_http_conn_manager_prefix=\"main\"}").await;
        let invalid = proxy.stat("envoy_http_cors_origin_invalid{envoy_http_conn_manager_prefix=\"main\"}").await;
        counts.push((valid, invalid));
    }
    assert_eq!(counts[0], (Some(3.0), Some(1.0)), "Envoy");
    assert_eq!(counts[0], counts[1], "left Envoy, right weft-proxy");
}
