//! A response body transformer: replaces every `find` with `replace` in
//! the whole response body (and, with `"uppercase": true`, upper-cases its
//! ASCII letters), keeping the response correctly framed.
//!
//! ```text
//! on_response_headers  length may change? drop content-length; Continue
//! on_response_body     Pause until end_of_stream (the host buffers),
//!                      then read all, rewrite, replace; Continue
//! ```
//!
//! Why not hold the headers and set the new `content-length` at the end?
//! Because on Envoy a `Pause` from a headers callback stops the whole
//! stream (StopAllIteration): no body callback comes until the plugin
//! resumes, so the plugin would never see the body. Headers therefore go
//! first: when the rewrite keeps the length (same-length replacement,
//! ASCII upper-casing) the upstream's `content-length` stays right; when it
//! may not, it is removed and the proxy frames the new body itself
//! (chunked on HTTP/1.1).
//!
//! Configuration: `{"find": "world", "replace": "weft", "uppercase": false}`.

use std::rc::Rc;

use serde::Deserialize;
use weft_plugin::http::{RESPONSE_BODY, RESPONSE_HEADERS};
use weft_plugin::{config, plugin, Action, HttpContext, RootContext, Status};

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    find: String,
    replace: String,
    uppercase: bool,
}

impl Config {
    fn rewrite(&self, body: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(body);
        let text = if self.find.is_empty() { text.into_owned() } else { text.replace(&self.find, &self.replace) };
        if self.uppercase {
            text.to_ascii_uppercase().into_bytes()
        } else {
            text.into_bytes()
        }
    }

    /// Whether every body keeps its length through [`rewrite`](Self::rewrite).
    fn keeps_length(&self) -> bool {
        self.find.len() == self.replace.len()
    }
}

#[derive(Default)]
struct Body {
    config: Rc<Config>,
}

impl RootContext for Body {
    fn on_configure(&mut self, config: &[u8]) -> bool {
        config::parse(config).map(|c| self.config = Rc::new(c)).is_some()
    }

    fn new_http_context(&mut self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Rewrite { config: self.config.clone() }))
    }
}

struct Rewrite {
    config: Rc<Config>,
}

impl Rewrite {
    fn rewrite_buffered(&self) -> Result<(), Status> {
        let body = self.config.rewrite(&RESPONSE_BODY.read_all()?);
        RESPONSE_BODY.replace(&body)
    }
}

impl HttpContext for Rewrite {
    fn on_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if !end_of_stream && !self.config.keeps_length() {
            if let Err(e) = RESPONSE_HEADERS.remove("content-length") {
                weft_plugin::error!("body: cannot drop content-length: {e}");
            }
        }
        Action::Continue
    }

    fn on_response_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause; // keep buffering
        }
        if let Err(e) = self.rewrite_buffered() {
            weft_plugin::error!("body: cannot rewrite: {e}");
        }
        Action::Continue
    }
}

plugin!(Body::default);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites() {
        let c = Config { find: "up".into(), replace: "down".into(), uppercase: false };
        assert_eq!(c.rewrite(b"up and up"), b"down and down");
        assert!(!c.keeps_length());
        let c = Config { uppercase: true, ..Config::default() };
        assert_eq!(c.rewrite("abcß".as_bytes()), "ABCß".as_bytes());
        assert!(c.keeps_length());
    }
}
