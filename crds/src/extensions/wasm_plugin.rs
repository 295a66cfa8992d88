//! `WasmPlugin`: a proxy-wasm module loaded into the proxies a selector or
//! target reference picks, where in the filter chain it runs, and its
//! configuration.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{free_form_object, PolicyTargetReference, WorkloadSelector};
use crate::status::Status;

/// A WebAssembly (proxy-wasm) plugin and where it runs.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "extensions.istio.io",
    version = "v1alpha1",
    kind = "WasmPlugin",
    namespaced,
    status = "Status",
    derive = "PartialEq",
    category = "istio-io",
    category = "extensions-istio-io",
    doc = "Extend the functionality provided by the Istio proxy through WebAssembly filters. See https://istio.io/docs/reference/config/proxy_extensions/wasm-plugin.html"
)]
#[kube(printcolumn(
    name = "Age",
    type_ = "date",
    json_path = ".metadata.creationTimestamp"
))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmPluginSpec {
    /// The workloads (by label) the plugin applies to; only one of
    /// `selector`, `targetRef` and `targetRefs` may be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Deprecated: use `targetRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// The resources (such as Gateway API gateways) the plugin applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Where the module is: `oci://`, `file://` or `http(s)://`.
    pub url: String,
    /// SHA256 checksum the module or image must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When to fetch the module again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Secret with credentials for pulling the OCI image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// Public key that verifies the image's signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_key: Option<String>,
    /// The configuration passed to the plugin as it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub plugin_config: Option<Value>,
    /// The plugin's root id, when the module has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_name: Option<String>,
    /// Where in the filter chain the plugin runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PluginPhase>,
    /// Order among plugins of the same phase; higher runs first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// What happens to traffic when the plugin fails fatally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_strategy: Option<FailStrategy>,
    /// Settings of the plugin's VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<VmConfig>,
    /// Which traffic the plugin sees; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "match")]
    pub match_: Vec<TrafficSelector>,
    /// HTTP or network (TCP) filter.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<PluginType>,
}

/// Where in the filter chain a plugin runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PluginPhase {
    /// At the end of the chain, before the router.
    UnspecifiedPhase,
    /// Before Istio's authentication filters.
    Authn,
    /// Before Istio's authorization filters, after authentication.
    Authz,
    /// Before Istio's stats filters, after authorization.
    Stats,
}

/// When a module is fetched again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    /// `Always` for the `latest` tag, `IfNotPresent` otherwise.
    #[serde(rename = "UNSPECIFIED_POLICY")]
    UnspecifiedPolicy,
    IfNotPresent,
    Always,
}

/// What happens to traffic when a plugin fails fatally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailStrategy {
    /// Fail the request or connection.
    FailClose,
    /// Bypass the plugin.
    FailOpen,
    /// Reload the plugin and retry.
    FailReload,
}

/// The kind of proxy filter a plugin is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PluginType {
    /// `HTTP`.
    UnspecifiedPluginType,
    Http,
    Network,
}

/// Settings of a plugin's VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmConfig {
    /// Environment variables of the VM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,
}

/// An environment variable of a plugin's VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// Name of the variable.
    pub name: String,
    /// Value of the variable, when `valueFrom` is `INLINE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where the value comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvValueSource>,
}

/// Where a VM environment variable's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EnvValueSource {
    /// From `value`.
    Inline,
    /// From the proxy's own environment.
    Host,
}

/// Traffic a plugin sees, by direction and port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficSelector {
    /// Traffic direction, relative to the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
    /// Destination ports; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["number"]))]
    pub ports: Vec<PortNumber>,
}

/// A port, by number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortNumber {
    /// The port number.
    pub number: u32,
}

/// Traffic direction, relative to the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    /// Both directions.
    Undefined,
    /// Outbound.
    Client,
    /// Inbound.
    Server,
    ClientAndServer,
}
