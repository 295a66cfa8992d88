//! How the proxy reads an HTTP/1.1 upstream's responses — chunked bodies
//! with extensions and trailers, interim `100 Continue`, bodies delimited by
//! the connection's close, HEAD, bad lengths — and when it reuses the
//! connection, compared with Envoy. The upstream is scripted byte for byte.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_e2e::client::send_raw;
use weft_e2e::{Kind, Proxy, Request};

const SIMPLE: &str = include_str!("bootstraps/simple.yaml");

/// The response for a request path, and whether the upstream closes the
/// connection after writing it.
fn script(path: &str) -> (&'static [u8], bool) {
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-kind: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: dropped\r\n\r\n",
            false,
        ),
        "/interim" => (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok", false),
        "/until-close" => (b"HTTP/1.1 200 OK\r\nx-kind: close-delimited\r\n\r\nread until the end", true),
        "/head" => (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", false),
        "/head-chunked" => (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", false),
        "/head-bare" => (b"HTTP/1.1 200 OK\r\nx-kind: no length\r\n\r\n", false),
        "/conflicting-length" => (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab", true),
        "/both-framings" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            false,
        ),
        // A good header, then a body that is not chunked framing.
        "/bad-chunk" => (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", true),
        "/gzip-coding" => (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nabc", true),
        "/close-after" => (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 4\r\n\r\nbye!", true),
        "/http10" => (b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nold", true),
        "/no-content" => (b"HTTP/1.1 204 No Content\r\n\r\n", false),
        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nkept", false),
    }
}

/// A scripted upstream; counts the connections it accepts.
async fn scripted_upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // The requests carry no body: a request ends with its header.
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (response, close) = script(&path);
                    // In two writes, so the proxy sees partial frames.
                    let (a, b) = response.split_at(response.len() / 2);
                    if tcp.write_all(a).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    if tcp.write_all(b).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (port, connections)
}

/// What the client saw: the status line's code, framing-free headers and the
/// body, or the raw bytes when the response was cut short.
fn seen(raw: &[u8], head: bool) -> String {
    match weft_e2e::client::parse(raw, head) {
        Some(o) => {
            let headers: Vec<String> = o
                .headers
                .iter()
                .filter(|(k, _)| k.starts_with("x-kind") || k == "content-length" || k == "transfer-encoding" || k == "x-trailer")
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            // Envoy's codec puts its framing header last; the order is not
            // what is compared.
            let mut headers = headers;
            headers.sort();
            format!("{} [{}] {:?}", o.status, headers.join(", "), o.body_str())
        }
        None => format!("incomplete: {}", String::from_utf8_lossy(raw).lines().next().unwrap_or("")),
    }
}

/// The simple bootstrap with an access log of what each request went through.
fn logged_bootstrap(upstream: u16, log: &std::path::Path) -> String {
    let access_log = format!(
        "          stat_prefix: main
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format: {{ text_format_source: {{ inline_string: \"%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n\" }} }}
",
        log.display()
    );
    SIMPLE.replace("${UP_up}", &upstream.to_string()).replace("          stat_prefix: main\n", &access_log)
}

#[tokio::test]
async fn upstream_response_framing_matches_envoy() {
    let cases = [
        ("GET", "/chunked"),
        ("GET", "/interim"),
        ("GET", "/until-close"),
        ("HEAD", "/head"),
        ("HEAD", "/head-chunked"),
        ("HEAD", "/head-bare"),
        ("GET", "/conflicting-length"),
        ("GET", "/both-framings"),
        ("GET", "/bad-chunk"),
        ("GET", "/gzip-coding"),
        ("GET", "/close-after"),
        ("GET", "/http10"),
        ("GET", "/no-content"),
    ];
    let mut results = Vec::new();
    for kind in Kind::BOTH {
        let (port, _) = scripted_upstream().await;
        let log = std::env::temp_dir().join(format!("weft-e2e-framing-{}-{kind:?}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let mut proxy = Proxy::start(kind, &logged_bootstrap(port, &log), &[]).await.expect("start");
        let mut observed = Vec::new();
        for (method, path) in cases {
            let req = Request::get(path).method(method);
            let raw = send_raw(proxy.port, &req.to_bytes(), method == "HEAD").await.unwrap_or_default();
            observed.push(format!("{method} {path}: {}", seen(&raw, method == "HEAD")));
        }
        // Both flush their access logs on shutdown.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        proxy.terminate();
        observed.extend(std::fs::read_to_string(&log).unwrap_or_default().lines().map(|l| format!("log: {l}")));
        results.push(observed);
    }
    assert_eq!(results[0].len(), 2 * cases.len(), "Envoy: {results:#?}");
    for (envoy, weft) in results[0].iter().zip(&results[1]) {
        assert_eq!(envoy, weft, "Envoy (left) and weft-proxy (right) differ");
    }
    assert_eq!(results[0].len(), results[1].len());
}

/// Keep-alive: a connection is reused while responses allow it, and not
/// after `connection: close`, an HTTP/1.0 response or a close-delimited body.
#[tokio::test]
async fn upstream_connections_are_reused_like_envoy() {
    let sequences: [(&str, &[&str]); 4] = [
        ("keep-alive", &["/a", "/b", "/chunked", "/c", "/no-content", "/d"]),
        ("connection: close", &["/close-after", "/a", "/close-after", "/b"]),
        ("HTTP/1.0", &["/http10", "/a"]),
        ("close-delimited", &["/until-close", "/a"]),
    ];
    let mut results = Vec::new();
    for kind in Kind::BOTH {
        let mut counts = Vec::new();
        for (name, paths) in sequences {
            let (port, connections) = scripted_upstream().await;
            let bootstrap = SIMPLE.replace("${UP_up}", &port.to_string());
            let proxy = Proxy::start(kind, &bootstrap, &[]).await.expect("start");
            for path in paths {
                let raw = send_raw(proxy.port, &Request::get(path).to_bytes(), false).await.unwrap_or_default();
                assert!(weft_e2e::client::parse(&raw, false).is_some(), "{kind:?} {name} {path}: {}", String::from_utf8_lossy(&raw));
            }
            counts.push(format!("{name}: {} upstream connections", connections.load(Ordering::SeqCst)));
        }
        results.push(counts);
    }
    assert_eq!(results[0], results[1], "Envoy (left) and weft-proxy (right) differ");
    // And the reuse is real: six requests on one connection.
    assert_eq!(results[0][0], "keep-alive: 1 upstream connections");
}
