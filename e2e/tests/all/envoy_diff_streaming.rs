//! Request bodies that stream, against Envoy: the upstream sees a request
//! while its body is still coming, a bidirectional gRPC stream echoes each
//! message before the next is sent, large uploads pass whole, and a body
//! past the retry buffer (1 MiB) is not retried.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;
use weft_e2e::bootstrap::{cluster, locality, single_route, upstream};
use weft_e2e::{Kind, Proxy, Upstream};

const EXPLICIT_H2: &str = r#"typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: { http2_protocol_options: {} }"#;

/// How long a piece may take to show up on the other side before the test
/// says it was held back.
const PATIENCE: Duration = Duration::from_secs(3);

fn bootstrap(route: &str, cluster_fields: &str) -> String {
    single_route(route, &[cluster("up", cluster_fields, &[locality(0, &[upstream("up")])])])
}

pub(crate) type Pieces = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;
pub(crate) type Answer = tokio::task::JoinHandle<anyhow::Result<hyper::Response<Incoming>>>;

/// Opens a request to the proxy whose body the test sends piece by piece
/// (no content-length: chunked over HTTP/1.1); dropping the sender ends it.
pub(crate) async fn open(port: u16, http2: bool, path: &str, headers: &[(&str, &str)]) -> (Pieces, Answer) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let (tx, rx) = mpsc::channel(8);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut req = hyper::Request::builder().method("POST").uri(format!("http://example.com{path}"));
    if !http2 {
        req = req.header("host", "example.com");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body).expect("request");
    let answer = if http2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2 handshake");
        tokio::spawn(conn);
        tokio::spawn(async move { Ok(sender.send_request(req).await?) })
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("h1 handshake");
        tokio::spawn(conn);
        tokio::spawn(async move { Ok(sender.send_request(req).await?) })
    };
    (tx, answer)
}

pub(crate) async fn send(tx: &Pieces, piece: &[u8]) {
    tx.send(Ok(Frame::data(Bytes::copy_from_slice(piece)))).await.expect("body still open");
}

/// Whether the upstream has seen `count` requests within [`PATIENCE`].
pub(crate) async fn upstream_sees(up: &Upstream, count: usize) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if up.count() >= count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// An upload sent in two pieces: does the upstream see the request before
/// the second is sent, and what arrives in the end (with the framing the
/// upstream saw). HTTP/1.1 and HTTP/2 clients, an HTTP/1.1 upstream.
#[tokio::test]
async fn uploads_reach_the_upstream_as_they_are_sent_like_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap("cluster: up", "");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let mut outcome = Vec::new();
        for http2 in [false, true] {
            up.take();
            let (tx, answer) = open(proxy.port, http2, "/upload", &[]).await;
            send(&tx, b"first piece,").await;
            let early = upstream_sees(&up, 1).await;
            send(&tx, b" second piece").await;
            drop(tx);
            let resp = tokio::time::timeout(PATIENCE, answer).await.expect("answer in time").expect("join").expect("response");
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let request = up.take().pop().expect("upstream saw the upload");
            let framing: Vec<String> = ["content-length", "transfer-encoding"]
                .iter()
                .filter_map(|h| request.header(h).map(|v| format!("{h}: {v}")))
                .collect();
            outcome.push(format!(
                "http2={http2}: seen before the body ended: {early}; {status} {:?}; upstream framing {framing:?}",
                String::from_utf8_lossy(&body)
            ));
        }
        seen.push(outcome);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert!(seen[1][0].contains("seen before the body ended: true; 200 \"received 25\""), "{:?}", seen[1]);
}

/// POSTs a body of `size` bytes to `/upload` in one piece (HTTP/1.1, with
/// its length): the answer's status and body, or why there is none within
/// `patience`.
async fn upload_whole(port: u16, size: usize, patience: Duration) -> String {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::post("/upload").header("host", "example.com").body(Full::new(Bytes::from(vec![b'x'; size]))).expect("request");
    match tokio::time::timeout(patience, sender.send_request(req)).await {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            format!("{status} {}", String::from_utf8_lossy(&body))
        }
        Ok(Err(e)) => format!("error {e}"),
        Err(_) => format!("no answer within {}s", patience.as_secs()),
    }
}

/// A 20 MiB upload passes whole (it used to be refused past 16 MiB, the
/// buffer the router kept every body in).
#[tokio::test]
async fn large_uploads_pass_whole_like_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap("cluster: up", "");
    let size = 20 << 20;
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        seen.push(upload_whole(proxy.port, size, Duration::from_secs(30)).await);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1], format!("200 received {size}"));
}

/// A gRPC message: the 5-byte prefix (uncompressed, length), then `text`.
pub(crate) fn message(text: &str) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(5 + text.len());
    out.put_u8(0);
    out.put_u32(text.len() as u32);
    out.put_slice(text.as_bytes());
    out.to_vec()
}

/// The next DATA frame of the response within [`PATIENCE`], or why not.
pub(crate) async fn next_data(body: &mut Incoming) -> String {
    loop {
        match tokio::time::timeout(PATIENCE, body.frame()).await {
            Err(_) => return "nothing within 3s".into(),
            Ok(None) => return "end".into(),
            Ok(Some(Err(e))) => return format!("error {e}"),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if data.len() >= 5 => return format!("message {:?}", String::from_utf8_lossy(&data[5..])),
                Ok(data) if data.is_empty() => continue,
                Ok(data) => return format!("partial {data:?}"),
                Err(frame) => match frame.into_trailers() {
                    Ok(t) => return format!("trailers {:?} {:?}", t.get("grpc-status"), t.get("grpc-message")),
                    Err(_) => continue,
                },
            },
        }
    }
}

/// A bidirectional gRPC exchange with `/weft.Echo/Chat` through the proxy
/// at `port` (h2c): the response header (status, the echoed metadata, the
/// service time), then what comes back for each message sent and for the
/// end of the client's side.
pub(crate) async fn chat(port: u16) -> Vec<String> {
    let headers = [("content-type", "application/grpc"), ("te", "trailers"), ("x-md", "hello")];
    let (tx, answer) = open(port, true, "/weft.Echo/Chat", &headers).await;
    let mut outcome = Vec::new();
    send(&tx, &message("one")).await;
    let resp = tokio::time::timeout(PATIENCE, answer).await.expect("headers in time").expect("join").expect("response");
    // No service time: Envoy measures it from the request's end.
    let service_time = resp.headers().get("x-envoy-upstream-service-time");
    outcome.push(format!("{} x-md-echo {:?}, service time {service_time:?}", resp.status(), resp.headers().get("x-md-echo")));
    let mut body = resp.into_body();
    outcome.push(next_data(&mut body).await);
    send(&tx, &message("two")).await;
    outcome.push(next_data(&mut body).await);
    drop(tx);
    outcome.push(next_data(&mut body).await);
    outcome
}

/// A bidirectional gRPC stream through the router (HTTP/2 both sides):
/// each message comes back before the next is sent, and the stream ends
/// with the service's status when the client ends its side.
#[tokio::test]
async fn bidirectional_grpc_streams_pass_through_like_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap("cluster: up", EXPLICIT_H2);
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        seen.push(chat(proxy.port).await);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1][0], "200 OK x-md-echo Some(\"hello\"), service time None");
    assert_eq!(seen[1][1..], ["message \"one\"", "message \"two\"", "trailers Some(\"0\") Some(\"bye\")"]);
}

/// A retriable answer (503) to an upload is retried while the body fits
/// the retry buffer (1 MiB), and not past it: the proxy no longer has the
/// whole body to send again.
#[tokio::test]
async fn bodies_past_the_retry_buffer_are_not_retried_like_envoy() {
    let up = Upstream::start("up").await;
    let route = "cluster: up, retry_policy: { retry_on: 5xx, num_retries: 1, retry_back_off: { base_interval: 0.001s, max_interval: 0.002s } }";
    let template = bootstrap(route, "");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let mut outcome = Vec::new();
        for size in [10, 2 << 20] {
            up.take();
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port)).await.expect("connect");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
            tokio::spawn(conn);
            let req = hyper::Request::post("/upload")
                .header("host", "example.com")
                .header("x-test-status", "503")
                .body(Full::new(Bytes::from(vec![b'x'; size])))
                .expect("request");
            let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req)).await.expect("in time").expect("response");
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            outcome.push(format!("{size} bytes: {status} {:?} after {} attempts", String::from_utf8_lossy(&body), up.count()));
        }
        seen.push(outcome);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1], ["10 bytes: 503 \"received 10\" after 2 attempts", "2097152 bytes: 503 \"received 2097152\" after 1 attempts"]);
}

/// An upload that takes `pause` between its two pieces, through a route
/// with `route_fields`: what the client gets, and whether the upstream saw
/// the request.
async fn slow_upload(route_fields: &str, pause: Duration) -> Vec<String> {
    let up = Upstream::start("up").await;
    let template = bootstrap(&format!("cluster: up, {route_fields}"), "");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        up.take();
        let (tx, answer) = open(proxy.port, false, "/upload", &[]).await;
        send(&tx, b"first,").await;
        tokio::time::sleep(pause).await;
        // The proxy may have answered and closed meanwhile.
        let _ = tx.send(Ok(Frame::data(Bytes::from_static(b" second")))).await;
        drop(tx);
        let outcome = match tokio::time::timeout(Duration::from_secs(10), answer).await.expect("answer in time").expect("join") {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                format!("{status} {:?}", String::from_utf8_lossy(&body))
            }
            Err(e) => format!("no response: {e}"),
        };
        seen.push(format!("{outcome}; upstream saw {} requests", up.count()));
    }
    assert_eq!(seen[0], seen[1], "{route_fields}: left Envoy, right weft-proxy");
    seen
}

/// The route timeout and the per-try timeout start when the request has
/// ended: an upload slower than either still gets its answer.
#[tokio::test]
async fn route_and_per_try_timeouts_start_when_the_request_ends_like_envoy() {
    let pause = Duration::from_millis(1500);
    let seen = slow_upload("timeout: 1s", pause).await;
    assert_eq!(seen[1], "200 \"received 13\"; upstream saw 1 requests");
    let seen = slow_upload("timeout: 5s, retry_policy: { retry_on: 5xx, num_retries: 1, per_try_timeout: 1s }", pause).await;
    assert_eq!(seen[1], "200 \"received 13\"; upstream saw 1 requests");
}

/// The stream idle timeout runs while the body is coming: a client that
/// stalls past it gets 408.
#[tokio::test]
async fn a_stalled_upload_hits_the_idle_timeout_like_envoy() {
    let seen = slow_upload("idle_timeout: 0.5s", Duration::from_millis(1500)).await;
    assert!(seen[1].starts_with("408"), "{seen:?}");
}

/// An HTTP/1.1 upstream that refuses an upload before reading it: the
/// client gets the refusal while it is still sending, as from Envoy.
#[tokio::test]
async fn an_upload_refused_early_is_answered_at_once_like_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap("cluster: up", "");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let (tx, answer) = open(proxy.port, false, "/upload", &[("x-test-early-status", "413")]).await;
        send(&tx, b"first piece,").await;
        let outcome = match tokio::time::timeout(PATIENCE, answer).await {
            Ok(resp) => {
                let resp = resp.expect("join").expect("response");
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                format!("answered while the body was coming: {status} {:?}", String::from_utf8_lossy(&body))
            }
            Err(_) => "no answer before the body ended".into(),
        };
        drop(tx);
        seen.push(outcome);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1], "answered while the body was coming: 413 \"refused early\"");
}

/// A gRPC service that ends the call while the client's side is still
/// open: its status reaches the client at once, as from Envoy.
#[tokio::test]
async fn a_service_ending_a_stream_early_is_heard_like_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap("cluster: up", EXPLICIT_H2);
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let headers = [("content-type", "application/grpc"), ("te", "trailers")];
        let (tx, answer) = open(proxy.port, true, "/weft.Echo/Chat", &headers).await;
        send(&tx, &message("one")).await;
        let resp = tokio::time::timeout(PATIENCE, answer).await.expect("headers in time").expect("join").expect("response");
        let mut body = resp.into_body();
        let mut outcome = vec![next_data(&mut body).await];
        send(&tx, &message("fail:7:enough")).await;
        outcome.push(next_data(&mut body).await);
        // The client's side is still open; the proxy keeps nothing waiting.
        outcome.push(next_data(&mut body).await);
        drop(tx);
        seen.push(outcome);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1][..2], ["message \"one\"", "trailers Some(\"7\") Some(\"enough\")"]);
}

/// A route with a mirror: the primary `up` and the mirror `shadow`, both
/// over `protocol` (cluster fields).
fn mirrored(protocol: &str) -> String {
    let clusters = [
        cluster("up", protocol, &[locality(0, &[upstream("up")])]),
        cluster("shadow", protocol, &[locality(0, &[upstream("shadow")])]),
    ];
    single_route("cluster: up, request_mirror_policies: [{ cluster: shadow }]", &clusters)
}

/// What the mirror received of its upload (`:received`), once it has all
/// come, within [`PATIENCE`].
async fn mirror_received(mirror: &Upstream) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen = mirror.seen.lock().expect("lock").last().cloned();
        let received = seen.as_ref().and_then(|s| s.header(":received").map(str::to_string));
        if let Some(received) = received {
            let host = seen.as_ref().and_then(|s| s.header("host")).unwrap_or_default().to_string();
            return format!("mirror received {received} for host {host}");
        }
        if Instant::now() >= deadline {
            return format!("mirror has not received it all: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The body of a mirrored request streams to the mirror as it streams to
/// the primary (Envoy's shadows stream): both see the upload before it
/// ends, and both get all of it, a large one included.
#[tokio::test]
async fn mirrored_uploads_stream_to_the_mirror_like_envoy() {
    let (up, shadow) = (Upstream::start("up").await, Upstream::start("shadow").await);
    let template = mirrored("");
    let large = 20 << 20;
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up, &shadow]).await.unwrap_or_else(|e| panic!("{e}"));
        let mut outcome = Vec::new();
        up.take();
        shadow.take();
        let (tx, answer) = open(proxy.port, false, "/upload", &[]).await;
        send(&tx, b"first piece,").await;
        let (early, mirrored_early) = (upstream_sees(&up, 1).await, upstream_sees(&shadow, 1).await);
        send(&tx, b" second piece").await;
        drop(tx);
        let resp = tokio::time::timeout(PATIENCE, answer).await.expect("answer in time").expect("join").expect("response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        outcome.push(format!(
            "seen before the body ended: primary {early}, mirror {mirrored_early}; {status} {:?}",
            String::from_utf8_lossy(&body)
        ));
        outcome.push(mirror_received(&shadow).await);

        shadow.take();
        outcome.push(upload_whole(proxy.port, large, Duration::from_secs(30)).await);
        outcome.push(mirror_received(&shadow).await);
        seen.push(outcome);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1][0], "seen before the body ended: primary true, mirror true; 200 \"received 25\"");
    assert_eq!(seen[1][1], "mirror received 25 for host example.com-shadow");
    assert_eq!(seen[1][3], format!("mirror received {large} for host example.com-shadow"));
}

/// A bidirectional gRPC stream on a mirrored route: the client's stream
/// works as without the mirror (it used to hang: the router read the
/// whole body for the mirror first), and the mirror gets the call.
#[tokio::test]
async fn bidirectional_grpc_streams_pass_a_mirrored_route_like_envoy() {
    let (up, shadow) = (Upstream::start("up").await, Upstream::start("shadow").await);
    let template = mirrored(EXPLICIT_H2);
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up, &shadow]).await.unwrap_or_else(|e| panic!("{e}"));
        shadow.take();
        let mut outcome = chat(proxy.port).await;
        let mirrored = upstream_sees(&shadow, 1).await;
        let authority = shadow.take().pop().and_then(|s| s.header(":authority").map(str::to_string));
        outcome.push(format!("mirror saw the call: {mirrored}, for {authority:?}"));
        seen.push(outcome);
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1][1..], ["message \"one\"", "message \"two\"", "trailers Some(\"0\") Some(\"bye\")", "mirror saw the call: true, for Some(\"example.com-shadow\")"]);
}

/// A mirror that takes the request but never reads its body (its socket
/// fills): a 20 MiB upload through the mirrored route waits for it. Envoy's
/// shadow streams hold up their request through its watermarks; so do
/// ours, past 1 MiB (the mirror's idle timeout ends the wait).
#[tokio::test]
async fn a_stuck_mirror_holds_up_the_request_like_envoy() {
    let up = Upstream::start("up").await;
    let stuck = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = stuck.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((conn, _)) = stuck.accept().await {
            conns.push(conn);
        }
    });
    let clusters = [
        cluster("up", "", &[locality(0, &[upstream("up")])]),
        cluster("shadow", "", &[locality(0, &[weft_e2e::bootstrap::endpoint("127.0.0.1", &port.to_string(), "")])]),
    ];
    let template = single_route("cluster: up, request_mirror_policies: [{ cluster: shadow }]", &clusters);
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        seen.push(upload_whole(proxy.port, 20 << 20, PATIENCE).await);
    }
    held.abort();
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1], "no answer within 3s");
}

/// An HTTP/2 client's request trailers on a mirrored route: the primary
/// and the mirror (both HTTP/2) get them after the body, as from Envoy's
/// shadow streams.
#[tokio::test]
async fn request_trailers_reach_the_mirror_like_envoy() {
    let (up, shadow) = (Upstream::start("up").await, Upstream::start("shadow").await);
    let template = mirrored(EXPLICIT_H2);
    let req = weft_e2e::Request::get("/t").method("POST").body("payload").trailer("x-one", "1");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up, &shadow]).await.unwrap_or_else(|e| panic!("{e}"));
        up.take();
        shadow.take();
        let status = weft_e2e::client::send_h2c(proxy.port, &req).await.expect("h2c request").status;
        upstream_sees(&shadow, 1).await;
        let trailers = |u: &Upstream| u.take().iter().map(|s| s.headers.iter().filter(|(k, _)| k.starts_with("trailer:")).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()).collect::<Vec<_>>();
        seen.push((status, trailers(&up), trailers(&shadow)));
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1].1, [["trailer:x-one=1"]], "the primary");
}
