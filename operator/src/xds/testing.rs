//! Resources and requests for the state machines' tests.

use weft_envoy_api::pb::envoy::config::cluster::v3::Cluster;
use weft_envoy_api::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_envoy_api::pb::envoy::config::listener::v3::Listener;
use weft_envoy_api::pb::envoy::service::discovery::v3::DiscoveryRequest;

use super::snapshot::{Kind, Resource};

pub fn cluster(name: &str) -> Resource {
    Resource::new(
        name,
        &Cluster {
            name: name.into(),
            ..Default::default()
        },
    )
}

pub fn endpoints(name: &str) -> Resource {
    Resource::new(
        name,
        &ClusterLoadAssignment {
            cluster_name: name.into(),
            ..Default::default()
        },
    )
}

pub fn listener(name: &str) -> Resource {
    Resource::new(
        name,
        &Listener {
            name: name.into(),
            ..Default::default()
        },
    )
}

pub fn request(kind: Kind, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: kind.type_url().into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}
