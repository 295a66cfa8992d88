//! A per-client rate limiter: one token bucket per client in shared data
//! (shared by every worker's VM), taken with compare-and-swap, refilled to
//! full by the root context's tick timer.
//!
//! ```text
//! request ─► client = x-client-id header, else the source IP
//!            shared "ratelimit/bucket/<client>" -1 (CAS) ─► 0 left? 429
//! tick (every refill_ms) ─► every known client's bucket := max_tokens
//! ```
//!
//! Configuration: `{"max_tokens": 3, "refill_ms": 1000, "client_header": "x-client-id"}`.
//! The known clients are a shared list too ("ratelimit/clients"), so any
//! worker's tick refills buckets another worker created.

use std::rc::Rc;
use std::time::Duration;

use serde::Deserialize;
use weft_plugin::http::{self, REQUEST_HEADERS};
use weft_plugin::{config, plugin, shared, Action, HttpContext, RootContext, Status};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    max_tokens: u32,
    refill_ms: u64,
    client_header: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_tokens: 3,
            refill_ms: 1000,
            client_header: "x-client-id".into(),
        }
    }
}

const CLIENTS: &str = "ratelimit/clients";

fn bucket_key(client: &str) -> String {
    format!("ratelimit/bucket/{client}")
}

/// Takes one token from a bucket (a decimal count; a new bucket is full).
/// Returns whether there was one.
fn take_token(client: &str, max_tokens: u32) -> Result<bool, Status> {
    shared::update(&bucket_key(client), |current| {
        let tokens = current.map_or(max_tokens, parse_count);
        match tokens.checked_sub(1) {
            Some(left) => (Some(left.to_string().into_bytes()), true),
            None => (None, false),
        }
    })
}

fn parse_count(bytes: &[u8]) -> u32 {
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Adds `client` to the shared list of clients once.
fn remember(client: &str) -> Result<(), Status> {
    shared::update(CLIENTS, |current| {
        let list = current.map(String::from_utf8_lossy).unwrap_or_default();
        if list.lines().any(|c| c == client) {
            return (None, ());
        }
        (Some(format!("{list}{client}\n").into_bytes()), ())
    })
}

#[derive(Default)]
struct RateLimit {
    config: Rc<Config>,
}

impl RootContext for RateLimit {
    fn on_configure(&mut self, config: &[u8]) -> bool {
        let Some(config) = config::parse::<Config>(config) else {
            return false;
        };
        if let Err(e) = weft_plugin::set_tick_period(Duration::from_millis(config.refill_ms)) {
            weft_plugin::error!("ratelimit: cannot start the refill timer: {e}");
            return false;
        }
        self.config = Rc::new(config);
        true
    }

    /// Refills every known bucket. Several VMs may tick: refilling to full
    /// is the same whoever does it.
    fn on_tick(&mut self) {
        let Ok(Some(clients)) = shared::get(CLIENTS) else {
            return;
        };
        let full = self.config.max_tokens.to_string().into_bytes();
        for client in String::from_utf8_lossy(&clients.value).lines() {
            if let Err(e) = shared::set(&bucket_key(client), &full, None) {
                weft_plugin::warn!("ratelimit: cannot refill {client}: {e}");
            }
        }
    }

    fn new_http_context(&mut self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Limit { config: self.config.clone() }))
    }
}

struct Limit {
    config: Rc<Config>,
}

impl Limit {
    fn client(&self) -> String {
        if let Some(id) = REQUEST_HEADERS.get(&self.config.client_header) {
            return id;
        }
        // "127.0.0.1:53012" → "127.0.0.1" (the port changes per connection).
        let address = weft_plugin::property_string(&["source", "address"]).unwrap_or_default();
        match address.rsplit_once(':') {
            Some((ip, _)) => ip.to_string(),
            None => address,
        }
    }
}

impl HttpContext for Limit {
    fn on_request_headers(&mut self, _: usize, _: bool) -> Action {
        let client = self.client();
        let allowed = remember(&client).and_then(|()| take_token(&client, self.config.max_tokens));
        match allowed {
            Ok(true) => Action::Continue,
            Ok(false) => {
                let headers = [("content-type", "text/plain"), ("x-ratelimit-client", client.as_str())];
                if let Err(e) = http::send_response(429, &headers, "rate limited\n") {
                    weft_plugin::error!("ratelimit: cannot answer 429: {e}");
                }
                Action::Pause
            }
            // Shared data unavailable: fail open, and say so.
            Err(e) => {
                weft_plugin::warn!("ratelimit: {e}; letting {client} through");
                Action::Continue
            }
        }
    }
}

plugin!(RateLimit::default);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_leniently() {
        assert_eq!(parse_count(b"7"), 7);
        assert_eq!(parse_count(b"junk"), 0);
        assert_eq!(bucket_key("a"), "ratelimit/bucket/a");
    }
}
