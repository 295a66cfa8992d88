//! Adds, sets and removes request and response headers, as its JSON
//! configuration says:
//!
//! ```json
//! {
//!   "request":  { "remove": ["x-secret"], "set": { "x-mode": "rewritten" }, "add": { "x-plugin": "weft" } },
//!   "response": { "remove": ["x-upstream"], "set": { "server": "weft" }, "add": { "x-served-by": "plugin" } },
//!   "report": true
//! }
//! ```
//!
//! Per direction, `remove` runs first, then `set` (replaces every value),
//! then `add` (appends a value). With `report`, the plugin also lists the
//! header names it was shown, in the host's order, in
//! `x-plugin-request-names` (sent upstream) and `x-plugin-response-names`
//! (sent to the client): what a host exposes to plugins is part of the ABI.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::Deserialize;
use weft_plugin::http::{HeaderMap, REQUEST_HEADERS, RESPONSE_HEADERS};
use weft_plugin::{config, plugin, Action, HttpContext, RootContext, Status};

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    request: Edits,
    response: Edits,
    report: bool,
}

/// The edits for one direction.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Edits {
    remove: Vec<String>,
    set: BTreeMap<String, String>,
    add: BTreeMap<String, String>,
}

impl Edits {
    fn apply(&self, map: HeaderMap) -> Result<(), Status> {
        for name in &self.remove {
            map.remove(name)?;
        }
        for (name, value) in &self.set {
            map.set(name, value)?;
        }
        for (name, value) in &self.add {
            map.add(name, value)?;
        }
        Ok(())
    }
}

/// The root holds the parsed configuration; streams share it.
#[derive(Default)]
struct Headers {
    config: Rc<Config>,
}

impl RootContext for Headers {
    fn on_configure(&mut self, config: &[u8]) -> bool {
        config::parse(config).map(|c| self.config = Rc::new(c)).is_some()
    }

    fn new_http_context(&mut self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { config: self.config.clone() }))
    }
}

struct Stream {
    config: Rc<Config>,
}

impl Stream {
    /// Reports (before editing: what the host showed us), then edits.
    fn edit(&self, map: HeaderMap, edits: &Edits, report_header: &str) -> Action {
        let result = (|| {
            if self.config.report {
                let names: Vec<String> = map.all()?.into_iter().map(|(k, _)| k).collect();
                map.set(report_header, names.join(","))?;
            }
            edits.apply(map)
        })();
        if let Err(e) = result {
            weft_plugin::warn!("headers: cannot edit {report_header}: {e}");
        }
        Action::Continue
    }
}

impl HttpContext for Stream {
    fn on_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.edit(REQUEST_HEADERS, &self.config.request, "x-plugin-request-names")
    }

    fn on_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.edit(RESPONSE_HEADERS, &self.config.response, "x-plugin-response-names")
    }
}

plugin!(Headers::default);
