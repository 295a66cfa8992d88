//! What a plugin implements: one [`RootContext`] per plugin configuration,
//! and an [`HttpContext`] per HTTP stream, created by the root.
//!
//! Every method has a default that lets traffic through, so a plugin
//! implements only the phases it cares about. Callbacks run one at a time
//! (a VM is single-threaded); host calls made inside act on the context
//! being called.

/// What a stream callback tells the host to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pass the headers (or body chunk, or trailers) on.
    Continue,
    /// Hold them. From a headers callback the whole direction stops, body
    /// included (Envoy: StopAllIteration; no body callback runs meanwhile)
    /// until [`resume_request`](crate::http::resume_request) /
    /// [`resume_response`](crate::http::resume_response) or a local
    /// response. From a body callback, the host buffers the chunk and calls
    /// again with everything buffered so far as more arrives.
    Pause,
}

/// The plugin as configured: created when the host starts it (Envoy: once
/// per worker VM, and once on the main thread), lives as long as the
/// configuration.
pub trait RootContext {
    /// The VM started; `vm_config` is the VM's configuration (often empty).
    /// Returning `false` fails the start. Default: accept.
    fn on_vm_start(&mut self, _vm_config: &[u8]) -> bool {
        true
    }

    /// The plugin's configuration (parse it with
    /// [`config::from_json`](crate::config::from_json)). Returning `false`
    /// rejects the configuration: the host refuses the filter. Runs again
    /// with each new configuration. Default: accept.
    fn on_configure(&mut self, _config: &[u8]) -> bool {
        true
    }

    /// The timer set with [`set_tick_period`](crate::set_tick_period) fired.
    fn on_tick(&mut self) {}

    /// An item arrived on a [`Queue`](crate::shared::Queue) this VM registered.
    fn on_queue_ready(&mut self, _queue_id: u32) {}

    /// A new HTTP stream. `None` (the default) leaves it alone: every
    /// callback continues.
    fn new_http_context(&mut self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        None
    }

    /// The host is shutting the plugin down. Return `false` to finish
    /// asynchronously, then call [`done`](crate::done). Default: `true`.
    fn on_done(&mut self) -> bool {
        true
    }
}

/// One HTTP request/response pair. `end_of_stream` is true when no body
/// (or no more body) follows.
pub trait HttpContext {
    /// Request headers arrived ([`REQUEST_HEADERS`](crate::http::REQUEST_HEADERS)).
    fn on_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    /// A request body chunk; `body_size` is what is buffered now
    /// ([`REQUEST_BODY`](crate::http::REQUEST_BODY)).
    fn on_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_request_trailers(&mut self, _num_trailers: usize) -> Action {
        Action::Continue
    }

    /// Response headers arrived ([`RESPONSE_HEADERS`](crate::http::RESPONSE_HEADERS)),
    /// from the upstream or from a local response.
    fn on_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    /// A response body chunk ([`RESPONSE_BODY`](crate::http::RESPONSE_BODY)).
    fn on_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_response_trailers(&mut self, _num_trailers: usize) -> Action {
        Action::Continue
    }

    /// The stream is over (completed or reset): every map is still
    /// readable. Access-log time.
    fn on_log(&mut self) {}
}
