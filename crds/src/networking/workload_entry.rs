//! `WorkloadEntry`: a workload that is not a pod (a VM, a bare-metal host,
//! or any process in standalone mode), with its address, ports and labels.
//! `ServiceEntry.endpoints` lists the same shape inline.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Labels;
use crate::status::Status;

/// A non-Kubernetes workload and where to reach it.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "WorkloadEntry",
    namespaced,
    status = "Status",
    derive = "PartialEq",
    shortname = "we",
    category = "istio-io",
    category = "networking-istio-io",
    doc = "Configuration affecting VMs onboarded into the mesh. See https://istio.io/docs/reference/config/networking/workload-entry.html"
)]
#[kube(printcolumn(
    name = "Age",
    type_ = "date",
    json_path = ".metadata.creationTimestamp"
))]
#[kube(printcolumn(
    name = "Address",
    type_ = "string",
    json_path = ".spec.address",
    description = "Address associated with the network endpoint."
))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntrySpec {
    /// IP address, DNS name or `unix://` socket path of the workload,
    /// without the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Port names to the workload's port numbers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// Labels of the workload, as services and subsets select it.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// The L3 network the workload is in, for multi-network meshes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The workload's locality, `region/zone/subzone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Load balancing weight of the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The service account of the workload's sidecar, for its identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}
