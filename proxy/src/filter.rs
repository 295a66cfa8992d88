//! HTTP filters that run before the router, in the order the connection
//! manager lists them (Envoy's decoder filters), and what they leave for
//! the response (Envoy's encoder filters).
//!
//! ```text
//!  request ─► route lookup ─► cors ─► local_ratelimit ─► fault ─► wasm ─► ... ─► router (http::forward)
//!                      │        └─ edits for the response ──────────────────┐
//!                      └─ per-route config (typed_per_filter_config) by filter name
//!  response (upstream or local) ◄─ route header mutations ◄─ filter edits ◄──┘
//! ```
//! Each filter is a module with its config compiler and its request-time
//! logic; this file only dispatches.

pub mod cors;
pub mod fault;
pub mod local_ratelimit;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use pingora_http::{RequestHeader, ResponseHeader};
use weft_envoy_api::pb::google::protobuf::Any;

use crate::access_log::Entry;
use crate::http::LocalReply;
use crate::model::listener::unpack;
use crate::model::{Cluster, Result};

/// A compiled HTTP filter (router excluded: it is the last filter, always).
#[derive(Debug)]
pub enum HttpFilter {
    Fault(fault::Fault),
    Cors(cors::Cors),
    LocalRateLimit(local_ratelimit::LocalRateLimit),
    Wasm(crate::wasm::Filter),
}

/// A filter's per-route override, looked up by the filter's name.
#[derive(Debug)]
pub enum PerRoute {
    Fault(fault::Fault),
    Cors(cors::Policy),
    LocalRateLimit(local_ratelimit::LocalRateLimit),
}

/// What a filter decided about a request.
pub enum Verdict {
    Continue,
    /// A local reply (Envoy's `sendLocalReply`): the route's response
    /// header mutations apply when the route forwards.
    Respond(LocalReply),
    /// A response the filter writes itself (Envoy's `encodeHeaders` from a
    /// decoder filter, as the CORS preflight): no route header mutations.
    Encode(LocalReply),
    /// The stream is reset, no response (a plugin's `proxy_close_stream`).
    Reset,
}

/// What a filter sees of a request besides its headers.
pub struct Context<'a> {
    /// The downstream connection, for header value formatters.
    pub conn: &'a crate::access_log::format::Conn,
    /// The route matched and forwards (Envoy's "route entry"): false when
    /// there is no route and for direct responses and redirects.
    pub forwards: bool,
    /// The filter's `typed_per_filter_config`, most specific first: route,
    /// then virtual host.
    pub per_route: [Option<&'a PerRoute>; 2],
    pub connection: &'a ConnectionState,
    /// Response flags for the access log (FI, DI, RL).
    pub log: &'a mut Entry,
    pub response: &'a mut ResponseEdits,
    /// A body follows the request headers (the router reads it, through
    /// the plugins' body callbacks).
    pub body_follows: bool,
    /// Addresses and TLS of the stream, for plugins' properties.
    pub info: &'a Arc<crate::wasm::properties::StreamInfo>,
}

impl<'a> Context<'a> {
    /// The most specific override. One of another filter's type counts as
    /// none: Envoy ignores it rather than looking further.
    fn most_specific(&self) -> Option<&'a PerRoute> {
        self.per_route.into_iter().flatten().next()
    }
}

/// State that lives as long as a downstream connection, shared by its
/// requests (Envoy's connection-lifespan filter state).
#[derive(Debug, Default)]
pub struct ConnectionState {
    /// `local_rate_limit_per_downstream_connection`: one bucket per
    /// connection, made by the first config that asks for it.
    pub rate_limiter: ArcSwapOption<local_ratelimit::Limiter>,
}

/// Response header edits left by the filters a request went through,
/// applied to whatever response goes downstream (upstream or local) after
/// the route's header mutations, in the reverse of the filters' order.
/// Empty (and unallocated) unless a filter has something to add.
#[derive(Debug, Default)]
pub struct ResponseEdits {
    edits: Vec<Edit>,
    /// The plugin contexts of the wasm filters the request went through:
    /// they see the response too, and end with it.
    pub wasm: Vec<crate::wasm::Stream>,
    /// The request is gRPC: a local reply goes as a gRPC trailers-only
    /// response, as Envoy sends it.
    pub grpc: bool,
    /// The request is HEAD: that reply has no `grpc-message` (Envoy's).
    pub head: bool,
}

#[derive(Debug)]
enum Edit {
    Cors(cors::ResponseHeaders),
    RateLimit(local_ratelimit::XRateLimit),
}

impl ResponseEdits {
    /// No edits yet, for `req`'s response.
    pub fn for_request(req: &RequestHeader) -> Self {
        ResponseEdits { grpc: crate::http::is_grpc(req), head: req.method == http::Method::HEAD, ..Default::default() }
    }

    /// The request headers as they left the proxy, or as they were when a
    /// local reply ended the request: the request's plugins keep them for
    /// their later callbacks.
    pub fn request_done(&self, req: RequestHeader) {
        crate::wasm::stream::share_request(&self.wasm, req);
    }

    fn push(&mut self, edit: Edit) {
        self.edits.push(edit);
    }

    pub fn apply(&self, resp: &mut ResponseHeader) {
        for edit in self.edits.iter().rev() {
            match edit {
                Edit::Cors(c) => c.apply(resp),
                Edit::RateLimit(r) => r.apply(resp),
            }
        }
    }
}

impl HttpFilter {
    /// Compiles an `http_filters[]` entry that is not the router;
    /// `stat_prefix` is the connection manager's.
    pub fn compile(any: &Any, path: &str, stat_prefix: &str, clusters: &HashMap<String, Arc<Cluster>>) -> Result<Self> {
        match weft_envoy_api::type_name(&any.type_url) {
            fault::TYPE => Ok(HttpFilter::Fault(fault::Fault::compile(&unpack(any, fault::TYPE, path)?, path)?)),
            cors::TYPE => {
                let _: weft_envoy_api::pb::envoy::extensions::filters::http::cors::v3::Cors = unpack(any, cors::TYPE, path)?;
                Ok(HttpFilter::Cors(cors::Cors::new(stat_prefix)))
            }
            local_ratelimit::TYPE => Ok(HttpFilter::LocalRateLimit(local_ratelimit::LocalRateLimit::compile(
                &unpack(any, local_ratelimit::TYPE, path)?,
                path,
                false,
            )?)),
            crate::wasm::TYPE => Ok(HttpFilter::Wasm(crate::wasm::Filter::compile(&unpack(any, crate::wasm::TYPE, path)?, path, clusters)?)),
            other => Err(crate::model::ConfigError::new(path, format!("HTTP filter {other} is not supported by weft-proxy"))),
        }
    }

    /// Runs the filter on a request. `req` may be changed (headers a filter adds).
    pub async fn on_request(&self, req: &mut RequestHeader, cx: &mut Context<'_>) -> Verdict {
        match self {
            HttpFilter::Fault(own) => {
                let f = match cx.most_specific() {
                    Some(PerRoute::Fault(f)) => f,
                    _ => own,
                };
                f.on_request(&req.headers, cx.log).await
            }
            HttpFilter::Cors(cors) => cors.on_request(req, cx),
            HttpFilter::LocalRateLimit(own) => {
                let l = match cx.most_specific() {
                    Some(PerRoute::LocalRateLimit(l)) => l,
                    _ => own,
                };
                l.on_request(req, cx)
            }
            HttpFilter::Wasm(w) => match w.on_request(req, cx.body_follows, cx.info, &mut cx.response.wasm).await {
                Ok(()) => Verdict::Continue,
                Err(crate::wasm::stream::Stop::Reply(reply)) => Verdict::Respond(reply),
                Err(crate::wasm::stream::Stop::Reset) => Verdict::Reset,
            },
        }
    }

    /// A wasm filter: plugins read the stream's facts (addresses, TLS).
    pub fn is_wasm(&self) -> bool {
        matches!(self, HttpFilter::Wasm(_))
    }
}

impl PerRoute {
    /// Compiles a `typed_per_filter_config` value.
    pub fn compile(any: &Any, path: &str) -> Result<Self> {
        match weft_envoy_api::type_name(&any.type_url) {
            fault::TYPE => Ok(PerRoute::Fault(fault::Fault::compile(&unpack(any, fault::TYPE, path)?, path)?)),
            cors::POLICY_TYPE => Ok(PerRoute::Cors(cors::Policy::compile(&unpack(any, cors::POLICY_TYPE, path)?, path)?)),
            local_ratelimit::TYPE => Ok(PerRoute::LocalRateLimit(local_ratelimit::LocalRateLimit::compile(
                &unpack(any, local_ratelimit::TYPE, path)?,
                path,
                true,
            )?)),
            other => Err(crate::model::ConfigError::new(
                path,
                format!("per-route config {other} is not supported by weft-proxy"),
            )),
        }
    }
}
