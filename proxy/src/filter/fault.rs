//! `envoy.filters.http.fault`: injected delays and aborts, by percentage,
//! by request header (`x-envoy-fault-*`), limited to requests matching
//! `headers` and to `max_active_faults` at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weft_envoy_api::pb::envoy::extensions::filters::common::fault::v3 as xds_common_fault;
use weft_envoy_api::pb::envoy::extensions::filters::http::fault::v3 as xds_fault;

use super::Verdict;
use crate::access_log::Entry;
use crate::http::LocalReply;
use crate::model::matcher::HeaderMatcher;
use crate::model::{duration, ConfigError, Fraction, Result};

pub const TYPE: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";

const DELAY_HEADER: &str = "x-envoy-fault-delay-request";
const DELAY_PERCENT_HEADER: &str = "x-envoy-fault-delay-request-percentage";
const ABORT_HEADER: &str = "x-envoy-fault-abort-request";
const ABORT_PERCENT_HEADER: &str = "x-envoy-fault-abort-request-percentage";
const ABORT_GRPC_HEADER: &str = "x-envoy-fault-abort-grpc-request";

/// Header-provided numerator over the configured denominator, capped by
/// the configured percentage (Envoy never exceeds the config).
fn with_header_numerator(f: Fraction, headers: &http::HeaderMap, name: &str) -> Fraction {
    match headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(n) => Fraction { numerator: n.min(f.numerator), denominator: f.denominator },
        None => f,
    }
}

#[derive(Debug, Clone)]
enum Delay {
    Fixed(Duration),
    FromHeader,
}

#[derive(Debug, Clone)]
enum AbortStatus {
    Http(u16),
    /// A gRPC status: the reply is a 200 that a gRPC client reads as it.
    Grpc(u32),
    /// `x-envoy-fault-abort-request`, else `x-envoy-fault-abort-grpc-request`.
    FromHeader,
}

#[derive(Debug)]
pub struct Fault {
    delay: Option<(Delay, Fraction)>,
    abort: Option<(AbortStatus, Fraction, Bytes)>,
    headers: Vec<HeaderMatcher>,
    max_active: Option<u64>,
    active: Arc<AtomicU64>,
}

impl Fault {
    pub fn compile(f: &xds_fault::HttpFault, path: &str) -> Result<Self> {
        use xds_common_fault::fault_delay::FaultDelaySecifier as D;
        use xds_fault::fault_abort::ErrorType as A;
        let delay = match &f.delay {
            Some(d) => {
                let dpath = format!("{path}.delay");
                let kind = match &d.fault_delay_secifier {
                    Some(D::FixedDelay(t)) => Delay::Fixed(duration(t)),
                    Some(D::HeaderDelay(_)) => Delay::FromHeader,
                    None => return Err(ConfigError::new(dpath, "fixed_delay or header_delay is required")),
                };
                Some((kind, Fraction::compile(d.percentage.as_ref(), &format!("{dpath}.percentage"), Fraction::NEVER)?))
            }
            None => None,
        };
        let abort = match &f.abort {
            Some(a) => {
                let apath = format!("{path}.abort");
                let status = match &a.error_type {
                    Some(A::HttpStatus(s)) if (200..600).contains(s) => AbortStatus::Http(*s as u16),
                    Some(A::HttpStatus(s)) => {
                        return Err(ConfigError::new(format!("{apath}.http_status"), format!("{s} is not in [200, 600)")))
                    }
                    Some(A::HeaderAbort(_)) => AbortStatus::FromHeader,
                    Some(A::GrpcStatus(s)) => AbortStatus::Grpc(*s),
                    None => return Err(ConfigError::new(apath, "http_status, grpc_status or header_abort is required")),
                };
                let body = if a.response_body.is_empty() {
                    Bytes::from_static(b"fault filter abort")
                } else {
                    Bytes::from(a.response_body.clone())
                };
                Some((status, Fraction::compile(a.percentage.as_ref(), &format!("{apath}.percentage"), Fraction::NEVER)?, body))
            }
            None => None,
        };
        let headers = f
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| HeaderMatcher::compile(h, &format!("{path}.headers[{i}]")))
            .collect::<Result<_>>()?;
        Ok(Fault {
            delay,
            abort,
            headers,
            max_active: f.max_active_faults.as_ref().map(|m| m.value as u64),
            active: Arc::default(),
        })
    }

    pub async fn on_request(&self, headers: &http::HeaderMap, log: &mut Entry) -> Verdict {
        if !self.headers.iter().all(|m| m.matches(headers)) {
            return Verdict::Continue;
        }
        if self.max_active.is_some_and(|max| self.active.load(Ordering::Relaxed) >= max) {
            return Verdict::Continue;
        }
        // Counted as active for the duration of the delay (Envoy's gauge).
        let _active = ActiveFault::new(&self.active);
        if let Some(wait) = self.delay_for(headers) {
            log.flag("DI");
            tokio::time::sleep(wait).await;
        }
        match self.abort_with(headers) {
            Some(reply) => {
                log.flag("FI");
                Verdict::Respond(reply)
            }
            None => Verdict::Continue,
        }
    }

    fn delay_for(&self, headers: &http::HeaderMap) -> Option<Duration> {
        let (kind, fraction) = self.delay.as_ref()?;
        let (wait, fraction) = match kind {
            Delay::Fixed(d) => (*d, *fraction),
            Delay::FromHeader => {
                let ms = headers.get(DELAY_HEADER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
                (Duration::from_millis(ms), with_header_numerator(*fraction, headers, DELAY_PERCENT_HEADER))
            }
        };
        fraction.roll().then_some(wait)
    }

    fn abort_with(&self, headers: &http::HeaderMap) -> Option<LocalReply> {
        let (kind, fraction, body) = self.abort.as_ref()?;
        // A gRPC status goes with a 200, as in Envoy: a gRPC client reads
        // the status, anyone else gets the 200.
        let (status, grpc_status, fraction) = match kind {
            AbortStatus::Http(s) => (*s, None, *fraction),
            AbortStatus::Grpc(g) => (200, Some(*g), *fraction),
            AbortStatus::FromHeader => {
                let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u32>().ok();
                // An HTTP status out of range counts as none, as in Envoy.
                let (status, grpc_status) = match number(ABORT_HEADER).filter(|s| (200..600).contains(s)) {
                    Some(s) => (s as u16, None),
                    None => (200, Some(number(ABORT_GRPC_HEADER)?)),
                };
                (status, grpc_status, with_header_numerator(*fraction, headers, ABORT_PERCENT_HEADER))
            }
        };
        if !fraction.roll() {
            return None;
        }
        let mut reply = LocalReply::new(status, "");
        reply.body = body.clone();
        reply.grpc_status = grpc_status;
        Some(reply)
    }
}

/// Increments the active-fault count for its lifetime.
struct ActiveFault<'a>(&'a AtomicU64);

impl<'a> ActiveFault<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        ActiveFault(counter)
    }
}

impl Drop for ActiveFault<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
