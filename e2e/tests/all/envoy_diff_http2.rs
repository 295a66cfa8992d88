//! HTTP/2 to upstreams, against Envoy: what the upstream sees (version,
//! `:authority`, `:scheme`, headers, body) and that requests share one
//! multiplexed connection.

use weft_e2e::bootstrap::{cluster, locality, single_route, upstream};
use weft_e2e::{Kind, Proxy, Request, Upstream};

use crate::run;

fn bootstrap(protocol: &str) -> String {
    single_route("cluster: up", &[cluster("up", protocol, &[locality(0, &[upstream("up")])])])
}

const EXPLICIT_H2: &str = r#"typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: { http2_protocol_options: {} }"#;

#[tokio::test]
async fn http2_upstreams_see_the_same_requests_as_from_envoy() {
    let up = Upstream::start("up").await;
    let requests = vec![
        Request::get("/h2?q=1").header("host", "svc.example:8080").header("x-custom", "a"),
        Request::get("/post").method("POST").header("host", "svc.example").body("payload"),
        Request::get("/status").header("host", "svc.example").header("x-test-status", "503"),
    ];
    for protocol in [EXPLICIT_H2, "http2_protocol_options: {}"] {
        let template = bootstrap(protocol);
        let envoy = run(Kind::Envoy, &template, &[&up], &requests).await;
        let weft = run(Kind::Weft, &template, &[&up], &requests).await;
        for (i, (e, w)) in envoy.iter().zip(&weft).enumerate() {
            assert_eq!(e, w, "{protocol}: request {i}: left Envoy, right weft-proxy");
        }
        assert!(weft[0].upstream[0].1.contains(":version: HTTP/2.0"), "{:?}", weft[0].upstream);
    }
}

#[tokio::test]
async fn http2_requests_share_one_upstream_connection_like_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap(EXPLICIT_H2);
    let mut counts = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let before = up.connections.load(std::sync::atomic::Ordering::Relaxed);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let port = proxy.port;
            tasks.push(tokio::spawn(async move {
                weft_e2e::client::send(port, &Request::get(&format!("/c{i}")).header("x-test-delay-ms", "50")).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("join").expect("response").status, 200);
        }
        counts.push(up.connections.load(std::sync::atomic::Ordering::Relaxed) - before);
    }
    assert_eq!(counts[0], counts[1], "upstream connections: left Envoy, right weft-proxy");
    assert_eq!(counts[1], 1);
}

/// gRPC-style responses over the proxy: the upstream's trailers
/// (`grpc-status`) reach an HTTP/2 client, `te: trailers` reaches the
/// upstream, and an HTTP/1.1 client gets the body without trailers — all as
/// from Envoy. (Not `application/grpc`: the test upstream answers that as
/// its echo service.)
#[tokio::test]
async fn trailers_pass_from_http2_upstreams_like_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap(EXPLICIT_H2);
    let grpc = Request::get("/pkg.Service/Method")
        .method("POST")
        .header("content-type", "application/octet-stream")
        .header("te", "trailers")
        .header("x-test-trailers", "grpc-status=0,grpc-message=fine,x-extra=1")
        .body("\0\0\0\0\0");
    let plain = Request::get("/t").header("x-test-trailers", "x-only=h2");
    let seen = on_both(&template, &up, &[&grpc, &plain], |port, req| async move {
        let h2 = weft_e2e::client::send_h2c(port, req).await.expect("h2c request").normalized();
        let h1 = weft_e2e::client::send(port, req).await.expect("request").normalized();
        (h2, h1)
    })
    .await;
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    let ((h2, h1), upstream) = &seen[1][0];
    assert_eq!(h2.trailers, [("grpc-message", "fine"), ("grpc-status", "0"), ("x-extra", "1")].map(|(k, v)| (k.to_string(), v.to_string())));
    assert!(h1.trailers.is_empty() && h1.body_str() == "up", "{h1:?}");
    assert!(upstream[0].contains("te: trailers"), "{upstream:?}");
}

/// An HTTP/2 client's request trailers: an HTTP/2 upstream gets them
/// after the body (or after the header, when there is no body), an
/// HTTP/1.1 upstream gets the body without them (Envoy's default, no
/// `enable_trailers`), as from Envoy.
#[tokio::test]
async fn request_trailers_reach_http2_upstreams_like_envoy() {
    let up = Upstream::start("up").await;
    let with_body = Request::get("/up").method("POST").header("te", "trailers").body("payload").trailer("x-one", "1").trailer("x-two", "2");
    let without_body = Request::get("/up").method("POST").trailer("grpc-timeout", "1S");
    for protocol in [EXPLICIT_H2, ""] {
        let seen = on_both(&bootstrap(protocol), &up, &[&with_body, &without_body], |port, req| async move {
            weft_e2e::client::send_h2c(port, req).await.expect("h2c request").status
        })
        .await;
        assert_eq!(seen[0], seen[1], "{protocol:?}: left Envoy, right weft-proxy");
        let upstream = &seen[1][0].1[0];
        let http2 = !protocol.is_empty();
        assert_eq!(upstream.contains("trailer:x-one: 1\ntrailer:x-two: 2"), http2, "{upstream}");
        assert!(upstream.ends_with("payload"), "{upstream}");
        assert_eq!(seen[1][1].1[0].contains("trailer:grpc-timeout: 1S"), http2, "{:?}", seen[1][1]);
    }
}

/// Sends each request through Envoy, then through weft-proxy: what `send`
/// made of the response, and what the upstream saw of the request.
async fn on_both<'r, T, F, Fut>(template: &str, up: &Upstream, requests: &[&'r Request], send: F) -> Vec<Vec<(T, Vec<String>)>>
where
    F: Fn(u16, &'r Request) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, template, &[up]).await.unwrap_or_else(|e| panic!("{e}"));
        up.take();
        let mut outcome = Vec::new();
        for req in requests {
            let observed = send(proxy.port, req).await;
            outcome.push((observed, up.take().iter().map(crate::describe).collect()));
        }
        seen.push(outcome);
    }
    seen
}

/// A cluster's `common_http_protocol_options`: `max_requests_per_connection`
/// lets a connection go after that many requests (HTTP/1.1 and HTTP/2
/// upstreams), `idle_timeout` one that was idle that long, and
/// `max_connection_duration` one that has lived that long — counted in new
/// upstream connections, as from Envoy.
#[tokio::test]
async fn upstream_connection_reuse_limits_match_envoy() {
    let up = Upstream::start("up").await;
    let options = |protocol: &str, common: &str| {
        format!(
            r#"typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    common_http_protocol_options: {{ {common} }}
    explicit_http_config: {{ {protocol}: {{}} }}"#
        )
    };
    let cases = [
        ("http_protocol_options", "max_requests_per_connection: 2", 0),
        ("http2_protocol_options", "max_requests_per_connection: 2", 0),
        ("http_protocol_options", "idle_timeout: 0.5s", 800),
        ("http2_protocol_options", "idle_timeout: 0.5s", 800),
        ("http_protocol_options", "idle_timeout: 30s", 800),
        ("http_protocol_options", "max_connection_duration: 0.5s", 800),
        ("http2_protocol_options", "max_connection_duration: 0.5s", 800),
    ];
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let mut counts = Vec::new();
        for (protocol, common, pause_ms) in cases {
            let proxy = Proxy::start(kind, &bootstrap(&options(protocol, common)), &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
            let before = up.connections.load(std::sync::atomic::Ordering::Relaxed);
            for i in 0..4 {
                if i == 2 {
                    tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
                }
                assert_eq!(proxy.send(&Request::get(&format!("/r{i}"))).await.status, 200);
            }
            let used = up.connections.load(std::sync::atomic::Ordering::Relaxed) - before;
            counts.push(format!("{protocol} {common}: 4 requests on {used} upstream connections"));
        }
        seen.push(counts);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    let used: Vec<&str> = seen[1].iter().map(|c| c.rsplit(" on ").next().unwrap_or_default()).collect();
    assert_eq!(used, ["2 upstream connections", "2 upstream connections", "2 upstream connections", "2 upstream connections", "1 upstream connections", "2 upstream connections", "2 upstream connections"]);
}

/// A cluster's `upstream_connection_options.tcp_keepalive`: the proxy's
/// connection to the upstream runs the kernel's keep-alive timer from the
/// configured idle time (`ss` shows it), as Envoy's does; without it, no
/// timer.
#[tokio::test]
async fn upstream_tcp_keepalive_matches_envoy() {
    let up = Upstream::start("up").await;
    let keepalive = "upstream_connection_options: { tcp_keepalive: { keepalive_time: 300, keepalive_interval: 5, keepalive_probes: 3 } }";
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let mut outcome = Vec::new();
        for fields in [keepalive, ""] {
            let proxy = Proxy::start(kind, &bootstrap(fields), &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(proxy.send(&Request::get("/")).await.status, 200);
            // The pooled connection to the upstream, as the kernel sees it.
            let out = std::process::Command::new("ss")
                .args(["-tnoH", "state", "established", "dst", &format!("127.0.0.1:{}", up.port())])
                .output()
                .expect("ss (iproute2)");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            // `timer:(keepalive,4min59sec,0)`: the minutes are stable.
            let timers: Vec<String> = text.split("timer:(").skip(1).map(|t| t.split(',').take(2).collect::<Vec<_>>().join(" ")).map(|t| t.split("min").next().unwrap_or_default().to_string()).collect();
            outcome.push(format!("{}: {timers:?}", if fields.is_empty() { "unset" } else { "set" }));
            drop(proxy);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        seen.push(outcome);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1], ["set: [\"keepalive 4\"]", "unset: []"]);
}

/// `http2_protocol_options` on both sides: what the proxy announces to an
/// HTTP/2 client (streams at once, stream and connection windows, from
/// the connection manager's) and to an HTTP/2 upstream (the windows, from
/// the cluster's), and how many streams it puts on one upstream
/// connection (the cluster's `max_concurrent_streams`), as Envoy.
#[tokio::test]
async fn http2_protocol_options_match_envoy() {
    use weft_e2e::h2_raw::{announced, server_announces, INITIAL_WINDOW_SIZE, MAX_CONCURRENT_STREAMS};
    let downstream = "http2_protocol_options: { max_concurrent_streams: 7, initial_stream_window_size: 131072, initial_connection_window_size: 1048576 }";
    let upstream = r#"typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 5, initial_stream_window_size: 262144, initial_connection_window_size: 2097152 } }"#;
    let template = bootstrap(upstream).replacen("stat_prefix: ", &format!("{downstream}\n          stat_prefix: "), 1);
    assert!(template.contains(downstream), "the connection manager's options are in");
    let up = Upstream::start("up").await;
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let to_client = server_announces(proxy.port).await;
        let to_client = (to_client.setting(MAX_CONCURRENT_STREAMS), to_client.setting(INITIAL_WINDOW_SIZE), to_client.connection_window);
        // Twenty requests at once, each answered after 50 ms: the
        // upstream connections they take.
        let before = up.connections.load(std::sync::atomic::Ordering::Relaxed);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let port = proxy.port;
            tasks.push(tokio::spawn(async move { weft_e2e::client::send(port, &Request::get(&format!("/c{i}")).header("x-test-delay-ms", "50")).await }));
        }
        for t in tasks {
            let response = t.await.expect("join").expect("response");
            assert_eq!(response.status, 200, "{kind:?}: {response:?}");
        }
        let connections = up.connections.load(std::sync::atomic::Ordering::Relaxed) - before;
        drop(proxy);
        // The upstream side's windows: a listener that reads the proxy's
        // first frames, then hangs up.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let raw_port = listener.local_addr().expect("addr").port();
        let raw = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.expect("the proxy connects");
            let mut preface = [0u8; 24];
            tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut preface).await.expect("preface");
            announced(&mut tcp, std::time::Duration::from_secs(2)).await
        });
        let raw_template = template.replace("${UP_up}", &raw_port.to_string());
        let proxy = Proxy::start(kind, &raw_template, &[]).await.unwrap_or_else(|e| panic!("{e}"));
        let _ = proxy.send(&Request::get("/raw")).await;
        let to_upstream = raw.await.expect("the proxy's frames");
        let to_upstream = (to_upstream.setting(INITIAL_WINDOW_SIZE), to_upstream.connection_window);
        seen.push((to_client, connections, to_upstream));
    }
    assert_eq!(seen[0], seen[1], "(to the client, upstream connections, to the upstream): left Envoy, right weft-proxy");
    assert_eq!(seen[1].0, (Some(7), Some(131072), 1048576));
    assert_eq!(seen[1].1, 4, "twenty streams, five to a connection");
    assert_eq!(seen[1].2, (Some(262144), 2097152));
}

/// Without `http2_protocol_options`, the windows differ on purpose:
/// Envoy 1.40 announces 16 / 24 MiB, bounded in practice by its buffer
/// watermarks, which stop reading; the `h2` codec has no such brake (what
/// the windows let in is buffered), so weft-proxy keeps HTTP/2's 64 KiB
/// windows unless told. Both allow 1 024 streams at once.
#[tokio::test]
async fn http2_defaults_differ_from_envoy_on_purpose() {
    use weft_e2e::h2_raw::{server_announces, INITIAL_WINDOW_SIZE, MAX_CONCURRENT_STREAMS};
    let up = Upstream::start("up").await;
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &bootstrap(EXPLICIT_H2), &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let a = server_announces(proxy.port).await;
        seen.push((a.setting(MAX_CONCURRENT_STREAMS), a.setting(INITIAL_WINDOW_SIZE).unwrap_or(65_535), a.connection_window));
    }
    assert_eq!(seen[0], (Some(1024), 16 << 20, 24 << 20), "Envoy");
    assert_eq!(seen[1], (Some(1024), 65_535, 65_535), "weft-proxy");
}
