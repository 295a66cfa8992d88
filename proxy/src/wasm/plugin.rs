//! A configured plugin: Envoy's `envoy.extensions.wasm.v3.PluginConfig`
//! compiled into what the workers need to run it.
//!
//! A plugin is checked when its config is compiled: the module compiles,
//! links against the host ABI, and a VM starts and accepts the plugin
//! configuration (`proxy_on_vm_start`, `proxy_on_configure`), or the config
//! is rejected with the reason. Identical plugin configs share one
//! `Plugin` (and so the workers' VMs) across config updates: an xDS push
//! that does not touch the filter keeps the plugins' state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use arc_swap::ArcSwap;
use bytes::Bytes;
use weft_envoy_api::prost::Message;
use sha2::{Digest, Sha256};
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;
use weft_envoy_api::pb::envoy::extensions::wasm::v3 as xds_wasm;
use weft_envoy_api::pb::google::protobuf::Any;

use super::engine::{self, lock, Compiled};
use super::metrics::Metrics;
use super::vm::Vm;
use crate::model::{Cluster, ConfigError, Result};

/// What a plugin's VMs share: identity, configuration, and the stats it
/// defines. One per distinct plugin config in the process.
pub struct Plugin {
    /// Process-unique, the key of the workers' VMs.
    pub id: u64,
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub configuration: Bytes,
    pub vm_configuration: Bytes,
    pub environment: Vec<(String, String)>,
    pub failure: Failure,
    pub module: Arc<Compiled>,
    pub metrics: Arc<Metrics>,
    /// Clusters the plugin's HTTP callouts go to: those of the latest
    /// config that uses the plugin.
    pub clusters: ArcSwap<HashMap<String, Arc<Cluster>>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).field("root_id", &self.root_id).finish_non_exhaustive()
    }
}

/// What a failed VM (a trap, an overrun) does to requests, as Envoy 1.40
/// does it. Unlike Envoy, weft-proxy always makes a new VM after a
/// failure (at most one a second), whatever the policy: Envoy's default
/// (FAIL_CLOSED) answers 503 for good, ours only until the reload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Failure {
    /// The request whose callback failed goes on (the deprecated
    /// `fail_open: true`); else it gets 503.
    pub failing_request_passes: bool,
    /// Requests that find the VM failed go on without the plugin
    /// (`fail_open` or `failure_policy: FAIL_OPEN`); else 503.
    pub later_requests_pass: bool,
}

/// Runtimes users name in configs; all run on wasmtime here.
const RUNTIMES: &[&str] = &[
    "envoy.wasm.runtime.v8",
    "envoy.wasm.runtime.wasmtime",
    "envoy.wasm.runtime.wamr",
    "envoy.wasm.runtime.wavm",
];

impl Plugin {
    /// Compiles a `PluginConfig` at `path` (the filter's `config`).
    pub fn compile(
        config: &xds_wasm::PluginConfig,
        path: &str,
        clusters: &HashMap<String, Arc<Cluster>>,
    ) -> Result<Arc<Plugin>> {
        // One Plugin per distinct config: the encoded message is its key.
        let key: [u8; 32] = Sha256::digest(config.encode_to_vec()).into();
        static PLUGINS: OnceLock<Mutex<HashMap<[u8; 32], Weak<Plugin>>>> = OnceLock::new();
        let plugins = PLUGINS.get_or_init(Default::default);
        if let Some(p) = lock(plugins).get(&key).and_then(Weak::upgrade) {
            p.clusters.store(Arc::new(clusters.clone()));
            return Ok(p);
        }
        let plugin = Arc::new(Self::build(config, path, clusters)?);
        // The plugin must start: a module that traps or refuses its
        // configuration rejects the config, as Envoy's NACK does.
        Vm::start(&plugin).map_err(|e| ConfigError::new(path, e))?;
        let mut map = lock(plugins);
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(key, Arc::downgrade(&plugin));
        Ok(plugin)
    }

    fn build(config: &xds_wasm::PluginConfig, path: &str, clusters: &HashMap<String, Arc<Cluster>>) -> Result<Plugin> {
        let Some(xds_wasm::plugin_config::Vm::VmConfig(vm)) = &config.vm else {
            return Err(ConfigError::new(format!("{path}.vm_config"), "vm_config is required"));
        };
        let vpath = format!("{path}.vm_config");
        if !vm.runtime.is_empty() && !RUNTIMES.contains(&vm.runtime.as_str()) {
            return Err(ConfigError::new(
                format!("{vpath}.runtime"),
                format!("unknown runtime {} (weft-proxy runs {} on wasmtime)", vm.runtime, RUNTIMES.join(", ")),
            ));
        }
        let code = code(vm.code.as_ref(), &format!("{vpath}.code"), clusters)?;
        let module = engine::compile(&code).map_err(|e| ConfigError::new(format!("{vpath}.code"), e))?;
        #[allow(deprecated)] // `fail_open` is deprecated for failure_policy; both are honoured
        let failure = match xds_wasm::FailurePolicy::try_from(config.failure_policy) {
            Ok(xds_wasm::FailurePolicy::FailOpen) => Failure { failing_request_passes: config.fail_open, later_requests_pass: true },
            Ok(xds_wasm::FailurePolicy::Unspecified) => {
                Failure { failing_request_passes: config.fail_open, later_requests_pass: config.fail_open }
            }
            Ok(_) => Failure::default(),
            Err(_) => {
                return Err(ConfigError::new(
                    format!("{path}.failure_policy"),
                    format!("unknown failure_policy {}", config.failure_policy),
                ))
            }
        };
        let mut environment = Vec::new();
        if let Some(env) = &vm.environment_variables {
            for key in &env.host_env_keys {
                if let Ok(value) = std::env::var(key) {
                    environment.push((key.clone(), value));
                }
            }
            let mut pairs: Vec<_> = env.key_values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            pairs.sort();
            environment.extend(pairs);
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Plugin {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: config.name.clone(),
            root_id: config.root_id.clone(),
            vm_id: vm.vm_id.clone(),
            configuration: configuration(config.configuration.as_ref(), &format!("{path}.configuration"))?,
            vm_configuration: configuration(vm.configuration.as_ref(), &format!("{vpath}.configuration"))?,
            environment,
            failure,
            module,
            metrics: Metrics::global(),
            clusters: ArcSwap::from_pointee(clusters.clone()),
        })
    }
}

/// The bytes a plugin reads as its configuration: a `StringValue`'s or
/// `BytesValue`'s value as it is (what Istio and most users send), any
/// other message as its protobuf encoding, as Envoy hands them over.
fn configuration(any: Option<&Any>, path: &str) -> Result<Bytes> {
    let Some(any) = any else { return Ok(Bytes::new()) };
    let value = match weft_envoy_api::type_name(&any.type_url) {
        "google.protobuf.StringValue" => String::decode(any.value.as_slice()).map(Bytes::from),
        "google.protobuf.BytesValue" => Vec::<u8>::decode(any.value.as_slice()).map(Bytes::from),
        _ => Ok(Bytes::from(any.value.clone())),
    };
    value.map_err(|e| ConfigError::new(path, format!("cannot decode {}: {e}", any.type_url)))
}

/// The module's bytes: a local file or inline bytes, or a remote URL
/// fetched through a cluster and checked against its sha256.
fn code(code: Option<&xds_core::AsyncDataSource>, path: &str, clusters: &HashMap<String, Arc<Cluster>>) -> Result<Bytes> {
    use xds_core::async_data_source::Specifier;
    match code.and_then(|c| c.specifier.as_ref()) {
        Some(Specifier::Local(ds)) => {
            let bytes = crate::model::listener::data_source(ds, &format!("{path}.local"))?;
            if bytes.is_empty() {
                return Err(ConfigError::new(format!("{path}.local"), "the module is empty"));
            }
            Ok(bytes)
        }
        Some(Specifier::Remote(remote)) => super::remote::fetch(remote, &format!("{path}.remote"), clusters),
        None => Err(ConfigError::new(path, "code is required (local or remote)")),
    }
}
