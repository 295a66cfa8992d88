//! proxy-wasm plugins (ABI 0.2.1) on wasmtime: Envoy's
//! `envoy.filters.http.wasm`, so a `.wasm` built for Envoy runs here.
//!
//! ```text
//!  config ─► plugin::Plugin::compile ─► engine::compile (once per sha256) ─► vm::Vm::start (checked)
//!  request ─► stream::Filter::on_request ─► vm::with_vm (this worker's VM) ─► host.rs (the ABI) ─► plugin
//!  request body (read by the router) ─► stream::Decoder (chunks, buffering) ─► upstream
//!  response ─► stream::Encoder (headers, body buffering, trailers) ─► client; Stream drop ─► on_done/on_log/on_delete
//! ```
//! | module | what |
//! | --- | --- |
//! | `abi` | the ABI's numbers and the serialized header map |
//! | `engine` | the wasmtime engine, module cache, epoch clock |
//! | `code_cache` | compiled code on disk, by module sha256 |
//! | `plugin` | `PluginConfig` → `Plugin` (shared by identical configs) |
//! | `vm` | one instance per worker: lifecycle, limits, failures, timers, callout dispatch |
//! | `host` | the `env.proxy_*` functions |
//! | `wasi` | the WASI calls toolchains import |
//! | `stream` | the HTTP filter: a plugin context per request |
//! | `testkit` | a plugin in-process, for plugin authors' tests |
//! | `callout` | HTTP and unary gRPC callouts and how their answers read |
//! | `grpc_stream` | gRPC streams: the task carrying one, its events |
//! | `grpc` | gRPC framing and statuses, as Envoy's async client reads them |
//! | `properties`, `shared`, `metrics`, `remote` | what the host functions reach |

pub mod abi;
mod callout;
#[allow(unsafe_code)]
mod code_cache;
pub mod engine;
mod grpc;
pub mod grpc_stream;
pub mod host;
pub mod metrics;
pub mod plugin;
pub mod properties;
mod remote;
pub mod shared;
pub mod stream;
pub mod testkit;
pub mod vm;
mod wasi;

use std::collections::HashMap;
use std::sync::Arc;

use weft_envoy_api::pb::envoy::extensions::filters::http::wasm::v3 as xds_wasm_filter;

use crate::model::{Cluster, ConfigError, Result};

pub use stream::{Decoder, Encoder, Filter, Stream, TYPE};

impl Filter {
    /// Compiles the filter's `Wasm` message at `path`.
    pub fn compile(filter: &xds_wasm_filter::Wasm, path: &str, clusters: &HashMap<String, Arc<Cluster>>) -> Result<Filter> {
        let Some(config) = &filter.config else {
            return Err(ConfigError::new(format!("{path}.config"), "config is required"));
        };
        Ok(Filter { plugin: plugin::Plugin::compile(config, &format!("{path}.config"), clusters)? })
    }
}

/// The wasm part of `/stats/prometheus`: plugins' own metrics and the host's.
pub fn prometheus() -> String {
    use std::sync::atomic::Ordering;
    let mut out = metrics::Metrics::global().render();
    out.push_str(&format!(
        "# TYPE weft_wasm_vm_created_total counter\nweft_wasm_vm_created_total {}\n# TYPE weft_wasm_vm_failures_total counter\nweft_wasm_vm_failures_total {}\n",
        vm::CREATED.load(Ordering::Relaxed),
        vm::FAILURES.load(Ordering::Relaxed)
    ));
    out
}
