//! Replies the proxy makes itself: direct responses, redirects, and errors
//! (no route, upstream failure), in Envoy's local-reply format.

use crate::access_log::format::Conn;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use super::downstream::Downstream;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::filter::ResponseEdits;
use crate::model::header::HeaderMutations;
use crate::model::listener::HttpManager;
use crate::model::route::Redirect;

/// A local reply being written; resolves to the status sent.
pub type Sending<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Option<u16>> + Send + 'a>>;

pub struct LocalReply {
    pub status: u16,
    pub body: Bytes,
    /// Headers of the reply itself (`location`, `x-envoy-overloaded`).
    pub extra_headers: Vec<(http::HeaderName, HeaderValue)>,
    /// Header mutations of the filter that replies, applied after the
    /// route's (a local rate limit's `response_headers_to_add`).
    pub mutations: Option<Arc<HeaderMutations>>,
    /// The response code details of a filter's reply, as Envoy records
    /// them (`%RESPONSE_CODE_DETAILS%`): a plugin's own words, CORS's
    /// `cors_response`; `None` where the log's flags say it.
    pub details: Option<Box<str>>,
    /// The status a gRPC client gets (a plugin's choice); `None`: the
    /// HTTP status's, as Envoy maps it.
    pub grpc_status: Option<u32>,
}

impl LocalReply {
    pub fn new(status: u16, body: &'static str) -> Self {
        LocalReply {
            status,
            body: Bytes::from_static(body.as_bytes()),
            extra_headers: Vec::new(),
            mutations: None,
            details: None,
            grpc_status: None,
        }
    }

    /// Writes the reply with the request's outgoing header changes.
    /// Returns the status sent.
    ///
    /// Boxed: the request path names a reply at a dozen exits, and each
    /// unboxed one would reserve its 1.3 KB of state inside the request's
    /// future, which is copied whole whenever it is moved; a reply is the
    /// exception, worth the allocation when it happens.
    pub fn send<'a>(self, manager: &'a HttpManager, session: &'a mut Downstream, finish: Finish<'a>) -> Sending<'a> {
        Box::pin(self.write(manager, session, finish))
    }

    /// [`send`](Self::send) for a reply made while the request's headers
    /// are handled, before any of its body is read (Envoy's decoder filters
    /// and router reply there). Envoy's HTTP/1.1 codec has not decoded the
    /// body by then, so the request is incomplete and the connection closes
    /// after the reply, even when the body was already on its way.
    pub fn send_before_body<'a>(self, manager: &'a HttpManager, session: &'a mut Downstream, finish: Finish<'a>) -> Sending<'a> {
        if session.body_unread() {
            session.disable_keepalive();
        }
        self.send(manager, session, finish)
    }

    async fn write(self, manager: &HttpManager, session: &mut Downstream, finish: Finish<'_>) -> Option<u16> {
        let mut resp = ResponseHeader::build_no_case(self.status, Some(4)).ok()?;
        // A gRPC client gets the body as `grpc-message` (not for HEAD), and
        // no body.
        let (mut body, grpc_message) = match (finish.edits.grpc, finish.edits.head) {
            (true, false) => (Bytes::new(), Some(self.body)),
            (true, true) => (Bytes::new(), Some(Bytes::new())),
            (false, _) => (self.body, None),
        };
        // Envoy ends an empty HTTP/2 reply on its headers, with no length;
        // an empty reply to HEAD has none either (the codec frames it).
        if !(body.is_empty() && (session.is_http2() || finish.edits.head)) {
            resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())
                .ok()?;
        }
        if !body.is_empty() && !self.extra_headers.iter().any(|(k, _)| k == header::CONTENT_TYPE) {
            resp.insert_header(header::CONTENT_TYPE, "text/plain")
                .ok()?;
        }
        for (name, value) in self.extra_headers {
            resp.insert_header(name, value).ok()?;
        }
        for m in finish.levels.iter().copied().chain(self.mutations.as_deref()) {
            m.apply(&mut resp, finish.conn);
        }
        if let Some(message) = grpc_message {
            grpc_trailers_only(&mut resp, &message, self.grpc_status);
        }
        edit_response_headers(&mut resp, Finish { levels: &[], ..finish });
        let mut plugins = crate::wasm::Encoder::new(&finish.edits.wasm);
        if !plugins.is_empty() {
            // A reply has nothing to replace it with: a failed plugin
            // leaves it as it is.
            let _ = plugins.headers(&mut resp, body.is_empty()).await;
            if !body.is_empty() {
                let before = body.len();
                if let Ok(Some(b)) = plugins.body(Some(&mut resp), Some(body.clone()), true).await {
                    body = b;
                }
                if body.len() != before && resp.headers.contains_key(header::CONTENT_LENGTH) {
                    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string()).ok()?;
                }
            }
            frame_body(&mut resp, session, !body.is_empty());
        }
        stamp_response_headers(manager, &mut resp);
        plugins.response_sent(&resp);
        let status = resp.status.as_u16();
        session.respond(Some(Box::new(resp)), Some(body), true, None).await.ok()?;
        Some(status)
    }
}

/// Turns a local reply to a gRPC request into what a gRPC client reads, as
/// Envoy does: 200, `application/grpc`, the status in `grpc-status` (unless
/// a header mutation put one there), the body as `grpc-message`, and
/// nothing after the headers (the caller sends no body).
fn grpc_trailers_only(resp: &mut ResponseHeader, body: &[u8], status: Option<u32>) {
    let http = resp.status.as_u16();
    let _ = resp.set_status(200);
    let _ = resp.insert_header(header::CONTENT_TYPE, "application/grpc");
    if !resp.headers.contains_key(GRPC_STATUS) {
        let code = status.unwrap_or_else(|| grpc_status_of(http));
        let _ = resp.insert_header(GRPC_STATUS, code.to_string());
    }
    if !body.is_empty() {
        if let Ok(v) = HeaderValue::from_bytes(&grpc_percent_encode(body)) {
            let _ = resp.insert_header(GRPC_MESSAGE, v);
        }
    }
}

const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");

/// The gRPC status for an HTTP status (the gRPC spec's mapping, as Envoy's).
fn grpc_status_of(http: u16) -> u32 {
    match http {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// `grpc-message` escaping: controls, `~` and above, and `%` as `%XX`.
fn grpc_percent_encode(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    for &b in message {
        if !(b' '..b'~').contains(&b) || b == b'%' {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// The header changes a request's response gets on its way out, whoever
/// produces it.
#[derive(Clone, Copy)]
pub struct Finish<'a> {
    /// Response header mutations, most specific first (weighted cluster,
    /// route, virtual host, route config); none for responses Envoy does
    /// not finalize with the route.
    pub levels: &'a [&'a HeaderMutations],
    /// The edits of the filters the request went through.
    pub edits: &'a ResponseEdits,
    /// The downstream connection, for header value formatters (made once
    /// per request, see [`conn`]).
    pub conn: &'a Conn,
}

impl<'a> Finish<'a> {
    pub fn new(levels: &'a [&'a HeaderMutations], edits: &'a ResponseEdits, conn: &'a Conn) -> Self {
        Finish { levels, edits, conn }
    }
}

/// What every response gets on its way out: the route's header mutations,
/// then the filters' edits (Envoy's encoder filters run after the router
/// finalized the headers). Plugins see the result; `stamp_response_headers`
/// comes after them.
pub fn edit_response_headers(resp: &mut ResponseHeader, finish: Finish<'_>) {
    for m in finish.levels {
        m.apply(resp, finish.conn);
    }
    finish.edits.apply(resp);
}

/// The downstream connection, as header value formatters, access logs and
/// plugins see it. Without `use_remote_address` Envoy takes the client's
/// address from the rightmost `x-forwarded-for` entry (port 0), keeping
/// the socket's peer when there is none or it is not an IP address.
pub fn conn(session: &Downstream, manager: &HttpManager) -> Conn {
    let peer = session.client_addr();
    let forwarded = if manager.use_remote_address { None } else { super::xff::last(session.req_header()) };
    Conn {
        remote: forwarded.map(|ip| std::net::SocketAddr::new(ip, 0)).or(peer),
        requested_server_name: session
            .ssl_digest()
            .and_then(|s| s.extension.get::<crate::tls::PeerIdentity>())
            .and_then(|p| p.server_name.clone()),
        local: session.server_addr(),
        protocol: if session.is_http2() { "HTTP/2" } else { "HTTP/1.1" },
    }
}

/// A plugin that dropped `content-length` from a response with a body
/// (to change its length): HTTP/1.1 then needs chunked framing, as Envoy
/// sends it.
pub fn frame_body(resp: &mut ResponseHeader, session: &Downstream, body: bool) {
    let framed = resp.headers.contains_key(header::CONTENT_LENGTH) || resp.headers.contains_key(header::TRANSFER_ENCODING);
    if body && !framed && !session.is_http2() {
        let _ = resp.insert_header(header::TRANSFER_ENCODING, "chunked");
    }
}

/// What the codec adds last, after every filter: `date` when missing and
/// `server` overwritten, as Envoy's defaults do.
pub fn stamp_response_headers(manager: &HttpManager, resp: &mut ResponseHeader) {
    if !resp.headers.contains_key(header::DATE) {
        let now = httpdate();
        let _ = resp.insert_header(header::DATE, now);
    }
    let _ = resp.insert_header(header::SERVER, manager.server_name.clone());
}

fn httpdate() -> HeaderValue {
    pingora_core::protocols::http::date::get_cached_date()
}

/// Builds the redirect for a request (`location` from the original URL
/// with the configured parts replaced).
pub fn redirect(r: &Redirect, req: &RequestHeader, host: &str, path: &str) -> LocalReply {
    let scheme = r.scheme.clone().unwrap_or_else(|| {
        req.headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("http")
            .to_string()
    });
    let (orig_host, orig_port) = split_host_port(host);
    let host_part = r.host.clone().unwrap_or_else(|| orig_host.to_string());
    let port = match r.port {
        Some(p) => Some(p.to_string()),
        // A scheme change drops the old scheme's port, as Envoy does.
        None if r.scheme.is_some() => None,
        None => orig_port.map(str::to_string),
    };
    let (orig_path, orig_query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut new_path = r.path.clone().unwrap_or_else(|| orig_path.to_string());
    if !new_path.contains('?') && !r.strip_query {
        if let Some(q) = orig_query {
            new_path = format!("{new_path}?{q}");
        }
    }
    let authority = match port {
        Some(p) if !((scheme == "http" && p == "80") || (scheme == "https" && p == "443")) => {
            format!("{host_part}:{p}")
        }
        _ => host_part,
    };
    let location = format!("{scheme}://{authority}{new_path}");
    let mut reply = LocalReply::new(r.status, "");
    if let Ok(v) = HeaderValue::from_str(&location) {
        reply.extra_headers.push((header::LOCATION, v));
    }
    reply
}

fn split_host_port(host: &str) -> (&str, Option<&str>) {
    match host.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (host, None), // bare IPv6
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (host, None),
    }
}
