//! The ADS client: listeners, routes, clusters and endpoints from a control
//! plane (weft-operator, istiod, any xDS server) over one gRPC stream.
//!
//! ```text
//!  bootstrap ads_config ─► stream (tonic, reconnect with backoff)
//!                            │ DiscoveryResponse            ▲ ACK / NACK, subscriptions
//!                            ▼                              │
//!                          state (pure): decode, check, accept per resource ─► compiled Config ─► server
//! ```
//! Like Envoy: CDS and LDS are wildcard subscriptions, EDS and RDS follow
//! the names the accepted clusters and listeners use; a resource that does
//! not compile is NACKed with its path and the previous one kept; a
//! listener whose route configuration has not arrived is held back (warming)
//! for at most `INITIAL_FETCH_TIMEOUT`; when the control plane is gone, the
//! last good config keeps serving while the client reconnects.

mod state;
mod stream;

pub use state::{Held, Kind, Stamp, INITIAL_FETCH_TIMEOUT};

use std::net::SocketAddr;

use tokio::sync::mpsc::UnboundedSender;
use weft_envoy_api::pb::envoy::config::bootstrap::v3::Bootstrap;
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;

use crate::model::{Config, ConfigError};

/// Where the ADS stream goes, from `dynamic_resources.ads_config`.
#[derive(Debug, Clone)]
pub struct Ads {
    /// The first endpoint of the static cluster `grpc_services` names.
    pub server: SocketAddr,
    pub cluster: String,
    /// `api_type: DELTA_GRPC`: incremental xDS.
    pub delta: bool,
}

impl Ads {
    /// `None` when the bootstrap does not use ADS.
    pub fn from_bootstrap(b: &Bootstrap) -> Result<Option<Ads>, ConfigError> {
        use xds_core::api_config_source::ApiType;
        use xds_core::grpc_service::TargetSpecifier;
        let Some(d) = &b.dynamic_resources else { return Ok(None) };
        let path = "dynamic_resources.ads_config";
        let uses_ads = |s: Option<&xds_core::ConfigSource>| {
            matches!(s.and_then(|s| s.config_source_specifier.as_ref()), Some(xds_core::config_source::ConfigSourceSpecifier::Ads(_)))
        };
        let Some(ads) = &d.ads_config else {
            if uses_ads(d.lds_config.as_ref()) || uses_ads(d.cds_config.as_ref()) {
                return Err(ConfigError::new(path, "lds_config or cds_config uses ads, but there is no ads_config"));
            }
            return Ok(None);
        };
        let delta = match ApiType::try_from(ads.api_type) {
            Ok(ApiType::Grpc) => false,
            Ok(ApiType::DeltaGrpc) => true,
            Ok(other) => {
                return Err(ConfigError::new(
                    format!("{path}.api_type"),
                    format!("{} is not supported by weft-proxy (GRPC and DELTA_GRPC are)", other.as_str_name()),
                ))
            }
            Err(_) => return Err(ConfigError::new(format!("{path}.api_type"), format!("unknown api_type {}", ads.api_type))),
        };
        let [service] = &ads.grpc_services[..] else {
            return Err(ConfigError::new(format!("{path}.grpc_services"), "exactly one grpc_service is required"));
        };
        let Some(TargetSpecifier::EnvoyGrpc(grpc)) = &service.target_specifier else {
            return Err(ConfigError::new(format!("{path}.grpc_services[0].envoy_grpc"), "envoy_grpc is required"));
        };
        let cluster = &grpc.cluster_name;
        let cpath = format!("{path}.grpc_services[0].envoy_grpc.cluster_name");
        let statics = b.static_resources.as_ref().map(|s| s.clusters.as_slice()).unwrap_or_default();
        let Some(c) = statics.iter().find(|c| c.name == *cluster) else {
            return Err(ConfigError::new(cpath, format!("unknown static cluster \"{cluster}\"")));
        };
        let compiled = crate::model::Cluster::compile(c, &cpath)?;
        let server = compiled.hosts.load().hosts.first().map(|h| h.addr).ok_or_else(|| {
            ConfigError::new(cpath.clone(), format!("cluster \"{cluster}\" needs a static endpoint (DNS is not supported for the xDS server yet)"))
        })?;
        if !compiled.http2 {
            return Err(ConfigError::new(cpath, format!("cluster \"{cluster}\" must speak HTTP/2 (gRPC): set http2_protocol_options")));
        }
        Ok(Some(Ads { server, cluster: cluster.clone(), delta }))
    }
}

/// Starts the client on a thread of its own; every accepted update is
/// compiled, resolved and sent to the server.
pub fn start(bootstrap: Bootstrap, ads: Ads, updates: UnboundedSender<Config>) -> std::io::Result<()> {
    std::thread::Builder::new().name("weft-xds".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the xDS client");
                return;
            }
        };
        runtime.block_on(stream::run(bootstrap, ads, updates));
    })?;
    Ok(())
}
