//! The `tcp_proxy` network filter: each downstream connection is joined to
//! a connection to one host of a (weighted) cluster, bytes copied both ways
//! until either side closes.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
        let target = Target { addr: host.addr(), connect_timeout: cluster.connect_timeout, tls: cluster.tls.as_deref(), budget: None };
        let Ok(mut upstream) = crate::upstream::connect(&target).await else {
            cluster.stats.cx_connect_fail.inc();
            return;
        };
        splice(&mut downstream, &mut upstream, self.idle_timeout).await;
    }
}

/// Copies bytes both ways until both sides are done (a side that ends is
/// half-closed on the other, as Envoy does), an error, or `idle` passes
/// without a byte either way.
async fn splice<A, B>(a: &mut A, b: &mut B, idle: Option<Duration>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut from_a, mut from_b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        let quiet = async {
            match idle {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        // Reads are cancel-safe: the branch that loses the race loses no bytes.
        tokio::select! {
            r = a.read(&mut from_a), if a_open => match r {
                Ok(n) if n > 0 => {
                    if b.write_all(&from_a[..n]).await.is_err() || b.flush().await.is_err() {
                        return;
                    }
                }
                _ => {
                    a_open = false;
                    let _ = b.shutdown().await;
                }
            },
            r = b.read(&mut from_b), if b_open => match r {
                Ok(n) if n > 0 => {
                    if a.write_all(&from_b[..n]).await.is_err() || a.flush().await.is_err() {
                        return;
                    }
                }
                _ => {
                    b_open = false;
                    let _ = a.shutdown().await;
                }
            },
            _ = quiet => return,
        }
    }
}
