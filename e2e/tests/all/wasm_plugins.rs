//! proxy-wasm plugins (wasm-sdk/, built by `make wasm` into target/wasm):
//! each SDK example, the headers example built for wasm32-wasip1 and
//! plugins written with the upstream `proxy-wasm` crate run on Envoy and
//! weft-proxy with the same bootstrap (bootstraps/wasm.yaml). Clients, the
//! upstream and the services plugins call must observe the same thing;
//! custom metrics must read the same on `/stats/prometheus`.

use std::convert::Infallible;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use weft_e2e::proxy::repo_root;
use weft_e2e::{free_port, Kind, Proxy, Request, Seen, Upstream};

use crate::{assert_same_on_both, describe, run, Outcome};

const WASM: &str = include_str!("bootstraps/wasm.yaml");

/// The bootstrap running `target/wasm/<plugin>.wasm` with `config`;
/// `ports` fills `${PORT_<cluster>}` for clusters the plugin calls (the
/// others get a port nothing listens on).
fn bootstrap(plugin: &str, config: &str, ports: &[(&str, u16)]) -> String {
    let dir = repo_root().join("target/wasm");
    let file = dir.join(format!("{plugin}.wasm"));
    assert!(file.exists(), "{} is missing: run `make wasm`", file.display());
    let dir = dir.canonicalize().expect("target/wasm");
    let mut out = WASM
        .replace("${WASM_DIR}", &dir.display().to_string())
        .replace("${PLUGIN}", plugin)
        .replace("${CONFIG}", config);
    for cluster in ["authz", "httpbin"] {
        let port = ports.iter().find(|(c, _)| *c == cluster).map_or_else(free_port, |(_, p)| *p);
        out = out.replace(&format!("${{PORT_{cluster}}}"), &port.to_string());
    }
    out
}

/// Runs `observe` on Envoy, then on weft-proxy, and asserts they saw the
/// same, item by item (`what` names an item in the failure message).
async fn same_on_both<T, F, Fut>(what: &str, observe: F) -> Vec<T>
where
    T: PartialEq + Debug,
    F: Fn(Kind) -> Fut,
    Fut: Future<Output = Vec<T>>,
{
    let envoy = observe(Kind::Envoy).await;
    let weft = observe(Kind::Weft).await;
    assert_eq!(envoy.len(), weft.len(), "{what}s: left Envoy, right weft-proxy");
    for (i, (e, w)) in envoy.iter().zip(&weft).enumerate() {
        assert_eq!(e, w, "{what} {i} differs: left Envoy, right weft-proxy");
    }
    weft
}

fn header<'a>(outcome: &'a Outcome, name: &str) -> Option<&'a str> {
    outcome.response.header(name)
}

const HEADERS_CONFIG: &str = r#"{"request":{"remove":["x-secret"],"set":{"x-mode":"rewritten"},"add":{"x-plugin":"weft","X-Mixed-Case":"lowered","x-multi":"plugin"}},"response":{"remove":["x-upstream"],"set":{"x-served-by":"plugin"},"add":{"x-extra":"1"}},"report":true}"#;

fn headers_requests() -> Vec<Request> {
    vec![
        Request::get("/edit").header("x-secret", "s3cret").header("x-mode", "original").header("x-multi", "client"),
        // A response the proxy makes itself goes through the plugin too.
        Request::get("/direct"),
    ]
}

#[tokio::test]
async fn headers_plugin_matches_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap("headers", HEADERS_CONFIG, &[]);
    let (ups, requests) = ([&up], headers_requests());
    let out = assert_same_on_both(&template, &ups, &requests).await;

    let seen = &out[0].upstream[0].1;
    for expected in ["x-mode: rewritten", "x-plugin: weft", "x-mixed-case: lowered", "x-multi: client", "x-multi: plugin"] {
        assert!(seen.contains(expected), "upstream lacks {expected:?}:\n{seen}");
    }
    assert!(!seen.lines().any(|l| l.starts_with("x-secret:")), "x-secret was not removed:\n{seen}");
    // What the plugin is shown: pseudo-headers first, `host` as :authority.
    let names = seen.lines().find_map(|l| l.strip_prefix("x-plugin-request-names: ")).expect("request report");
    assert!(names.starts_with(":authority,:path,:method,:scheme,"), "{names}");
    assert_eq!(header(&out[0], "x-upstream"), None);
    assert_eq!(header(&out[0], "x-served-by"), Some("plugin"));
    assert_eq!(header(&out[0], "x-extra"), Some("1"));
    assert!(header(&out[0], "x-plugin-response-names").is_some_and(|n| n.starts_with(":status,")));
    assert_eq!(header(&out[1], "x-served-by"), Some("plugin"), "local response");
}

/// The same plugin built for wasm32-wasip1 (WASI imports, libc start-up)
/// behaves as the wasm32-unknown-unknown build.
#[tokio::test]
async fn wasi_module_runs_like_the_plain_one() {
    let up = Upstream::start("up").await;
    let (ups, requests) = ([&up], headers_requests());
    let wasi = bootstrap("headers.wasi", HEADERS_CONFIG, &[]);
    let out = assert_same_on_both(&wasi, &ups, &requests).await;
    let plain = run(Kind::Envoy, &bootstrap("headers", HEADERS_CONFIG, &[]), &ups, &requests).await;
    assert_eq!(out, plain, "left wasip1, right wasm32-unknown-unknown");
}

/// A configuration the plugin refuses (`on_configure` returns false)
/// rejects the whole bootstrap.
#[tokio::test]
async fn a_refused_plugin_config_fails_the_start() {
    let template = bootstrap("headers", r#"{"no_such_field":1}"#, &[]);
    let up = Upstream::start("up").await;
    for kind in Kind::BOTH {
        let started = Proxy::start(kind, &template, &[&up]).await;
        assert!(started.is_err(), "{kind:?} started with a configuration its plugin refused");
    }
}

/// The auth service: 200 with `x-auth-user` for a known bearer token, 401
/// otherwise; `Bearer slow` is answered after 2 s. Records what it is asked.
struct AuthService {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AuthService {
    async fn start() -> AuthService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind auth service");
        let port = listener.local_addr().expect("addr").port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| check(log.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        AuthService { port, seen, task }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().expect("lock")).iter().map(describe).collect()
    }
}

async fn check(log: Arc<Mutex<Vec<Seen>>>, req: hyper::Request<hyper::body::Incoming>) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let headers = parts.headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
    let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    log.lock().expect("lock").push(Seen { method: parts.method.to_string(), path, headers, body });
    let token = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let user = match token {
        "Bearer alice-token" => Some("alice"),
        "Bearer slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Some("slow")
        }
        _ => None,
    };
    let response = match user {
        Some(user) => hyper::Response::builder().status(200).header("x-auth-user", user),
        None => hyper::Response::builder().status(401),
    };
    Ok(response.body(Full::new(Bytes::new())).expect("valid response"))
}

/// Per request: what the client and upstream saw, and what the auth
/// service was asked.
async fn run_with_auth(kind: Kind, template: &str, up: &Upstream, auth: &AuthService, requests: &[Request]) -> Vec<(Outcome, Vec<String>)> {
    let proxy = Proxy::start(kind, template, &[up]).await.unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for req in requests {
        let response = proxy.send(req).await.normalized();
        let upstream = up.take().iter().map(|s| (up.name.clone(), describe(s))).collect();
        out.push((Outcome { response, upstream }, auth.take()));
    }
    out
}

#[tokio::test]
async fn auth_plugin_matches_envoy() {
    let (up, auth) = (Upstream::start("up").await, AuthService::start().await);
    let config = r#"{"cluster":"authz","path":"/check","timeout_ms":500}"#;
    let template = bootstrap("auth", config, &[("authz", auth.port)]);
    let requests = vec![
        Request::get("/none"),
        Request::get("/bad").header("authorization", "Bearer nope"),
        Request::get("/good").header("authorization", "Bearer alice-token"),
        // A client cannot pass an identity of its own.
        Request::get("/spoof").header("authorization", "Bearer alice-token").header("x-auth-user", "mallory"),
        // The service answers after the plugin's timeout.
        Request::get("/slow").header("authorization", "Bearer slow"),
    ];
    let out = same_on_both("request", |kind| run_with_auth(kind, &template, &up, &auth, &requests)).await;

    let statuses: Vec<u16> = out.iter().map(|(o, _)| o.response.status).collect();
    assert_eq!(statuses, [403, 403, 200, 200, 403]);
    assert_eq!(out[0].0.response.body_str(), "denied by auth plugin\n");
    assert!(out[0].0.upstream.is_empty(), "a denied request must not reach the upstream");
    assert!(out[0].1[0].starts_with("GET /check\n"), "{:?}", out[0].1);
    assert!(!out[0].1[0].contains("authorization"), "no authorization to pass on: {:?}", out[0].1);
    assert!(out[2].1[0].contains("authorization: Bearer alice-token"), "{:?}", out[2].1);
    for i in [2, 3] {
        let seen = &out[i].0.upstream[0].1;
        assert!(seen.contains("x-auth-user: alice") && !seen.contains("mallory"), "request {i}:\n{seen}");
    }
}

#[tokio::test]
async fn auth_plugin_denies_when_the_service_is_down() {
    let up = Upstream::start("up").await;
    let template = bootstrap("auth", r#"{"cluster":"authz"}"#, &[]);
    let out = assert_same_on_both(&template, &[&up], &[Request::get("/").header("authorization", "Bearer alice-token")]).await;
    assert_eq!(out[0].response.status, 403);
    assert!(out[0].upstream.is_empty());
}

fn client(id: &str) -> Request {
    Request::get("/").header("x-client-id", id)
}

#[tokio::test]
async fn ratelimit_plugin_limits_per_client_like_envoy() {
    let up = Upstream::start("up").await;
    // No refill during the test: each client has exactly 2 tokens.
    let template = bootstrap("ratelimit", r#"{"max_tokens":2,"refill_ms":600000}"#, &[]);
    let requests = vec![
        client("a"),
        client("a"),
        client("a"),
        client("b"),
        // No x-client-id: the client is the source IP.
        Request::get("/"),
        Request::get("/"),
        Request::get("/"),
    ];
    let ups = [&up];
    let out = assert_same_on_both(&template, &ups, &requests).await;
    let statuses: Vec<u16> = out.iter().map(|o| o.response.status).collect();
    assert_eq!(statuses, [200, 200, 429, 200, 200, 200, 429]);
    assert_eq!(out[2].response.body_str(), "rate limited\n");
    assert_eq!(header(&out[2], "x-ratelimit-client"), Some("a"));
    assert_eq!(header(&out[6], "x-ratelimit-client"), Some("127.0.0.1"));
}

/// The tick timer refills the buckets: a client with one token gets a
/// second request through after a few refill periods.
#[tokio::test]
async fn ratelimit_plugin_refills_on_tick_like_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap("ratelimit", r#"{"max_tokens":1,"refill_ms":200}"#, &[]);
    let statuses = same_on_both("status", |kind| {
        let (template, up) = (&template, &up);
        async move {
            let proxy = Proxy::start(kind, template, &[up]).await.unwrap_or_else(|e| panic!("{e}"));
            let first = proxy.send(&client("a")).await.status;
            tokio::time::sleep(Duration::from_millis(700)).await;
            vec![first, proxy.send(&client("a")).await.status]
        }
    })
    .await;
    assert_eq!(statuses, [200, 200]);
}

#[tokio::test]
async fn body_plugin_rewrites_like_envoy() {
    let up = Upstream::start("up").await;
    let (ups, requests) = ([&up], vec![Request::get("/x"), Request::get("/direct"), Request::get("/x").method("HEAD")]);
    // The length changes: content-length goes, the proxy frames the body.
    let template = bootstrap("body", r#"{"find":"up","replace":"the upstream"}"#, &[]);
    let out = assert_same_on_both(&template, &ups, &requests).await;
    assert_eq!(out[0].response.body_str(), "the upstream");
    assert_eq!(header(&out[0], "content-length"), None);
    assert_eq!(out[1].response.body_str(), "direct answer");
    // The length stays: content-length stays.
    let template = bootstrap("body", r#"{"uppercase":true}"#, &[]);
    let out = assert_same_on_both(&template, &ups, &requests).await;
    assert_eq!(out[0].response.body_str(), "UP");
    assert_eq!(header(&out[0], "content-length"), Some("2"));
    assert_eq!(out[1].response.body_str(), "DIRECT ANSWER");
}

/// The plugin's metrics on `/stats/prometheus`, once every line of `until`
/// is there (Envoy publishes histograms at its stats flush, every 5 s by
/// default; weft-proxy at once, so a scrape can land inside the last
/// `on_log`, between the histogram and the counter it bumps after).
async fn plugin_metrics(proxy: &Proxy, until: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let text = weft_e2e::client::send(proxy.admin, &Request::get("/stats/prometheus")).await.expect("stats").body_str();
        // Sorted: the order of metric families is the exporter's business.
        let mut lines: Vec<String> = text.lines().filter(|l| l.contains("weft_plugin_")).map(str::to_string).collect();
        lines.sort();
        if until.iter().all(|u| lines.iter().any(|l| l == u)) || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn metrics_plugin_exports_like_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap("metrics", "", &[]);
    // Response bodies: "up" (2 bytes) three times, "direct answer" (13).
    // Two carry `x-tag`, which the plugin reads in `on_log` with `:status`.
    let requests = [Request::get("/a"), Request::get("/b").header("x-tag", "1"), Request::get("/c"), Request::get("/direct").header("x-tag", "1")];
    let lines = same_on_both("metrics line", |kind| {
        let (template, up, requests) = (&template, &up, &requests);
        async move {
            let proxy = Proxy::start(kind, template, &[up]).await.unwrap_or_else(|e| panic!("{e}"));
            for req in requests {
                proxy.send(req).await;
            }
            // The gauge goes back to 0 in the stream's last callback, which
            // may run after the others' metrics are in: wait for it too.
            let until = ["weft_plugin_response_bytes_count{} 4", "weft_plugin_tagged_ok_total{} 2", "weft_plugin_active_requests{} 0"];
            let mut lines = plugin_metrics(&proxy, &until).await;
            // Envoy's histogram sum is approximate (samples are binned to two
            // significant digits): 19 reads 19.6. Compare it to 5%.
            for line in lines.iter_mut().filter(|l| l.starts_with("weft_plugin_response_bytes_sum")) {
                let sum: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("sum");
                assert!((sum - 19.0).abs() < 19.0 * 0.05, "{kind:?}: {line}");
                *line = "weft_plugin_response_bytes_sum{} ~19".into();
            }
            lines
        }
    })
    .await;
    for expected in [
        "# TYPE weft_plugin_requests_total counter",
        "weft_plugin_requests_total{} 4",
        "weft_plugin_active_requests{} 0",
        "# TYPE weft_plugin_response_bytes histogram",
        "weft_plugin_response_bytes_bucket{le=\"1\"} 0",
        "weft_plugin_response_bytes_bucket{le=\"5\"} 3",
        "weft_plugin_response_bytes_bucket{le=\"25\"} 4",
        "weft_plugin_response_bytes_count{} 4",
        "weft_plugin_tagged_ok_total{} 2",
    ] {
        assert!(lines.iter().any(|l| l == expected), "no {expected:?} in\n{}", lines.join("\n"));
    }
}

#[tokio::test]
async fn upstream_sdk_http_headers_matches_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap("upstream_http_headers", "", &[]);
    let out = assert_same_on_both(&template, &[&up], &[Request::get("/hello"), Request::get("/other")]).await;
    assert_eq!(out[0].response.body_str(), "Hello, World!\n");
    assert_eq!(header(&out[0], "hello"), Some("World"));
    assert!(out[0].upstream.is_empty());
    assert_eq!(header(&out[1], "powered-by"), Some("proxy-wasm"));
}

/// The plugin calls cluster `httpbin`; its answer's first byte decides. The
/// test upstream answers with its name: "bob" (b = 98, even) lets requests
/// through, "alice" (a = 97, odd) does not.
#[tokio::test]
async fn upstream_sdk_http_auth_random_matches_envoy() {
    let up = Upstream::start("up").await;
    for (name, status) in [("bob", 200), ("alice", 403)] {
        let httpbin = Upstream::start(name).await;
        let template = bootstrap("upstream_http_auth_random", "", &[("httpbin", httpbin.port())]);
        let out = assert_same_on_both(&template, &[&up, &httpbin], &[Request::get("/")]).await;
        assert_eq!(out[0].response.status, status, "httpbin answering {name:?}");
        assert!(out[0].upstream.iter().any(|(u, seen)| u == name && seen.starts_with("GET /bytes/1\n")), "{:?}", out[0].upstream);
        assert_eq!(header(&out[0], "powered-by"), Some("proxy-wasm"));
    }
}

#[tokio::test]
async fn upstream_sdk_http_body_matches_envoy() {
    let up = Upstream::start("up").await;
    let secret = Upstream::start("top secret").await;
    let template = bootstrap("upstream_http_body", "", &[]).replace("${UP_up}", "${UP_top secret}");
    let out = assert_same_on_both(&template, &[&secret], &[Request::get("/")]).await;
    assert_eq!(out[0].response.body_str(), "Original message body (10 bytes) redacted.\n");
    let template = bootstrap("upstream_http_body", "", &[]);
    let out = assert_same_on_both(&template, &[&up], &[Request::get("/")]).await;
    assert_eq!(out[0].response.body_str(), "up");
}

#[tokio::test]
async fn upstream_sdk_http_config_matches_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap("upstream_http_config", "hello from the config", &[]);
    let out = assert_same_on_both(&template, &[&up], &[Request::get("/"), Request::get("/direct")]).await;
    for o in &out {
        assert_eq!(header(o, "custom-header"), Some("hello from the config"));
    }
}
