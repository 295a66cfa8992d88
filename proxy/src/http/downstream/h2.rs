//! The downstream HTTP/2 server: one client connection's streams, on the
//! `h2` crate's codec (the one Pingora's server uses).
//!
//! ```text
//!  connection ─► handshake (limits) ─► accept ─┬─ refused (RST_STREAM or 400; too many: the connection closes)
//!                                              └─ Server ─► connection manager (one task per stream)
//! ```
//!
//! We keep our own session, not Pingora's, for what the connection
//! manager needs and Pingora's does not hand out: the request's trailers
//! (gRPC clients and plugins read them), the response's body paced by the
//! client's window.
//!
//! A malformed request (the codec's checks, and ours: control bytes or a
//! space in `:path`, an absolute-form `:path`, no authority or two, user
//! info) resets its stream with PROTOCOL_ERROR, as Envoy's codec does with
//! `override_stream_error_on_invalid_http_message`; Envoy's default closes
//! the whole connection instead. A connection that keeps sending them is
//! closed.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::{self, HeaderMap};
use pingora_core::protocols::Stream;
use pingora_http::{RequestHeader, ResponseHeader};

use super::Peer;
use crate::model::http2::Http2Options;

/// Streams open at once on one connection, unless configured: what Envoy
/// 1.40 announces (Pingora's server allowed 100).
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// The codec's bound on a request's header list (Pingora's): the
/// connection manager resets a stream past its own, usually smaller,
/// `max_request_headers_kb` as Envoy's codec does; this one only bounds
/// what the codec decodes before that.
const MIN_HEADER_LIST_BYTES: usize = 64 * 1024;

/// Requests refused on one connection before it is closed: a client that
/// keeps sending malformed requests costs at most this much work.
const MAX_REFUSED_STREAMS: usize = 32;

/// What the connection manager configures of its HTTP/2 connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The connection manager's header limit (the codec decodes at least
    /// that much).
    pub max_header_bytes: usize,
    /// `http2_protocol_options`: streams at once, windows (unset: the
    /// `h2` crate's 65 535 bytes, HTTP/2's initial windows; Envoy's are
    /// 16 and 24 MiB, buffered behind its watermarks, which we do not
    /// have).
    pub options: Http2Options,
}

/// Takes a connection's streams, each to `serve`, until the client closes
/// it, it fails, or `closing` turns true: then GOAWAY, the open streams
/// finish, and it closes.
pub async fn accept<F>(stream: Stream, limits: Limits, mut closing: tokio::sync::watch::Receiver<bool>, mut serve: F)
where
    F: FnMut(Server),
{
    let peer = Arc::new(Peer::of(&stream));
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(limits.options.max_concurrent_streams.unwrap_or(MAX_CONCURRENT_STREAMS))
        .max_header_list_size(u32::try_from(limits.max_header_bytes.max(MIN_HEADER_LIST_BYTES)).unwrap_or(u32::MAX));
    if let Some(window) = limits.options.initial_stream_window_size {
        builder.initial_window_size(window);
    }
    if let Some(window) = limits.options.initial_connection_window_size {
        builder.initial_connection_window_size(window);
    }
    let handshake = builder.handshake::<_, Bytes>(stream);
    let mut conn = match handshake.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/2 handshake failed");
            return;
        }
    };
    let mut refused = 0;
    let mut draining = false;
    loop {
        // Accepting also drives the connection: the open streams' frames
        // move only while this is polled.
        let next = tokio::select! {
            biased;
            Ok(_) = closing.wait_for(|c| *c), if !draining => {
                conn.graceful_shutdown();
                draining = true;
                continue;
            }
            next = conn.accept() => next,
        };
        match next {
            None => return,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "HTTP/2 connection ended");
                return;
            }
            Some(Ok((req, respond))) => match Server::new(req, respond, peer.clone()) {
                Some(server) => serve(server),
                None => {
                    refused += 1;
                    if refused >= MAX_REFUSED_STREAMS {
                        tracing::debug!("HTTP/2 connection closed after {refused} malformed requests");
                        return;
                    }
                }
            },
        }
    }
}

/// One HTTP/2 stream: the request as it arrives, the response as it goes.
pub struct Server {
    req: RequestHeader,
    body: RecvStream,
    /// The request's DATA has ended (its trailers, if any, may follow).
    body_done: bool,
    /// The request has ended: its trailers, if it had any, are here.
    trailers_done: bool,
    trailers: Option<HeaderMap>,
    respond: SendResponse<Bytes>,
    /// The response's body, once its header has gone.
    writer: Option<SendStream<Bytes>>,
    response: Option<Box<ResponseHeader>>,
    ended: bool,
    body_read: usize,
    body_sent: usize,
    peer: Arc<Peer>,
}

impl Server {
    /// A stream's request, or `None` when it is malformed (RFC 9113
    /// §8.1.1) and has been reset.
    fn new(req: http::Request<RecvStream>, mut respond: SendResponse<Bytes>, peer: Arc<Peer>) -> Option<Server> {
        let (parts, body) = req.into_parts();
        let mut req = RequestHeader::from(parts);
        if let Err(why) = check_target(&req).and_then(|()| check_authority(&req)) {
            tracing::debug!(why, "refused an HTTP/2 request");
            respond.send_reset(h2::Reason::PROTOCOL_ERROR);
            return None;
        }
        // `:authority` is the request's host: a `host` beside it goes, as
        // Envoy's codec drops it.
        if req.uri.authority().is_some() {
            req.remove_header(&header::HOST);
        }
        let done = body.is_end_stream();
        Some(Server {
            req,
            body,
            body_done: done,
            trailers_done: done,
            trailers: None,
            respond,
            writer: None,
            response: None,
            ended: false,
            body_read: 0,
            body_sent: 0,
            peer,
        })
    }

    pub fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The request has no body (its header ended the stream).
    pub fn is_body_empty(&self) -> bool {
        self.body_read == 0 && self.body.is_end_stream()
    }

    /// The next piece of the request body; `None` at its end, when its
    /// trailers (if any) are in [`take_trailers`](Self::take_trailers).
    /// Cancel-safe.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>, h2::Error> {
        poll_fn(|cx| self.poll_body(cx)).await
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, h2::Error>> {
        if !self.body_done {
            match ready!(self.body.poll_data(cx)) {
                Some(Ok(data)) => {
                    self.body_read += data.len();
                    // The client may send as much again.
                    let _ = self.body.flow_control().release_capacity(data.len());
                    return Poll::Ready(Ok(Some(data)));
                }
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => self.body_done = true,
            }
        }
        if !self.trailers_done {
            self.trailers = ready!(self.body.poll_trailers(cx))?;
            self.trailers_done = true;
        }
        Poll::Ready(Ok(None))
    }

    /// The request's trailers, once its body has been read to the end.
    pub fn take_trailers(&mut self) -> Option<HeaderMap> {
        self.trailers.take()
    }

    /// Sends what the response has ready: the header (the first time), a
    /// piece of body as the client's window takes it, and the end of the
    /// stream (with `end`), or the trailers (which end it).
    pub async fn respond(&mut self, header: Option<Box<ResponseHeader>>, body: Option<Bytes>, end: bool, trailers: Option<HeaderMap>) -> Result<(), super::Error> {
        if self.ended {
            return Ok(());
        }
        let trailers = trailers.filter(|_| end);
        let body = body.filter(|b| !b.is_empty());
        if let Some(header) = header {
            // HTTP/2 has no interim responses here, as Pingora's had not.
            if header.status.is_informational() {
                return Ok(());
            }
            let last = end && body.is_none() && trailers.is_none();
            self.send_header(header, last)?;
            if last {
                return Ok(());
            }
        }
        let Some(writer) = self.writer.as_mut() else { return Ok(()) };
        let body_ends = end && trailers.is_none();
        if let Some(data) = body {
            self.body_sent += data.len();
            // Pingora's writer sends it as the client's window opens.
            pingora_core::protocols::http::v2::write_body(writer, data, body_ends, None).await?;
        } else if body_ends {
            writer.send_data(Bytes::new(), true)?;
        }
        if let Some(trailers) = trailers {
            writer.send_trailers(trailers)?;
        }
        self.ended = end;
        Ok(())
    }

    fn send_header(&mut self, mut header: Box<ResponseHeader>, end: bool) -> Result<(), h2::Error> {
        // Connection-specific fields have no meaning in HTTP/2 (RFC 9113
        // §8.2.2); the codec refuses a response that has them.
        for name in [header::CONNECTION, header::TRANSFER_ENCODING, header::UPGRADE] {
            header.remove_header(&name);
        }
        for name in ["keep-alive", "proxy-connection"] {
            header.remove_header(name);
        }
        let resp = http::Response::from_parts(header.as_owned_parts(), ());
        let writer = self.respond.send_response(resp, end)?;
        self.response = Some(header);
        self.writer = Some(writer);
        self.ended = end;
        Ok(())
    }

    /// After the connection manager: a response it did not end is ended
    /// here; one it never started resets the stream (when the session is
    /// dropped).
    pub fn finish(&mut self) {
        if let (false, Some(writer)) = (self.ended, self.writer.as_mut()) {
            let _ = writer.send_data(Bytes::new(), true);
            self.ended = true;
        }
    }

    pub fn response_written(&self) -> Option<&ResponseHeader> {
        self.response.as_deref()
    }

    pub fn body_bytes_read(&self) -> usize {
        self.body_read
    }

    pub fn body_bytes_sent(&self) -> usize {
        self.body_sent
    }
}

/// `:path` bytes that make a stream malformed: NUL, CR, LF, and space
/// (they would split a request line on an HTTP/1.1 upstream).
fn check_target(req: &RequestHeader) -> Result<(), &'static str> {
    if req.raw_path().iter().any(|&b| matches!(b, 0x00 | b'\n' | b'\r' | b' ')) {
        return Err("control byte or space in :path");
    }
    Ok(())
}

/// The request's authority must be there, once, without user info; its
/// `:path` must not be absolute-form (RFC 9113 §8.3.1). CONNECT has no
/// path. A `host` beside `:authority` may differ (Envoy takes the
/// request).
fn check_authority(req: &RequestHeader) -> Result<(), &'static str> {
    let mut hosts = req.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("two host headers");
    }
    let authority = req.uri.authority().map(|a| a.as_str());
    if authority.is_none() && host.is_none() {
        return Err("no authority");
    }
    if authority.is_some_and(|a| a.contains('@')) || host.is_some_and(|h| h.as_bytes().contains(&b'@')) {
        return Err("user info in the authority");
    }
    let path = req.raw_path();
    let connect = req.method == http::Method::CONNECT && req.extensions.get::<h2::ext::Protocol>().is_none();
    let asterisk = path == b"*" && req.method == http::Method::OPTIONS;
    if !(connect || asterisk || path.starts_with(b"/")) {
        return Err("absolute-form or empty :path");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        RequestHeader::from(b.body(()).expect("a valid request").into_parts().0)
    }

    #[test]
    fn authorities() {
        let ok = |m, u, h: &[(&str, &str)]| check_authority(&request(m, u, h)).is_ok();
        assert!(ok("GET", "http://a/x", &[]));
        assert!(ok("GET", "/x", &[("host", "a")]));
        assert!(ok("GET", "http://a/x", &[("host", "A")]));
        assert!(ok("OPTIONS", "*", &[("host", "a")]));
        assert!(ok("CONNECT", "a:443", &[]));
        assert!(!ok("GET", "/x", &[]), "none");
        assert!(!ok("GET", "/x", &[("host", "a"), ("host", "b")]), "two hosts");
        assert!(ok("GET", "http://a/x", &[("host", "b")]), "differ");
        assert!(!ok("GET", "http://u@a/x", &[]), "user info");
        assert!(!ok("GET", "*", &[("host", "a")]), "* is for OPTIONS");
    }
}

#[cfg(test)]
mod serve_tests {
    use super::*;
    use http::HeaderValue;

    /// A client's request with a body and trailers, over an in-memory
    /// connection: the server reads both, and its response's body and
    /// trailers reach the client.
    #[tokio::test]
    async fn trailers_both_ways() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (_closing, watch) = tokio::sync::watch::channel(false);
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let limits = Limits { max_header_bytes: 60 * 1024, options: Http2Options::default() };
        let server = tokio::spawn(accept(Box::new(ours), limits, watch, move |mut server| {
            let seen = seen_tx.clone();
            tokio::spawn(async move {
                let mut body = Vec::new();
                while let Ok(Some(piece)) = server.read_body().await {
                    body.extend_from_slice(&piece);
                }
                let _ = seen.send((server.req_header().uri.to_string(), body, server.take_trailers()));
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                let resp = ResponseHeader::build_no_case(200, None).expect("a response");
                let _ = server.respond(Some(Box::new(resp)), Some(Bytes::from_static(b"answer")), true, Some(trailers)).await;
            });
        }));
        let (mut client, conn) = h2::client::handshake(theirs).await.expect("handshake");
        tokio::spawn(conn);
        let req = http::Request::post("http://svc/call").header("host", "other").body(()).expect("a request");
        let (response, mut send) = client.send_request(req, false).expect("sent");
        send.send_data(Bytes::from_static(b"question"), false).expect("data");
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", HeaderValue::from_static("1"));
        send.send_trailers(trailers).expect("trailers");

        let (uri, body, trailers) = seen_rx.recv().await.expect("served");
        assert_eq!((uri.as_str(), body.as_slice()), ("http://svc/call", &b"question"[..]));
        assert_eq!(trailers.and_then(|t| t.get("x-t").cloned()), Some(HeaderValue::from_static("1")));
        let mut response = response.await.expect("response");
        assert_eq!(response.status(), 200);
        let body = response.body_mut().data().await.expect("a body").expect("data");
        assert_eq!(&body[..], b"answer");
        let trailers = response.body_mut().trailers().await.expect("trailers").expect("some");
        assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
        drop(client);
        server.abort();
    }
}
