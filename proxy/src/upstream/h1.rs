//! An HTTP/1.1 client connection for the router: one request at a time on a
//! kept-alive connection, the request written from the router's header
//! without copying it, the response parsed in place.
//!
//! Pingora's client did the same with a fresh session per request: new
//! buffers, a copy of the request for it to keep, a header-case map built
//! for every response. Here the read and write buffers live with the
//! connection and go back to the pool with it, so a reused connection
//! costs no allocation for them; response header values are slices of the
//! read buffer.
//!
//! Framing follows RFC 9112 §6.3 as Envoy's codec applies it: no body after
//! HEAD, 1xx, 204 and 304; `transfer-encoding` must be `chunked` alone,
//! without `content-length`, and conflicting lengths are a protocol error;
//! without either the body runs to the connection's close. Interim
//! 1xx responses are skipped (Envoy does not proxy `100 Continue` by
//! default). HTTP/1 trailers are read and dropped, as Envoy does without
//! `enable_trailers`.

use bytes::{Bytes, BytesMut};
use http::header;

use crate::h1::{BodyDecoder, FEW_HEADERS, MAX_HEADERS};
use pingora_core::protocols::Stream;
use pingora_http::{RequestHeader, ResponseHeader};
use tokio::io::AsyncWriteExt;

/// Envoy's default `max_response_headers_kb`.
const MAX_HEADER_BYTES: usize = 60 * 1024;

pub use crate::h1::Error;

/// One upstream HTTP/1.1 connection and its buffers.
pub struct Connection {
    stream: Stream,
    /// Bytes read and not consumed yet (the response header, then body).
    read: BytesMut,
    /// The serialized request; kept for its capacity.
    write: Vec<u8>,
    /// The current response's body (`None` before a response).
    body: Option<BodyDecoder>,
    /// The current response allows the connection to be reused.
    keep_alive: bool,
    /// The request was HEAD: its response has no body, whatever it says.
    head: bool,
    /// The upstream answered before the request's body was all sent: the
    /// connection is out of step and is not reused.
    unfinished: bool,
    /// Requests it may carry before it is let go (its cluster's
    /// max_requests_per_connection), counting down.
    requests_left: Option<u32>,
    /// When it stops taking new requests (its cluster's
    /// max_connection_duration from when it was made).
    end_of_life: Option<std::time::Instant>,
}

impl Connection {
    pub fn new(stream: Stream, max_requests: Option<u32>, max_duration: Option<std::time::Duration>) -> Self {
        Connection {
            stream,
            read: BytesMut::new(),
            write: Vec::new(),
            body: None,
            keep_alive: false,
            head: false,
            unfinished: false,
            requests_left: max_requests,
            end_of_life: max_duration.map(|d| std::time::Instant::now() + d),
        }
    }

    /// It has lived its max_connection_duration: no new request on it.
    pub fn past_its_time(&self) -> bool {
        self.end_of_life.is_some_and(|end| std::time::Instant::now() >= end)
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Writes the request: its header and its whole body, which the router
    /// has framed with `content-length`.
    pub async fn send(&mut self, req: &RequestHeader, body: &Bytes) -> Result<(), Error> {
        self.start(req, false)?;
        self.send_body(body, false, true).await
    }

    /// Starts a request whose body follows in pieces ([`Connection::send_body`]):
    /// the header waits to go out with the first one. `chunked`: the body's
    /// length is unknown (no `content-length`), so it is chunk-encoded.
    pub fn start(&mut self, req: &RequestHeader, chunked: bool) -> Result<(), Error> {
        if let Some(left) = self.requests_left.as_mut() {
            *left = left.saturating_sub(1);
        }
        self.write.clear();
        serialize(req, &mut self.write)?;
        if chunked {
            // Before the blank line that ends the header.
            self.write.truncate(self.write.len() - 2);
            self.write.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        }
        self.body = None;
        self.keep_alive = false;
        self.unfinished = false;
        self.head = req.method == http::Method::HEAD;
        Ok(())
    }

    /// A started request's header has not gone out yet.
    pub fn head_pending(&self) -> bool {
        !self.write.is_empty()
    }

    /// Sends a started request's header now, if it has not gone yet (the
    /// client is slow with its body: the upstream learns of the request
    /// without waiting for it, as from Envoy).
    pub async fn send_head(&mut self) -> Result<(), Error> {
        if !self.write.is_empty() {
            self.stream.write_all(&self.write).await?;
            self.write.clear();
            self.stream.flush().await?;
        }
        Ok(())
    }

    /// Writes a piece of a started request's body (with `end`, its last),
    /// after the header if that has not gone out yet.
    pub async fn send_body(&mut self, data: &[u8], chunked: bool, end: bool) -> Result<(), Error> {
        Ok(crate::h1::write_body(&mut self.stream, &mut self.write, data, chunked, end).await?)
    }

    /// Waits, cancel-safely, for the upstream to start its final response
    /// while the request body is still going out (an upload it refuses
    /// early): [`read_response`](Self::read_response) reads it after, and
    /// the body is not sent further. Interim 1xx responses are skipped.
    pub async fn answered_early(&mut self) -> Result<(), Error> {
        loop {
            if !self.read.is_empty() {
                let mut slots = [httparse::EMPTY_HEADER; FEW_HEADERS];
                let mut resp = httparse::Response::new(&mut slots);
                match resp.parse(&self.read) {
                    Ok(httparse::Status::Complete(len)) if resp.code.is_some_and(is_interim) => {
                        let _ = self.read.split_to(len);
                        continue;
                    }
                    _ => break,
                }
            }
            if crate::h1::fill(&mut self.stream, &mut self.read).await? == 0 {
                break;
            }
        }
        self.unfinished = true;
        Ok(())
    }

    /// Reads the final response header (interim 1xx responses skipped).
    pub async fn read_response(&mut self) -> Result<ResponseHeader, Error> {
        loop {
            match parse_response(&mut self.read)? {
                Some(parsed) if parsed.interim => continue,
                Some(mut parsed) => {
                    let mut body = framing(&mut parsed, self.head)?;
                    self.keep_alive = parsed.keep_alive && !body.is_until_close();
                    // Consumes buffered framing, so that `done` knows; bad
                    // framing after a good header is the body's error and
                    // `read_body` reports it.
                    let _ = body.settle(&mut self.read);
                    self.body = Some(body);
                    return Ok(parsed.header);
                }
                None => {
                    if self.read.len() >= MAX_HEADER_BYTES {
                        return Err(Error::Protocol("response headers too large"));
                    }
                    if crate::h1::fill(&mut self.stream, &mut self.read).await? == 0 {
                        return Err(Error::Closed);
                    }
                }
            }
        }
    }

    /// The response has been read to its end.
    pub fn done(&self) -> bool {
        self.body.is_some_and(|b| b.is_done())
    }

    /// The next piece of the response body; `None` at its end.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>, Error> {
        let Some(body) = self.body.as_mut() else { return Ok(None) };
        crate::h1::read_body(&mut self.stream, &mut self.read, body).await
    }

    /// Whether the connection can carry another request: the response was
    /// read to its end, nothing followed it, neither side asked to close,
    /// and it has requests and time left.
    pub fn reusable(&self) -> bool {
        self.keep_alive && !self.unfinished && self.done() && self.read.is_empty() && self.requests_left != Some(0) && !self.past_its_time()
    }

    /// After a 101: the connection and what the upstream sent after the
    /// header, for the tunnel that replaces HTTP on it. It is not reused.
    pub fn tunnel(&mut self) -> (&mut Stream, BytesMut) {
        self.keep_alive = false;
        (&mut self.stream, std::mem::take(&mut self.read))
    }

    /// Ends a connection that is not reused (TLS close_notify, TCP FIN).
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// The request line and headers as HTTP/1.1 puts them on the wire, header
/// names lowercase (Envoy's default `header_key_format`).
fn serialize(req: &RequestHeader, out: &mut Vec<u8>) -> Result<(), Error> {
    let target = req.raw_path();
    // Pingora's header types refuse these already; the wire must never
    // see them whatever builds the request.
    if target.is_empty() || target.iter().any(|b| matches!(b, b' ' | b'\r' | b'\n' | 0)) {
        return Err(Error::BadTarget);
    }
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    crate::h1::write_headers(out, req.headers.iter());
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// An interim response, skipped on the way to the final one: 1xx but 101,
/// which ends HTTP on the connection.
fn is_interim(code: u16) -> bool {
    (100..200).contains(&code) && code != 101
}

/// A response header parsed from the front of the read buffer.
struct Parsed {
    header: ResponseHeader,
    interim: bool,
    keep_alive: bool,
}

/// Parses a response header out of `buf` (consuming it), or `None` when
/// it is not complete yet. A plain function: httparse's header array lives
/// on the stack, not in the connection's future.
fn parse_response(buf: &mut BytesMut) -> Result<Option<Parsed>, Error> {
    // A small header array first (`FEW_HEADERS`); a failure leaves the
    // buffer as it was.
    match parse_response_with::<FEW_HEADERS>(buf) {
        Err(Error::Protocol(TOO_MANY)) => parse_response_with::<MAX_HEADERS>(buf),
        parsed => parsed,
    }
}

const TOO_MANY: &str = "too many response headers";

fn parse_response_with<const N: usize>(buf: &mut BytesMut) -> Result<Option<Parsed>, Error> {
    let mut slots = [httparse::EMPTY_HEADER; N];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Protocol(TOO_MANY)),
        Err(_) => return Err(Error::Protocol("malformed response header")),
    };
    let code = resp.code.unwrap_or(0);
    let version = match resp.version {
        Some(1) => http::Version::HTTP_11,
        _ => http::Version::HTTP_10,
    };
    let count = resp.headers.len();
    let mut spans = [crate::h1::NO_SPAN; N];
    crate::h1::header_spans(buf, resp.headers, &mut spans);
    let head = buf.split_to(len).freeze();
    let Ok(status) = http::StatusCode::from_u16(code) else {
        return Err(Error::Protocol("invalid status code"));
    };
    let mut keep_alive = version == http::Version::HTTP_11;
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    // Room for what the router adds (service time, date, server).
    parts.headers = http::HeaderMap::with_capacity(count + 4);
    for &span in &spans[..count] {
        let (name, value) = crate::h1::header_at(&head, span).ok_or(Error::Protocol("invalid response header"))?;
        if name == header::CONNECTION {
            keep_alive = crate::h1::keep_alive_after(keep_alive, version, &value);
        }
        parts.headers.append(name, value);
    }
    let interim = is_interim(code);
    Ok(Some(Parsed { header: ResponseHeader::from(parts), interim, keep_alive }))
}

/// How the body that follows `parsed` is delimited (RFC 9112 §6.3).
fn framing(parsed: &mut Parsed, head_request: bool) -> Result<BodyDecoder, Error> {
    let resp = &mut parsed.header;
    let status = resp.status;
    if status == http::StatusCode::SWITCHING_PROTOCOLS {
        // An upgrade the router asked for: whatever follows is the
        // tunnel's (see `tunnel`), not HTTP.
        parsed.keep_alive = false;
        return Ok(BodyDecoder::empty());
    }
    if head_request || status == http::StatusCode::NO_CONTENT || status == http::StatusCode::NOT_MODIFIED {
        return Ok(BodyDecoder::empty());
    }
    if resp.headers.contains_key(header::TRANSFER_ENCODING) {
        // Envoy's codec (without `allow_chunked_length`) takes nothing but
        // a lone `chunked`: with a length beside it, or another coding,
        // the response is refused as a protocol error.
        if resp.headers.contains_key(header::CONTENT_LENGTH) {
            return Err(Error::Protocol("both transfer-encoding and content-length"));
        }
        let mut codings = resp.headers.get_all(header::TRANSFER_ENCODING).iter();
        let chunked = codings.next().is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if !chunked || codings.next().is_some() {
            return Err(Error::Protocol("unsupported transfer-encoding"));
        }
        return Ok(BodyDecoder::chunked());
    }
    Ok(match crate::h1::content_length(resp.headers.get_all(header::CONTENT_LENGTH).iter())? {
        Some(n) => BodyDecoder::length(n),
        None => {
            parsed.keep_alive = false;
            BodyDecoder::until_close()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connection whose upstream sends `wire` (in pieces of `step`
    /// bytes, to exercise partial reads) and then closes.
    async fn exchange(wire: &'static [u8], step: usize, head: bool) -> (Result<ResponseHeader, Error>, Connection) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            for piece in wire.chunks(step) {
                if server.write_all(piece).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        let mut conn = Connection::new(Box::new(client), None, None);
        conn.head = head;
        let resp = conn.read_response().await;
        (resp, conn)
    }

    async fn body(conn: &mut Connection) -> Result<Vec<u8>, Error> {
        let mut all = Vec::new();
        while let Some(piece) = conn.read_body().await? {
            all.extend_from_slice(&piece);
        }
        Ok(all)
    }

    #[tokio::test]
    async fn content_length_body_in_pieces() {
        for step in [1, 3, 1000] {
            let (resp, mut conn) = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello", step, false).await;
            let resp = resp.expect("response");
            assert_eq!(resp.status, 200);
            assert_eq!(resp.headers["x-a"], "b");
            assert_eq!(body(&mut conn).await.expect("body"), b"hello");
            assert!(conn.reusable(), "step {step}");
        }
    }

    #[tokio::test]
    async fn chunked_body_with_trailers_ends_when_buffered() {
        let wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n";
        for step in [1, 7, 1000] {
            let (resp, mut conn) = exchange(wire, step, false).await;
            resp.expect("response");
            assert_eq!(body(&mut conn).await.expect("body"), b"hello world");
            assert!(conn.done() && conn.reusable(), "step {step}");
        }
        // All in one read: the end is known with the last data.
        let (_, mut conn) = exchange(wire, 1000, false).await;
        tokio::task::yield_now().await;
        let first = conn.read_body().await.expect("body").expect("a piece");
        assert_eq!(&first[..], b"hello");
        let second = conn.read_body().await.expect("body").expect("a piece");
        assert_eq!(&second[..], b" world");
        assert!(conn.done());
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let (resp, mut conn) = exchange(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n", 1000, false).await;
        assert_eq!(resp.expect("response").status, 201);
        assert!(conn.done());
        assert_eq!(body(&mut conn).await.expect("body"), b"");
    }

    #[tokio::test]
    async fn bodiless_responses() {
        let (resp, conn) = exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", 1000, true).await;
        assert_eq!(resp.expect("response").status, 200);
        assert!(conn.done() && conn.reusable(), "HEAD: the length describes what GET would get");
        let (resp, conn) = exchange(b"HTTP/1.1 304 Not Modified\r\n\r\n", 1000, false).await;
        assert_eq!(resp.expect("response").status, 304);
        assert!(conn.reusable());
    }

    #[tokio::test]
    async fn close_delimited_and_keep_alive_rules() {
        let (resp, mut conn) = exchange(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", 4, false).await;
        resp.expect("response");
        assert_eq!(body(&mut conn).await.expect("body"), b"until the end");
        assert!(!conn.reusable());
        let (_, mut conn) = exchange(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx", 1000, false).await;
        assert_eq!(body(&mut conn).await.expect("body"), b"x");
        assert!(!conn.reusable());
        let (_, mut conn) = exchange(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx", 1000, false).await;
        body(&mut conn).await.expect("body");
        assert!(!conn.reusable(), "HTTP/1.0 closes by default");
        let (_, mut conn) = exchange(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 1\r\n\r\nx", 1000, false).await;
        body(&mut conn).await.expect("body");
        assert!(conn.reusable());
        let (_, mut conn) = exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nxy", 1000, false).await;
        body(&mut conn).await.expect("body");
        assert!(!conn.reusable(), "bytes after the response");
    }

    #[tokio::test]
    async fn many_headers_take_the_larger_array() {
        let mut wire = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n".to_vec();
        for i in 0..(FEW_HEADERS + 8) {
            wire.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        let (resp, _) = exchange(Box::leak(wire.into_boxed_slice()), 1000, false).await;
        let resp = resp.expect("response");
        assert_eq!(resp.headers.len(), FEW_HEADERS + 9);
        assert_eq!(resp.headers["x-h39"], "39");
    }

    #[tokio::test]
    async fn protocol_errors() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\n",
            b"HTTX/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
        ] {
            let (resp, _) = exchange(wire, 1000, false).await;
            assert!(matches!(resp, Err(Error::Protocol(_))), "{:?}", String::from_utf8_lossy(wire));
        }
        let (resp, mut conn) = exchange(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", 1000, false).await;
        resp.expect("response");
        assert!(matches!(body(&mut conn).await, Err(Error::Protocol(_))));
        let (resp, mut conn) = exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", 1000, false).await;
        resp.expect("response");
        assert!(matches!(body(&mut conn).await, Err(Error::Closed)));
        let (resp, _) = exchange(b"HTTP/1.1 200 OK\r\n", 1000, false).await;
        assert!(matches!(resp, Err(Error::Closed)));
    }

    #[test]
    fn request_wire_form() {
        let mut req = RequestHeader::build("POST", b"/a?b=c", None).expect("header");
        req.insert_header("Host", "h").expect("header");
        req.insert_header("X-Mixed-Case", "v").expect("header");
        req.append_header("x-mixed-case", "w").expect("header");
        let mut out = Vec::new();
        serialize(&req, &mut out).expect("header");
        assert_eq!(String::from_utf8_lossy(&out), "POST /a?b=c HTTP/1.1\r\nhost: h\r\nx-mixed-case: v\r\nx-mixed-case: w\r\n\r\n");
    }
}
