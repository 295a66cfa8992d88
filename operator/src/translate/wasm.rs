//! WasmPlugins → Envoy's `envoy.filters.http.wasm` filters, in the
//! listeners and chain positions istiod gives them:
//!
//! ```text
//!  HCM: AUTHN plugins, AUTHZ plugins, cors, fault, STATS plugins, UNSPECIFIED_PHASE plugins, router
//! ```
//! A plugin applies to the proxies it selects (see
//! `index::wasm_plugin::Plugin::selects`) and, through `match[].mode`, to
//! their listener classes: CLIENT is the gateway's and the sidecar's
//! outbound listeners, SERVER the sidecar's inbound one. Within a phase,
//! plugins run by priority (highest first), then namespace/name. An
//! http:// module is fetched through a cluster (STATIC, or STRICT_DNS for a name) added to the proxy's
//! CDS.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_crds::extensions::wasm_plugin::{EnvValueSource, FailStrategy, PluginPhase, WorkloadMode};
use weft_envoy_api::pb::envoy::config::cluster::v3 as xds_cluster;
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;
use weft_envoy_api::pb::envoy::extensions::filters::http::wasm::v3 as xds_wasm_filter;
use weft_envoy_api::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use weft_envoy_api::pb::envoy::extensions::wasm::v3 as xds_wasm;
use weft_envoy_api::pb::google::protobuf::{Any, StringValue};

use super::envoy::{any, duration};
use crate::index::wasm_plugin::{Module, Plugin};
use crate::index::Index;
use crate::xds::Proxy;

/// Istio's default runtime; weft-proxy runs it on wasmtime.
const RUNTIME: &str = "envoy.wasm.runtime.v8";
/// How long a proxy waits for an http:// module.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The listener classes `match[].mode` tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Gateway,
    SidecarOutbound,
    SidecarInbound,
}

/// The plugins that select one proxy, in chain order within each phase.
pub struct Plugins<'a>(Vec<&'a Plugin>);

impl<'a> Plugins<'a> {
    pub fn selecting(index: &'a Index, proxy: &Proxy) -> Plugins<'a> {
        Plugins(index.wasm_plugins.iter().filter(|p| p.selects(&proxy.namespace, &proxy.labels)).collect())
    }

    /// The HCM filter chain of a listener of `class`, plugins included.
    pub fn http_filters(&self, class: Class) -> Vec<hcm::HttpFilter> {
        let of = |phases: &[PluginPhase]| -> Vec<hcm::HttpFilter> {
            phases
                .iter()
                .flat_map(|phase| self.0.iter().filter(move |p| p.spec.phase.unwrap_or(PluginPhase::UnspecifiedPhase) == *phase))
                .filter(|p| applies_to(p, class))
                .map(|p| filter(p))
                .collect()
        };
        super::envoy::http_filters(
            of(&[PluginPhase::Authn, PluginPhase::Authz]),
            of(&[PluginPhase::Stats, PluginPhase::UnspecifiedPhase]),
        )
    }

    /// The clusters the proxy fetches its http:// modules through.
    pub fn clusters(&self) -> Vec<xds_cluster::Cluster> {
        self.0
            .iter()
            .filter_map(|p| match &p.module {
                Module::Http { host, port, .. } => Some(fetch_cluster_for(host, *port)),
                Module::File(_) => None,
            })
            .collect()
    }
}

/// `match[]`: none applies everywhere; else any selector whose mode
/// admits the class (ports are not supported: validation rejects them).
fn applies_to(plugin: &Plugin, class: Class) -> bool {
    plugin.spec.match_.is_empty()
        || plugin.spec.match_.iter().any(|m| match m.mode.unwrap_or(WorkloadMode::Undefined) {
            WorkloadMode::Undefined | WorkloadMode::ClientAndServer => true,
            WorkloadMode::Client => class != Class::SidecarInbound,
            WorkloadMode::Server => class == Class::SidecarInbound,
        })
}

fn fetch_cluster(host: &str, port: u16) -> String {
    format!("wasm-fetch|{host}|{port}")
}

/// STATIC for an IP address; STRICT_DNS for a name, IPv4 first (Envoy's
/// AUTO would try `::1` first for `localhost`, where module servers seldom
/// listen).
fn fetch_cluster_for(host: &str, port: u16) -> xds_cluster::Cluster {
    use xds_cluster::cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily};
    let mut cluster = super::static_cluster(&fetch_cluster(host, port), host, u32::from(port));
    if host.parse::<std::net::IpAddr>().is_err() {
        cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
        cluster.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
    }
    cluster
}

/// The filter of one plugin, named `NAMESPACE.NAME` as istiod names it.
fn filter(plugin: &Plugin) -> hcm::HttpFilter {
    use xds_core::async_data_source::Specifier;
    let spec = &plugin.spec;
    let name = format!("{}.{}", plugin.key.namespace, plugin.key.name);
    let code = match &plugin.module {
        Module::File(path) => Specifier::Local(xds_core::DataSource {
            specifier: Some(xds_core::data_source::Specifier::Filename(path.clone())),
            ..Default::default()
        }),
        Module::Http { uri, host, port, sha256 } => Specifier::Remote(xds_core::RemoteDataSource {
            http_uri: Some(xds_core::HttpUri {
                uri: uri.clone(),
                timeout: Some(duration(FETCH_TIMEOUT)),
                http_upstream_type: Some(xds_core::http_uri::HttpUpstreamType::Cluster(fetch_cluster(host, *port))),
            }),
            sha256: sha256.clone(),
            ..Default::default()
        }),
    };
    let mut host_env_keys = Vec::new();
    let mut inline = BTreeMap::new();
    for var in spec.vm_config.iter().flat_map(|vm| &vm.env) {
        match var.value_from.unwrap_or(EnvValueSource::Inline) {
            EnvValueSource::Inline => {
                inline.insert(var.name.clone(), var.value.clone().unwrap_or_default());
            }
            EnvValueSource::Host => host_env_keys.push(var.name.clone()),
        }
    }
    // The plugin reads `pluginConfig` as JSON text; none when it is empty.
    let configuration = spec
        .plugin_config
        .as_ref()
        .filter(|c| c.as_object().is_none_or(|o| !o.is_empty()))
        .map(|c| any(&StringValue { value: c.to_string() }));
    let failure_policy = match spec.fail_strategy {
        None => xds_wasm::FailurePolicy::Unspecified,
        Some(FailStrategy::FailOpen) => xds_wasm::FailurePolicy::FailOpen,
        Some(FailStrategy::FailClose) => xds_wasm::FailurePolicy::FailClosed,
        Some(FailStrategy::FailReload) => xds_wasm::FailurePolicy::FailReload,
    };
    let vm = xds_wasm::VmConfig {
        runtime: RUNTIME.into(),
        code: Some(xds_core::AsyncDataSource { specifier: Some(code) }),
        environment_variables: (!host_env_keys.is_empty()).then(|| xds_wasm::EnvironmentVariables { host_env_keys, ..Default::default() }),
        ..Default::default()
    };
    let config = xds_wasm::PluginConfig {
        name: name.clone(),
        root_id: spec.plugin_name.clone().unwrap_or_default(),
        configuration,
        failure_policy: failure_policy as i32,
        vm: Some(xds_wasm::plugin_config::Vm::VmConfig(vm)),
        ..Default::default()
    };
    hcm::HttpFilter { name, config_type: Some(hcm::http_filter::ConfigType::TypedConfig(encode(config, &inline))), ..Default::default() }
}

/// The filter's config with its inline variables added in name order.
/// prost encodes a map in `HashMap` order, which differs from one
/// translation to the next and would re-push the listener on every
/// change; protobuf merges repeated occurrences of a message, so the
/// config followed by one message per variable decodes to the whole.
fn encode(config: xds_wasm::PluginConfig, inline: &BTreeMap<String, String>) -> Any {
    use weft_envoy_api::prost::{Message, Name};
    let mut value = xds_wasm_filter::Wasm { config: Some(config) }.encode_to_vec();
    for (k, v) in inline {
        let env = xds_wasm::EnvironmentVariables { key_values: [(k.clone(), v.clone())].into(), ..Default::default() };
        let vm = xds_wasm::VmConfig { environment_variables: Some(env), ..Default::default() };
        let config = xds_wasm::PluginConfig { vm: Some(xds_wasm::plugin_config::Vm::VmConfig(vm)), ..Default::default() };
        xds_wasm_filter::Wasm { config: Some(config) }.encode(&mut value).expect("invariant: a Vec grows");
    }
    Any { type_url: xds_wasm_filter::Wasm::type_url(), value }
}

#[cfg(test)]
mod tests {
    use weft_envoy_api::prost::Message;

    use super::*;
    use crate::index::Key;

    #[test]
    fn inline_variables_encode_the_same_every_time() {
        let env: Vec<_> = (0..6).map(|i| serde_json::json!({ "name": format!("V{i}"), "value": i.to_string() })).collect();
        let spec = serde_json::from_value(serde_json::json!({ "url": "file:///p.wasm", "vmConfig": { "env": env } })).expect("spec");
        let key = Key { kind: "WasmPlugin", namespace: "default".into(), name: "p".into() };
        let plugin = Plugin { key, spec, module: Module::File("/p.wasm".into()) };
        let first = filter(&plugin);
        for _ in 0..20 {
            assert_eq!(filter(&plugin), first, "a listener's version must not change with HashMap order");
        }
        let Some(hcm::http_filter::ConfigType::TypedConfig(any)) = first.config_type else { panic!("typed config") };
        let config = xds_wasm_filter::Wasm::decode(any.value.as_slice()).expect("decodes").config.expect("config");
        let Some(xds_wasm::plugin_config::Vm::VmConfig(vm)) = config.vm else { panic!("vm_config") };
        assert_eq!(config.name, "default.p");
        assert_eq!(vm.runtime, RUNTIME, "the merged occurrences keep the first's fields");
        let vars: BTreeMap<_, _> = vm.environment_variables.expect("variables").key_values.into_iter().collect();
        assert_eq!(vars, (0..6).map(|i| (format!("V{i}"), i.to_string())).collect());
    }
}
