//! HTTP filters that run before the router, in the order the connection
//! manager lists them (Envoy's decoder filters).
//!
//! ```text
//!  request ─► route lookup ─► fault ─► ... ─► router (http::forward)
//!                      └─ per-route config (typed_per_filter_config) overrides a filter by name
//! ```
//! Each filter is a module with its config compiler and its request-time
//! logic; this file only dispatches.

pub mod fault;

use weft_envoy_api::pb::google::protobuf::Any;

use crate::access_log::Entry;
use crate::http::LocalReply;
use crate::model::listener::unpack;
use crate::model::Result;

/// A compiled HTTP filter (router excluded: it is the last filter, always).
#[derive(Debug)]
pub enum HttpFilter {
    Fault(fault::Fault),
}

/// A filter's per-route override, looked up by the filter's name.
#[derive(Debug)]
pub enum PerRoute {
    Fault(fault::Fault),
}

/// What a filter decided about a request.
pub enum Verdict {
    Continue,
    Respond(LocalReply),
}

impl HttpFilter {
    /// Compiles an `http_filters[]` entry that is not the router.
    pub fn compile(any: &Any, path: &str) -> Result<Self> {
        match weft_envoy_api::type_name(&any.type_url) {
            fault::TYPE => Ok(HttpFilter::Fault(fault::Fault::compile(&unpack(any, fault::TYPE, path)?, path)?)),
            other => Err(crate::model::ConfigError::new(path, format!("HTTP filter {other} is not supported by weft-proxy"))),
        }
    }

    /// Runs the filter on a request, with the route's override if any.
    /// `log` takes the response flags a filter sets (FI, DI).
    pub async fn on_request(&self, headers: &http::HeaderMap, per_route: Option<&PerRoute>, log: &mut Entry) -> Verdict {
        match (self, per_route) {
            (HttpFilter::Fault(_), Some(PerRoute::Fault(f))) | (HttpFilter::Fault(f), None) => f.on_request(headers, log).await,
        }
    }
}

impl PerRoute {
    /// Compiles a `typed_per_filter_config` value.
    pub fn compile(any: &Any, path: &str) -> Result<Self> {
        match weft_envoy_api::type_name(&any.type_url) {
            fault::TYPE => Ok(PerRoute::Fault(fault::Fault::compile(&unpack(any, fault::TYPE, path)?, path)?)),
            other => Err(crate::model::ConfigError::new(
                path,
                format!("per-route config {other} is not supported by weft-proxy"),
            )),
        }
    }
}
