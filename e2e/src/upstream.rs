//! An upstream HTTP server (HTTP/1.1 and h2c) that records every request and
//! answers as the request's `x-test-*` headers ask:
//! - `x-test-status: N` — answer with status N;
//! - `x-test-fail-times: K` — only the first K requests carrying the same
//!   `x-test-key` get that status, later ones get 200 (for retries);
//! - `x-test-delay-ms: N` — wait before answering;
//! - `x-test-trailers: k=v,k2=v2` — end the body with these trailers (sent
//!   over HTTP/2; hyper's HTTP/1.1 sends them only to a client that asked
//!   with `te: trailers`).
//!
//! Request trailers are recorded among the headers as `trailer:NAME`.
//!
//! `/upload` is recorded as soon as its header arrives (without the body)
//! and answered `received N`, N the body's length, with `x-test-status`;
//! once the body has all come, the pseudo-header `:received` (N, or
//! `broken`) is added to what was recorded. `x-test-early-status: N`
//! answers N at once, the body unread.
//!
//! A gRPC request (`content-type: application/grpc`) to `/weft.Echo/Chat`
//! or `/weft.Echo/Refuse` is a stream (see `grpc_chat`); any other is
//! answered as a unary echo service: the request's message comes back with status 0,
//! except that a message `fail:N:TEXT` gets a trailers-only response with
//! grpc-status N and grpc-message TEXT, and `http:N` a plain HTTP status N.
//!
//! [`Upstream::force_status`] makes every answer (health checks included)
//! carry one status, to play a failing host.
//!
//! The body is `<name>` so a client sees which upstream answered.
//!
//! [`Upstream::start_tls_on`] serves the same over TLS with the test
//! server certificate (`pki`), recording the SNI each connection sent as
//! the pseudo-header `:sni`: a backend behind a proxy that passes TLS
//! through.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted so far (to observe connection reuse).
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// 0, or the status every answer gets.
    forced: Arc<std::sync::atomic::AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts on an ephemeral loopback port.
    pub async fn start(name: &str) -> Upstream {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(name, any).await.expect("bind upstream")
    }

    /// Starts an upstream that waits `delay` before every answer (a slow host).
    pub async fn start_slow(name: &str, delay: Duration) -> Upstream {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_with(name, any, delay).await.expect("bind upstream")
    }

    pub async fn start_on(name: &str, addr: SocketAddr) -> std::io::Result<Upstream> {
        Self::start_with(name, addr, Duration::ZERO).await
    }

    /// Starts on `addr`, terminating TLS with `pki`'s server certificate
    /// (for `example.com` and `*.example.com`).
    pub async fn start_tls_on(name: &str, addr: SocketAddr) -> std::io::Result<Upstream> {
        use pingora_core::tls::ssl::{SslAcceptor, SslFiletype, SslMethod};
        let tls = (|| {
            let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
            b.set_certificate_chain_file(crate::pki::path("server.pem"))?;
            b.set_private_key_file(crate::pki::path("server.key"), SslFiletype::PEM)?;
            Ok::<_, pingora_core::tls::error::ErrorStack>(b.build())
        })()
        .map_err(std::io::Error::other)?;
        Self::serve(name, addr, Duration::ZERO, Some(Arc::new(tls))).await
    }

    async fn start_with(name: &str, addr: SocketAddr, delay: Duration) -> std::io::Result<Upstream> {
        Self::serve(name, addr, delay, None).await
    }

    async fn serve(
        name: &str,
        addr: SocketAddr,
        delay: Duration,
        tls: Option<Arc<pingora_core::tls::ssl::SslAcceptor>>,
    ) -> std::io::Result<Upstream> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let failures: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let forced: Arc<std::sync::atomic::AtomicU16> = Arc::default();
        let (n, s, c, o) = (name.to_string(), seen.clone(), connections.clone(), forced.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (n, s, f, o) = (n.clone(), s.clone(), failures.clone(), o.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = move |sni: Option<String>| {
                        service_fn(move |req| {
                            let forced = o.load(std::sync::atomic::Ordering::Relaxed);
                            handle(n.clone(), s.clone(), f.clone(), delay, forced, sni.clone(), req)
                        })
                    };
                    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = server.serve_connection_with_upgrades(TokioIo::new(tcp), svc(None)).await;
                        }
                        Some(acceptor) => {
                            let Some(stream) = accept_tls(&acceptor, tcp).await else { return };
                            let sni = stream.ssl().servername(pingora_core::tls::ssl::NameType::HOST_NAME).map(str::to_string);
                            let _ = server.serve_connection_with_upgrades(TokioIo::new(stream), svc(sni)).await;
                        }
                    }
                });
            }
        });
        Ok(Upstream {
            name: name.to_string(),
            addr,
            seen,
            connections,
            forced,
            task,
        })
    }

    /// Every answer from now on gets `status` (0: back to normal).
    pub fn force_status(&self, status: u16) {
        self.forced.store(status, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

/// The server side of a TLS handshake; `None` when it fails.
async fn accept_tls(
    acceptor: &pingora_core::tls::ssl::SslAcceptor,
    tcp: tokio::net::TcpStream,
) -> Option<pingora_core::tls::tokio_ssl::SslStream<tokio::net::TcpStream>> {
    let ssl = pingora_core::tls::ssl::Ssl::new(acceptor.context()).ok()?;
    let mut stream = pingora_core::tls::tokio_ssl::SslStream::new(ssl, tcp).ok()?;
    std::pin::Pin::new(&mut stream).accept().await.ok()?;
    Some(stream)
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    failures: Arc<Mutex<HashMap<String, u32>>>,
    delay: Duration,
    forced: u16,
    sni: Option<String>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<BoxBody<Bytes, Infallible>>, Infallible> {
    if req.headers().contains_key(http::header::UPGRADE) && req.uri().path().ends_with(UPGRADE) {
        return Ok(upgrade(name, &seen, req));
    }
    let (parts, body) = req.into_parts();
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    if let Some(auth) = parts.uri.authority() {
        // HTTP/2 carries the host as :authority.
        headers.push((":authority".into(), auth.to_string()));
    }
    if let Some(scheme) = parts.uri.scheme_str() {
        headers.push((":scheme".into(), scheme.to_string()));
    }
    headers.push((":version".into(), format!("{:?}", parts.version)));
    if let Some(sni) = sni {
        headers.push((":sni".into(), sni));
    }
    let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    if path == UPLOAD {
        // Seen as soon as the header is: a test can tell a streamed body
        // from one the proxy buffered whole.
        let at = record(&seen, Seen { method: parts.method.to_string(), path, headers, body: Bytes::new() });
        if let Some(status) = header("x-test-early-status").and_then(|v| v.parse::<u16>().ok()) {
            // Refused before the body is read.
            let resp = hyper::Response::builder().status(status).body(Full::new(Bytes::from("refused early")).boxed());
            return Ok(resp.expect("valid response"));
        }
        let mut received = 0usize;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => received += frame.data_ref().map_or(0, Bytes::len),
                Err(_) => {
                    record_received(&seen, at, "broken");
                    return Ok(hyper::Response::new(Full::new(Bytes::from("broken")).boxed()));
                }
            }
        }
        record_received(&seen, at, &received.to_string());
        let status = header("x-test-status").and_then(|v| v.parse().ok()).unwrap_or(200);
        let resp = hyper::Response::builder().status(status).body(Full::new(Bytes::from(format!("received {received}"))).boxed());
        return Ok(resp.expect("valid response"));
    }
    if GRPC_STREAMING.contains(&path.as_str()) {
        record(&seen, Seen { method: parts.method.to_string(), path: path.clone(), headers, body: Bytes::new() });
        return Ok(grpc_chat(&path, header("x-md"), body));
    }
    let (body, request_trailers) = match body.collect().await {
        Ok(b) => {
            let trailers = b.trailers().cloned().unwrap_or_default();
            (b.to_bytes(), trailers)
        }
        Err(_) => Default::default(),
    };
    for (k, v) in &request_trailers {
        headers.push((format!("trailer:{k}"), String::from_utf8_lossy(v.as_bytes()).into_owned()));
    }
    record(&seen, Seen { method: parts.method.to_string(), path, headers, body: body.clone() });
    if header("content-type").as_deref() == Some("application/grpc") {
        return Ok(grpc_echo(&body));
    }
    let ms = header("x-test-delay-ms").and_then(|v| v.parse().ok()).unwrap_or(0);
    let wait = delay + Duration::from_millis(ms);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let mut status: u16 = header("x-test-status")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    if let Some(times) = header("x-test-fail-times").and_then(|v| v.parse::<u32>().ok()) {
        let key = header("x-test-key").unwrap_or_default();
        let mut f = failures.lock().expect("lock");
        let n = f.entry(key).or_insert(0);
        *n += 1;
        if *n > times {
            status = 200;
        }
    }
    if forced != 0 {
        status = forced;
    }
    let resp = hyper::Response::builder()
        .status(status)
        .header("x-upstream", &name)
        .header("server", "test-upstream")
        .body(response_body(Bytes::from(name), header("x-test-trailers")))
        .expect("valid response");
    Ok(resp)
}

/// Keeps `request`; returns where it is kept.
fn record(seen: &Mutex<Vec<Seen>>, request: Seen) -> usize {
    let mut log = seen.lock().expect("lock");
    if log.len() >= 100_000 {
        log.clear(); // long-running demo/bench processes: keep memory bounded
    }
    log.push(request);
    log.len() - 1
}

/// Adds `:received N` to the upload kept at `at` once its body has all
/// come (unless the test has taken it meanwhile).
fn record_received(seen: &Mutex<Vec<Seen>>, at: usize, received: &str) {
    let mut log = seen.lock().expect("lock");
    if let Some(upload) = log.get_mut(at).filter(|s| s.path == UPLOAD) {
        upload.headers.push((":received".into(), received.into()));
    }
}

/// Upgrades (`upgrade: websocket` to a path ending in `/ws`): answered 101, then every
/// read on the tunnel is echoed back as `NAME:` and the bytes.
pub const UPGRADE: &str = "/ws";

/// Switches protocols (see [`UPGRADE`]); `x-test-status` refuses instead.
fn upgrade(name: String, seen: &Mutex<Vec<Seen>>, req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<BoxBody<Bytes, Infallible>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let headers: Vec<(String, String)> =
        req.headers().iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    record(seen, Seen { method: req.method().to_string(), path, headers, body: Bytes::new() });
    if let Some(status) = req.headers().get("x-test-status").and_then(|v| v.to_str().ok()?.parse::<u16>().ok()) {
        let resp = hyper::Response::builder().status(status).header("x-upstream", &name).body(Full::new(Bytes::from(name)).boxed());
        return resp.expect("valid response");
    }
    let protocol = req.headers().get(http::header::UPGRADE).cloned().unwrap_or(http::HeaderValue::from_static("websocket"));
    let upgraded = hyper::upgrade::on(req);
    let tag = name.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = upgraded.await else { return };
        let mut io = TokioIo::new(upgraded);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut out = format!("{tag}:").into_bytes();
                    out.extend_from_slice(&buf[..n]);
                    if io.write_all(&out).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = io.shutdown().await;
    });
    hyper::Response::builder()
        .status(101)
        .header(http::header::UPGRADE, protocol)
        .header(http::header::CONNECTION, "upgrade")
        .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        .header("x-upstream", &name)
        .body(Full::new(Bytes::new()).boxed())
        .expect("valid response")
}

/// Uploads: recorded when their header arrives (the body left out), and
/// answered `received N` with the body's length once it has all come.
pub const UPLOAD: &str = "/upload";

/// The streaming gRPC methods (see [`grpc_chat`]).
const GRPC_STREAMING: [&str; 2] = ["/weft.Echo/Chat", "/weft.Echo/Refuse"];

/// A bidirectional gRPC stream, answered as the messages come:
/// - `/weft.Echo/Chat`: response headers at once (with `x-md-echo`, the
///   request's `x-md`), each message echoed back, and when the client ends
///   its side, trailers with grpc-status 0 and grpc-message `bye`; a
///   message `fail:N:TEXT` ends the stream at once with status N;
/// - `/weft.Echo/Refuse`: a trailers-only response, grpc-status 16.
///
/// (Unary calls to other methods are [`grpc_echo`]'s.)
fn grpc_chat(path: &str, md: Option<String>, mut body: hyper::body::Incoming) -> hyper::Response<BoxBody<Bytes, Infallible>> {
    let builder = hyper::Response::builder().header("content-type", "application/grpc");
    if path.ends_with("/Refuse") {
        let response = builder.header("grpc-status", "16").header("grpc-message", "who are you").body(Full::new(Bytes::new()).boxed());
        return response.expect("valid response");
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        let trailers = |code: &str, message: &str| {
            let mut map = http::HeaderMap::new();
            map.insert("grpc-status", http::HeaderValue::from_str(code).unwrap_or(http::HeaderValue::from_static("2")));
            map.insert("grpc-message", http::HeaderValue::from_str(message).unwrap_or(http::HeaderValue::from_static("")));
            Ok(Frame::trailers(map))
        };
        let mut buf = Vec::new();
        loop {
            let data = match body.frame().await {
                Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
                Some(Err(_)) => return, // reset by the client
                None => {
                    let _ = tx.send(trailers("0", "bye")).await;
                    return;
                }
            };
            buf.extend_from_slice(&data);
            while buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() < 5 + len {
                    break;
                }
                let framed: Vec<u8> = buf.drain(..5 + len).collect();
                let text = String::from_utf8_lossy(&framed[5..]).into_owned();
                if let Some(rest) = text.strip_prefix("fail:") {
                    let (code, why) = rest.split_once(':').unwrap_or((rest, ""));
                    let _ = tx.send(trailers(code, why)).await;
                    return;
                }
                if tx.send(Ok(Frame::data(Bytes::from(framed)))).await.is_err() {
                    return;
                }
            }
        }
    });
    let builder = match md {
        Some(md) => builder.header("x-md-echo", md),
        None => builder,
    };
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    builder.body(StreamBody::new(stream).boxed()).expect("valid response")
}

/// The body, then the trailers `k=v,k2=v2` when asked for.
fn response_body(data: Bytes, trailers: Option<String>) -> BoxBody<Bytes, Infallible> {
    let Some(spec) = trailers else { return Full::new(data).boxed() };
    let mut map = http::HeaderMap::new();
    for (k, v) in spec.split(',').filter_map(|kv| kv.split_once('=')) {
        if let (Ok(k), Ok(v)) = (http::HeaderName::try_from(k.trim()), http::HeaderValue::try_from(v.trim())) {
            map.append(k, v);
        }
    }
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![Ok(Frame::data(data)), Ok(Frame::trailers(map))];
    StreamBody::new(tokio_stream::iter(frames)).boxed()
}

/// The gRPC echo service (see the module's doc).
fn grpc_echo(body: &Bytes) -> hyper::Response<BoxBody<Bytes, Infallible>> {
    let message = body.get(5..).unwrap_or_default();
    let text = String::from_utf8_lossy(message);
    let builder = hyper::Response::builder().header("content-type", "application/grpc");
    let response = if let Some(rest) = text.strip_prefix("fail:") {
        let (code, why) = rest.split_once(':').unwrap_or((rest, ""));
        builder.header("grpc-status", code).header("grpc-message", why).body(Full::new(Bytes::new()).boxed())
    } else if let Some(status) = text.strip_prefix("http:") {
        hyper::Response::builder().status(status.parse::<u16>().unwrap_or(500)).body(Full::new(Bytes::new()).boxed())
    } else {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(message);
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![Ok(Frame::data(Bytes::from(framed))), Ok(Frame::trailers(grpc_ok()))];
        builder.body(StreamBody::new(tokio_stream::iter(frames)).boxed())
    };
    response.expect("valid response")
}

fn grpc_ok() -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    map.insert("grpc-status", http::HeaderValue::from_static("0"));
    map
}
