//! Upstream clusters: endpoints, load balancing and connect settings.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use weft_envoy_api::pb::envoy::config::cluster::v3 as xds_cluster;

use super::{duration, socket_address, ConfigError, Result};
use crate::stats::ClusterStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    Random,
}

#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub stats: ClusterStats,
    rr_next: AtomicUsize,
}

impl Cluster {
    pub fn compile(c: &xds_cluster::Cluster, path: &str) -> Result<Self> {
        use xds_cluster::cluster::{ClusterDiscoveryType as D, DiscoveryType};
        if c.name.is_empty() {
            return Err(ConfigError::new(format!("{path}.name"), "name is required"));
        }
        match &c.cluster_discovery_type {
            None => {}
            Some(D::Type(t)) if *t == DiscoveryType::Static as i32 => {}
            Some(D::Type(t)) => {
                let name = DiscoveryType::try_from(*t)
                    .map(|d| d.as_str_name())
                    .unwrap_or("?");
                return Err(ConfigError::new(
                    format!("{path}.type"),
                    format!("cluster type {name} is not supported by weft-proxy yet"),
                ));
            }
            Some(_) => {
                return Err(ConfigError::new(
                    format!("{path}.cluster_type"),
                    "custom cluster types are not supported by weft-proxy",
                ))
            }
        }
        let lb = match xds_cluster::cluster::LbPolicy::try_from(c.lb_policy) {
            Ok(xds_cluster::cluster::LbPolicy::RoundRobin) => LbPolicy::RoundRobin,
            Ok(xds_cluster::cluster::LbPolicy::Random) => LbPolicy::Random,
            Ok(other) => {
                return Err(ConfigError::new(
                    format!("{path}.lb_policy"),
                    format!("{} is not supported by weft-proxy yet", other.as_str_name()),
                ))
            }
            Err(_) => {
                return Err(ConfigError::new(
                    format!("{path}.lb_policy"),
                    format!("unknown lb_policy {}", c.lb_policy),
                ))
            }
        };
        let mut endpoints = Vec::new();
        if let Some(la) = &c.load_assignment {
            for (i, locality) in la.endpoints.iter().enumerate() {
                for (j, lb_ep) in locality.lb_endpoints.iter().enumerate() {
                    use weft_envoy_api::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
                    let epath = format!("{path}.load_assignment.endpoints[{i}].lb_endpoints[{j}]");
                    let Some(HostIdentifier::Endpoint(ep)) = &lb_ep.host_identifier else {
                        return Err(ConfigError::new(
                            format!("{epath}.endpoint"),
                            "endpoint is required",
                        ));
                    };
                    endpoints.push(socket_address(
                        ep.address.as_ref(),
                        &format!("{epath}.endpoint.address"),
                    )?);
                }
            }
        }
        let connect_timeout = c
            .connect_timeout
            .as_ref()
            .map(duration)
            .unwrap_or(Duration::from_secs(5));
        Ok(Cluster {
            name: c.name.clone(),
            endpoints,
            lb,
            connect_timeout,
            stats: ClusterStats::new(&c.name),
            rr_next: AtomicUsize::new(rand::random::<u32>() as usize),
        })
    }

    /// Picks an endpoint, or `None` when the cluster has no hosts.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = match self.lb {
            LbPolicy::RoundRobin => self.rr_next.fetch_add(1, Ordering::Relaxed),
            LbPolicy::Random => rand::random::<u32>() as usize,
        };
        self.endpoints.get(i % self.endpoints.len()).copied()
    }
}
