//! A small HTTP/1.1 client over a raw TCP stream: it sends exactly the bytes
//! a test asks for (malformed ones included) and parses what comes back.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Trailers after the body (HTTP/2 only; `to_bytes` leaves them out).
    pub trailers: Vec<(String, String)>,
}

impl Request {
    pub fn get(path: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            headers: vec![("host".into(), "example.com".into())],
            body: Bytes::new(),
            trailers: Vec::new(),
        }
    }

    pub fn method(mut self, m: &str) -> Self {
        self.method = m.into();
        self
    }

    /// Sets a header, replacing an earlier one of the same name.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = Bytes::from(body.to_string());
        self
    }

    /// Ends the body with this trailer too (HTTP/2).
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers.push((name.into(), value.into()));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.body.is_empty() {
            out.push_str(&format!("content-length: {}\r\n", self.body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// What a client observed of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub status: u16,
    /// Lower-cased names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// HTTP/2 trailers (none over HTTP/1.1), lower-cased, in arrival order.
    pub trailers: Vec<(String, String)>,
}

impl Observed {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The parts two proxies must agree on: volatile values (date, timings,
    /// generated ids) are masked, headers and trailers sorted by name.
    pub fn normalized(&self) -> Observed {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(k, _)| k != "date")
            .map(|(k, v)| match k.as_str() {
                "x-envoy-upstream-service-time" | "x-request-id" => (k.clone(), "<masked>".into()),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        headers.sort();
        Observed {
            status: self.status,
            headers,
            body: self.body.clone(),
            trailers: {
                let mut t = self.trailers.clone();
                t.sort();
                t
            },
        }
    }
}

/// Sends a request on a new connection and reads one response.
pub async fn send(port: u16, req: &Request) -> std::io::Result<Observed> {
    let raw = send_raw(port, &req.to_bytes(), req.method == "HEAD").await?;
    parse(&raw, req.method == "HEAD").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unparsable response: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

/// [`send`] to any address (a workload's own loopback IP).
pub async fn send_to(addr: std::net::SocketAddr, req: &Request) -> std::io::Result<Observed> {
    let tcp = TcpStream::connect(addr).await?;
    let raw = exchange_raw(tcp, &req.to_bytes(), req.method == "HEAD").await?;
    parse(&raw, req.method == "HEAD")
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unparsable response: {:?}", String::from_utf8_lossy(&raw))))
}

/// Writes raw bytes and reads until one full response (or EOF/timeout).
pub async fn send_raw(port: u16, bytes: &[u8], head: bool) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    exchange_raw(tcp, bytes, head).await
}

/// Writes raw bytes on a connection and reads one full response.
pub async fn exchange_raw<S: AsyncRead + AsyncWrite + Unpin>(mut tcp: S, bytes: &[u8], head: bool) -> std::io::Result<Vec<u8>> {
    tcp.write_all(bytes).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if parse(&buf, head).is_some() {
            return Ok(buf);
        }
        match tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => return Ok(buf),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) if buf.is_empty() => return Err(e),
            Ok(Err(_)) => return Ok(buf),
        }
    }
}

/// Parses one complete response, or `None` if more bytes are needed.
pub fn parse(buf: &[u8], head: bool) -> Option<Observed> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = resp.parse(buf).ok()? else {
        return None;
    };
    let status = resp.code?;
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let rest = &buf[len..];
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body = if head || status == 204 || status == 304 || (100..200).contains(&status) {
        Bytes::new()
    } else if get("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        Bytes::from(dechunk(rest)?)
    } else if let Some(cl) = get("content-length") {
        let n: usize = cl.trim().parse().ok()?;
        if rest.len() < n {
            return None;
        }
        Bytes::copy_from_slice(&rest[..n])
    } else {
        return None; // read until close: the caller stops at EOF
    };
    Some(Observed {
        status,
        headers,
        body,
        trailers: Vec::new(),
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if rest.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Sends a request over HTTP/2 with prior knowledge (h2c). The `host`
/// header becomes `:authority`.
pub async fn send_h2c(port: u16, req: &Request) -> anyhow::Result<Observed> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    exchange_h2(tcp, req, "http").await
}

/// One HTTP/2 request on an established connection (h2c or TLS with ALPN h2).
pub async fn exchange_h2<S>(tcp: S, req: &Request, scheme: &str) -> anyhow::Result<Observed>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use hyper::body::Frame;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    let driver = tokio::spawn(conn);
    let host = req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("host")).map(|(_, v)| v.as_str()).unwrap_or("example.com");
    let mut builder = hyper::Request::builder().method(req.method.as_str()).uri(format!("{scheme}://{host}{}", req.path));
    for (k, v) in req.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("host")) {
        builder = builder.header(k, v);
    }
    let body = if req.trailers.is_empty() {
        Full::new(req.body.clone()).boxed()
    } else {
        let mut trailers = http::HeaderMap::new();
        for (k, v) in &req.trailers {
            trailers.append(http::HeaderName::from_bytes(k.as_bytes())?, http::HeaderValue::from_str(v)?);
        }
        let mut frames = Vec::new();
        if !req.body.is_empty() {
            frames.push(Ok::<_, std::convert::Infallible>(Frame::data(req.body.clone())));
        }
        frames.push(Ok(Frame::trailers(trailers)));
        StreamBody::new(tokio_stream::iter(frames)).boxed()
    };
    let resp = sender.send_request(builder.body(body)?).await?;
    let status = resp.status().as_u16();
    let headers = pairs(resp.headers());
    let collected = resp.into_body().collect().await?;
    let trailers = collected.trailers().map(pairs).unwrap_or_default();
    let body = collected.to_bytes();
    driver.abort();
    Ok(Observed { status, headers, body, trailers })
}

fn pairs(map: &http::HeaderMap) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

/// Asks `addr` for a WebSocket upgrade of `path` (raw HTTP/1.1) and, if it
/// answers 101, sends `message` through the tunnel: the status line, and
/// what came back within 3 s.
pub async fn websocket_echo(addr: std::net::SocketAddr, host: &str, path: &str, message: &str) -> std::io::Result<(String, String)> {
    let mut tcp = TcpStream::connect(addr).await?;
    let head = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    tcp.write_all(head.as_bytes()).await?;
    let (head, mut echoed) = read_head(&mut tcp).await;
    let status = head.lines().next().unwrap_or_default().to_string();
    if !status.starts_with("HTTP/1.1 101") {
        return Ok((status, String::new()));
    }
    let mut chunk = [0u8; 4096];
    tcp.write_all(message.as_bytes()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !echoed.ends_with(message.as_bytes()) {
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => echoed.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    Ok((status, String::from_utf8_lossy(&echoed).into_owned()))
}

/// Reads a response header off a raw connection, within 3 s: its text, and
/// the bytes that came after it. On failure, what went wrong (and what
/// came) stands for the header.
pub async fn read_head(tcp: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
        match tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut chunk)).await {
            Ok(Ok(0)) => return (format!("closed after {:?}", String::from_utf8_lossy(&buf)), Vec::new()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return (format!("error {e}"), Vec::new()),
            Err(_) => return (format!("no header within 3s after {:?}", String::from_utf8_lossy(&buf)), Vec::new()),
        }
    }
}
