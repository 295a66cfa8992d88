//! File-based dynamic resources: Envoy's `path_config_source` for LDS and
//! CDS. Each file holds a `DiscoveryResponse` (YAML or JSON); replacing it
//! (Envoy watches for moves, so write elsewhere and `mv`) updates the
//! running proxy without a restart. A file that does not load is rejected
//! whole; a resource that does not compile is rejected alone and keeps its
//! previous version, as Envoy applies a state-of-the-world update.
//!
//! ```text
//!  lds.yaml / cds.yaml ─poll─► load ─► compile with the bootstrap ─► server (Listeners::apply)
//! ```
//! This is the path a gRPC ADS stream will take too: resources in, one
//! compiled `Config` out, swapped atomically.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::UnboundedSender;
use weft_envoy_api::pb::envoy::config::bootstrap::v3::Bootstrap;
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;

use crate::bootstrap::Loader;
use weft_envoy_api::prost;
use crate::model::{Cluster, Config, ConfigError, Dynamic, Listener};
use weft_envoy_api::pb::envoy::config::cluster::v3 as xds_cluster;
use weft_envoy_api::pb::envoy::config::listener::v3 as xds_listener;

const LISTENER: &str = "envoy.config.listener.v3.Listener";
const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";
/// How often the files are checked; Envoy reacts to inotify, a poll of
/// two `stat`s is as good for config files and needs no platform code.
const POLL: Duration = Duration::from_millis(100);

/// The files named by `dynamic_resources`.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub lds: Option<PathBuf>,
    pub cds: Option<PathBuf>,
}

impl Sources {
    /// `None` when the bootstrap has no dynamic resources. Like Envoy, a
    /// source file must exist at start-up.
    pub fn from_bootstrap(b: &Bootstrap) -> Result<Option<Sources>, ConfigError> {
        let Some(d) = &b.dynamic_resources else { return Ok(None) };
        let sources = Sources {
            lds: path_of(d.lds_config.as_ref(), "dynamic_resources.lds_config")?,
            cds: path_of(d.cds_config.as_ref(), "dynamic_resources.cds_config")?,
        };
        Ok((sources.lds.is_some() || sources.cds.is_some()).then_some(sources))
    }

    /// Loads both files. A file that does not load is logged and left out,
    /// as Envoy rejects a bad initial xDS response and carries on.
    pub fn load(&self, loader: &Loader) -> Dynamic {
        Dynamic {
            clusters: read(loader, self.cds.as_deref(), CLUSTER, "cds").unwrap_or_default(),
            listeners: read(loader, self.lds.as_deref(), LISTENER, "lds").unwrap_or_default(),
            ..Dynamic::default()
        }
    }
}

fn path_of(source: Option<&xds_core::ConfigSource>, field: &str) -> Result<Option<PathBuf>, ConfigError> {
    use xds_core::config_source::ConfigSourceSpecifier as S;
    let Some(source) = source else { return Ok(None) };
    let (path, fpath) = match &source.config_source_specifier {
        Some(S::PathConfigSource(p)) => (p.path.clone(), format!("{field}.path_config_source.path")),
        #[allow(deprecated)] // Envoy still reads the old `path` field
        Some(S::Path(p)) => (p.clone(), format!("{field}.path")),
        // Followed by the ADS client (`xds`), not here.
        Some(S::Ads(_)) => return Ok(None),
        _ => return Err(ConfigError::new(field, "only path_config_source is supported by weft-proxy for now")),
    };
    if !Path::new(&path).exists() {
        return Err(ConfigError::new(fpath, format!("paths must refer to an existing path in the system: '{path}' does not exist")));
    }
    Ok(Some(PathBuf::from(path)))
}

/// What identifies a file's content without reading it: replaced by `mv`
/// (new inode) or rewritten (new mtime/size).
fn stamp(path: &Path) -> Option<(u64, SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.modified().ok()?, m.len()))
}

/// Watches the source files on a thread of its own; every change that loads
/// and compiles is resolved (DNS) and sent to the server.
pub fn watch(bootstrap: Bootstrap, sources: Sources, mut good: Dynamic, updates: UnboundedSender<Config>) -> std::io::Result<()> {
    std::thread::Builder::new().name("weft-config-watch".into()).spawn(move || {
        let mut lds_stamp = sources.lds.as_deref().and_then(stamp);
        let mut cds_stamp = sources.cds.as_deref().and_then(stamp);
        while !updates.is_closed() {
            std::thread::sleep(POLL);
            let lds_now = sources.lds.as_deref().and_then(stamp);
            let cds_now = sources.cds.as_deref().and_then(stamp);
            if lds_now == lds_stamp && cds_now == cds_stamp {
                continue;
            }
            // A file being replaced may be missing for a moment: wait for it.
            if (sources.lds.is_some() && lds_now.is_none()) || (sources.cds.is_some() && cds_now.is_none()) {
                continue;
            }
            let loader = Loader::new();
            let mut next = good.clone();
            let mut changed = Vec::new();
            if cds_now != cds_stamp {
                cds_stamp = cds_now;
                if let Some(c) = read(&loader, sources.cds.as_deref(), CLUSTER, "cds") {
                    let (clusters, errors) = accept_clusters(c, &good.clusters, &good.endpoints, "cds");
                    log_rejected(&errors, "cds");
                    next.clusters = clusters;
                    changed.push("cds");
                }
            }
            if lds_now != lds_stamp {
                lds_stamp = lds_now;
                if let Some(l) = read(&loader, sources.lds.as_deref(), LISTENER, "lds") {
                    let (listeners, errors) = accept_listeners(l, &good.listeners, &bootstrap, &next, "lds");
                    log_rejected(&errors, "lds");
                    next.listeners = listeners;
                    changed.push("lds");
                }
            }
            drop(loader);
            if changed.is_empty() {
                continue;
            }
            match Config::compile_with(&bootstrap, &next) {
                Ok(config) => {
                    crate::dns::resolve_all_blocking(&config);
                    crate::health::first_round_blocking(&config);
                    good = next;
                    tracing::info!(sources = ?changed, "dynamic resources accepted");
                    let _ = updates.send(config);
                }
                Err(e) => tracing::warn!(sources = ?changed, error = %e, "update rejected; keeping the last good config"),
            }
        }
    })?;
    Ok(())
}

/// Envoy's state-of-the-world semantics per resource: what the update
/// lists replaces what ran (absent names are removed), but a resource that
/// does not compile is rejected alone, keeping its previous version.
/// Returns the resources to run and why each rejected one was.
fn accept_each<T: Clone>(
    update: Vec<T>,
    previous: &[T],
    name: impl Fn(&T) -> &str,
    compiles: impl Fn(&T, usize) -> Result<(), ConfigError>,
) -> (Vec<T>, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let accepted = update
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| match compiles(&r, i) {
            Ok(()) => Some(r),
            Err(e) => {
                errors.push(e);
                previous.iter().find(|p| name(p) == name(&r)).cloned()
            }
        })
        .collect();
    (accepted, errors)
}

/// A CDS update, resource by resource; `endpoints` are the EDS assignments
/// the clusters compile with.
pub(crate) fn accept_clusters(
    update: Vec<xds_cluster::Cluster>,
    previous: &[xds_cluster::Cluster],
    endpoints: &std::collections::HashMap<String, weft_envoy_api::pb::envoy::config::endpoint::v3::ClusterLoadAssignment>,
    source: &str,
) -> (Vec<xds_cluster::Cluster>, Vec<ConfigError>) {
    let compiles = |c: &xds_cluster::Cluster, i: usize| {
        let eds = Cluster::eds_service_name(c).and_then(|n| endpoints.get(n));
        Cluster::compile_with(c, &format!("{source}.resources[{i}]"), eds).map(drop)
    };
    accept_each(update, previous, |c| &c.name, compiles)
}

/// An LDS update, resource by resource, checked against the clusters and
/// route configurations of `with` (the rest of the dynamic state).
pub(crate) fn accept_listeners(
    update: Vec<xds_listener::Listener>,
    previous: &[xds_listener::Listener],
    bootstrap: &Bootstrap,
    with: &Dynamic,
    source: &str,
) -> (Vec<xds_listener::Listener>, Vec<ConfigError>) {
    let others = Dynamic { listeners: Vec::new(), ..with.clone() };
    let config = match Config::compile_with(bootstrap, &others) {
        Ok(config) => config,
        Err(e) => return (previous.to_vec(), vec![e]),
    };
    let refs = crate::model::Refs { clusters: &config.clusters, routes: &with.routes };
    let compiles = |l: &xds_listener::Listener, i: usize| Listener::compile(l, &format!("{source}.resources[{i}]"), &refs).map(drop);
    accept_each(update, previous, |l| &l.name, compiles)
}

fn log_rejected(errors: &[ConfigError], source: &str) {
    for e in errors {
        tracing::warn!(error = %e, "{source}: resource rejected; keeping its previous version");
    }
}

/// One source file's resources; `None` (logged) when there is no such
/// source or the file does not load, which rejects the whole update.
fn read<M: prost::Message + Default>(loader: &Loader, path: Option<&Path>, type_name: &str, source: &str) -> Option<Vec<M>> {
    match loader.load_resources(path?, type_name) {
        Ok(resources) => Some(resources),
        Err(e) => {
            tracing::warn!(error = %e, "{source} update rejected; keeping the last good config");
            None
        }
    }
}
