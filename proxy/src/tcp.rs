//! The `tcp_proxy` network filter: each downstream connection is joined to
//! a connection to one host of a (weighted) cluster, bytes copied both ways
//! until either side closes.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use weft_envoy_api::pb::envoy::extensions::filters::network::tcp_proxy::v3 as xds_tcp;

use crate::model::cluster::Cluster;
use crate::model::{duration, ConfigError, Result};
use crate::upstream::Target;

pub const TYPE: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

#[derive(Debug)]
pub struct TcpProxy {
    pub stat_prefix: String,
    /// Close both sides after this long without bytes either way (Envoy's
    /// default: 1 hour; `0s` disables).
    idle_timeout: Option<Duration>,
    targets: Vec<(Arc<Cluster>, u64)>,
    total_weight: u64,
}

impl TcpProxy {
    pub fn compile(t: &xds_tcp::TcpProxy, path: &str, clusters: &HashMap<String, Arc<Cluster>>) -> Result<Self> {
        use xds_tcp::tcp_proxy::ClusterSpecifier as C;
        if t.stat_prefix.is_empty() {
            return Err(ConfigError::new(format!("{path}.stat_prefix"), "stat_prefix is required"));
        }
        let lookup = |name: &str, p: String| {
            clusters.get(name).cloned().ok_or_else(|| ConfigError::new(p, format!("unknown cluster \"{name}\"")))
        };
        let targets = match &t.cluster_specifier {
            Some(C::Cluster(name)) => vec![(lookup(name, format!("{path}.cluster"))?, 1)],
            Some(C::WeightedClusters(w)) => w
                .clusters
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let cpath = format!("{path}.weighted_clusters.clusters[{i}]");
                    if c.weight == 0 {
                        return Err(ConfigError::new(format!("{cpath}.weight"), "weight must be at least 1"));
                    }
                    Ok((lookup(&c.name, format!("{cpath}.name"))?, c.weight as u64))
                })
                .collect::<Result<_>>()?,
            None => return Err(ConfigError::new(path, "cluster or weighted_clusters is required")),
        };
        if targets.is_empty() {
            return Err(ConfigError::new(format!("{path}.weighted_clusters.clusters"), "at least one cluster is required"));
        }
        let total_weight = targets.iter().map(|(_, w)| w).sum();
        let idle_timeout = match &t.idle_timeout {
            Some(d) => Some(duration(d)).filter(|d| !d.is_zero()),
            None => Some(Duration::from_secs(3600)),
        };
        Ok(TcpProxy { stat_prefix: t.stat_prefix.clone(), idle_timeout, targets, total_weight })
    }

    fn pick(&self) -> &Arc<Cluster> {
        let mut point = rand::random::<u64>() % self.total_weight;
        for (cluster, weight) in &self.targets {
            if point < *weight {
                return cluster;
            }
            point -= weight;
        }
        &self.targets[0].0
    }

    /// Serves one downstream connection. Connection failures close the
    /// downstream connection, as Envoy does.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, mut downstream: S) {
        let cluster = self.pick();
        let Some(host) = cluster.pick(None) else {
            return; // no healthy upstream
        };
        // The HTTP reuse limits (idle timeout, max requests) are not a
        // TCP tunnel's.
        let target = Target { reuse: crate::upstream::Reuse::DEFAULT, ..cluster.target(host.addr()) };
        let Ok(mut upstream) = crate::upstream::connect(&target).await else {
            cluster.stats.cx_connect_fail.inc();
            return;
        };
        crate::io::splice(&mut downstream, &mut upstream, self.idle_timeout).await;
    }
}

