//! The timers behind host health, on the main thread's runtime (never a
//! worker's): the outlier detection interval, which brings ejected hosts
//! back, and active HTTP health checks. The decisions themselves live in
//! `model::cluster::health`.

use std::sync::Arc;

use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_http::RequestHeader;
use tokio::task::JoinHandle;

use crate::model::cluster::health::HealthCheck;
use crate::model::{Cluster, Config};
use crate::upstream::{self, Target};

/// Starts the sweeps and checks of every cluster that has them; abort the
/// handles when the config is replaced.
pub fn spawn(config: &Config) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for cluster in config.clusters.values() {
        if let Some(outlier) = &cluster.outlier {
            let (cluster, interval) = (cluster.clone(), outlier.interval);
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    cluster.sweep_ejections();
                }
            }));
        }
        if let Some(hc) = cluster.health_check.clone() {
            let cluster = cluster.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    // Envoy checks a cluster that never had traffic less often.
                    let idle = cluster.stats.rq_total.get() == 0;
                    tokio::time::sleep(if idle { hc.no_traffic_interval } else { hc.interval }).await;
                    check_all(&cluster, &hc, false).await;
                }
            }));
        }
    }
    tasks
}

/// The first round of health checks, before the config serves traffic
/// (Envoy warms a cluster until its hosts were checked once).
pub fn first_round_blocking(config: &Config) {
    if !config.clusters.values().any(|c| c.health_check.is_some()) {
        return;
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    rt.block_on(async {
        let rounds: Vec<_> = config
            .clusters
            .values()
            .filter_map(|c| {
                let (cluster, hc) = (c.clone(), c.health_check.clone()?);
                Some(tokio::spawn(async move { check_all(&cluster, &hc, true).await }))
            })
            .collect();
        for round in rounds {
            let _ = round.await;
        }
    });
}

/// Checks every host of the cluster concurrently.
async fn check_all(cluster: &Arc<Cluster>, hc: &HealthCheck, first: bool) {
    let hosts = cluster.hosts.load().hosts.clone();
    let checks: Vec<_> = hosts
        .into_iter()
        .map(|host| {
            let (cluster, hc) = (cluster.clone(), hc.clone());
            tokio::spawn(async move {
                let ok = check(&cluster, &hc, host.addr).await;
                cluster.record_health(&host, ok, first);
            })
        })
        .collect();
    for c in checks {
        let _ = c.await;
    }
}

/// One check: `GET path` with Envoy's health checker headers, passed when
/// the status is expected and it came within the timeout.
async fn check(cluster: &Cluster, hc: &HealthCheck, addr: std::net::SocketAddr) -> bool {
    let target = Target { connect_timeout: hc.timeout.min(cluster.connect_timeout), ..cluster.target(addr) };
    let exchange = async {
        let stream = upstream::connect(&target).await.ok()?;
        let mut session = HttpSession::new(stream);
        let mut req = RequestHeader::build("GET", hc.path.as_bytes(), None).ok()?;
        req.insert_header("host", hc.host.as_deref().unwrap_or(&cluster.name)).ok()?;
        req.insert_header("user-agent", "Envoy/HC").ok()?;
        session.write_request_header(Box::new(req)).await.ok()?;
        session.finish_body().await.ok()?;
        session.read_response().await.ok()?;
        session.resp_header().map(|r| r.status.as_u16())
    };
    match tokio::time::timeout(hc.timeout, exchange).await {
        Ok(Some(status)) => hc.passes(status),
        _ => false,
    }
}
