//! Resolution for STRICT_DNS and LOGICAL_DNS clusters.
//!
//! The first answers are awaited before serving (as Envoy warms clusters
//! before listeners); then each cluster refreshes on its own timer on the
//! main thread's runtime, never on a worker. A failed lookup keeps the last
//! good hosts; a cluster that never resolved has none ("no healthy
//! upstream").

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use crate::model::cluster::Dns;
use crate::model::{Cluster, Config};

/// Resolves every DNS cluster once, blocking (start-up only).
pub fn resolve_all_blocking(config: &Config) {
    for cluster in config.clusters.values() {
        if let Some(dns) = &cluster.dns {
            let answers = dns.names.iter().map(|(host, port)| lookup_blocking(&cluster.name, host, *port)).collect();
            cluster.set_hosts(dns.hosts(answers));
        }
    }
}

/// RFC 6761 loopback answers for `localhost` names, as Envoy's resolver
/// (c-ares) gives them whatever /etc/hosts says: both ::1 and 127.0.0.1.
fn localhost(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (host == "localhost" || host.ends_with(".localhost")).then(|| {
        vec![SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)), SocketAddr::from(([127, 0, 0, 1], port))]
    })
}

fn lookup_blocking(cluster: &str, host: &str, port: u16) -> Vec<SocketAddr> {
    if let Some(addrs) = localhost(host, port) {
        return addrs;
    }
    match (host, port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            tracing::warn!(cluster, host, error = %e, "DNS lookup failed");
            Vec::new()
        }
    }
}

/// Spawns a refresh loop for every DNS cluster on the current runtime;
/// abort the handles when the config is replaced.
pub fn spawn_refresh(config: &Config) -> Vec<tokio::task::JoinHandle<()>> {
    config
        .clusters
        .values()
        .filter(|c| c.dns.is_some())
        .map(|cluster| tokio::spawn(refresh(cluster.clone())))
        .collect()
}

async fn refresh(cluster: Arc<Cluster>) {
    let Some(dns) = cluster.dns.clone() else { return };
    loop {
        tokio::time::sleep(dns.refresh).await;
        match lookup(&dns).await {
            Some(answers) => cluster.set_hosts(dns.hosts(answers)),
            None => tracing::debug!(cluster = %cluster.name, "DNS refresh failed; keeping the last hosts"),
        }
    }
}

/// All names looked up, or `None` if any lookup failed.
async fn lookup(dns: &Dns) -> Option<Vec<Vec<SocketAddr>>> {
    let mut answers = Vec::with_capacity(dns.names.len());
    for (host, port) in &dns.names {
        match localhost(host, *port) {
            Some(addrs) => answers.push(addrs),
            None => answers.push(tokio::net::lookup_host((host.as_str(), *port)).await.ok()?.collect()),
        }
    }
    Some(answers)
}
