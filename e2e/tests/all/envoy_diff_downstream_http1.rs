//! The client side of HTTP/1.1, compared with Envoy byte stream by byte
//! stream: keep-alive and `connection: close`, HTTP/1.0 clients, pipelined
//! requests, chunked request bodies, HEAD, blank lines before a request.
//! Each case writes raw bytes on one connection and records every response
//! that comes back and whether the proxy then closed the connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_e2e::{Kind, Proxy, Upstream};

const SIMPLE: &str = include_str!("bootstraps/simple.yaml");

/// One response off the front of `buf`: a summary and the bytes it took.
fn next_response(buf: &[u8], head: bool) -> Option<(String, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = resp.parse(buf).ok()? else { return None };
    let status = resp.code?;
    let get = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    let connection = get("connection").filter(|c| c != "keep-alive" || resp.version == Some(0));
    let chunked = get("transfer-encoding").is_some_and(|t| t == "chunked");
    let rest = &buf[len..];
    let (body, used) = if head || status == 204 || status == 304 || (100..200).contains(&status) {
        (Vec::new(), 0)
    } else if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let line = rest[at..].windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(std::str::from_utf8(&rest[at..at + line]).ok()?.trim(), 16).ok()?;
            at += line + 2;
            if size == 0 {
                at += 2;
                break;
            }
            body.extend_from_slice(rest.get(at..at + size)?);
            at += size + 2;
        }
        (body, at)
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        (rest.get(..n)?.to_vec(), n)
    } else {
        // Delimited by the close: everything that is left.
        (rest.to_vec(), rest.len())
    };
    let summary = format!(
        "{status} connection={} chunked={chunked} body={:?}",
        connection.unwrap_or_else(|| "-".into()),
        String::from_utf8_lossy(&body)
    );
    Some((summary, len + used))
}

/// Writes `bytes` and reads one response for each entry of `heads` (which
/// says whether it answers a HEAD), then sends one more request to see
/// whether the connection still serves (a closing Envoy may keep the socket
/// open a while for the client to close first).
async fn exchange(port: u16, bytes: &[u8], heads: &[bool]) -> Vec<String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut seen = Vec::new();
    let mut at = 0;
    let mut eof = false;
    while seen.len() < heads.len() {
        if let Some((summary, used)) = next_response(&buf[at..], heads[seen.len()]) {
            seen.push(summary);
            at += used;
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => {
                eof = true;
                break;
            }
        }
    }
    if at < buf.len() {
        seen.push(format!("then {:?}", String::from_utf8_lossy(&buf[at..])));
    }
    let serves = !eof
        && tcp.write_all(b"GET /probe HTTP/1.1\r\nhost: x\r\n\r\n").await.is_ok()
        && matches!(tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut chunk)).await, Ok(Ok(n)) if n > 0);
    seen.push(if serves { "serves another".into() } else { "closed".into() });
    seen
}

#[tokio::test]
async fn client_side_http1_matches_envoy() {
    let cases: [(&str, &[u8], &[bool]); 10] = [
        ("keep-alive", b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n", &[false]),
        ("pipelined", b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\nHEAD /c HTTP/1.1\r\nhost: x\r\n\r\n", &[false, false, true]),
        ("connection: close", b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", &[false]),
        ("HTTP/1.0", b"GET /a HTTP/1.0\r\nhost: x\r\n\r\n", &[false]),
        ("HTTP/1.0 keep-alive", b"GET /a HTTP/1.0\r\nhost: x\r\nconnection: keep-alive\r\n\r\n", &[false]),
        ("chunked request body", b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", &[false]),
        ("body then next request", b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nhost: x\r\n\r\n", &[false, false]),
        ("HEAD", b"HEAD /a HTTP/1.1\r\nhost: x\r\n\r\n", &[true]),
        ("blank line first", b"\r\nGET /a HTTP/1.1\r\nhost: x\r\n\r\n", &[false]),
        // The interim response, then the final one; `expect` stays here.
        ("expect: 100-continue", b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\nabc", &[false, false]),
    ];
    let mut results = Vec::new();
    for kind in Kind::BOTH {
        let up = Upstream::start("up").await;
        let proxy = Proxy::start(kind, SIMPLE, &[&up]).await.expect("start");
        let mut observed = Vec::new();
        for (name, bytes, heads) in cases {
            up.take();
            let seen = exchange(proxy.port, bytes, heads).await;
            // What the upstream got of each request body (and `expect`).
            let bodies: Vec<String> = up
                .take()
                .iter()
                .map(|s| format!("{:?}{}", String::from_utf8_lossy(&s.body), s.header("expect").map(|e| format!(" expect={e}")).unwrap_or_default()))
                .collect();
            observed.push(format!("{name}: {} | upstream bodies {}", seen.join(", "), bodies.join(" ")));
        }
        results.push(observed);
    }
    for (envoy, weft) in results[0].iter().zip(&results[1]) {
        assert_eq!(envoy, weft, "Envoy (left) and weft-proxy (right) differ");
    }
}

/// `common_http_protocol_options.idle_timeout`: a connection with no
/// request in flight is closed once idle that long, as Envoy does. Envoy
/// drains an HTTP/1.1 connection first (its 5 s `drain_timeout`, then its
/// 1 s delayed close; requests meanwhile are served, each response saying
/// `connection: close`), and sends an HTTP/2 GOAWAY, on which the client
/// closes (both proxies: `idle_http2_connections_get_a_goaway_like_envoy`).
/// Unset (Envoy's default, an hour), the connection stays open.
#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout_like_envoy() {
    let up = Upstream::start("up").await;
    let one_second = SIMPLE.replace("stat_prefix: main", "stat_prefix: main\n          common_http_protocol_options: { idle_timeout: 1s }");
    let mut results = Vec::new();
    for kind in Kind::BOTH {
        let timed = Proxy::start(kind, &one_second, &[&up]).await.expect("start");
        let unset = Proxy::start(kind, SIMPLE, &[&up]).await.expect("start");
        let seen = tokio::join!(
            idle_close(timed.port, false, 8500),
            idle_close(timed.port, true, 8500),
            request_while_draining(timed.port),
            idle_close(unset.port, false, 2500),
            idle_close(unset.port, true, 2500),
        );
        results.push(format!("{seen:?}"));
    }
    assert_eq!(results[0], results[1], "Envoy (left), weft-proxy (right)");
    assert_eq!(
        results[1],
        r#"("closed after about 7s", "closed after about 1s", "200 connection=close chunked=false body=\"up\", then serves another", "open after 2.5s", "open after 2.5s")"#
    );
}

/// `drain_timeout` and `delayed_close_timeout` shorten the HTTP/1.1 drain
/// after the idle timeout (1 s + 1 s + 0 s here, instead of 1 s + 5 s +
/// 1 s), as on Envoy.
#[tokio::test]
async fn the_drain_after_the_idle_timeout_follows_the_manager_like_envoy() {
    let fields = "common_http_protocol_options: { idle_timeout: 1s }\n          drain_timeout: 1s\n          delayed_close_timeout: 0s";
    let seen = same_on_both(fields, async |proxy: &Proxy| idle_close(proxy.port, false, 5000).await).await;
    assert_eq!(seen, "closed after about 2s");
}

/// An idle HTTP/2 connection gets a GOAWAY when its idle timeout passes,
/// before the proxy closes it, on both proxies: a client learns not to
/// start a request on it (instead of racing the close).
#[tokio::test]
async fn idle_http2_connections_get_a_goaway_like_envoy() {
    let fields = "common_http_protocol_options: { idle_timeout: 1s }";
    let seen = same_on_both(fields, async |proxy: &Proxy| h2_frames_until_goaway(proxy.port).await).await;
    assert_eq!(seen, "GOAWAY after about 1s");
}

/// The connection manager's `max_connection_duration`: a connection that
/// has lived that long drains (HTTP/1.1: `drain_timeout`, then closed;
/// HTTP/2: GOAWAY), as on Envoy.
#[tokio::test]
async fn connections_drain_at_their_max_duration_like_envoy() {
    let fields = "common_http_protocol_options: { max_connection_duration: 1s }\n          drain_timeout: 1s\n          delayed_close_timeout: 0s";
    let seen = same_on_both(fields, async |proxy: &Proxy| {
        let (h1, h2) = tokio::join!(idle_close(proxy.port, false, 5000), h2_frames_until_goaway(proxy.port));
        format!("HTTP/1.1 {h1}; HTTP/2 {h2}")
    })
    .await;
    assert_eq!(seen, "HTTP/1.1 closed after about 2s; HTTP/2 GOAWAY after about 1s");
}

/// `max_request_headers_kb` replaces the 60 KiB request header limit:
/// past it an HTTP/1.1 request gets 431 and an HTTP/2 stream is reset, as
/// on Envoy.
#[tokio::test]
async fn the_request_header_limit_follows_the_manager_like_envoy() {
    let seen = same_on_both("max_request_headers_kb: 2", async |proxy: &Proxy| {
        let mut outcome = Vec::new();
        for size in [1000, 3000] {
            let req = weft_e2e::Request::get("/").header("x-big", &"a".repeat(size));
            let h1 = weft_e2e::client::send(proxy.port, &req).await.map(|r| r.status).map_err(|e| e.kind());
            let h2 = weft_e2e::client::send_h2c(proxy.port, &req).await.map(|r| r.status).map_err(|_| "reset");
            outcome.push(format!("{size} bytes: HTTP/1.1 {h1:?}, HTTP/2 {h2:?}"));
        }
        outcome
    })
    .await;
    assert_eq!(seen[0], "1000 bytes: HTTP/1.1 Ok(200), HTTP/2 Ok(200)");
    assert_eq!(seen[1], "3000 bytes: HTTP/1.1 Ok(431), HTTP/2 Err(\"reset\")");
}

/// Opens an HTTP/2 connection (prior knowledge) that sends nothing but
/// the acknowledgements a client owes; says when a GOAWAY came, or that
/// the connection closed (or stayed open 5 s) without one.
async fn h2_frames_until_goaway(port: u16) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.expect("preface");
    let start = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Whole frames: 9-byte header (length, type, flags, stream), payload.
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match (kind, flags & 1) {
                (7, _) => return format!("GOAWAY after about {}s", start.elapsed().as_secs_f64().round()),
                // SETTINGS and PING get their ACKs, as from any client.
                (4, 0) => tcp.write_all(b"\0\0\0\x04\x01\0\0\0\0").await.expect("settings ack"),
                (6, 0) => {
                    let mut ack = b"\0\0\x08\x06\x01\0\0\0\0".to_vec();
                    ack.extend_from_slice(&payload);
                    tcp.write_all(&ack).await.expect("ping ack");
                }
                _ => {}
            }
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return format!("closed without a GOAWAY after about {}s", start.elapsed().as_secs_f64().round()),
            Err(_) => return "open after 5s, no GOAWAY".into(),
        }
    }
}

/// The connection manager's `max_requests_per_connection`: the last
/// request's response says `connection: close` and the connection ends;
/// an HTTP/2 client gets a GOAWAY after that many streams.
#[tokio::test]
async fn max_requests_per_connection_closes_downstream_connections_like_envoy() {
    let seen = same_on_both("common_http_protocol_options: { max_requests_per_connection: 2 }", async |proxy: &Proxy| {
        let mut tcp = TcpStream::connect(("127.0.0.1", proxy.port)).await.expect("connect");
        let mut outcome = Vec::new();
        for path in ["/one", "/two", "/three"] {
            let sent = tcp.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.is_ok();
            outcome.push(match read_response(&mut tcp).await {
                Some(response) if sent => response,
                _ => "closed".into(),
            });
        }
        // HTTP/2: the client learns to open a new connection.
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let tcp = TcpStream::connect(("127.0.0.1", proxy.port)).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2 handshake");
        let conn = tokio::spawn(conn);
        for path in ["/a", "/b"] {
            let req = hyper::Request::get(format!("http://x{path}")).body(http_body_util::Empty::<bytes::Bytes>::new()).expect("request");
            let status = sender.send_request(req).await.map(|r| r.status().as_u16());
            outcome.push(format!("h2 {path}: {status:?}"));
        }
        let closed = tokio::time::timeout(Duration::from_secs(3), conn).await.is_ok();
        outcome.push(format!("h2 connection closed by the proxy: {closed}"));
        outcome
    })
    .await;
    assert!(seen[1].contains("connection=close") && seen[2] == "closed", "{seen:?}");
    assert_eq!(seen[5], "h2 connection closed by the proxy: true");
}

/// Runs `observe` on Envoy and on weft-proxy, each started on `SIMPLE`
/// with the connection manager `fields` (YAML lines) added; asserts they
/// saw the same, and returns it.
async fn same_on_both<T: PartialEq + std::fmt::Debug>(fields: &str, observe: impl AsyncFn(&Proxy) -> T) -> T {
    let up = Upstream::start("up").await;
    let template = SIMPLE.replace("stat_prefix: main", &format!("stat_prefix: main\n          {fields}"));
    let mut results = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.expect("start");
        results.push(observe(&proxy).await);
    }
    let weft = results.pop().expect("weft-proxy's");
    assert_eq!(results[0], weft, "Envoy (left), weft-proxy (right)");
    weft
}

/// Serves one request on a new connection, then says when the proxy
/// closed it (or that it was still open `window_ms` later).
async fn idle_close(port: u16, h2: bool, window_ms: u64) -> String {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let window = Duration::from_millis(window_ms);
    let (closed, served) = if h2 {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2 handshake");
        let conn = tokio::spawn(conn);
        let req = hyper::Request::get("http://x/a").body(http_body_util::Empty::<bytes::Bytes>::new()).expect("request");
        let resp = sender.send_request(req).await.expect("response");
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
        let served = std::time::Instant::now();
        (tokio::time::timeout(window, conn).await.is_ok(), served)
    } else {
        let mut tcp = tcp;
        tcp.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        if read_response(&mut tcp).await.is_none() {
            return "closed before the response".into();
        }
        let served = std::time::Instant::now();
        let mut chunk = [0u8; 64];
        (matches!(tokio::time::timeout(window, tcp.read(&mut chunk)).await, Ok(Ok(0) | Err(_))), served)
    };
    let seconds = served.elapsed().as_secs_f64();
    match closed {
        false => format!("open after {}s", window.as_secs_f64()),
        true if seconds < 0.7 => "closed at once".into(),
        true => format!("closed after about {}s", seconds.round()),
    }
}

/// A request 1.5 s into an idle connection (past a 1 s idle timeout):
/// its response, and whether the connection serves another.
async fn request_while_draining(port: u16) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tcp.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    read_response(&mut tcp).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tcp.write_all(b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let Some(response) = read_response(&mut tcp).await else { return "closed".into() };
    // As `exchange` probes: Envoy may keep the socket a while for the
    // client to close first, but serves nothing more on it.
    let mut chunk = [0u8; 64];
    let serves = tcp.write_all(b"GET /probe HTTP/1.1\r\nhost: x\r\n\r\n").await.is_ok()
        && matches!(tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut chunk)).await, Ok(Ok(n)) if n > 0);
    format!("{response}, then {}", if serves { "serves another" } else { "closed" })
}

/// One whole response's summary; `None` when the connection closed first.
async fn read_response(tcp: &mut TcpStream) -> Option<String> {
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        if let Some((summary, _)) = next_response(&buf, false) {
            return Some(summary);
        }
        match tcp.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}
