//! The connection manager's path normalization (`normalize_path`,
//! `merge_slashes`, `path_with_escaped_slashes_action`) compared with
//! Envoy path by path: a few thousand generated paths (every printable
//! byte, every `%XX` escape in both hex cases, every short mix of dots,
//! slashes, backslashes and escapes) must reach the upstream as the same
//! bytes, or get the same status, on both proxies. A policy written for
//! Envoy (an RBAC rule on `/admin`) must hold on weft-proxy too.

use weft_e2e::bootstrap::{cluster, locality, single_route_with, upstream};
use weft_e2e::{client, Kind, Proxy, Request, Upstream};

/// What one request came to: the status, `location` and `connection` the client got,
/// and the path the upstream saw (if it was reached).
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    location: Option<String>,
    /// `connection: close` (Envoy closes after refusing a path).
    closes: bool,
    upstream_path: Option<String>,
}

fn bootstrap(manager: &str) -> String {
    single_route_with(manager, "cluster: up", &[cluster("up", "", &[locality(0, &[upstream("up")])])])
}

async fn observe(kind: Kind, template: &str, up: &Upstream, requests: &[Request]) -> (Vec<Seen>, Proxy) {
    let proxy = Proxy::start(kind, template, &[up]).await.unwrap_or_else(|e| panic!("{e}"));
    up.take();
    let mut out = Vec::with_capacity(requests.len());
    for req in requests {
        // A connection closed without an answer is status 0.
        let response = client::send(proxy.port, req).await;
        let seen = up.take();
        assert!(seen.len() <= 1, "{kind:?} {}: {} upstream requests", req.path, seen.len());
        out.push(Seen {
            status: response.as_ref().map_or(0, |r| r.status),
            closes: response.as_ref().is_ok_and(|r| r.header("connection") == Some("close")),
            location: response.ok().and_then(|r| r.header("location").map(str::to_string)),
            upstream_path: seen.first().map(|s| s.path.clone()),
        });
    }
    (out, proxy)
}

/// Runs `paths` through both proxies with the connection manager fields
/// `manager`; asserts they agree on every one, listing all that differ.
/// Returns weft-proxy's results and both proxies (for their stats).
async fn assert_same(manager: &str, paths: &[String]) -> (Vec<Seen>, [Proxy; 2]) {
    let up = Upstream::start("up").await;
    let template = bootstrap(manager);
    let requests: Vec<Request> = paths.iter().map(|p| Request::get(p)).collect();
    let (envoy, envoy_proxy) = observe(Kind::Envoy, &template, &up, &requests).await;
    let (weft, weft_proxy) = observe(Kind::Weft, &template, &up, &requests).await;
    let differences: Vec<String> = paths
        .iter()
        .zip(envoy.iter().zip(&weft))
        .filter(|(p, (e, w))| e != w && !refused_on_purpose(p, w))
        .map(|(p, (e, w))| format!("{p:?}: Envoy {e:?}, weft-proxy {w:?}"))
        .collect();
    assert!(
        differences.is_empty(),
        "{manager}: {} of {} paths differ:\n{}",
        differences.len(),
        paths.len(),
        differences.join("\n")
    );
    (weft, [envoy_proxy, weft_proxy])
}

/// Where we differ on purpose: `<`, `>` and `` ` `` may not appear in a URI
/// (RFC 3986), and the `http` crate's URI, which Pingora's request header
/// holds, cannot hold them. Envoy's codec takes them (and forwards them,
/// escaped when it normalizes); ours answers 400. Clients escape them.
fn refused_on_purpose(path: &str, weft: &Seen) -> bool {
    path.contains(['<', '>', '`']) && weft.status == 400 && weft.upstream_path.is_none()
}

/// Every short path over an alphabet of pieces, each after a leading `/`.
fn combinations(pieces: &[&str], max_len: u32) -> Vec<String> {
    let mut out = Vec::new();
    for len in 1..=max_len {
        for n in 0..pieces.len().pow(len) {
            let (mut path, mut n) = (String::from("/"), n);
            for _ in 0..len {
                path.push_str(pieces[n % pieces.len()]);
                n /= pieces.len();
            }
            out.push(path);
        }
    }
    out
}

/// The generated paths: printable bytes, escapes, dot segments, nested
/// escapes, queries.
fn corpus() -> Vec<String> {
    let mut paths: Vec<String> = (0x21u8..0x7f).map(|b| format!("/a{}b", b as char)).collect();
    for b in 0..=255u8 {
        paths.push(format!("/a%{b:02X}b"));
        paths.push(format!("/a%{b:02x}b"));
    }
    paths.extend(combinations(&["/", ".", "%2e", "%2E", "a", "\\", "%", "%2f", "%5C"], 3));
    paths.extend(combinations(&["/", ".", "%2e", "a", "\\"], 4));
    // Escapes that decoding could complete: `%%30%30` must not become `%00`.
    paths.extend(combinations(&["%", "%3", "%30", "0", "%34", "%31", "%%"], 3));
    paths.extend(
        [
            "/a/../b?x=/../c",
            "/a/./b?%2e%2e",
            "/a//b?c//d",
            "/a/%2f../b?q=%2F",
            "/a/b/c/../../../../d",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/admin/..%2fadmin",
            "/public/..%5cadmin",
            "/caf%C3%A9/./x",
            "/café/../x",
            "/a%C3%A9/./x",
            "/a#frag",
            "/a?b#frag",
            "//",
            "///a///b///",
        ]
        .map(String::from),
    );
    paths
}

#[tokio::test]
async fn normalize_path_matches_envoy() {
    // Istio's default (`pathNormalization: BASE`).
    let paths = corpus();
    let (weft, [envoy, ours]) = assert_same("normalize_path: true", &paths).await;
    // The tests above must not pass because neither proxy normalizes.
    let at = |p: &str| &weft[paths.iter().position(|q| q == p).expect("in the corpus")];
    assert_eq!(at("/a/../b?x=/../c").upstream_path.as_deref(), Some("/b?x=/../c"));
    assert_eq!(at("/a%61b").upstream_path.as_deref(), Some("/aab"));
    assert_eq!((at("/a%00b").status, at("/a%00b").closes), (400, true));
    assert_eq!(at("/a<b").status, 400, "the deliberate difference is still one");
    let refused = "envoy_http_downstream_rq_failed_path_normalization{envoy_http_conn_manager_prefix=\"main\"}";
    let (e, w) = (envoy.stat(refused).await, ours.stat(refused).await);
    assert!(e.is_some_and(|n| n > 0.0), "{e:?}");
    assert_eq!(e, w);
}

#[tokio::test]
async fn merge_slashes_and_unescaped_slashes_match_envoy() {
    // Istio's `DECODE_AND_MERGE_SLASHES`.
    let paths = corpus();
    let manager = "normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD";
    let (weft, _) = assert_same(manager, &paths).await;
    let at = |p: &str| &weft[paths.iter().position(|q| q == p).expect("in the corpus")];
    assert_eq!(at("/admin/..%2fadmin").upstream_path.as_deref(), Some("/admin"));
    assert_eq!(at("///a///b///").upstream_path.as_deref(), Some("/a/b/"));
}

#[tokio::test]
async fn escaped_slash_actions_and_defaults_match_envoy() {
    let paths: Vec<String> = [
        "/a%2fb", "/a%2Fb?x", "/a%5cb", "/a%5C..%5Cb", "/a/b?x=%2f", "/a%252fb", "/a/./b", "/a//b", "/a#b", "/a?b#c", "/a%00b",
    ]
    .map(String::from)
    .to_vec();
    // Nothing configured: the path goes as it came, but a fragment is refused.
    let (weft, _) = assert_same("", &paths).await;
    assert_eq!(weft[6].upstream_path.as_deref(), Some("/a/./b"));
    assert_eq!(weft[8].status, 400);
    assert_same("path_with_escaped_slashes_action: REJECT_REQUEST", &paths).await;
    let (weft, [envoy, ours]) = assert_same("path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT", &paths).await;
    assert_eq!((weft[1].status, weft[1].location.as_deref()), (307, Some("/a/b?x")));
    let redirected = "envoy_http_downstream_rq_redirected_with_normalized_path{envoy_http_conn_manager_prefix=\"main\"}";
    let (e, w) = (envoy.stat(redirected).await, ours.stat(redirected).await);
    assert!(e.is_some_and(|n| n > 0.0), "{e:?}");
    assert_eq!(e, w);
}

