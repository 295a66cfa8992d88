//! External authorization: every request waits while the plugin asks an
//! HTTP service (a cluster of the proxy) whether its `authorization`
//! header is good.
//!
//! ```text
//! client ─► proxy: on_request_headers ── HttpCall GET {path} ──► auth service
//!                  (Pause)                 authorization: ...        │
//!           on response: 2xx ─► copy x-auth-user, resume ─► upstream │
//!                        else ─► 403 "denied by auth plugin" ◄───────┘
//! ```
//!
//! Configuration: `{"cluster": "authz", "path": "/check", "timeout_ms": 1000}`.
//! A call that cannot be sent or fails is a denial too (fail closed).

use std::rc::Rc;
use std::time::Duration;

use serde::Deserialize;
use weft_plugin::http::{self, REQUEST_HEADERS};
use weft_plugin::{config, plugin, Action, HttpCall, HttpContext, Response, RootContext};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The auth service's cluster, as the proxy's configuration names it.
    cluster: String,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

fn default_path() -> String {
    "/check".into()
}

fn default_timeout_ms() -> u64 {
    1000
}

/// The auth service's answer that is passed upstream on success.
const USER_HEADER: &str = "x-auth-user";
const DENIED: &str = "denied by auth plugin\n";

#[derive(Default)]
struct Auth {
    config: Option<Rc<Config>>,
}

impl RootContext for Auth {
    fn on_configure(&mut self, config: &[u8]) -> bool {
        self.config = config::parse(config).map(Rc::new);
        self.config.is_some()
    }

    fn new_http_context(&mut self, _id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(Check { config }))
    }
}

struct Check {
    config: Rc<Config>,
}

fn deny() {
    if let Err(e) = http::send_response(403, &[("content-type", "text/plain")], DENIED) {
        weft_plugin::error!("auth: cannot deny: {e}");
    }
}

/// Runs when the auth service answered, in this request's context.
fn on_answer(answer: Result<Response, weft_plugin::CallFailed>) {
    let allowed = match answer {
        Ok(r) if r.is_success() => r,
        Ok(r) => {
            weft_plugin::info!("auth: denied with status {}", r.status);
            return deny();
        }
        Err(e) => {
            weft_plugin::warn!("auth: {e}");
            return deny();
        }
    };
    let result = match allowed.header(USER_HEADER) {
        Some(user) => REQUEST_HEADERS.set(USER_HEADER, user),
        // Never trust a client-supplied identity.
        None => REQUEST_HEADERS.remove(USER_HEADER),
    }
    .and_then(|()| http::resume_request());
    if let Err(e) = result {
        weft_plugin::error!("auth: cannot resume: {e}");
    }
}

impl HttpContext for Check {
    fn on_request_headers(&mut self, _: usize, _: bool) -> Action {
        let mut call = HttpCall::new(&self.config.cluster)
            .path(&self.config.path)
            .timeout(Duration::from_millis(self.config.timeout_ms));
        if let Some(authorization) = REQUEST_HEADERS.get("authorization") {
            call = call.header("authorization", &authorization);
        }
        let sent = call.send(on_answer);
        if let Err(e) = sent {
            weft_plugin::warn!("auth: cannot call {}: {e}", self.config.cluster);
            deny();
        }
        Action::Pause
    }
}

plugin!(Auth::default);
