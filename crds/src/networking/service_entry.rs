//! `ServiceEntry`: adds a service to the mesh's registry (an external API,
//! or in standalone mode any service), with its hosts, ports, resolution
//! and endpoints.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::WorkloadEntrySpec;
use crate::common::Labels;
use crate::status::Status;

/// A service added to the mesh's service registry.
// Several printer columns are strings; clippy takes the repeated
// `type_ = "string"` for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "ServiceEntry",
    namespaced,
    status = "Status",
    derive = "PartialEq",
    shortname = "se",
    category = "istio-io",
    category = "networking-istio-io",
    doc = "Configuration affecting service registry. See https://istio.io/docs/reference/config/networking/service-entry.html"
)]
#[kube(printcolumn(
    name = "Hosts",
    type_ = "string",
    json_path = ".spec.hosts",
    description = "The hosts associated with the ServiceEntry"
))]
#[kube(printcolumn(
    name = "Location",
    type_ = "string",
    json_path = ".spec.location",
    description = "Whether the service is external to the mesh or part of the mesh (MESH_EXTERNAL or MESH_INTERNAL)"
))]
#[kube(printcolumn(
    name = "Resolution",
    type_ = "string",
    json_path = ".spec.resolution",
    description = "Service resolution mode for the hosts (NONE, STATIC, or DNS)"
))]
#[kube(printcolumn(
    name = "Age",
    type_ = "date",
    json_path = ".metadata.creationTimestamp"
))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    /// The hosts of the service: DNS names, wildcard prefixes allowed.
    pub hosts: Vec<String>,
    /// Virtual IP addresses (or CIDR blocks) of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The ports of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub ports: Vec<ServicePort>,
    /// Whether the service is outside the mesh or part of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How the service's endpoints are found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// The service's endpoints; only one of `endpoints` and
    /// `workloadSelector` may be set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Selects the service's endpoints among pods and WorkloadEntries
    /// (`MESH_INTERNAL` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<EntryWorkloadSelector>,
    /// The namespaces this service is visible in (`.` this one, `*` all);
    /// all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Subject alternative names the server's certificate must present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// A port of a service entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// A valid non-negative integer port number.
    pub number: u32,
    /// The protocol: HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP or TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Label assigned to the port.
    pub name: String,
    /// The port on the endpoints traffic is sent to; `number` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Where a service is, relative to the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh: no mutual TLS, metrics as external.
    MeshExternal,
    /// Part of the mesh.
    MeshInternal,
}

/// How a service's endpoints are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the address the caller connected to.
    None,
    /// The endpoints' addresses, as listed.
    Static,
    /// Resolve the endpoints' (or hosts') names asynchronously, all
    /// addresses.
    Dns,
    /// Resolve names asynchronously and use the first address only.
    DnsRoundRobin,
    /// Resolve each host on demand (wildcard hosts).
    DynamicDns,
}

/// Selects workloads by label, as `ServiceEntry.workloadSelector` does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntryWorkloadSelector {
    /// Labels the selected pods and WorkloadEntries carry.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}
