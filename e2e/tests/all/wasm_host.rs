//! The proxy-wasm host against Envoy's, with a plugin written in the text
//! format (tests/all/wasm/probe.wat) so each test controls exactly what
//! the plugin does: header edits from its configuration, a local reply,
//! a trap. Where weft-proxy differs on purpose (CPU and memory bounds,
//! which Envoy's V8 does not enforce), the test runs weft-proxy alone and
//! says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use weft_e2e::{Kind, Proxy, Request, Upstream};

use crate::assert_same_on_both;

/// The probe plugin compiled to a `.wasm` file both proxies load.
fn probe() -> PathBuf {
    module("probe")
}

/// `tests/all/wasm/NAME.wat` compiled to a `.wasm` file. Written aside
/// and renamed: tests running at once rewrite the same file, and a proxy
/// starting meanwhile must never read it half written.
fn module(name: &str) -> PathBuf {
    static WRITES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let wat = format!("{}/tests/all/wasm/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    let wasm = wat::parse_file(&wat).unwrap_or_else(|e| panic!("{name}.wat compiles: {e}"));
    let path = std::env::temp_dir().join(format!("weft-{name}-{}.wasm", std::process::id()));
    let aside = path.with_extension(format!("{}.tmp", WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    std::fs::write(&aside, wasm).expect("write the module");
    std::fs::rename(&aside, &path).expect("move the module in place");
    path
}

/// One listener, the probe in front of the router, `plugin` the
/// PluginConfig fields besides vm_config.
fn bootstrap(wasm: &Path, plugin: &str) -> String {
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
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/direct" }}
                direct_response: {{ status: 200, body: {{ inline_string: "direct" }} }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: up }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: probe
                root_id: probe_root
                {plugin}
                vm_config:
                  vm_id: probe_vm
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {wasm} }} }}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: up
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: ${{UP_up}} }} }} }} }} ] }} ]
"#,
        wasm = wasm.display()
    )
}

/// The bootstrap with its upstream cluster spoken to over HTTP/2 (gRPC,
/// trailers).
fn over_http2(template: &str) -> String {
    template.replace("connect_timeout: 1s", "connect_timeout: 1s\n    http2_protocol_options: {}")
}

const CONFIGURED: &str = r#"configuration: { "@type": type.googleapis.com/google.protobuf.StringValue, value: "tagged" }"#;

#[tokio::test]
async fn header_edits_and_local_replies_match_envoy() {
    let up = Upstream::start("up").await;
    let requests = vec![
        Request::get("/"),
        Request::get("/direct"),
        Request::get("/").header("x-deny", "1"),
        Request::get("/x").method("POST").body("some body"),
        // To gRPC clients: the plugin's own gRPC status, and the mapped one.
        grpc().header("x-deny-grpc", "1"),
        grpc().header("x-deny", "1"),
    ];
    let outcomes = assert_same_on_both(&bootstrap(&probe(), CONFIGURED), &[&up], &requests).await;
    // What the plugin did, so the comparison cannot pass on two proxies
    // that both ignore it.
    assert_eq!(outcomes[0].response.header("x-wasm"), Some("tagged"));
    assert!(outcomes[0].upstream[0].1.contains("x-wasm: tagged"), "{:?}", outcomes[0].upstream);
    assert_eq!(outcomes[1].response.header("x-wasm"), Some("tagged"), "direct responses pass the encoder too");
    // proxy_set_property in the request phase, read back in the response's.
    assert_eq!(outcomes[0].response.header("x-wasm-property"), Some("tagged"));
    // weft-proxy kept the compiled code on disk for the next start.
    let sha = weft_proxy::wasm::engine::sha256_hex(&std::fs::read(probe()).expect("probe"));
    let cache = std::env::temp_dir().join("weft-wasm-cache");
    let kept = std::fs::read_dir(&cache).expect("the cache directory").flatten().any(|e| e.file_name().to_string_lossy().starts_with(&format!("{sha}-")));
    assert!(kept, "no compiled code for {sha} in {}", cache.display());
    assert_eq!(outcomes[2].response.status, 403);
    assert_eq!(outcomes[2].response.body_str(), "denied by probe");
    assert!(outcomes[2].upstream.is_empty());
    let grpc_status = |i: usize| (outcomes[i].response.status, outcomes[i].response.header("grpc-status"));
    assert_eq!(grpc_status(4), (200, Some("16")));
    assert_eq!(grpc_status(5), (200, Some("7")));
}

fn grpc() -> Request {
    Request::get("/").method("POST").header("content-type", "application/grpc").body("\0\0\0\0\0")
}

#[tokio::test]
async fn a_trap_fails_the_request_by_policy_like_envoy() {
    let up = Upstream::start("up").await;
    // The failing request, then one that finds the VM failed.
    let requests = vec![Request::get("/").header("x-crash", "1"), Request::get("/")];
    for (policy, expected) in [
        ("", [503, 503]),
        ("failure_policy: FAIL_CLOSED", [503, 503]),
        ("failure_policy: FAIL_RELOAD", [503, 503]),
        // Envoy 1.40: FAIL_OPEN still fails the request that trapped;
        // the deprecated fail_open lets it through too.
        ("failure_policy: FAIL_OPEN", [503, 200]),
        ("fail_open: true", [200, 200]),
    ] {
        let plugin = format!("{CONFIGURED}\n                {policy}");
        let outcomes = assert_same_on_both(&bootstrap(&probe(), &plugin), &[&up], &requests).await;
        let statuses: Vec<u16> = outcomes.iter().map(|o| o.response.status).collect();
        assert_eq!(statuses, expected, "{policy:?}");
        assert_eq!(outcomes[1].response.header("x-wasm"), None, "{policy:?}: a failed plugin does not run");
    }
}

/// After a reload back-off (one second here), weft-proxy runs a new VM
/// whatever the policy, as Envoy does only for FAIL_RELOAD: Envoy's
/// default (FAIL_CLOSED) keeps answering 503 until restarted, which is
/// the difference on purpose.
#[tokio::test]
async fn a_failed_vm_is_reloaded_after_a_second() {
    let up = Upstream::start("up").await;
    for (kind, policy, after) in [
        (Kind::Envoy, "failure_policy: FAIL_RELOAD", 200),
        (Kind::Weft, "failure_policy: FAIL_RELOAD", 200),
        (Kind::Envoy, "", 503),
        (Kind::Weft, "", 200),
    ] {
        let plugin = format!("{CONFIGURED}\n                {policy}");
        let proxy = Proxy::start(kind, &bootstrap(&probe(), &plugin), &[&up]).await.expect("start");
        assert_eq!(proxy.send(&Request::get("/").header("x-crash", "1")).await.status, 503);
        // Envoy counts its back-off from the first request that finds the
        // VM failed; ask every 200 ms for three seconds.
        let mut last = proxy.send(&Request::get("/")).await;
        for _ in 0..15 {
            if last.status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            last = proxy.send(&Request::get("/")).await;
        }
        assert_eq!(last.status, after, "{kind:?} {policy:?}");
        if after == 200 {
            assert_eq!(last.header("x-wasm"), Some("tagged"), "{kind:?} {policy:?}: the new VM runs the plugin");
        }
    }
}

#[tokio::test]
async fn a_plugin_that_refuses_its_configuration_is_rejected_like_envoy() {
    // The probe refuses an empty configuration (proxy_on_configure → false).
    let up = Upstream::start("up").await;
    let text = bootstrap(&probe(), "");
    for kind in Kind::BOTH {
        let started = Proxy::start(kind, &text, &[&up]).await;
        assert!(started.is_err(), "{kind:?} started with a plugin that refused its configuration");
    }
    let (ok, weft) = weft_e2e::proxy::validate(Kind::Weft, &weft_e2e::proxy::render(&text, 1, 2, &[&up]));
    assert!(!ok);
    assert!(weft.contains("proxy_on_configure returned false"), "{weft}");
    assert!(weft.contains("http_filters[0]"), "the error names the filter: {weft}");
}

/// weft-proxy only: Envoy's V8 has no CPU bound on a callback (a looping
/// plugin holds its worker forever) and grows memory to V8's own limit.
/// weft-proxy interrupts the callback, fails the request, and makes a
/// new VM for the requests after (one reload a second at most).
#[tokio::test]
async fn runaway_plugins_are_stopped_and_replaced() {
    let up = Upstream::start("up").await;
    let proxy = Proxy::start(Kind::Weft, &bootstrap(&probe(), CONFIGURED), &[&up]).await.expect("start");
    for bad in ["x-spin", "x-grow", "x-crash"] {
        let started = std::time::Instant::now();
        let r = proxy.send(&Request::get("/").header(bad, "1")).await;
        assert_eq!(r.status, 503, "{bad}");
        assert!(started.elapsed() < Duration::from_secs(2), "{bad} took {:?}", started.elapsed());
        // The next VM comes at most a second after the failure.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = proxy.send(&Request::get("/")).await;
        assert_eq!((r.status, r.header("x-wasm")), (200, Some("tagged")), "after {bad}");
    }
    let failures = proxy.stat("weft_wasm_vm_failures_total").await;
    assert_eq!(failures, Some(3.0));
}


#[tokio::test]
async fn a_module_that_does_not_compile_is_rejected_like_envoy() {
    let up = Upstream::start("up").await;
    let garbage = std::env::temp_dir().join(format!("weft-garbage-{}.wasm", std::process::id()));
    std::fs::write(&garbage, b"\0asm\x01\0\0\0this is not a module").expect("write");
    let text = bootstrap(&garbage, CONFIGURED);
    for kind in Kind::BOTH {
        assert!(Proxy::start(kind, &text, &[&up]).await.is_err(), "{kind:?} started with a module that does not compile");
    }
    let (ok, weft) = weft_e2e::proxy::validate(Kind::Weft, &weft_e2e::proxy::render(&text, 1, 2, &[&up]));
    assert!(!ok);
    assert!(weft.contains("vm_config.code") && weft.contains("invalid wasm module"), "{weft}");
}

/// Shared queues: a request enqueues, the root context hears the queue is
/// ready, dequeues into shared data, and later requests see it.
#[tokio::test]
async fn shared_queues_deliver_like_envoy() {
    let up = Upstream::start("up").await;
    let wasm = wat::parse_file(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/all/wasm/queue.wat")).expect("queue.wat compiles");
    let path = std::env::temp_dir().join(format!("weft-queue-{}.wasm", std::process::id()));
    std::fs::write(&path, wasm).expect("write");
    let text = bootstrap(&path, "");
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &text, &[&up]).await.expect("start");
        up.take();
        assert_eq!(proxy.send(&Request::get("/")).await.status, 200);
        assert_eq!(proxy.send(&Request::get("/").header("x-enqueue", "1")).await.status, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(proxy.send(&Request::get("/")).await.status, 200);
        let seen: Vec<Option<String>> = up.take().iter().map(|s| s.header("x-got").map(str::to_string)).collect();
        assert_eq!(seen, vec![None, None, Some("hello".to_string())], "{kind:?}");
    }
}

/// An HTTP/2 upstream's trailers pass `proxy_on_response_trailers`: the
/// probe reads, adds and removes trailers; the body before them is not the
/// end of the stream. HTTP/1.1 clients get the body only, as from Envoy.
#[tokio::test]
async fn response_trailers_reach_plugins_like_envoy() {
    let up = Upstream::start("up").await;
    let template = over_http2(&bootstrap(&probe(), CONFIGURED));
    let req = Request::get("/grpc").method("POST").header("te", "trailers").header("x-test-trailers", "grpc-status=7,x-extra=gone").body("\0\0\0\0\0");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let h2 = weft_e2e::client::send_h2c(proxy.port, &req).await.expect("h2c request").normalized();
        let h1 = proxy.send(&req).await.normalized();
        seen.push((h2, h1));
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    let (h2, h1) = &seen[1];
    let trailers: Vec<(&str, &str)> = h2.trailers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(trailers, [("grpc-status", "7"), ("x-wasm", "tagged"), ("x-wasm-grpc-status", "7")], "x-extra removed, two added");
    assert_eq!((h1.body_str().as_str(), h1.trailers.len()), ("up", 0));
}

/// An HTTP/2 client's request trailers pass `proxy_on_request_trailers`:
/// the probe adds and removes trailers on their way to the HTTP/2
/// upstream, and a local reply from the callback answers the request; the
/// same on both proxies.
#[tokio::test]
async fn request_trailers_reach_plugins_like_envoy() {
    let up = Upstream::start("up").await;
    let template = over_http2(&bootstrap(&probe(), CONFIGURED));
    let tagged = Request::get("/t").method("POST").body("payload").trailer("x-keep", "1").trailer("x-extra", "gone");
    let denied = Request::get("/t").method("POST").body("payload").trailer("x-deny", "1");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let mut outcome = Vec::new();
        for req in [&tagged, &denied] {
            let response = weft_e2e::client::send_h2c(proxy.port, req).await.expect("h2c request").normalized();
            let upstream: Vec<String> = up.take().iter().map(crate::describe).collect();
            outcome.push((response, upstream));
        }
        seen.push(outcome);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    let upstream = &seen[1][0].1[0];
    assert!(upstream.contains("trailer:x-keep: 1\ntrailer:x-wasm: tagged") && !upstream.contains("x-extra"), "{upstream}");
    let (denied, upstream) = &seen[1][1];
    assert_eq!((denied.status, denied.body_str().as_str()), (403, "denied by probe"));
    // Envoy has sent the request upstream before its trailers: the
    // upstream saw a request without them, then it was reset.
    assert!(upstream.iter().all(|u| !u.contains("trailer:")), "{upstream:?}");
}

/// Unary gRPC callouts (tests/all/wasm/grpc.wat): what the upstream gRPC
/// service receives, and how the plugin learns the reply or the status,
/// the same on both proxies.
#[tokio::test]
async fn grpc_callouts_match_envoy() {
    let up = Upstream::start("up").await;
    let template = over_http2(&bootstrap(&module("grpc"), CONFIGURED));
    let requests = vec![
        Request::get("/").header("x-grpc-msg", "hello"),
        Request::get("/").header("x-grpc-msg", "fail:7:not for you"),
        Request::get("/").header("x-grpc-msg", "http:503"),
        Request::get("/"),
    ];
    let outcomes = assert_same_on_both(&template, &[&up], &requests).await;
    // What reached the app after the call, and what the gRPC service saw.
    let app: Vec<&str> = outcomes.iter().map(|o| o.upstream.iter().find(|(_, d)| d.starts_with("GET /")).map_or("", |(_, d)| d.as_str())).collect();
    assert!(app[0].contains("x-grpc-reply: hello\n"), "{}", app[0]);
    assert!(app[1].contains("x-grpc-code: H\n") && app[1].contains("x-grpc-message: not for you{via_upstream}\n"), "status 7: {}", app[1]);
    assert!(app[2].contains("x-grpc-code: O\n"), "HTTP 503 is UNAVAILABLE (14): {}", app[2]);
    assert!(!app[3].contains("x-grpc"), "no call: {}", app[3]);
    let call = &outcomes[0].upstream.iter().find(|(_, d)| d.starts_with("POST")).expect("the gRPC call").1;
    assert!(call.starts_with("POST /weft.Echo/Say\n:authority: up\n") && call.contains("te: trailers") && call.ends_with("\0\0\0\0\u{5}hello"), "{call:?}");
}

/// A cancelled gRPC call gets no callback; cancelling an unknown token is
/// BadArgument (2). Whether the call left before it was cancelled is a race in
/// Envoy (it may reach the service and be reset), so only what the app
/// and the client see is compared. weft-proxy sends a call after the
/// callback that made it: one cancelled in that callback never leaves.
#[tokio::test]
async fn cancelled_grpc_calls_answer_nothing_like_envoy() {
    let up = Upstream::start("up").await;
    let template = over_http2(&bootstrap(&module("grpc"), CONFIGURED));
    let req = Request::get("/cancel").header("x-grpc-msg", "hello").header("x-grpc-cancel", "1");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let outcome = crate::run(kind, &template, &[&up], std::slice::from_ref(&req)).await.remove(0);
        let app = outcome.upstream.iter().find(|(_, d)| d.starts_with("GET /cancel")).map(|(_, d)| d.clone()).unwrap_or_default();
        if kind == Kind::Weft {
            assert!(!outcome.upstream.iter().any(|(_, d)| d.starts_with("POST")), "a cancelled call was sent: {:?}", outcome.upstream);
        }
        seen.push((outcome.response, app));
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert!(seen[1].1.contains("x-grpc-cancel: 02\n") && !seen[1].1.contains("x-grpc-reply"), "{}", seen[1].1);
}

/// A callout's answer reaches the plugin even when the request that made
/// it did not wait for it (and may be gone): the plugin keeps the message
/// and a later request reads it, as on Envoy. (Such answers used to wait
/// for a pause that never came.)
#[tokio::test]
async fn callout_answers_reach_plugins_that_did_not_wait_like_envoy() {
    let up = Upstream::start("up").await;
    let template = over_http2(&bootstrap(&module("grpc"), CONFIGURED));
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let asked = Request::get("/async").header("x-grpc-msg", "hello").header("x-grpc-async", "1");
        assert_eq!(proxy.send(&asked).await.status, 200, "{kind:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        up.take();
        assert_eq!(proxy.send(&Request::get("/last").header("x-grpc-last", "1")).await.status, 200, "{kind:?}");
        seen.push(up.take().iter().find_map(|s| s.header("x-grpc-kept").map(str::to_string)));
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1].as_deref(), Some("hello"));
}

/// The `x-grpc-log` header the stream plugin (tests/all/wasm/grpc_stream.wat)
/// gave the request that reached the app, and what the gRPC service saw.
fn stream_log(outcome: &crate::Outcome) -> (String, Option<String>) {
    let app = outcome.upstream.iter().find(|(_, d)| d.starts_with("GET /")).map_or("", |(_, d)| d.as_str());
    let log = app.lines().find_map(|l| l.strip_prefix("x-grpc-log: ")).unwrap_or_default().to_string();
    (log, outcome.upstream.iter().find(|(_, d)| d.starts_with("POST")).map(|(_, d)| d.clone()))
}

/// gRPC streams (tests/all/wasm/grpc_stream.wat): the plugin's messages
/// reach the service as one stream, and what comes back (initial
/// metadata, each message, trailing metadata, the close and its status)
/// reaches the plugin in the same order and words as on Envoy: a stream
/// the plugin closes, one the service ends with a status, a trailers-only
/// refusal, one ended by the plugin's last message, one to an unknown
/// cluster.
#[tokio::test]
async fn grpc_streams_match_envoy() {
    let up = Upstream::start("up").await;
    let template = over_http2(&bootstrap(&module("grpc_stream"), CONFIGURED));
    let requests: Vec<Request> = ["a", "b", "c", "d", "f"].iter().map(|m| Request::get(&format!("/{m}")).header("x-grpc-stream", m)).collect();
    let outcomes = assert_same_on_both(&template, &[&up], &requests).await;
    let logs: Vec<String> = outcomes.iter().map(|o| stream_log(o).0).collect();
    assert_eq!(
        logs,
        [
            "0S0;Ihi;Mone;Mtwo;T0;CAbye{via_upstream};",
            "0S0;Ihi;Mone;T7;CHno{via_upstream};",
            "0S0;I-;T16;CQwho are you{via_upstream};",
            "0S0;Ihi;Mone;T0;CAbye{via_upstream};",
            "4",
        ],
        "one line per request: the open status, then the events"
    );
    let stream = stream_log(&outcomes[0]).1.expect("the stream reached the service");
    assert!(stream.starts_with("POST /weft.Echo/Chat\n:authority: up\n") && stream.contains("\nx-md: hi\n") && stream.contains("\nte: trailers\n"), "{stream}");
}

/// Streams that outlive the request that opened them, or its pause: the
/// events after reach the root context, and a later request reads what
/// the plugin logged of them, the same on both proxies. `g` goes on at
/// once; `i` goes on with the first message (what the app then sees is
/// the log so far).
#[tokio::test]
async fn grpc_streams_outlive_their_request_like_envoy() {
    let up = Upstream::start("up").await;
    let template = over_http2(&bootstrap(&module("grpc_stream"), CONFIGURED));
    let mut logs = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let mut log = Vec::new();
        for mode in ["g", "i"] {
            up.take();
            assert_eq!(proxy.send(&Request::get(&format!("/{mode}")).header("x-grpc-stream", mode)).await.status, 200, "{kind:?}");
            let early = up.take().iter().find(|s| s.method == "GET").and_then(|s| s.header("x-grpc-log").map(str::to_string));
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(proxy.send(&Request::get("/h").header("x-grpc-stream", "h")).await.status, 200, "{kind:?}");
            let later = up.take().iter().find_map(|s| s.header("x-grpc-log").map(str::to_string));
            log.push((early, later));
        }
        logs.push(log);
    }
    assert_eq!(logs[0], logs[1], "left Envoy, right weft-proxy");
    let full = Some("0S0;Ihi;Mone;Mtwo;T0;CAbye{via_upstream};".to_string());
    assert_eq!(logs[1], [(None, Some("0S0;Ihi;Mone;T0;CAbye{via_upstream};".to_string())), (Some("0S0;Ihi;Mone;".to_string()), full)]);
}

/// A cancelled gRPC stream is heard of no more: sends and closes on its
/// token fail as on Envoy, as do a cancel of an unknown token and a send
/// on a unary call's. Whether Envoy's stream left before the cancel is a
/// race, so only what the app and the client see is compared; weft-proxy
/// starts a stream after the callback that opened it, so one cancelled in
/// that callback never leaves.
#[tokio::test]
async fn cancelled_grpc_streams_match_envoy() {
    let up = Upstream::start("up").await;
    let template = over_http2(&bootstrap(&module("grpc_stream"), CONFIGURED));
    let req = Request::get("/e").header("x-grpc-stream", "e");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let outcome = crate::run(kind, &template, &[&up], std::slice::from_ref(&req)).await.remove(0);
        let (log, stream) = stream_log(&outcome);
        if kind == Kind::Weft {
            assert_eq!(stream, None, "a cancelled stream was sent");
        }
        seen.push((outcome.response, log));
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1].1, "0S0;01121", "cancel, cancel unknown, send, send on a call's token, close");
}

/// A gRPC stream on an HTTP/1.1 cluster is refused (BadArgument): a
/// stream of messages with trailers needs HTTP/2. Envoy would try it
/// over HTTP/1.1; we differ on purpose, so weft-proxy runs alone.
#[tokio::test]
async fn grpc_streams_need_an_http2_cluster() {
    let up = Upstream::start("up").await;
    let template = bootstrap(&module("grpc_stream"), CONFIGURED);
    let outcome = crate::run(Kind::Weft, &template, &[&up], &[Request::get("/a").header("x-grpc-stream", "a")]).await.remove(0);
    let (log, stream) = stream_log(&outcome);
    assert_eq!((log.as_str(), stream), ("2", None));
}

/// `proxy_close_stream` resets the stream: the client gets no response,
/// the upstream no request, and the next request is served — as in Envoy.
#[tokio::test]
async fn a_closed_stream_is_reset_like_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap(&probe(), CONFIGURED);
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        up.take();
        let closed = weft_e2e::client::send(proxy.port, &Request::get("/").header("x-close", "1")).await;
        let reached = up.take().len();
        let next = proxy.send(&Request::get("/")).await;
        seen.push((closed.map(|r| r.status).map_err(|_| "no response"), reached, next.status));
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1], (Err("no response"), 0, 200));
}

/// In `proxy_on_log` the request headers are the routed ones, the
/// router's `x-envoy-expected-rq-timeout-ms` included (the probe counts
/// them): two routed requests, a direct response without.
#[tokio::test]
async fn on_log_sees_the_routed_request_like_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap(&probe(), CONFIGURED);
    let mut counts = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        for path in ["/", "/direct", "/x"] {
            assert_eq!(proxy.send(&Request::get(path)).await.status, 200, "{kind:?} {path}");
        }
        // Envoy publishes plugin metrics on its stats flush.
        let deadline = std::time::Instant::now() + Duration::from_secs(12);
        let count = loop {
            let count = proxy.stat("probe_routed_total").await;
            if count == Some(2.0) || std::time::Instant::now() > deadline {
                break count;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        counts.push(count);
    }
    assert_eq!(counts, [Some(2.0), Some(2.0)], "left Envoy, right weft-proxy");
}

/// A plugin's own reply is logged with the details it gave
/// (`proxy_send_local_response`), whitespace made `_`, as Envoy logs it;
/// the router's and a direct response's details stay the proxy's.
#[tokio::test]
async fn a_plugin_reply_logs_its_details_like_envoy() {
    let up = Upstream::start("up").await;
    let requests = [Request::get("/"), Request::get("/direct"), Request::get("/").header("x-deny", "1")];
    let mut logs = Vec::new();
    for kind in Kind::BOTH {
        let log = std::env::temp_dir().join(format!("weft-e2e-plugin-details-{}-{kind:?}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let access_log = format!(
            r#"stat_prefix: main
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format: {{ text_format_source: {{ inline_string: "%RESPONSE_CODE% [%RESPONSE_CODE_DETAILS%] %RESPONSE_FLAGS%\n" }} }}"#,
            log.display()
        );
        let template = bootstrap(&probe(), CONFIGURED).replacen("stat_prefix: main", &access_log, 1);
        let mut proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        for r in &requests {
            proxy.send(r).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.terminate();
        logs.push(std::fs::read_to_string(&log).unwrap_or_default());
    }
    assert_eq!(logs[0], logs[1], "left Envoy, right weft-proxy");
    assert_eq!(logs[1], "200 [via_upstream] -\n200 [direct_response] -\n403 [probe_said_no] -\n");
}

/// A request body sent in two pieces, through a plugin that lets the
/// chunks through, holds them all (StopIterationAndBuffer) or denies at the
/// end: whether the upstream saw the request before the body ended, what
/// the client got, and what the plugin saw (`x-body-seen`).
#[tokio::test]
async fn request_bodies_stream_through_plugins_like_envoy() {
    use crate::envoy_diff_streaming::{open, send, upstream_sees};
    use http_body_util::BodyExt;
    let up = Upstream::start("up").await;
    let template = bootstrap(&module("body"), "");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let mut outcome = Vec::new();
        for mode in ["pass", "buffer", "deny"] {
            up.take();
            let (tx, answer) = open(proxy.port, false, "/upload", &[("x-body-mode", mode)]).await;
            send(&tx, b"first piece,").await;
            let early = upstream_sees(&up, 1).await;
            send(&tx, b" second piece").await;
            drop(tx);
            let resp = tokio::time::timeout(Duration::from_secs(5), answer).await.expect("answer in time").expect("join").expect("response");
            let status = resp.status().as_u16();
            let plugin_saw = resp.headers().get("x-body-seen").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            outcome.push(format!("{mode}: upstream saw it early: {early}; {status} {:?}; plugin saw {plugin_saw}", String::from_utf8_lossy(&body)));
        }
        seen.push(outcome);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(
        seen[1],
        [
            "pass: upstream saw it early: true; 200 \"received 25\"; plugin saw 25/0/1",
            "buffer: upstream saw it early: true; 200 \"received 25\"; plugin saw 0/25/1",
            "deny: upstream saw it early: true; 403 \"body denied\"; plugin saw 25/0/1",
        ]
    );
}

/// A bidirectional gRPC stream through a plugin that watches its body:
/// each message still comes back before the next is sent.
#[tokio::test]
async fn grpc_streams_pass_through_plugins_like_envoy() {
    use crate::envoy_diff_streaming::chat;
    let up = Upstream::start("up").await;
    let template = over_http2(&bootstrap(&module("body"), ""));
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        seen.push(chat(proxy.port).await);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1][1..], ["message \"one\"", "message \"two\"", "trailers Some(\"0\") Some(\"bye\")"]);
}
