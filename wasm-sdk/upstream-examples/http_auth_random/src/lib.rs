//! The upstream SDK's classic `http_auth_random` plugin, rewritten against
//! the `proxy-wasm` crate: every request waits for a call to the `httpbin`
//! cluster (`GET /bytes/1`); an even first byte of the answer lets it
//! through, anything else gets 403 `Access forbidden.`. Responses are
//! marked `Powered-By: proxy-wasm`.

use std::time::Duration;

use log::trace;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(RandomAuth) });
}}

struct RandomAuth;

impl HttpContext for RandomAuth {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let call = self.dispatch_http_call(
            "httpbin",
            vec![(":method", "GET"), (":path", "/bytes/1"), (":authority", "httpbin.org")],
            None,
            vec![],
            Duration::from_secs(1),
        );
        match call {
            Ok(_) => Action::Pause,
            Err(status) => panic!("dispatch_http_call failed: {status:?}"),
        }
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_response_header("Powered-By", Some("proxy-wasm"));
        Action::Continue
    }
}

impl Context for RandomAuth {
    fn on_http_call_response(&mut self, _: u32, _: usize, body_size: usize, _: usize) {
        let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
        if body.first().is_some_and(|b| b % 2 == 0) {
            trace!("Access granted.");
            self.resume_http_request();
            return;
        }
        trace!("Access forbidden.");
        self.send_http_response(403, vec![("Powered-By", "proxy-wasm")], Some(b"Access forbidden.\n"));
    }
}
