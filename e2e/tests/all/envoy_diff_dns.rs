//! STRICT_DNS and LOGICAL_DNS clusters resolve names (here `localhost`)
//! and pick the address family as Envoy does.

use weft_e2e::bootstrap::{cluster, endpoint, locality, single_route};
use weft_e2e::{Request, Upstream};

use crate::assert_same_on_both;

fn bootstrap(kind: &str, family: Option<&str>) -> String {
    let family = family.map(|f| format!("dns_lookup_family: {f}")).unwrap_or_default();
    let fields = format!("type: {kind}\nconnect_timeout: 1s\ndns_refresh_rate: 0.5s\n{family}");
    single_route("cluster: up", &[cluster("up", &fields, &[locality(0, &[endpoint("localhost", "${UP_up}", "")])])])
}

#[tokio::test]
async fn dns_clusters_match_envoy() {
    // The upstream listens on 127.0.0.1 only: which family the proxy picks
    // for `localhost` decides between 200 and a connect failure.
    let up = Upstream::start("up").await;
    let requests = vec![Request::get("/"), Request::get("/")];
    for kind in ["STRICT_DNS", "LOGICAL_DNS"] {
        // (ALL is left out: which of ::1 and 127.0.0.1 comes first in the
        // round robin differs between the two, by design of neither.)
        for family in [None, Some("V4_ONLY"), Some("V4_PREFERRED"), Some("V6_ONLY")] {
            let outcomes = assert_same_on_both(&bootstrap(kind, family), &[&up], &requests).await;
            if family == Some("V4_ONLY") {
                assert_eq!(outcomes[0].response.status, 200, "{kind} {family:?}");
            }
        }
    }
}

#[tokio::test]
async fn unresolvable_name_gives_no_healthy_upstream_like_envoy() {
    let up = Upstream::start("up").await;
    let text = bootstrap("STRICT_DNS", Some("V4_ONLY")).replace("address: localhost", "address: no-such-host.invalid");
    let outcomes = assert_same_on_both(&text, &[&up], &[Request::get("/")]).await;
    assert_eq!(outcomes[0].response.status, 503);
}

#[tokio::test]
async fn auto_host_rewrite_uses_the_host_name_like_envoy() {
    let up = Upstream::start("up").await;
    let auto = |text: String| text.replace("route: { cluster: up }", "route: { cluster: up, auto_host_rewrite: true }");
    let requests = vec![Request::get("/").header("host", "client.example")];
    // A DNS cluster: the name it resolved.
    let dns = assert_same_on_both(&auto(bootstrap("STRICT_DNS", Some("V4_ONLY"))), &[&up], &requests).await;
    assert!(dns[0].upstream[0].1.contains("host: localhost"), "{:?}", dns[0].upstream);
    // A static endpoint with a hostname: that name; without one: unchanged.
    let named = auto(bootstrap("STATIC", None))
        .replace("address: localhost", "address: 127.0.0.1")
        .replace("endpoint: { address", "endpoint: { hostname: backend.internal, address");
    let static_named = assert_same_on_both(&named, &[&up], &requests).await;
    assert!(static_named[0].upstream[0].1.contains("host: backend.internal"), "{:?}", static_named[0].upstream);
    let unnamed = auto(bootstrap("STATIC", None)).replace("address: localhost", "address: 127.0.0.1");
    let static_unnamed = assert_same_on_both(&unnamed, &[&up], &requests).await;
    assert!(static_unnamed[0].upstream[0].1.contains("host: client.example"), "{:?}", static_unnamed[0].upstream);
}
