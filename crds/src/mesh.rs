//! Weft's own `Mesh` (`weft.dev/v1alpha1`): the mesh-wide settings Istio
//! keeps in its MeshConfig, as a cluster-scoped singleton named `default`
//! (the API server refuses any other name), and the control plane's state
//! in its status. Field names follow Istio's MeshConfig.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::Status;

/// The API group of Weft's own kinds.
pub const GROUP: &str = "weft.dev";
/// The one version `Mesh` is served in.
pub const VERSION: &str = "v1alpha1";

/// The only name a `Mesh` may have.
pub const MESH_NAME: &str = "default";

/// Mesh-wide settings.
// Several printer columns are strings; clippy takes the repeated
// `type_ = "string"` for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "Mesh",
    plural = "meshes",
    status = "MeshStatus",
    derive = "PartialEq",
    category = "weft",
    validation = kube::core::Rule::new("self.metadata.name == 'default'")
        .message("Mesh is a singleton: its name must be `default`"),
    doc = "Weft's mesh-wide settings; a singleton named `default`.",
)]
#[kube(printcolumn(
    name = "Ready",
    type_ = "string",
    json_path = ".status.conditions[?(@.type==\"Ready\")].status",
    description = "Whether the control plane is serving configuration"
))]
#[kube(printcolumn(
    name = "Proxies",
    type_ = "integer",
    json_path = ".status.connectedProxies",
    description = "Proxies connected to the control plane"
))]
#[kube(printcolumn(
    name = "Trust Domain",
    type_ = "string",
    json_path = ".spec.trustDomain",
    description = "The SPIFFE trust domain of the mesh's identities"
))]
#[kube(printcolumn(
    name = "Age",
    type_ = "date",
    json_path = ".metadata.creationTimestamp"
))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSpec {
    /// The SPIFFE trust domain of workload identities
    /// (`spiffe://<trustDomain>/ns/<ns>/sa/<sa>`).
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// The namespace whose configuration applies mesh-wide.
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
    /// Proxy settings every proxy starts with.
    #[serde(default)]
    pub default_config: ProxyConfig,
    /// Where proxies write access logs (`/dev/stdout`); none when unset or
    /// empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<String>,
    /// The format of access log lines.
    #[serde(default)]
    pub access_log_encoding: AccessLogEncoding,
    /// Use mutual TLS to sidecar-injected workloads without a
    /// DestinationRule asking for it.
    #[serde(default = "enabled")]
    pub enable_auto_mtls: bool,
    /// What sidecars do with traffic to hosts not in the registry.
    #[serde(default)]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
}

impl Default for MeshSpec {
    fn default() -> Self {
        Self {
            trust_domain: default_trust_domain(),
            root_namespace: default_root_namespace(),
            default_config: ProxyConfig::default(),
            access_log_file: None,
            access_log_encoding: AccessLogEncoding::default(),
            enable_auto_mtls: enabled(),
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
        }
    }
}

fn default_trust_domain() -> String {
    "cluster.local".to_owned()
}

fn default_root_namespace() -> String {
    "istio-system".to_owned()
}

fn enabled() -> bool {
    true
}

/// Settings of every proxy, as Istio's `ProxyConfig`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// The `host:port` of the xDS (ADS) server proxies connect to.
    #[serde(default = "default_discovery_address")]
    pub discovery_address: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            discovery_address: default_discovery_address(),
        }
    }
}

fn default_discovery_address() -> String {
    "127.0.0.1:15010".to_owned()
}

/// The format of access log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    #[default]
    Text,
    Json,
}

/// What sidecars do with traffic to unknown hosts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// `ALLOW_ANY` passes it through, `REGISTRY_ONLY` blocks it.
    #[serde(default)]
    pub mode: OutboundTrafficMode,
}

/// Whether traffic to hosts outside the registry is allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficMode {
    /// Pass it through to the original destination.
    #[default]
    AllowAny,
    /// Refuse it (502, or a reset connection).
    RegistryOnly,
}

/// The control plane's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct MeshStatus {
    /// Conditions (`Ready`) and problems with the spec.
    #[serde(flatten)]
    pub status: Status,
    /// Proxies connected to the control plane over xDS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_proxies: Option<u32>,
}
