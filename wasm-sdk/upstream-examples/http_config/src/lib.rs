//! The upstream SDK's classic `http_config` plugin, rewritten against the
//! `proxy-wasm` crate: the plugin configuration, as plain text, becomes
//! the value of a `custom-header` response header.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ConfigRoot { value: String::new() }) });
}}

struct ConfigRoot {
    value: String,
}

impl Context for ConfigRoot {}

impl RootContext for ConfigRoot {
    fn on_configure(&mut self, _: usize) -> bool {
        if let Some(config) = self.get_plugin_configuration() {
            self.value = String::from_utf8_lossy(&config).into_owned();
        }
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AddHeader { value: self.value.clone() }))
    }
}

struct AddHeader {
    value: String,
}

impl Context for AddHeader {}

impl HttpContext for AddHeader {
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.add_http_response_header("custom-header", &self.value);
        Action::Continue
    }
}
