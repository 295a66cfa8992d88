//! weft-proxy: an Envoy-config-compatible proxy built on Pingora.
//!
//! ```text
//!  bootstrap (file / --config-yaml) ─► bootstrap::load ─► model::Config::compile ─► server::run
//!                                        support check        compiled tables          listeners ─► http (router)
//! ```
//! Started like Envoy: `weft-proxy -c bootstrap.yaml [--concurrency N]
//! [--log-level info] [--mode validate]`.

// Denied, not forbidden: loading compiled wasm code from the disk cache
// (wasm::code_cache) is the one unsafe operation, allowed there alone.
#![deny(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod bootstrap;
pub mod dns;
pub mod filter;
pub mod h1;
pub mod health;
pub mod http;
pub mod io;
pub mod model;
pub mod server;
pub mod sources;
pub mod stats;
pub mod tcp;
pub mod tls;
pub mod upstream;
pub mod wasm;
pub mod xds;
