//! The downstream HTTP/1.1 codec: one kept-alive client connection, its
//! requests read and its responses written in turn.
//!
//! Pingora's server made a new session (buffers, a header-case map, a
//! digest) for every request on a connection; here the buffers live with
//! the connection, request header values are slices of the read buffer, and
//! a response's header goes out in the same write as its first body bytes.
//!
//! What it does the way Envoy's codec does: header names go out lowercase,
//! `connection: close` only when the connection ends (and `keep-alive` for
//! an HTTP/1.0 client that asked for it), no chunked framing towards an
//! HTTP/1.0 client (its body runs to the close), HTTP/1 trailers dropped,
//! pipelined requests answered in order, `expect: 100-continue` answered
//! at once and not passed on.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use pingora_core::protocols::Stream;
use pingora_http::{RequestHeader, ResponseHeader};
use tokio::io::AsyncWriteExt;

use super::Peer;
use crate::h1::{BodyDecoder, Error, FEW_HEADERS, MAX_HEADERS};
use crate::http::header_map;

/// Envoy's default `max_request_headers_kb` (60 KiB): a larger request
/// header is answered 431 (HTTP/2's is checked by the connection manager).
/// The connection manager's own limit replaces it (`with_max_header_bytes`).
pub const MAX_HEADER_BYTES: usize = 60 * 1024;

/// How the response body goes out.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// No response header written yet.
    NotStarted,
    /// HEAD, 204, 304: whatever body is given is not sent.
    None,
    Length,
    Chunked,
    /// Until the connection closes (no length, HTTP/1.0 client).
    Close,
    /// The response is complete.
    Ended,
}

/// Why a request could not be read: the status to answer with.
pub struct BadRequest(pub u16);

/// One downstream HTTP/1.1 connection and the request it is serving.
pub struct Server {
    stream: Stream,
    read: BytesMut,
    write: Vec<u8>,
    peer: Peer,
    /// The request's header, until the router takes it (`take_request`).
    req: RequestHeader,
    /// What the codec needs of the request for the response's framing.
    head: bool,
    http10: bool,
    body: BodyDecoder,
    body_read: usize,
    /// The client lets the connection live on (HTTP/1.1 without `close`,
    /// HTTP/1.0 with `keep-alive`).
    client_keepalive: bool,
    /// Our side lets the connection live on after this response.
    keepalive: bool,
    /// How long the connection may wait for a request with none in
    /// flight (`None`: no bound).
    idle_timeout: Option<Duration>,
    /// After the idle timeout, how long it drains before it closes.
    idle_drain: Duration,
    /// A request header larger than this is answered 431.
    max_header_bytes: usize,
    /// When the connection has lived its max_connection_duration: it
    /// drains from then on.
    end_of_life: Option<tokio::time::Instant>,
    /// The idle timeout passed: the connection closes at this instant.
    drain_deadline: Option<tokio::time::Instant>,
    framing: Framing,
    response: Option<Box<ResponseHeader>>,
    body_sent: usize,
}

impl Server {
    pub fn new(stream: Stream) -> Self {
        let peer = Peer::of(&stream);
        Server {
            stream,
            read: BytesMut::new(),
            write: Vec::new(),
            peer,
            req: placeholder(),
            head: false,
            http10: false,
            body: BodyDecoder::empty(),
            body_read: 0,
            client_keepalive: false,
            keepalive: true,
            idle_timeout: None,
            idle_drain: Duration::ZERO,
            max_header_bytes: MAX_HEADER_BYTES,
            end_of_life: None,
            drain_deadline: None,
            framing: Framing::NotStarted,
            response: None,
            body_sent: 0,
        }
    }

    /// Bounds the wait for each request, the first included (Envoy's
    /// connection `idle_timeout`); past it the connection drains for
    /// `drain` before it closes (requests that come meanwhile are served,
    /// their responses saying `connection: close`, as Envoy's).
    pub fn with_idle_timeout(mut self, idle: Option<Duration>, drain: Duration) -> Self {
        self.idle_timeout = idle;
        self.idle_drain = drain;
        self
    }

    /// Answers a request header larger than `max` bytes with 431 (Envoy's
    /// `max_request_headers_kb`).
    pub fn with_max_header_bytes(mut self, max: usize) -> Self {
        self.max_header_bytes = max;
        self
    }

    /// Drains the connection once it has lived `max` (Envoy's
    /// `max_connection_duration`), as at the idle timeout.
    pub fn with_max_duration(mut self, max: Option<Duration>) -> Self {
        self.end_of_life = max.map(|d| tokio::time::Instant::now() + d);
        self
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Reads the next request's header: `Ok(false)` when the client closed
    /// (or stayed idle past the idle timeout and the drain) between
    /// requests.
    pub async fn read_request(&mut self) -> Result<bool, BadRequest> {
        self.body_read = 0;
        self.body_sent = 0;
        self.response = None;
        self.framing = Framing::NotStarted;
        self.keepalive = true;
        loop {
            let now = tokio::time::Instant::now();
            if self.drain_deadline.is_none() && self.end_of_life.is_some_and(|end| now >= end) {
                self.drain_deadline = Some(now + self.idle_drain);
            }
            match parse_request(&mut self.read, self.max_header_bytes)? {
                Some(parsed) => {
                    self.head = parsed.req.method == http::Method::HEAD;
                    self.http10 = parsed.req.version == http::Version::HTTP_10;
                    self.req = parsed.req;
                    self.body = parsed.body;
                    self.client_keepalive = parsed.keep_alive;
                    if parsed.expects_continue && !self.body.is_done() {
                        // Envoy answers `expect: 100-continue` itself (no
                        // `proxy_100_continue`), at once, and the header
                        // does not go further.
                        if self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                            return Ok(false);
                        }
                    }
                    return Ok(true);
                }
                None if self.read.len() > self.max_header_bytes => return Err(BadRequest(431)),
                None => {}
            }
            // Idle between requests: bounded by the idle timeout and the
            // connection's end of life, then by the drain.
            let wait = match self.drain_deadline {
                Some(deadline) => Some(deadline.saturating_duration_since(now)),
                None => {
                    let life_left = self.end_of_life.map(|end| end.saturating_duration_since(now));
                    [self.idle_timeout, life_left].into_iter().flatten().min()
                }
            }
            .filter(|_| self.read.is_empty());
            let read = crate::h1::fill(&mut self.stream, &mut self.read);
            let n = match wait {
                Some(t) => match tokio::time::timeout(t, read).await {
                    Ok(n) => n,
                    // Idle too long, or lived long enough: drain, then
                    // close (as Envoy's HTTP/1.1 connections do).
                    Err(_) if self.drain_deadline.is_none() => {
                        self.drain_deadline = Some(tokio::time::Instant::now() + self.idle_drain);
                        continue;
                    }
                    Err(_) => return Ok(false),
                },
                None => read.await,
            };
            // Closed (between requests, or mid-header: nothing to answer).
            if matches!(n, Ok(0) | Err(_)) {
                return Ok(false);
            }
        }
    }

    pub fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    /// The request's header, moved out for the router to edit (the codec
    /// keeps what it needs); `req_header` is empty after.
    pub fn take_request(&mut self) -> RequestHeader {
        std::mem::replace(&mut self.req, placeholder())
    }

    pub fn is_body_empty(&self) -> bool {
        self.body_read == 0 && self.body.is_done()
    }

    pub fn body_unread(&self) -> bool {
        self.body_read == 0 && !self.body.is_done()
    }

    /// The next piece of the request body; `None` at its end.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>, Error> {
        let data = crate::h1::read_body(&mut self.stream, &mut self.read, &mut self.body).await?;
        self.body_read += data.as_ref().map_or(0, Bytes::len);
        Ok(data)
    }

    pub fn body_bytes_read(&self) -> usize {
        self.body_read
    }

    pub fn body_bytes_sent(&self) -> usize {
        self.body_sent
    }

    pub fn response_written(&self) -> Option<&ResponseHeader> {
        self.response.as_deref()
    }

    /// The connection closes after this response.
    pub fn disable_keepalive(&mut self) {
        self.keepalive = false;
    }

    /// Writes what the response has ready: its header (first time), a piece
    /// of body, the end. One write for all of it.
    pub async fn respond(&mut self, header: Option<Box<ResponseHeader>>, body: Option<Bytes>, end: bool) -> Result<(), Error> {
        self.write.clear();
        if let Some(header) = header {
            self.start_response(header);
        }
        let chunked = self.framing == Framing::Chunked;
        let data = body.filter(|b| !b.is_empty() && self.framing != Framing::None).unwrap_or_default();
        self.body_sent += data.len();
        crate::h1::write_body(&mut self.stream, &mut self.write, &data, chunked, end).await?;
        if end {
            self.framing = Framing::Ended;
        }
        Ok(())
    }

    /// A response for a request we could not read: no body, and the
    /// connection closes.
    pub async fn respond_error(&mut self, status: u16) {
        self.keepalive = false;
        self.client_keepalive = false;
        let Some(resp) = super::error_response(status) else { return };
        let _ = self.respond(Some(resp), None, true).await;
    }

    /// Ends the connection (TLS close_notify, TCP FIN).
    pub async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// After a response: whether the connection serves another request.
    /// The request body must have been read to its end (what is buffered
    /// already is consumed here) and the response ended.
    pub async fn finish(&mut self) -> bool {
        if !self.will_keepalive() || self.framing != Framing::Ended {
            self.close().await;
            return false;
        }
        true
    }

    /// The connection lives on after this response.
    fn will_keepalive(&mut self) -> bool {
        while let Ok(Some(data)) = self.body.decode(&mut self.read) {
            self.body_read += data.len();
        }
        self.keepalive && self.client_keepalive && self.body.is_done()
    }

    /// After a 101 has been sent: the connection and what the client sent
    /// after its request, for the tunnel that replaces HTTP on it.
    pub fn tunnel(&mut self) -> (&mut Stream, BytesMut) {
        self.keepalive = false;
        (&mut self.stream, std::mem::take(&mut self.read))
    }

    /// Decides the body's framing and serializes the header.
    fn start_response(&mut self, mut resp: Box<ResponseHeader>) {
        let status = resp.status;
        let http10 = self.http10;
        // Switching protocols: the header goes as it is (its `connection:
        // upgrade` included) and what follows is no longer HTTP.
        let switching = status == http::StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            self.keepalive = false;
        }
        self.framing = if switching {
            Framing::Ended
        } else if self.head || status == http::StatusCode::NO_CONTENT || status == http::StatusCode::NOT_MODIFIED {
            Framing::None
        } else if resp.headers.get(header::TRANSFER_ENCODING).is_some_and(|v| crate::h1::has_token(v, "chunked")) {
            if http10 {
                // HTTP/1.0 has no chunked framing: the close ends the body.
                resp.remove_header(&header::TRANSFER_ENCODING);
                Framing::Close
            } else {
                Framing::Chunked
            }
        } else if resp.headers.contains_key(header::CONTENT_LENGTH) {
            Framing::Length
        } else {
            Framing::Close
        };
        if self.framing == Framing::Close {
            // Only the close tells the client where the body ends.
            self.keepalive = false;
        }
        if self.framing == Framing::None {
            // As Envoy's codec frames it: a HEAD response without a length
            // says `chunked` (what the GET would get, no body follows);
            // 204 and 304 say neither.
            let says_chunked = self.head && !http10 && status != http::StatusCode::NO_CONTENT && status != http::StatusCode::NOT_MODIFIED;
            if says_chunked && !resp.headers.contains_key(header::CONTENT_LENGTH) {
                header_map::insert(&mut *resp, header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            } else {
                resp.remove_header(&header::TRANSFER_ENCODING);
            }
        }
        // Draining: the client is asked to close, and served until it does
        // or the drain ends.
        if switching {
            // Its `connection: upgrade` stands.
        } else if !self.will_keepalive() || self.drain_deadline.is_some() {
            header_map::insert(&mut *resp, header::CONNECTION, HeaderValue::from_static("close"));
        } else if http10 {
            header_map::insert(&mut *resp, header::CONNECTION, HeaderValue::from_static("keep-alive"));
        }
        self.write.extend_from_slice(b"HTTP/1.1 ");
        self.write.extend_from_slice(status.as_str().as_bytes());
        self.write.push(b' ');
        if let Some(reason) = resp.get_reason_phrase() {
            self.write.extend_from_slice(reason.as_bytes());
        }
        self.write.extend_from_slice(b"\r\n");
        crate::h1::write_headers(&mut self.write, resp.headers.iter());
        self.write.extend_from_slice(b"\r\n");
        self.response = Some(resp);
    }
}

/// An empty request header (no allocation): before the first request,
/// and after the router took one.
fn placeholder() -> RequestHeader {
    RequestHeader::from(http::Request::new(()).into_parts().0)
}

/// A request header parsed off the front of the read buffer.
struct Parsed {
    req: RequestHeader,
    body: BodyDecoder,
    keep_alive: bool,
    /// `expect: 100-continue` (removed from the request).
    expects_continue: bool,
}

/// Parses a request header out of `buf` (consuming it), or `None` when it
/// is not complete yet. A plain function: httparse's header array lives on
/// the stack, not in the connection's future. A small header array is
/// tried first (`FEW_HEADERS`), the full one when it is too small.
fn parse_request(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<Parsed>, BadRequest> {
    // A 431 leaves the buffer as it was.
    match parse_request_with::<FEW_HEADERS>(buf, max_bytes) {
        Err(BadRequest(431)) => parse_request_with::<MAX_HEADERS>(buf, max_bytes),
        parsed => parsed,
    }
}

fn parse_request_with<const N: usize>(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<Parsed>, BadRequest> {
    // Blank lines before a request are allowed (RFC 9112 §2.2).
    while buf.starts_with(b"\r\n") || buf.starts_with(b"\n") {
        let skip = if buf[0] == b'\r' { 2 } else { 1 };
        let _ = buf.split_to(skip);
    }
    if buf.is_empty() {
        return Ok(None);
    }
    let mut slots = [httparse::EMPTY_HEADER; N];
    let mut parsed = httparse::Request::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadRequest(431)),
        Err(_) => return Err(BadRequest(400)),
    };
    if len > max_bytes {
        return Err(BadRequest(431));
    }
    let count = parsed.headers.len();
    let mut spans = [crate::h1::NO_SPAN; N];
    crate::h1::header_spans(buf, parsed.headers, &mut spans);
    let method = http::Method::from_bytes(parsed.method.unwrap_or_default().as_bytes()).map_err(|_| BadRequest(400))?;
    let version = if parsed.version == Some(0) { http::Version::HTTP_10 } else { http::Version::HTTP_11 };
    let target = parsed.path.unwrap_or_default().as_bytes();
    // Envoy's codec refuses a target that is not ASCII, UTF-8 or not.
    if !target.is_ascii() {
        return Err(BadRequest(400));
    }
    // Room for what the connection manager adds.
    let mut req = RequestHeader::build_no_case(method, target, Some(count + 8)).map_err(|_| BadRequest(400))?;
    if target.contains(&b'#') {
        req.extensions_mut().insert(super::Fragment);
    }
    req.set_version(version);
    let raw = buf.split_to(len).freeze();
    let mut keep_alive = version == http::Version::HTTP_11;
    let mut chunked = false;
    let mut te = false;
    let mut expects_continue = false;
    for &span in &spans[..count] {
        let (name, value) = crate::h1::header_at(&raw, span).ok_or(BadRequest(400))?;
        if name == header::CONNECTION {
            keep_alive = crate::h1::keep_alive_after(keep_alive, version, &value);
        } else if name == header::TRANSFER_ENCODING {
            te = true;
            chunked = value.as_bytes().rsplit(|b| *b == b',').next().is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::EXPECT && value.as_bytes().eq_ignore_ascii_case(b"100-continue") && version == http::Version::HTTP_11 {
            expects_continue = true;
            continue;
        }
        header_map::append(&mut req, name, value);
    }
    let body = if te {
        // A transfer coding that does not end in chunked cannot be
        // delimited; a length beside it is a smuggling attempt (Envoy
        // refuses both framings at once).
        if !chunked || req.headers.contains_key(header::CONTENT_LENGTH) {
            return Err(BadRequest(400));
        }
        BodyDecoder::chunked()
    } else {
        match crate::h1::content_length(req.headers.get_all(header::CONTENT_LENGTH).iter()) {
            Ok(n) => BodyDecoder::length(n.unwrap_or(0)),
            Err(_) => return Err(BadRequest(400)),
        }
    };
    Ok(Some(Parsed { req, body, keep_alive, expects_continue }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;
    use tokio::io::AsyncReadExt;
    use tokio::io::DuplexStream;

    /// A server on one end of a pipe; the client's bytes are written first.
    async fn server(client_bytes: &[u8]) -> (Server, DuplexStream) {
        let (ours, mut theirs) = tokio::io::duplex(256 * 1024);
        theirs.write_all(client_bytes).await.expect("write");
        (Server::new(Box::new(ours)), theirs)
    }

    async fn read_all(mut theirs: DuplexStream) -> String {
        let mut out = Vec::new();
        let _ = theirs.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn response(status: u16, headers: &[(&'static str, &'static str)]) -> Box<ResponseHeader> {
        let mut resp = ResponseHeader::build_no_case(status, None).expect("response");
        for (k, v) in headers {
            header_map::insert(&mut resp, HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        Box::new(resp)
    }

    #[tokio::test]
    async fn pipelined_requests_with_bodies_are_served_in_order() {
        let (mut s, theirs) = server(
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /b?q HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await;
        assert!(s.read_request().await.is_ok_and(|more| more));
        assert_eq!(s.req_header().raw_path(), b"/a");
        assert_eq!(s.req_header().headers["host"], "x");
        assert_eq!(&s.read_body().await.expect("body").expect("data")[..], b"abc");
        assert!(s.read_body().await.expect("end").is_none());
        s.respond(Some(response(200, &[("content-length", "2")])), Some(Bytes::from_static(b"ok")), true).await.expect("write");
        assert!(s.finish().await);
        assert!(s.read_request().await.is_ok_and(|more| more));
        assert_eq!(s.req_header().raw_path(), b"/b?q");
        assert!(s.is_body_empty());
        s.disable_keepalive();
        s.respond(Some(response(404, &[("content-length", "0")])), None, true).await.expect("write");
        assert!(!s.finish().await);
        drop(s);
        assert_eq!(
            read_all(theirs).await,
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn chunked_responses_and_http10_clients() {
        let (mut s, theirs) = server(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        s.read_request().await.ok();
        let big = Bytes::from(vec![b'x'; crate::h1::COALESCE_BODY + 1]);
        s.respond(Some(response(200, &[("transfer-encoding", "chunked")])), Some(Bytes::from_static(b"hi")), false).await.expect("write");
        s.respond(None, Some(big.clone()), true).await.expect("write");
        assert!(s.finish().await);
        drop(s);
        let expected = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n{:x}\r\n{}\r\n0\r\n\r\n", big.len(), "x".repeat(big.len()));
        assert_eq!(read_all(theirs).await, expected);

        // HTTP/1.0 has no chunked framing: the body runs to the close.
        let (mut s, theirs) = server(b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").await;
        s.read_request().await.ok();
        s.respond(Some(response(200, &[("transfer-encoding", "chunked")])), Some(Bytes::from_static(b"hi")), true).await.expect("write");
        assert!(!s.finish().await);
        drop(s);
        assert_eq!(read_all(theirs).await, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhi");
    }

    #[tokio::test]
    async fn head_and_unread_bodies() {
        let (mut s, theirs) = server(b"HEAD / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc").await;
        s.read_request().await.ok();
        s.respond(Some(response(200, &[("content-length", "5")])), Some(Bytes::from_static(b"hello")), true).await.expect("write");
        assert!(s.finish().await);
        // A body still arriving when the response is written: the
        // connection closes after it.
        s.read_request().await.ok();
        s.respond(Some(response(413, &[("content-length", "0")])), None, true).await.expect("write");
        assert!(!s.finish().await);
        drop(s);
        assert_eq!(
            read_all(theirs).await,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nHTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn many_headers_take_the_larger_array() {
        let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..(FEW_HEADERS + 8) {
            bytes.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        let (mut s, _theirs) = server(&bytes).await;
        assert!(s.read_request().await.is_ok_and(|more| more));
        assert_eq!(s.req_header().headers.len(), FEW_HEADERS + 8);
        assert_eq!(s.req_header().headers["x-h39"], "39");
    }

    #[tokio::test]
    async fn refused_requests() {
        let huge = format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(MAX_HEADER_BYTES + 1));
        for (bytes, status) in [
            (huge.into_bytes(), 431),
            (b"GET / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n".to_vec(), 400),
            (b"POST / HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nbad header: x\r\n\r\n".to_vec(), 400),
        ] {
            let (mut s, _theirs) = server(&bytes).await;
            assert!(matches!(s.read_request().await, Err(BadRequest(code)) if code == status), "{status}");
        }
        // A client that goes away between requests.
        let (mut s, theirs) = server(b"").await;
        drop(theirs);
        assert!(matches!(s.read_request().await, Ok(false)));
    }
}
