//! `networking.istio.io`: the kinds that describe services and how traffic
//! reaches them. Each is served, as by Istio, in `v1`, `v1beta1` and
//! `v1alpha3` with one schema; `v1` is the storage version.

pub mod destination_rule;
pub mod gateway;
pub mod service_entry;
pub mod virtual_service;
pub mod workload_entry;

pub use destination_rule::{DestinationRule, DestinationRuleSpec};
pub use gateway::{Gateway, GatewaySpec};
pub use service_entry::{ServiceEntry, ServiceEntrySpec};
pub use virtual_service::{VirtualService, VirtualServiceSpec};
pub use workload_entry::{WorkloadEntry, WorkloadEntrySpec};

/// The API group.
pub const GROUP: &str = "networking.istio.io";
/// The versions every kind of the group is served in, storage first.
pub const VERSIONS: [&str; 3] = ["v1", "v1alpha3", "v1beta1"];
