//! The upstream SDK's classic `http_headers` plugin, rewritten against the
//! `proxy-wasm` crate: logs every request and response header at trace
//! level, answers `/hello` itself (200, `Hello, World!`, with a
//! `Hello: World` header) and marks every response `Powered-By: proxy-wasm`.

use log::trace;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(HeadersRoot) });
}}

struct HeadersRoot;

impl Context for HeadersRoot {}

impl RootContext for HeadersRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(LogHeaders { context_id }))
    }
}

struct LogHeaders {
    context_id: u32,
}

impl Context for LogHeaders {}

impl HttpContext for LogHeaders {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        for (name, value) in &self.get_http_request_headers() {
            trace!("#{} -> {}: {}", self.context_id, name, value);
        }
        if self.get_http_request_header(":path").as_deref() == Some("/hello") {
            self.send_http_response(200, vec![("Hello", "World"), ("Powered-By", "proxy-wasm")], Some(b"Hello, World!\n"));
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        for (name, value) in &self.get_http_response_headers() {
            trace!("#{} <- {}: {}", self.context_id, name, value);
        }
        self.set_http_response_header("Powered-By", Some("proxy-wasm"));
        Action::Continue
    }

    fn on_log(&mut self) {
        trace!("#{} completed.", self.context_id);
    }
}
