//! `weft-plugin`: write proxy-wasm (ABI 0.2.1) HTTP plugins in Rust that
//! run on weft-proxy and on Envoy alike.
//!
//! A plugin is two types and one macro: a [`RootContext`] (the plugin as
//! configured: config, timers, metrics, shared state) that creates an
//! [`HttpContext`] per stream, and [`plugin!`] naming the root's
//! constructor. The SDK owns the `proxy_on_*` exports and routes each call
//! to the right context:
//!
//! ```text
//!  host (weft-proxy | Envoy)              this crate                 your plugin
//!  proxy_on_configure(root, n) ─────► dispatch ─► config bytes ─► RootContext::on_configure
//!  proxy_on_request_headers(id) ────► dispatch ─────────────────► HttpContext::on_request_headers
//!        ▲                                                             │ http::REQUEST_HEADERS.set(..)
//!        └── proxy_replace_header_map_value ◄── abi (imports "env") ◄──┘
//! ```
//!
//! ```ignore
//! use weft_plugin::{plugin, Action, HttpContext, RootContext, http};
//!
//! #[derive(Default)]
//! struct Hello;
//! impl RootContext for Hello {
//!     fn new_http_context(&mut self, _id: u32) -> Option<Box<dyn HttpContext>> {
//!         Some(Box::new(HelloStream))
//!     }
//! }
//! struct HelloStream;
//! impl HttpContext for HelloStream {
//!     fn on_response_headers(&mut self, _: usize, _: bool) -> Action {
//!         let _ = http::RESPONSE_HEADERS.set("x-hello", "world");
//!         Action::Continue
//!     }
//! }
//! plugin!(Hello::default);
//! ```
//!
//! Build with `make wasm` (crate type `cdylib`, target `wasm32-unknown-unknown`
//! or `wasm32-wasip1`); see the README for the toolchain.

pub mod abi;
pub mod callout;
#[cfg(feature = "serde")]
pub mod config;
mod context;
mod dispatch;
mod host;
pub mod http;
pub mod log;
pub mod map;
pub mod metrics;
pub mod shared;

pub use abi::LogLevel;
pub use callout::{CallFailed, HttpCall, Response};
pub use context::{Action, HttpContext, RootContext};
#[doc(hidden)]
pub use dispatch::__init;
pub use host::{done, now, property, property_string, set_property, set_tick_period, Status};

/// Registers the plugin: `plugin!(MyRoot::default)` or
/// `plugin!(|| MyRoot::new(..))` (no captures). Expands to the module's
/// `_initialize` export, which the host calls once before any context.
#[macro_export]
macro_rules! plugin {
    ($new_root:expr) => {
        #[no_mangle]
        pub extern "C" fn _initialize() {
            $crate::__init($new_root);
        }
    };
}
