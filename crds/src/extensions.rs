//! `extensions.istio.io`: proxy extensions. Only `WasmPlugin`, in
//! `v1alpha1`, as Istio serves it.

pub mod wasm_plugin;

pub use wasm_plugin::{WasmPlugin, WasmPluginSpec};

/// The API group.
pub const GROUP: &str = "extensions.istio.io";
/// The one version the group is served in.
pub const VERSION: &str = "v1alpha1";
