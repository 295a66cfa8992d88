//! Plugin-defined metrics, exported by the proxy beside its own (on
//! `/stats/prometheus`):
//!
//! - `weft_plugin_requests_total` (counter): requests seen;
//! - `weft_plugin_active_requests` (gauge): requests in flight;
//! - `weft_plugin_response_bytes` (histogram): response body sizes;
//! - `weft_plugin_tagged_ok_total` (counter): requests with an `x-tag`
//!   header answered 200, counted in `on_log` from both header maps (as
//!   access-log plugins do).
//!
//! No configuration.

use weft_plugin::metrics::{Counter, Gauge, Histogram};
use weft_plugin::http::{REQUEST_HEADERS, RESPONSE_HEADERS};
use weft_plugin::{plugin, Action, HttpContext, RootContext, Status};

/// Metric handles are plain ids: every stream gets a copy.
#[derive(Clone, Copy)]
struct Metrics {
    requests: Counter,
    active: Gauge,
    response_bytes: Histogram,
    tagged_ok: Counter,
}

impl Metrics {
    fn define() -> Result<Metrics, Status> {
        Ok(Metrics {
            requests: Counter::define("weft_plugin_requests_total")?,
            active: Gauge::define("weft_plugin_active_requests")?,
            response_bytes: Histogram::define("weft_plugin_response_bytes")?,
            tagged_ok: Counter::define("weft_plugin_tagged_ok_total")?,
        })
    }
}

#[derive(Default)]
struct Root {
    metrics: Option<Metrics>,
}

impl RootContext for Root {
    fn on_configure(&mut self, _config: &[u8]) -> bool {
        match Metrics::define() {
            Ok(m) => {
                self.metrics = Some(m);
                true
            }
            Err(e) => {
                weft_plugin::error!("metrics: cannot define metrics: {e}");
                false
            }
        }
    }

    fn new_http_context(&mut self, _id: u32) -> Option<Box<dyn HttpContext>> {
        let metrics = self.metrics?;
        Some(Box::new(Measure { metrics, counted: false, body_bytes: 0 }))
    }
}

struct Measure {
    metrics: Metrics,
    /// Whether this stream was counted in (and must leave) the gauge.
    counted: bool,
    body_bytes: u64,
}

impl HttpContext for Measure {
    fn on_request_headers(&mut self, _: usize, _: bool) -> Action {
        let m = self.metrics;
        self.counted = m.requests.increment().and_then(|()| m.active.adjust(1)).is_ok();
        Action::Continue
    }

    /// Each call sees one chunk (the plugin never pauses): add them up.
    fn on_response_body(&mut self, body_size: usize, _: bool) -> Action {
        self.body_bytes += body_size as u64;
        Action::Continue
    }

    fn on_log(&mut self) {
        let m = self.metrics;
        let mut result = m.response_bytes.record(self.body_bytes);
        if self.counted {
            result = result.and(m.active.adjust(-1));
        }
        let tagged = REQUEST_HEADERS.get("x-tag").is_some();
        if tagged && RESPONSE_HEADERS.get(":status").as_deref() == Some("200") {
            result = result.and(m.tagged_ok.increment());
        }
        if let Err(e) = result {
            weft_plugin::warn!("metrics: {e}");
        }
    }
}

plugin!(Root::default);
