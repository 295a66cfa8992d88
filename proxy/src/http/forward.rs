//! The router: sends a request to a cluster with Envoy's timeouts and
//! retries, and streams the response back.
//!
//! ```text
//!  attempt ─► connect ─► write request ─► read response headers
//!     ▲   retriable failure or status, budget left: back off, next attempt
//!     └──────────────────────────────────────────────┘
//! ```
//! The request body streams to the upstream as the client sends it, a copy
//! kept for retries while it is small (`request_body`); an HTTP/2
//! upstream's goes on while the response comes back. A mirror gets the
//! same body as it streams (`shadow`).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use super::downstream::Downstream;
use pingora_http::{RequestHeader, ResponseHeader};

use super::local::{edit_response_headers, frame_body, stamp_response_headers, Finish, LocalReply};
use super::clock::{Progress, Timeouts};
use super::request_body::{self, Broken, H2Pump, RequestBody, Source};
use crate::wasm::stream::Stop;
use super::{header_map, xff};
use crate::model::header::Headers;
use crate::model::header::HeaderMutations;
use crate::model::listener::HttpManager;
use crate::access_log::Entry;
use crate::filter::ResponseEdits;
use crate::model::cluster::{Breakers, ConnectionBudget, InFlight, Slot};
use crate::model::route::{Forward, Mirror, RetryPolicy, Target};
use crate::model::Cluster;
use crate::upstream::{self, ConnectError, PoolKey};

/// Headers that describe one hop and are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
];

/// The hop-by-hop headers an upgrade keeps: they ask the upstream for it.
fn is_upgrade_header(name: &str) -> bool {
    name == "connection" || name == "upgrade"
}

/// Request headers that steer the router; consumed, never forwarded.
const ROUTER_CONTROL: &[&str] = &[
    "x-envoy-retry-on",
    "x-envoy-max-retries",
    "x-envoy-retriable-status-codes",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
];

const EXPECTED_TIMEOUT: http::HeaderName = http::HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
const UPSTREAM_SERVICE_TIME: http::HeaderName = http::HeaderName::from_static("x-envoy-upstream-service-time");

/// How one attempt ended, when it did not produce a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The cluster has no hosts (Envoy: "no healthy upstream").
    NoHost,
    Connect,
    Reset,
    PerTryTimeout,
    /// max_connections reached and too many requests waiting for one.
    Overflow,
    /// The upstream's response was not valid HTTP (Envoy: 502, `UPE`).
    Protocol,
    /// The client's body broke off (it went away, or framed it wrongly).
    Client,
    /// A plugin ended the request from a body callback.
    Plugin,
}

// One value per attempt, moved once: boxing the session would cost an
// allocation per attempt for nothing.
#[allow(clippy::large_enum_variant)]
enum Outcome<'c> {
    Response(Exchange<'c>),
    Failed(Failure),
}

/// An attempt that got response headers: the upstream session, the host it
/// holds a request slot on, and the pool (and cluster connection budget)
/// the connection goes back to.
struct Exchange<'c> {
    upstream: upstream::Session,
    resp: Box<ResponseHeader>,
    /// The request body still on its way (HTTP/2 upstreams).
    pump: Option<H2Pump>,
    host: InFlight,
    pool: PoolKey,
    budget: &'c ConnectionBudget,
}

/// Where a routed request goes: the route action, the weighted target it
/// picked, the response header mutations of every level and the filters'
/// response edits.
pub struct Plan<'a> {
    pub fwd: &'a Forward,
    pub target: &'a Target,
    pub levels: [&'a HeaderMutations; 4],
    pub edits: &'a ResponseEdits,
    pub conn: &'a crate::access_log::format::Conn,
    /// An HTTP/1.1 upgrade the connection manager let through: its
    /// `connection` and `upgrade` headers go upstream, and a 101 turns the
    /// connection into a tunnel.
    pub upgrade: bool,
}

/// Forwards a routed request and streams the response back; returns the
/// status sent, or `None` if the downstream stream had to be reset.
pub async fn forward(
    manager: &HttpManager,
    session: &mut Downstream,
    mut req: RequestHeader,
    plan: Plan<'_>,
    log: &mut Entry,
) -> Option<u16> {
    let Plan { fwd, target, levels, edits, conn, upgrade } = plan;
    let finish = Finish::new(&levels[..], edits, conn);
    if target.cluster.not_found {
        // Envoy's cluster_not_found_response_code: 503, no body, flag NC.
        tracing::debug!(cluster = %target.cluster.name, "route names an unknown cluster");
        log.flag("NC");
        edits.request_done(req);
        return LocalReply::new(503, "").send_before_body(manager, session, finish).await;
    }
    let start = Instant::now();
    let no_body = session.is_body_empty();
    // An upgrade's request never ends (it goes on as the tunnel), so its
    // route timeout never starts, as in Envoy; and its connection closes
    // whatever the answer.
    let progress = Progress::new(start, no_body && !upgrade);
    if upgrade {
        session.disable_keepalive();
    }
    let mut body = if no_body {
        RequestBody::whole(Bytes::new())
    } else {
        RequestBody::streaming(&progress, Some(crate::wasm::Decoder::new(&edits.wasm)))
    };
    // Deliberately the route's policy only: Envoy 1.40 does not honour the
    // x-envoy-retry-on / x-envoy-max-retries / x-envoy-upstream-rq-*
    // headers from an untrusted client, and neither do we (tested).
    let (retry, timeout) = (fwd.retry.clone(), fwd.timeout);
    let per_try = retry.as_ref().and_then(|r| r.per_try_timeout);
    // `te` is hop-by-hop, but its `trailers` token is kept as Envoy keeps
    // it: gRPC servers may require it.
    let te_trailers = req.headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| v.split(',').any(|t| t.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))))
    });
    req.remove_matching(|name| ROUTER_CONTROL.contains(&name) || (HOP_BY_HOP.contains(&name) && !(upgrade && is_upgrade_header(name))));
    if te_trailers {
        let _ = req.insert_header(header::TE, "trailers");
    }
    to_http1_upstream(&mut req);
    rewrite(&mut req, fwd);
    if req.raw_path() != log.path.as_bytes() && !log.path.is_empty() {
        log.routed_path = Some(String::from_utf8_lossy(req.raw_path()).into_owned());
    }
    // Envoy's HTTP/1 codec states `content-length: 0` on an empty request
    // unless its method has no body (GET, HEAD, DELETE, TRACE): a CORS
    // preflight (OPTIONS) forwarded upstream carries it.
    // A streamed body keeps the client's content-length, if it gave one
    // (its codec checks the length); without one an HTTP/1.1 upstream
    // gets it chunked, as from Envoy.
    let bodiless = matches!(req.method, http::Method::GET | http::Method::HEAD | http::Method::DELETE | http::Method::TRACE);
    if no_body && (req.headers.contains_key(header::CONTENT_LENGTH) || !bodiless) {
        let _ = req.insert_header(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    if req.headers.contains_key(header::TRANSFER_ENCODING) {
        req.remove_header(&header::TRANSFER_ENCODING);
    }
    // Plugins' body callbacks read the request headers as they go upstream.
    if !no_body && !edits.wasm.is_empty() {
        edits.request_done(req.clone());
    }

    // The idle timeout is the route's, else the manager's.
    let idle = fwd.idle_timeout.unwrap_or(manager.stream_idle_timeout);
    let timeouts = Timeouts { route: timeout, per_try, idle };
    for mirror in fwd.mirrors.iter().filter(|m| m.sampled()) {
        let copy = if no_body {
            None
        } else {
            let (tee, feed) = request_body::tee();
            body.mirror_to(tee);
            Some(feed)
        };
        shadow(mirror, &req, copy, Timeouts { per_try: None, ..timeouts });
    }
    let cluster = &target.cluster;
    if upgrade && cluster.http2 {
        // Envoy would carry it as an HTTP/2 extended CONNECT; we do not.
        tracing::debug!(cluster = %cluster.name, "upgrade to an HTTP/2 cluster");
        log.reply_details = Some("upgrade_failed".into());
        edits.request_done(req);
        session.disable_keepalive();
        return LocalReply::new(403, "").send(manager, session, finish).await;
    }
    let source_ip = || session.client_addr().map(|a| a.ip());
    let hash = fwd.hash_policy.as_ref().and_then(|p| p.hash(&req, source_ip()));
    let breakers = &cluster.breakers;
    let Some(_request_slot) = Breakers::try_acquire(&breakers.active_requests, breakers.max_requests) else {
        cluster.stats.rq_pending_overflow.inc();
        log.flag("UO");
        edits.request_done(req);
        return overflow().send(manager, session, finish).await;
    };
    let mut _retry_slot = None;
    let max_retries = retry.as_ref().map(|r| r.num_retries).unwrap_or(0);
    let mut attempt = 0u32;
    // Hosts tried so far, for the previous_hosts retry predicate.
    let mut tried: Vec<std::net::SocketAddr> = Vec::new();
    let avoid = retry.as_ref().filter(|r| r.avoid_previous_hosts).map(|r| r.host_selection_attempts);
    let outcome = loop {
        cluster.stats.rq_total.inc();
        let attempt_start = Instant::now();
        // What the upstream may expect to have, as Envoy tells it: the
        // attempt's own deadline, so it shrinks on every retry.
        let elapsed = if attempt == 0 {
            Duration::ZERO
        } else {
            start.elapsed()
        };
        let remaining = timeout.map(|t| t.saturating_sub(elapsed));
        let expected = match (remaining, per_try) {
            (Some(r), Some(p)) => Some(r.min(p)),
            (r, p) => r.or(p),
        };
        if let Some(ms) = expected.map(|d| d.as_millis()) {
            header_map::insert(&mut req, EXPECTED_TIMEOUT, HeaderValue::from(ms as u64));
        }
        let ended = body.ended();
        let once = try_once(cluster, &req, (&mut body, Source::Client(&mut *session)), (hash, fwd.auto_host_rewrite), (&tried, avoid), log);
        let timed_out = if !ended {
            // A body still coming moves the clocks while the attempt runs.
            tokio::select! {
                result = once => Ok(result),
                () = timeouts.attempt_expiry(&progress, attempt_start) => Err(()),
            }
        } else {
            match timeouts.attempt_deadline(&progress, attempt_start) {
                Some(d) => tokio::time::timeout_at(d.into(), once).await.map_err(drop),
                None => Ok(once.await),
            }
        };
        let result = timed_out.unwrap_or_else(|()| {
            if let Some(host) = log.upstream_host.and_then(|a| cluster.host(a)) {
                cluster.record_outcome(&host, 504);
            }
            Outcome::Failed(Failure::PerTryTimeout)
        });
        // Only a policy with the predicate pays for the list (this is the
        // request path; most requests make one attempt).
        if avoid.is_some() {
            tried.extend(log.upstream_host);
        }
        let global_timeout = timeouts.request_expired(&progress);
        // Every attempt's outcome is counted once, retried or not.
        match &result {
            Outcome::Response(Exchange { resp, .. }) => {
                cluster.stats.response(resp.status.as_u16(), attempt_start.elapsed().as_secs_f64() * 1000.0)
            }
            Outcome::Failed(Failure::Connect) => cluster.stats.cx_connect_fail.inc(),
            Outcome::Failed(Failure::PerTryTimeout) => cluster.stats.rq_timeout.inc(),
            Outcome::Failed(Failure::Overflow) => cluster.stats.rq_pending_overflow.inc(),
            Outcome::Failed(Failure::Reset | Failure::NoHost | Failure::Protocol | Failure::Client | Failure::Plugin) => {}
        }
        // A body past the retry buffer cannot be sent again; nor is a
        // response retried before the client's body has ended (Envoy:
        // `retry_or_shadow_abandoned`, `rq_retry_skipped_request_not_complete`).
        let retriable = body.replayable()
            && match (&result, &retry) {
                (_, None) => false,
                (Outcome::Response(Exchange { resp, .. }), Some(p)) => body.ended() && p.retries_status(resp.status.as_u16()),
                (Outcome::Failed(f), Some(p)) => retries_failure(p, *f),
            };
        if retriable && attempt >= max_retries && !global_timeout {
            log.flag("URX");
        }
        if !retriable || attempt >= max_retries || global_timeout {
            break result;
        }
        // The max_retries breaker bounds retries in flight across the cluster.
        let Some(slot) = Breakers::try_acquire(&breakers.active_retries, breakers.max_retries) else {
            cluster.stats.rq_retry_overflow.inc();
            break result;
        };
        _retry_slot = Some(slot);
        attempt += 1;
        cluster.stats.rq_retry.inc();
        if let Some(p) = &retry {
            let wait = backoff(p, attempt);
            if timeouts.route_deadline(&progress).is_some_and(|d| Instant::now() + wait >= d) {
                break result;
            }
            tokio::time::sleep(wait).await;
        }
    };
    // Plugins see the request as routed from here on (on_log included),
    // as Envoy's router edits the map they read.
    edits.request_done(req);

    match outcome {
        Outcome::Failed(Failure::Plugin) => match body.take_stop() {
            Some(stop) => stopped(stop, manager, session, finish, log).await,
            None => None,
        },
        Outcome::Failed(Failure::Client) => {
            // Envoy answers a body its codec cannot read with 400; a client
            // that went away hears nothing.
            log.flag("DC");
            LocalReply::new(400, "").send(manager, session, finish).await
        }
        Outcome::Failed(f) => {
            // Envoy's stream idle timeout before the response started: 504
            // "stream timeout", or 408 while the request was still arriving.
            if timeouts.idle_deadline(&progress).is_some_and(|d| Instant::now() >= d) {
                log.flag("SI");
                let status = if body.ended() { 504 } else { 408 };
                return LocalReply::new(status, "stream timeout").send(manager, session, finish).await;
            }
            let timed_out = f == Failure::PerTryTimeout || timeouts.route_deadline(&progress).is_some_and(|d| Instant::now() >= d);
            log.flag(match f {
                _ if timed_out => "UT",
                Failure::NoHost => "UH",
                Failure::Connect => "UF",
                Failure::Overflow => "UO",
                Failure::Reset | Failure::PerTryTimeout | Failure::Client | Failure::Plugin => "UC",
                Failure::Protocol => "UPE",
            });
            if timed_out {
                return LocalReply::new(504, "upstream request timeout")
                    .send(manager, session, finish)
                    .await;
            }
            if f == Failure::NoHost {
                return LocalReply::new(503, "no healthy upstream").send_before_body(manager, session, finish).await;
            }
            if f == Failure::Overflow {
                return overflow().send_before_body(manager, session, finish).await;
            }
            // Envoy's wording, so clients that match on it keep working.
            // Envoy 1.40 keeps TLS failure details out of the body.
            let (status, reason) = match f {
                Failure::Connect => (503, "remote connection failure"),
                Failure::Protocol => (502, "protocol error"),
                _ => (503, "connection termination"),
            };
            let retried = if attempt > 0 {
                "retried and the latest reset reason"
            } else {
                "reset reason"
            };
            let mut reply = LocalReply::new(status, "");
            reply.body = Bytes::from(format!(
                "upstream connect error or disconnect/reset before headers. {retried}: {reason}"
            ));
            reply.send(manager, session, finish).await
        }
        Outcome::Response(exchange) if upgrade && exchange.resp.status == http::StatusCode::SWITCHING_PROTOCOLS => {
            log.upstream_service_time = Some(start.elapsed().as_millis().to_string());
            tunnel(manager, session, exchange, timeouts.idle, finish, log).await
        }
        Outcome::Response(exchange) => {
            log.upstream_service_time = Some(start.elapsed().as_millis().to_string());
            stream_response(manager, (session, &mut body), exchange, _request_slot, (&progress, timeouts), finish, log).await
        }
    }
}

/// Envoy's answer when a circuit breaker refuses a request.
fn overflow() -> LocalReply {
    let mut reply = LocalReply::new(503, "upstream connect error or disconnect/reset before headers. reset reason: overflow");
    reply.extra_headers.push((http::HeaderName::from_static("x-envoy-overloaded"), HeaderValue::from_static("true")));
    reply
}

/// Sends a copy of the request to a mirror cluster and forgets it: the
/// response is read and dropped, failures only show in the mirror
/// cluster's stats. The host gets Envoy's `-shadow` suffix. The body
/// streams from `copy` as the router's request sends it (none: the request
/// has no body); the shadow's clocks start as the request's do.
fn shadow(mirror: &Mirror, req: &RequestHeader, copy: Option<request_body::Feed>, timeouts: Timeouts) {
    let mut req = req.clone();
    if mirror.shadow_suffix {
        if let Some(host) = req.headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            if let Ok(v) = HeaderValue::from_str(&format!("{host}-shadow")) {
                let _ = req.insert_header(header::HOST, v);
            }
        }
    }
    if let Some(ms) = timeouts.route.map(|t| t.as_millis()) {
        let _ = req.insert_header("x-envoy-expected-rq-timeout-ms", ms.to_string());
    }
    // Envoy sends the shadow as an internal request from this host.
    let _ = req.insert_header("x-envoy-internal", HeaderValue::from_static("true"));
    if let Some(local) = xff::local_address() {
        xff::append(&mut req, local);
    }
    let cluster = mirror.cluster.clone();
    tokio::spawn(async move {
        cluster.stats.rq_total.inc();
        let start = Instant::now();
        let progress = Progress::new(start, copy.is_none());
        let (mut body, mut copy) = match copy {
            Some(feed) => (RequestBody::streaming(&progress, None), Some(feed)),
            None => (RequestBody::whole(Bytes::new()), None),
        };
        let mut source = match copy.as_mut() {
            Some(feed) => Source::Mirror(feed),
            None => Source::Whole,
        };
        let attempt = async {
            let once = try_once(&cluster, &req, (&mut body, source.reborrow()), (None, false), (&[], None), &mut Entry::default()).await;
            let Outcome::Response(mut x) = once else { return };
            cluster.stats.response(x.resp.status.as_u16(), start.elapsed().as_secs_f64() * 1000.0);
            // The response is read to its end (the rest of the body going
            // on beside it) so that the connection can be pooled again.
            loop {
                match next_piece(&mut x.upstream, &mut x.pump, &mut body, &mut source).await {
                    Next::Response(Ok(Some(_))) => {}
                    Next::Response(Ok(None)) => break,
                    Next::Response(Err(_)) | Next::ClientBroken => return,
                    Next::Request { ended } => {
                        if ended {
                            x.pump = None;
                        }
                    }
                }
            }
            x.pump = None;
            upstream::checkin(x.upstream, x.pool, x.budget).await;
        };
        tokio::select! {
            () = attempt => {}
            () = timeouts.attempt_expiry(&progress, start) => {}
        }
    });
}

/// What a request the proxy made itself came back with.
#[derive(Debug)]
pub struct Called {
    pub resp: ResponseHeader,
    pub body: Bytes,
    /// An HTTP/2 upstream's trailers.
    pub trailers: Option<http::HeaderMap>,
    /// Answered by the router itself (no host, overflow, reset, timeout):
    /// `resp` and `body` are what Envoy's router would have replied.
    pub local: bool,
}

/// A request the proxy makes itself (a plugin's HTTP or gRPC callout): one
/// attempt through the cluster, the whole response read, bounded by
/// `timeout` (none when zero). The caller frames the body.
pub async fn call(cluster: &Cluster, mut req: RequestHeader, body: Bytes, timeout: Duration) -> Result<Called, String> {
    // Envoy's async client marks its requests internal.
    let _ = req.insert_header("x-envoy-internal", HeaderValue::from_static("true"));
    if !timeout.is_zero() {
        let _ = req.insert_header("x-envoy-expected-rq-timeout-ms", timeout.as_millis().to_string());
    }
    let attempt = async {
        cluster.stats.rq_total.inc();
        let start = Instant::now();
        let mut body = RequestBody::whole(body);
        match try_once(cluster, &req, (&mut body, Source::Whole), (None, false), (&[], None), &mut Entry::default()).await {
            Outcome::Response(mut x) => {
                cluster.stats.response(x.resp.status.as_u16(), start.elapsed().as_secs_f64() * 1000.0);
                let mut body = BytesMut::new();
                while !x.upstream.done() {
                    match x.upstream.read_body().await {
                        Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                        Ok(None) => break,
                        Err(e) => return Err(format!("upstream reset: {e}")),
                    }
                }
                let trailers = match &mut x.upstream {
                    upstream::Session::H2(h2) => h2.read_trailers().await.map_err(|e| format!("upstream reset: {e}"))?,
                    _ => None,
                };
                let resp = *x.resp;
                upstream::checkin(x.upstream, x.pool, x.budget).await;
                Ok(Called { resp, body: body.freeze(), trailers, local: false })
            }
            Outcome::Failed(f) => synthesized(f),
        }
    };
    if timeout.is_zero() {
        attempt.await
    } else {
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => synthesized(Failure::PerTryTimeout),
        }
    }
}

/// What the router would have answered a failed attempt, as Envoy's async
/// client hands it to the caller.
fn synthesized(f: Failure) -> Result<Called, String> {
    let (status, body) = match f {
        Failure::NoHost => (503, "no healthy upstream"),
        Failure::Overflow => (503, "upstream connect error or disconnect/reset before headers. reset reason: overflow"),
        Failure::Connect => (503, "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"),
        Failure::PerTryTimeout => (504, "upstream request timeout"),
        Failure::Reset | Failure::Client | Failure::Plugin => (503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination"),
        Failure::Protocol => (502, "upstream connect error or disconnect/reset before headers. reset reason: protocol error"),
    };
    let mut resp = ResponseHeader::build(status, Some(2)).map_err(|e| e.to_string())?;
    let _ = resp.insert_header(header::CONTENT_LENGTH, body.len().to_string());
    let _ = resp.insert_header(header::CONTENT_TYPE, "text/plain");
    Ok(Called { resp, body: Bytes::from_static(body.as_bytes()), trailers: None, local: true })
}

/// A streaming request the proxy makes itself (a plugin's gRPC stream):
/// the header sent on one of the cluster's HTTP/2 connections; the body
/// follows through `body` while the response is read from `session`.
pub struct Opened {
    pub session: Box<pingora_core::protocols::http::v2::client::Http2Session>,
    pub body: h2::SendStream<Bytes>,
    /// The host's in-flight count (least-request balancing), held while
    /// the stream lives.
    _host: InFlight,
}

/// Opens a streaming request on an HTTP/2 cluster (the caller checks the
/// cluster speaks it). `Err`: the router's own answer, as from [`call`].
pub async fn open_stream(cluster: &Cluster, mut req: RequestHeader) -> Result<Opened, Result<Called, String>> {
    let _ = req.insert_header("x-envoy-internal", HeaderValue::from_static("true"));
    cluster.stats.rq_total.inc();
    let Some(host) = cluster.pick(None) else { return Err(synthesized(Failure::NoHost)) };
    let target = cluster.target(host.addr());
    let mut session = match upstream::checkout(&target, true).await {
        Ok((upstream::Session::H2(session), _)) => session,
        Ok(_) => return Err(synthesized(Failure::Protocol)),
        Err(ConnectError::Overflow) => return Err(synthesized(Failure::Overflow)),
        Err(_) => {
            cluster.record_outcome(host.host(), 503);
            return Err(synthesized(Failure::Connect));
        }
    };
    let header = Box::new(to_http2_upstream(&req, target.tls.is_some()));
    if session.write_request_header(header, false).is_err() {
        return Err(synthesized(Failure::Reset));
    }
    let Some(body) = session.take_request_body_writer() else { return Err(synthesized(Failure::Reset)) };
    Ok(Opened { session, body, _host: host })
}

/// A retry's wait: fully jittered exponential back-off, as Envoy computes it.
fn backoff(p: &RetryPolicy, attempt: u32) -> Duration {
    let ceiling = p
        .base_interval
        .saturating_mul((1u32 << attempt.min(16)) - 1)
        .min(p.max_interval);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(if ms == 0 {
        0
    } else {
        rand::random::<u64>() % (ms + 1)
    })
}

fn retries_failure(p: &RetryPolicy, f: Failure) -> bool {
    let on = p.on;
    match f {
        // Nothing to retry against: Envoy answers at once.
        Failure::NoHost | Failure::Overflow | Failure::Client | Failure::Plugin => false,
        Failure::Connect => on.connect_failure || on.five_xx || on.gateway_error || on.reset,
        Failure::Reset | Failure::Protocol => on.reset || on.five_xx || on.gateway_error,
        Failure::PerTryTimeout => on.five_xx || on.gateway_error,
    }
}

/// Upstreams speak HTTP/1.1: an HTTP/2 request's `:authority` becomes
/// `Host` and the URI becomes origin-form.
fn to_http1_upstream(req: &mut RequestHeader) {
    if let Some(authority) = req.uri.authority().map(|a| a.as_str().to_string()) {
        if !req.headers.contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(&authority) {
                let _ = req.insert_header(header::HOST, v);
            }
        }
        let origin_form = req.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let _ = req.set_raw_path(origin_form.as_bytes());
    }
    req.set_version(http::Version::HTTP_11);
}

/// The request as an HTTP/2 upstream takes it: `:scheme` from the
/// upstream connection (as Envoy sets it), `:authority` from Host (which
/// HTTP/2 does not carry as a header).
fn to_http2_upstream(req: &RequestHeader, tls: bool) -> RequestHeader {
    let mut req = req.clone();
    let authority = req.headers.get(header::HOST).and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
    let path = req.uri.path_and_query().cloned();
    if let (Some(authority), Some(path)) = (authority, path) {
        let uri = http::Uri::builder().scheme(if tls { "https" } else { "http" }).authority(authority).path_and_query(path).build();
        if let Ok(uri) = uri {
            req.set_uri(uri);
            req.remove_header(&header::HOST);
        }
    }
    req.set_version(http::Version::HTTP_2);
    req
}

/// Path and host rewrites of the route action.
fn rewrite(req: &mut RequestHeader, fwd: &Forward) {
    if let Some((re, sub)) = &fwd.regex_rewrite {
        let full = String::from_utf8_lossy(req.raw_path()).into_owned();
        let (path, query) = match full.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (full.clone(), None),
        };
        let mut new = re.replace_all(&path, sub.as_str()).into_owned();
        if let Some(q) = query {
            new = format!("{new}?{q}");
        }
        set_path(req, &full, &new);
    }
    if let Some(host) = &fwd.host_rewrite {
        set_host(req, host.clone());
    }
}

/// Rewrites the request's host. Envoy keeps the client's host for the
/// upstream to see.
fn set_host(req: &mut RequestHeader, host: HeaderValue) {
    if let Some(original) = req
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| req.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()))
    {
        let _ = req.insert_header("x-envoy-original-host", original);
    }
    if req.uri.authority().is_some() {
        if let Ok(auth) = http::uri::Authority::try_from(host.as_bytes()) {
            let mut parts = req.uri.clone().into_parts();
            parts.authority = Some(auth);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                req.set_uri(uri);
            }
        }
    }
    let _ = req.insert_header(header::HOST, host);
}

/// Rewrites `:path`; `prefix_rewrite` is applied by the caller that knows the matched prefix.
pub fn set_path(req: &mut RequestHeader, original: &str, new: &str) {
    if let Ok(v) = HeaderValue::from_str(original) {
        let _ = req.insert_header("x-envoy-original-path", v);
    }
    let _ = req.set_raw_path(new.as_bytes());
}

/// Answers a request a plugin ended: its reply, or a reset (`None`).
async fn stopped(stop: Stop, manager: &HttpManager, session: &mut Downstream, finish: Finish<'_>, log: &mut Entry) -> Option<u16> {
    match stop {
        Stop::Reply(mut reply) => {
            log.reply_details = reply.details.take();
            reply.send(manager, session, Finish { levels: &[], ..finish }).await
        }
        Stop::Reset => None,
    }
}

/// One attempt: connect (or reuse), send the request, read response headers.
/// The log records the host tried.
async fn try_once<'c>(
    cluster: &'c Cluster,
    req: &RequestHeader,
    (body, mut source): (&mut RequestBody<'_>, Source<'_>),
    (hash, auto_host_rewrite): (Option<u64>, bool),
    (tried, avoid): (&[std::net::SocketAddr], Option<u32>),
    log: &mut Entry,
) -> Outcome<'c> {
    let host = match avoid {
        Some(attempts) => cluster.pick_avoiding(hash, tried, attempts),
        None => cluster.pick(hash),
    };
    let Some(host) = host else {
        return Outcome::Failed(Failure::NoHost);
    };
    let budget = &cluster.breakers.connections;
    let target = upstream::Target { budget: Some(budget), ..cluster.target(host.addr()) };
    log.upstream_host = Some(target.addr);
    // A pooled connection the upstream closed meanwhile is replaced once,
    // without counting as a retry.
    for _ in 0..2 {
        let (mut upstream, reused) = match upstream::checkout(&target, cluster.http2).await {
            Ok(s) => s,
            Err(ConnectError::Overflow) => return Outcome::Failed(Failure::Overflow),
            Err(e) => {
                let reason = match e {
                    ConnectError::Tls(reason) => {
                        tracing::debug!(cluster = %cluster.name, host = %target.addr, %reason, "upstream TLS handshake failed");
                        reason
                    }
                    ConnectError::Tcp(reason) => reason,
                    ConnectError::Overflow => String::new(),
                };
                // For the access log's response code details.
                log.transport_failure = Some(reason).filter(|r| !r.is_empty());
                // Outlier detection counts local failures as Envoy maps them.
                cluster.record_outcome(host.host(), 503);
                return Outcome::Failed(Failure::Connect);
            }
        };
        if log.logging {
            log.upstream_local = upstream.local_addr();
        }
        // The request is copied only when this attempt edits it.
        let rewritten = host.host().hostname.as_ref().filter(|_| auto_host_rewrite).and_then(|name| {
            let mut header = req.clone();
            set_host(&mut header, HeaderValue::from_str(name).ok()?);
            Some(header)
        });
        let header = rewritten.as_ref().unwrap_or(req);
        let sent = send(&mut upstream, header, (&mut *body, source.reborrow()), target.tls.is_some()).await;
        match sent {
            Ok((resp, pump)) => {
                cluster.record_outcome(host.host(), resp.status.as_u16());
                return Outcome::Response(Exchange { upstream, resp: Box::new(resp), pump, host, pool: target.key(), budget });
            }
            Err(Broken::Client) => return Outcome::Failed(Failure::Client),
            Err(Broken::Plugin) => return Outcome::Failed(Failure::Plugin),
            // Not HTTP: the upstream answered, so no second try on a new
            // connection.
            Err(Broken::Upstream(e)) if upstream::is_protocol_error(&e) => {
                cluster.record_outcome(host.host(), 502);
                return Outcome::Failed(Failure::Protocol);
            }
            Err(_) if reused && body.replayable() => {
                // The upstream closed its idle connections (restart, idle
                // timeout): the others pooled with this one are likely gone
                // too, so the retry gets a new connection.
                upstream::forget_idle(target.key());
                continue;
            }
            Err(_) => break,
        }
    }
    cluster.record_outcome(host.host(), 503);
    Outcome::Failed(Failure::Reset)
}

/// Sends the request on an upstream session and reads the response header.
/// A body that is whole goes out with the header; one still arriving is
/// streamed: to an HTTP/1.1 upstream to its end first, to an HTTP/2 one
/// beside the response (the pump, if it has not ended, goes on after it).
async fn send(
    upstream: &mut upstream::Session,
    header: &RequestHeader,
    (body, mut source): (&mut RequestBody<'_>, Source<'_>),
    tls: bool,
) -> Result<(ResponseHeader, Option<H2Pump>), Broken> {
    fn up(e: impl Into<upstream::Error>) -> Broken {
        Broken::Upstream(e.into())
    }
    let whole = body.as_whole();
    match upstream {
        upstream::Session::H1(h1) => {
            match whole {
                Some(whole) => h1.send(header, &whole).await.map_err(up)?,
                None => {
                    let chunked = !header.headers.contains_key(header::CONTENT_LENGTH);
                    h1.start(header, chunked).map_err(up)?;
                    body.send_h1(h1, &mut source, chunked).await?;
                }
            }
            Ok((h1.read_response().await.map_err(up)?, None))
        }
        upstream::Session::H2(h2) => {
            // A request without a body ends with its HEADERS frame, as
            // Envoy sends it (an empty DATA frame after it would make the
            // next hop see a body of unknown length).
            let header = Box::new(to_http2_upstream(header, tls));
            let mut pump = None;
            // A body that ends with trailers goes through the pump, which
            // sends them.
            match whole.filter(|_| body.trailers().is_none()) {
                Some(whole) => {
                    h2.write_request_header(header, whole.is_empty()).map_err(up)?;
                    if !whole.is_empty() {
                        h2.write_request_body(whole, true).await.map_err(up)?;
                    }
                    h2.finish_request_body().map_err(up)?;
                }
                None => {
                    h2.write_request_header(header, false).map_err(up)?;
                    let writer = h2.take_request_body_writer().ok_or_else(|| up("no request body writer"))?;
                    pump = H2Pump::start(writer, body)?;
                }
            }
            // The body moves while the response header is awaited: a gRPC
            // server may answer only after the first message.
            loop {
                match pump.as_mut() {
                    Some(p) => tokio::select! {
                        read = h2.read_response_header() => break read.map_err(up)?,
                        // Handled outside the race: plugins may be called.
                        ready = p.ready(body, &mut source) => if p.advance(ready, body).await? { pump = None },
                    },
                    None => break h2.read_response_header().await.map_err(up)?,
                }
            }
            // Without the header-case map, as HTTP/1.1 responses (Envoy
            // sends response header names lowercased).
            let resp = h2.response_header().map(|r| ResponseHeader::from(r.as_owned_parts())).ok_or_else(|| up("no response header"))?;
            Ok((resp, pump))
        }
    }
}

/// Sends the response downstream. The header goes out together with the
/// first body chunk (one write for small responses, as Envoy does).
async fn stream_response(
    manager: &HttpManager,
    (session, body): (&mut Downstream, &mut RequestBody<'_>),
    exchange: Exchange<'_>,
    request_slot: Slot<'_>,
    (progress, timeouts): (&Progress, Timeouts),
    finish: Finish<'_>,
    log: &mut Entry,
) -> Option<u16> {
    let Exchange { upstream, mut resp, mut pump, host, pool, budget } = exchange;
    // Held until the upstream response is complete, then released before
    // the last bytes go downstream: a client's next request must find the
    // connection back in the pool and the circuit breakers free, as Envoy.
    let mut held = Some((upstream, host, request_slot));
    // The downstream codec writes its own version; an HTTP/2 upstream's
    // response header must not carry HTTP/2 into an HTTP/1.1 response.
    resp.set_version(http::Version::HTTP_11);
    let status = resp.status.as_u16();
    resp.remove_matching(|name| HOP_BY_HOP.contains(&name));
    // Envoy measures it from the request's end, so only a request that has
    // ended gets it.
    if let Some(ended) = progress.ended_at() {
        header_map::insert(&mut *resp, UPSTREAM_SERVICE_TIME, HeaderValue::from(ended.elapsed().as_millis() as u64));
    }
    edit_response_headers(&mut resp, finish);
    // Plugins see the response after the route's and the filters' edits.
    let mut plugins = crate::wasm::Encoder::new(&finish.edits.wasm);
    let end = held.as_mut().is_some_and(|(u, ..)| u.done());
    if let Err(answered) = plugin_headers(&mut plugins, &mut resp, end, (manager, session), finish, log).await {
        return answered;
    }
    // A body of unknown length (an HTTP/2 upstream's, or a plugin's that
    // dropped content-length) is chunked for an HTTP/1.1 client, as Envoy.
    let body_follows = !held.as_mut().is_some_and(|(u, ..)| u.done());
    frame_body(&mut resp, session, body_follows);
    stamp_response_headers(manager, &mut resp);
    let mut header = Some(resp);
    loop {
        let (upstream, ..) = held.as_mut()?;
        let (data, done) = if upstream.done() {
            (None, true)
        } else {
            // While the client's body still flows, the route timeout has not
            // started (Envoy starts it when the request has ended).
            let deadline = timeouts.route_deadline(progress);
            let mut source = Source::Client(&mut *session);
            let read = next_piece(upstream, &mut pump, body, &mut source);
            // The streams must keep moving: each piece restarts the idle clock.
            let idle_deadline = timeouts.idle.map(|d| Instant::now() + d);
            let next = match [deadline, idle_deadline].into_iter().flatten().min() {
                Some(d) => tokio::time::timeout_at(d.into(), read).await.ok()?,
                None => read.await,
            };
            let chunk = match next {
                Next::Response(chunk) => chunk,
                Next::Request { ended } => {
                    if ended {
                        pump = None;
                    }
                    continue;
                }
                // The client broke off its body: its stream is reset.
                Next::ClientBroken => return None,
            };
            match chunk {
                Ok(Some(data)) => (Some(data), upstream.done()),
                Ok(None) => (None, true),
                // Upstream reset mid-body: the downstream stream is reset
                // too, after the header if it has not gone out yet (Envoy
                // has sent it by then).
                Err(e) => {
                    let protocol = upstream::is_protocol_error(&e);
                    let (flag, reason) = if protocol { ("UPE", "protocol_error") } else { ("UC", "connection_termination") };
                    log.flag(flag);
                    log.reply_details = Some(format!("upstream_reset_after_response_started{{{reason}}}").into());
                    log.status = status;
                    if let Some(h) = header.take() {
                        plugins.response_sent(&h);
                        let _ = session.respond(Some(h), None, false, None).await;
                    }
                    return None;
                }
            }
        };
        // An HTTP/2 upstream may end its response with trailers (gRPC's
        // status): plugins see them, an HTTP/2 client gets them, an
        // HTTP/1.1 client does not (Envoy's default, no `enable_trailers`).
        let mut trailers = None;
        if done {
            // A response that ends before the request does ends it: the
            // rest of the client's body is not sent (nor read).
            pump = None;
            if let Some((mut upstream, host, slot)) = held.take() {
                trailers = match &mut upstream {
                    upstream::Session::H2(h2) => match timeouts.route_deadline(progress) {
                        Some(d) => tokio::time::timeout_at(d.into(), h2.read_trailers()).await.ok()?,
                        None => h2.read_trailers().await,
                    }
                    // A reset instead of trailers resets the client's stream.
                    .ok()?
                    .filter(|t| !t.is_empty()),
                    _ => None,
                };
                upstream::checkin(upstream, pool, budget).await;
                drop((host, slot));
            }
        }
        // With trailers to come, the body does not end the stream.
        let body_end = done && trailers.is_none();
        let data = if !plugins.is_empty() && (data.is_some() || !plugins.buffered.is_empty()) {
            // `None`: the headers went out already.
            match plugins.body(header.as_deref_mut(), data, body_end).await {
                Ok(Some(out)) => Some(out).filter(|b| !b.is_empty() || body_end),
                // Buffered, but the trailers end the stream: the body goes
                // out before them.
                Ok(None) if done => Some(std::mem::take(&mut plugins.buffered).freeze()).filter(|b| !b.is_empty()),
                // Buffered by a plugin: nothing goes out yet.
                Ok(None) => continue,
                // The VM failed mid-response: the stream is reset.
                Err(_) => return None,
            }
        } else {
            data
        };
        if let Some(t) = trailers.as_mut() {
            if !plugins.is_empty() && plugins.trailers(t).await.is_err() {
                return None;
            }
        }
        if let Some(h) = header.as_deref() {
            plugins.response_sent(h);
        }
        session.respond(header.take(), data, done, trailers).await.ok()?;
        if done {
            break;
        }
    }
    Some(status)
}

/// Runs the plugins' response header callbacks. `Err`: a plugin answered
/// instead (the status sent) or reset the stream (`None`).
async fn plugin_headers(
    plugins: &mut crate::wasm::Encoder<'_>,
    resp: &mut ResponseHeader,
    end: bool,
    (manager, session): (&HttpManager, &mut Downstream),
    finish: Finish<'_>,
    log: &mut Entry,
) -> Result<(), Option<u16>> {
    if plugins.is_empty() {
        return Ok(());
    }
    match plugins.headers(resp, end).await {
        Ok(()) => Ok(()),
        Err(stop) => Err(stopped(stop, manager, session, finish, log).await),
    }
}

/// An upgrade the upstream accepted (101): the response goes to the client
/// with its `connection` and `upgrade` headers, then bytes pass both ways
/// until both sides have closed (a side that ends is half-closed on the
/// other) or nothing moves for the stream idle timeout. Neither connection
/// serves HTTP again.
async fn tunnel(
    manager: &HttpManager,
    session: &mut Downstream,
    exchange: Exchange<'_>,
    idle: Option<Duration>,
    finish: Finish<'_>,
    log: &mut Entry,
) -> Option<u16> {
    use tokio::io::AsyncWriteExt;
    let Exchange { mut upstream, mut resp, host: _in_flight, .. } = exchange;
    resp.set_version(http::Version::HTTP_11);
    resp.remove_matching(|name| HOP_BY_HOP.contains(&name) && !is_upgrade_header(name));
    edit_response_headers(&mut resp, finish);
    let mut plugins = crate::wasm::Encoder::new(&finish.edits.wasm);
    if let Err(answered) = plugin_headers(&mut plugins, &mut resp, false, (manager, session), finish, log).await {
        return answered;
    }
    stamp_response_headers(manager, &mut resp);
    plugins.response_sent(&resp);
    session.respond(Some(resp), None, false, None).await.ok()?;
    // Only HTTP/1.1 reaches here on both sides (the router refuses
    // upgrades to HTTP/2 clusters; HTTP/2 requests carry none).
    let (Some((client, from_client)), upstream::Session::H1(conn)) = (session.tunnel(), &mut upstream) else { return None };
    let (server, from_server) = conn.tunnel();
    // Bytes that came right behind either header go first.
    if !from_client.is_empty() && server.write_all(&from_client).await.and(server.flush().await).is_err() {
        return None;
    }
    if !from_server.is_empty() && client.write_all(&from_server).await.and(client.flush().await).is_err() {
        return None;
    }
    crate::io::splice(client, server, idle).await;
    Some(101)
}

/// What moved while the router waited on both streams.
enum Next {
    /// A piece of response body (`None` at its end), or a failed read.
    Response(Result<Option<Bytes>, upstream::Error>),
    /// The request body moved; `ended`: all of it has been sent.
    Request { ended: bool },
    ClientBroken,
}

/// Waits for the next piece of response body, moving the request body
/// along meanwhile (an HTTP/2 upstream's, while it lasts).
async fn next_piece(upstream: &mut upstream::Session, pump: &mut Option<H2Pump>, body: &mut RequestBody<'_>, source: &mut Source<'_>) -> Next {
    let Some(p) = pump.as_mut() else { return Next::Response(upstream.read_body().await) };
    let ready = tokio::select! {
        read = upstream.read_body() => return Next::Response(read),
        ready = p.ready(body, source) => ready,
    };
    // Outside the race: plugins may be called.
    match p.advance(ready, body).await {
        Ok(ended) => Next::Request { ended },
        // The client broke off, or a plugin ended the request: the
        // response has started, so the stream is reset.
        Err(Broken::Client | Broken::Plugin) => Next::ClientBroken,
        // The upstream reset its stream: its reader hears of it. The rest
        // of the body has nowhere to go.
        Err(Broken::Upstream(_)) => Next::Request { ended: true },
    }
}
