//! The HTTP connection manager: what Envoy's `http_connection_manager` and
//! router filter do for each downstream request.
//!
//! ```text
//!  downstream ─► request headers (xff, x-request-id) ─► route ─┬─ direct_response / redirect ─► local reply
//!                                                              └─ forward (retries, timeouts) ─► upstream
//! ```
//! HTTP/1.1 is read and written by our own codec (`downstream::h1`);
//! HTTP/2 (h2c and ALPN) by our server on the `h2` crate, one session per
//! stream (`h2_connection` decides when the connection drains). Both reach
//! the code here as a `downstream::Downstream`.

pub mod downstream;
mod edge;
mod forward;
mod h2_connection;
pub use forward::{call, open_stream, Called, Opened};
mod header_map;
mod clock;
mod local;
mod request_body;
mod xff;
pub mod xfcc;

use std::sync::atomic::{AtomicBool, Ordering};
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use downstream::Downstream;
use pingora_core::server::ShutdownWatch;
use pingora_http::RequestHeader;

use crate::access_log::{AccessLog, Entry};
use crate::filter::{ConnectionState, Context, ResponseEdits, Verdict};
use crate::model::header::HeaderMutations;
use crate::model::listener::HttpManager;
use crate::model::route::Action;
use crate::tls::PeerIdentity;
use crate::wasm::properties::StreamInfo;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::Stream;

use local::Finish;
pub use local::LocalReply;

/// One listener's HTTP application. The manager is swapped atomically on a
/// config change; requests in flight keep the snapshot they started with.
pub struct HttpProxy {
    pub manager: ArcSwap<HttpManager>,
    /// Envoy's codec_type AUTO: HTTP/2 with prior knowledge on cleartext
    /// too. Fixed per listener: a codec change replaces the listener.
    h2c: bool,
    /// Set when the listener was replaced: connections close after their
    /// current request.
    draining: AtomicBool,
    /// Told the same: HTTP/2 connections send GOAWAY, finish their
    /// streams and close, so that clients reconnect to the new listener.
    drained: tokio::sync::watch::Sender<bool>,
}

impl HttpProxy {
    pub fn new(manager: Arc<HttpManager>) -> Self {
        // The idle timeout: HTTP/1.1 connections read it per connection,
        // HTTP/2 ones count their streams (see `serve`).
        HttpProxy {
            h2c: manager.h2c,
            manager: ArcSwap::new(manager),
            draining: AtomicBool::new(false),
            drained: tokio::sync::watch::Sender::new(false),
        }
    }

    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.drained.send_replace(true);
    }

    /// Serves one downstream connection (HTTP/1.1 or HTTP/2) until it closes.
    pub async fn serve(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) {
        use pingora_core::protocols::ALPN;
        let state = ConnectionState::default();
        let http2 = if stream.get_ssl_digest().is_some() {
            matches!(stream.selected_alpn_proto(), Some(ALPN::H2))
        } else if self.h2c {
            // HTTP/2 with prior knowledge starts with its preface.
            let mut preface = [0u8; H2_PREFACE.len()];
            match stream.try_peek(&mut preface).await {
                Ok(peeked) => peeked && preface == *H2_PREFACE,
                Err(_) => return,
            }
        } else {
            false
        };
        if http2 {
            return h2_connection::serve(self.clone(), stream, state, shutdown).await;
        }
        let (idle, drain, max_requests, max_duration, max_header) = {
            let manager = self.manager.load();
            let m = &*manager;
            (m.idle_timeout, m.idle_drain(), m.max_requests_per_connection, m.max_connection_duration, m.max_request_header_bytes)
        };
        let server = downstream::h1::Server::new(stream)
            .with_idle_timeout(idle, drain)
            .with_max_duration(max_duration)
            .with_max_header_bytes(max_header);
        let mut session = Downstream::H1(server);
        let mut requests = 0u32;
        loop {
            requests = requests.saturating_add(1);
            let last = max_requests.is_some_and(|max| requests >= max);
            let served = self.process_request(&mut session, shutdown, &state, last).await;
            let Downstream::H1(h1) = &mut session else { return };
            if !served {
                h1.close().await;
                return;
            }
            if !h1.finish().await {
                return;
            }
        }
    }
}

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl HttpProxy {
    /// Serves one request; `false` when the connection must not be reused
    /// (the client went away, the request was refused or aborted). `last`:
    /// the connection closes after it (max_requests_per_connection).
    async fn process_request(&self, session: &mut Downstream, shutdown: &ShutdownWatch, connection: &ConnectionState, last: bool) -> bool {
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(status) => {
                // Malformed requests: 400 (431 for oversized headers).
                session.respond_error(status).await;
                return false;
            }
        }
        let closing = last || *shutdown.borrow() || self.draining.load(Ordering::Relaxed);
        if closing {
            session.disable_keepalive();
        }
        // HTTP/1.1's codec refuses these while it reads the header (431 past
        // Envoy's header size limit, 400 for both framings at once or
        // conflicting lengths); an HTTP/2 stream's are checked here.
        // Past the header size limit Envoy's HTTP/2 codec resets the
        // stream: so does ours, by leaving it unanswered.
        let manager = self.manager.load_full();
        if session.is_http2() && h2_header_bytes(session.req_header()) > manager.max_request_header_bytes {
            return false;
        }
        if session.is_http2() && has_conflicting_lengths(session.req_header()) {
            session.disable_keepalive();
            session.respond_error(400).await;
            return false;
        }
        manager.stats.rq_total.inc();
        // Clock reads only when an access log wants them.
        let logging = !manager.access_logs.is_empty();
        let started = logging.then(|| (std::time::SystemTime::now(), std::time::Instant::now()));
        let mut log = Entry::default();
        log.logging = logging;
        log.conn = local::conn(session, &manager);
        let status = self.handle(&manager, session, &mut log, connection).await;
        if let Some(status) = status {
            manager.stats.response(status);
        }
        if let Some((wall, monotonic)) = started {
            log.start = Some(wall);
            log.duration_ms = monotonic.elapsed().as_millis();
            // An aborted stream logs the status it had sent, if any (set by the router).
            log.status = status.unwrap_or(log.status);
            log.bytes_received = session.body_bytes_read();
            log.bytes_sent = session.body_bytes_sent();
            let (response, mut default) = (session.response_written(), None);
            for access_log in &manager.access_logs {
                access_log.write(access_log.line(&log, response, &mut default));
            }
        }
        status.is_some()
    }

    /// Serves one request; returns the status sent, or `None` when the
    /// stream was aborted and the connection must not be reused.
    async fn handle(
        &self,
        manager: &HttpManager,
        session: &mut Downstream,
        log: &mut Entry,
        connection: &ConnectionState,
    ) -> Option<u16> {
        if session.req_header().version == http::Version::HTTP_10 {
            // Envoy refuses HTTP/1.0 unless `accept_http_10` (which we do
            // not take), before decoding the request: 426, then close.
            session.disable_keepalive();
            log.flag("DPE");
            log.reply_details = Some("low_version".into());
            let conn = log.conn.clone();
            return LocalReply::new(426, "Upgrade Required").send(manager, session, Finish::new(&[], &ResponseEdits::default(), &conn)).await;
        }
        let mut req = session.take_request();
        let ssl = session.ssl_digest().cloned();
        let client = session.client_addr().map(|a| a.ip());
        prepare_request(manager, &mut req, ssl.as_deref(), client);
        if let Some(reply) = normalize_path(manager, &mut req, log) {
            // Envoy closes the connection after refusing a path.
            if reply.status == 400 {
                session.disable_keepalive();
            }
            return reply.send_before_body(manager, session, Finish::new(&[], &ResponseEdits::for_request(&req), &log.conn.clone())).await;
        }
        if manager.access_logs.iter().any(AccessLog::reads_request_headers) {
            log.keep_request(&req);
        } else if !manager.access_logs.is_empty() {
            log.describe_request(&req);
        }
        let host = authority(&req).unwrap_or_default();
        let path = String::from_utf8_lossy(req.raw_path()).into_owned();
        let table = &manager.routes;
        let vhost = table.virtual_host(&host);
        let route = vhost.and_then(|v| v.route(&path, &req.headers));
        // Filters before the router see the route (for their per-route
        // config) even when there is none; the router answers 404 after.
        let forwards = route.is_some_and(|r| matches!(r.action, Action::Forward(_)));
        let mut edits = ResponseEdits::for_request(&req);
        // A copy: filters get the connection beside the log they write to.
        let conn = log.conn.clone();
        // An HTTP/1.1 upgrade goes through only where `upgrade_configs`
        // allows it; Envoy refuses it before any filter runs, and closes.
        let upgrade_kind = upgrade_type(&req).filter(|_| !session.is_http2());
        let upgrade = upgrade_kind.is_some();
        if let Some(kind) = upgrade_kind {
            let route_upgrades = route.and_then(|r| match &r.action {
                Action::Forward(fwd) => Some(&fwd.upgrades),
                _ => None,
            });
            if !crate::model::upgrade::allowed(kind, route_upgrades, &manager.upgrades) {
                tracing::debug!(upgrade = kind, "upgrade not allowed");
                session.disable_keepalive();
                log.reply_details = Some("upgrade_failed".into());
                edits.request_done(req);
                return LocalReply::new(403, "").send(manager, session, Finish::new(&[], &edits, &conn)).await;
            }
        }
        let body_follows = !session.is_body_empty();
        let info = if manager.filters.iter().any(|(_, f)| f.is_wasm()) {
            Arc::new(StreamInfo {
                source: log.conn.remote,
                destination: log.conn.local,
                tls: ssl.is_some(),
                requested_server_name: log.conn.requested_server_name.clone(),
                protocol: log.conn.protocol,
                ..Default::default()
            })
        } else {
            no_stream_info()
        };
        // The weighted cluster is chosen with the route, as Envoy does: the
        // access log names it even when a filter answers first.
        let picked = match route.map(|r| &r.action) {
            Some(Action::Forward(fwd)) => {
                let target = fwd.pick(rand::random::<u64>());
                log.upstream_cluster = Some(target.cluster.clone());
                Some(target)
            }
            _ => None,
        };
        for (name, filter) in &manager.filters {
            let mut cx = Context {
                conn: &conn,
                forwards,
                per_route: [route.and_then(|r| r.per_filter.get(name)), vhost.and_then(|v| v.per_filter.get(name))],
                connection,
                log: &mut *log,
                response: &mut edits,
                body_follows,
                info: &info,
            };
            match filter.on_request(&mut req, &mut cx).await {
                Verdict::Continue => {}
                Verdict::Respond(mut reply) => {
                    log.reply_details = reply.details.take();
                    edits.request_done(req);
                    // Envoy finalizes a filter's local reply with the route's
                    // response headers when the route forwards.
                    let all;
                    let levels: &[&HeaderMutations] = match (route, vhost) {
                        (Some(r), Some(v)) if forwards => {
                            all = [&r.response_headers, &v.response_headers, &table.response_headers];
                            &all
                        }
                        _ => &[],
                    };
                    return reply.send_before_body(manager, session, Finish::new(levels, &edits, &conn)).await;
                }
                Verdict::Encode(mut reply) => {
                    log.reply_details = reply.details.take();
                    edits.request_done(req);
                    return reply.send_before_body(manager, session, Finish::new(&[], &edits, &conn)).await;
                }
                Verdict::Reset => {
                    edits.request_done(req);
                    return None;
                }
            }
        }
        let (Some(vhost), Some(route)) = (vhost, route) else {
            tracing::debug!(%host, %path, vhost = vhost.map(|v| v.name.as_str()), "no route");
            log.flag("NR");
            edits.request_done(req);
            return LocalReply::new(404, "").send_before_body(manager, session, Finish::new(&[], &edits, &conn)).await;
        };
        tracing::debug!(route_config = %table.name, vhost = %vhost.name, route = %route.name, %path, "routed");
        if log.logging && !route.name.is_empty() {
            log.route_name = Some(route.name.clone());
        }
        // Response mutations, most specific first (Envoy's default order).
        let levels = [
            &route.response_headers,
            &vhost.response_headers,
            &table.response_headers,
        ];
        match &route.action {
            Action::Direct { status, body } => {
                let mut reply = LocalReply::new(*status, "");
                reply.body = body.clone();
                // Envoy points `location` at the request URL for 201 and 3xx.
                if *status == 201 || (300..400).contains(status) {
                    let scheme = req
                        .headers
                        .get("x-forwarded-proto")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("http");
                    if let Ok(v) = HeaderValue::from_str(&format!("{scheme}://{host}{path}")) {
                        reply.extra_headers.push((header::LOCATION, v));
                    }
                }
                edits.request_done(req);
                reply.send_before_body(manager, session, Finish::new(&levels, &edits, &conn)).await
            }
            Action::Redirect(r) => {
                let path = match &r.prefix_rewrite {
                    Some(p) => route.matcher.rewrite_prefix(&path, p),
                    None => path,
                };
                let reply = local::redirect(r, &req, &host, &path);
                edits.request_done(req);
                reply.send_before_body(manager, session, Finish::new(&levels, &edits, &conn)).await
            }
            Action::Forward(fwd) => {
                if let Some(new) = &fwd.prefix_rewrite {
                    let rewritten = route.matcher.rewrite_prefix(&path, new);
                    forward::set_path(&mut req, &path, &rewritten);
                }
                let target = picked.unwrap_or_else(|| fwd.pick(rand::random::<u64>()));
                for m in [
                    &target.request_headers,
                    &route.request_headers,
                    &vhost.request_headers,
                    &table.request_headers,
                ] {
                    m.apply(&mut req, &conn);
                }
                let levels = [
                    &target.response_headers,
                    &route.response_headers,
                    &vhost.response_headers,
                    &table.response_headers,
                ];
                let plan = forward::Plan { fwd, target, levels, edits: &edits, conn: &conn, upgrade };
                // Boxed: the router's state is most of a request's future,
                // and a future is copied whole each time it is moved into
                // its caller's (up to the connection task); in a box it is
                // placed once and the callers above stay small.
                Box::pin(forward::forward(manager, session, req, plan, log)).await
            }
        }
    }
}

/// The protocol an HTTP/1.1 request asks to switch to: its `upgrade`
/// header, when `connection` carries the `upgrade` token (Envoy's test).
fn upgrade_type(req: &RequestHeader) -> Option<&str> {
    let asked = req.headers.get_all(header::CONNECTION).iter().any(|v| crate::h1::has_token(v, "upgrade"));
    asked.then(|| req.headers.get(header::UPGRADE)?.to_str().ok().filter(|v| !v.is_empty())).flatten()
}

/// The stream info of requests no plugin looks at: shared, not built.
fn no_stream_info() -> Arc<StreamInfo> {
    static NONE: std::sync::OnceLock<Arc<StreamInfo>> = std::sync::OnceLock::new();
    NONE.get_or_init(Default::default).clone()
}

/// What the connection manager does to every request before routing:
/// `x-forwarded-proto`, `x-forwarded-client-cert` and `x-request-id`, and
/// on an edge proxy (`use_remote_address`) x-forwarded-for and the
/// untrusted x-envoy-* headers. `ssl` is the downstream TLS connection, if
/// any; `client` the downstream peer's address.
fn prepare_request(manager: &HttpManager, req: &mut RequestHeader, ssl: Option<&SslDigest>, client: Option<IpAddr>) {
    absolute_to_origin_form(req);
    let scheme = if ssl.is_some() { "https" } else { "http" };
    if manager.use_remote_address {
        edge::prepare(req, scheme, client, manager.generate_request_id);
    } else if !req.headers.contains_key(&X_FORWARDED_PROTO) {
        header_map::insert(req, X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
    manager.client_cert.apply(ssl.and_then(|d| d.extension.get::<PeerIdentity>()), req);
    if manager.generate_request_id && !req.headers.contains_key(&X_REQUEST_ID) {
        // Formatted on the stack: the header value is the only copy.
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);
        if let Ok(v) = HeaderValue::from_str(id) {
            header_map::insert(req, X_REQUEST_ID, v);
        }
    }
}

/// Applies the connection manager's path normalization; the reply when
/// the request ends there (400, or Envoy's 307 to the unescaped path).
fn normalize_path(manager: &HttpManager, req: &mut RequestHeader, log: &mut Entry) -> Option<LocalReply> {
    use crate::model::path_normalization::Outcome;
    // A fragment is refused whatever the policy, as by Envoy: it means
    // nothing to a server, and `/a#/../b` must not mean two things.
    let outcome = match req.extensions.get::<downstream::Fragment>() {
        Some(_) => Outcome::Reject,
        None => manager.path_normalization.apply(req.raw_path()),
    };
    let path = match outcome {
        Outcome::Continue(None) => return None,
        Outcome::Continue(Some(path)) => {
            let _ = req.set_raw_path(&path);
            return None;
        }
        Outcome::Redirect(path) if !is_grpc(req) => path,
        Outcome::Redirect(_) | Outcome::Reject => {
            manager.stats.failed_path_normalization.inc();
            log.reply_details = Some("path_normalization_failed".into());
            return Some(LocalReply::new(400, ""));
        }
    };
    manager.stats.redirected_with_normalized_path.inc();
    log.reply_details = Some("path_normalization_failed".into());
    let mut reply = LocalReply::new(307, "");
    if let Ok(location) = HeaderValue::from_bytes(&path) {
        reply.extra_headers.push((header::LOCATION, location));
    }
    Some(reply)
}

/// The downstream request as the router edits it: a copy without Pingora's
/// header-case map. Envoy's HTTP/1 codec sends header names lowercased
/// anyway (its default `header_key_format`), and without the second map
/// every header edit, and every copy for an upstream attempt, costs about
/// half. A target the URI does not reproduce byte for byte (absolute form,
/// bytes that are not UTF-8) keeps the full copy, raw target included.
fn routable_copy(req: &RequestHeader) -> RequestHeader {
    if !header_map::target_from_uri(req) {
        return req.clone();
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = req.method.clone();
    parts.uri = req.uri.clone();
    parts.version = req.version;
    // Room for what the connection manager and the router add (forwarded
    // proto, request id, timeouts, ...) without growing the map.
    parts.headers = http::HeaderMap::with_capacity(req.headers.len() + 8);
    for (name, value) in &req.headers {
        parts.headers.append(name.clone(), value.clone());
    }
    RequestHeader::from(parts)
}

const X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// An HTTP/1.1 request in absolute form (`GET http://host/path`, as sent
/// through `HTTP_PROXY`) is routed like Envoy routes it: the URL's host is
/// the authority, overriding `Host`, and the path is the origin form.
fn absolute_to_origin_form(req: &mut RequestHeader) {
    let raw = req.raw_path();
    let absolute = raw.len() > 7 && (raw[..7].eq_ignore_ascii_case(b"http://") || raw[..8.min(raw.len())].eq_ignore_ascii_case(b"https://"));
    if !absolute {
        return;
    }
    // Pingora keeps the raw target; parse it for its parts.
    let Ok(uri) = http::Uri::try_from(raw) else { return };
    let Some(authority) = uri.authority().map(|a| a.as_str().to_string()) else { return };
    let origin = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    if let Ok(host) = HeaderValue::from_str(&authority) {
        let _ = req.insert_header(header::HOST, host);
    }
    let _ = req.set_raw_path(origin.as_bytes());
}

/// The size of an HTTP/2 request's headers, as Envoy counts it against
/// its limit.
fn h2_header_bytes(req: &RequestHeader) -> usize {
    req.headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum::<usize>() + req.raw_path().len()
}

/// More than one `content-length`, not all the same.
fn has_conflicting_lengths(req: &RequestHeader) -> bool {
    let mut lengths = req.headers.get_all(header::CONTENT_LENGTH).iter();
    let first = lengths.next();
    lengths.any(|l| Some(l) != first)
}

/// A gRPC request: `content-type` is `application/grpc`, alone or followed
/// by `+` (Envoy's test: `application/grpc-web` and even
/// `application/grpc;charset=...` are not).
pub fn is_grpc(req: &RequestHeader) -> bool {
    let Some(ct) = req.headers.get(header::CONTENT_TYPE) else { return false };
    ct.as_bytes()
        .strip_prefix(b"application/grpc")
        .is_some_and(|rest| matches!(rest.first(), None | Some(b'+')))
}

/// The request's authority: `:authority` (HTTP/2) or `Host` (HTTP/1.1).
fn authority(req: &RequestHeader) -> Option<String> {
    req.uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

/// Header mutations on Pingora's request/response headers.
macro_rules! pingora_headers {
    ($t:ty) => {
        impl crate::model::header::Headers for $t {
            fn contains(&self, name: &http::HeaderName) -> bool {
                self.headers.contains_key(name)
            }
            fn insert(&mut self, name: &http::HeaderName, value: &HeaderValue) {
                header_map::insert(self, name.clone(), value.clone());
            }
            fn append(&mut self, name: &http::HeaderName, value: &HeaderValue) {
                header_map::append(self, name.clone(), value.clone());
            }
            fn remove(&mut self, name: &http::HeaderName) {
                self.remove_header(name);
            }
            fn names(&self) -> impl Iterator<Item = &http::HeaderName> {
                self.headers.keys()
            }
        }
    };
}
pingora_headers!(RequestHeader);
pingora_headers!(pingora_http::ResponseHeader);
