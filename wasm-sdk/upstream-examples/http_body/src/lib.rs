//! The upstream SDK's classic `http_body` plugin, rewritten against the
//! `proxy-wasm` crate: buffers each response body and, when it mentions
//! `secret`, replaces it with a notice of how many bytes were redacted.
//! It drops `content-length` up front, since the length may change.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Redact) });
}}

struct Redact;

impl Context for Redact {}

impl HttpContext for Redact {
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_response_header("content-length", None);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            // Wait for the whole body.
            return Action::Pause;
        }
        if let Some(body) = self.get_http_response_body(0, body_size) {
            if String::from_utf8_lossy(&body).contains("secret") {
                let notice = format!("Original message body ({body_size} bytes) redacted.\n");
                self.set_http_response_body(0, body_size, notice.as_bytes());
            }
        }
        Action::Continue
    }
}
