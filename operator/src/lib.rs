//! weft-operator: Istio-compatible resources in, Envoy v3 xDS out.
//!
//! ```text
//!  resources (YAML dir | Kubernetes) ─► translate ─► xds::Hub ─ADS─► weft-proxy / Envoy
//!                                                        ▲ ACK/NACK ─► status
//! ```
//! - `xds`: the ADS server (state-of-the-world and delta), per-proxy
//!   snapshots, proxies identified as Istio identifies them.
//! - `index`: the registry (services, instances) and the rules by target.
//! - `validate`: problems with their field paths; what is accepted.
//! - `translate`: index → one proxy's snapshot, as istiod would build it.
//! - `standalone`: a watched directory of YAML as the source of truth.
//! - `status`: each resource's condition and messages, proxies' NACKs.
//! - `bootstrap`: the Envoy bootstrap that connects a proxy to us.

pub mod bootstrap;
pub mod index;
pub mod standalone;
pub mod status;
pub mod translate;
pub mod validate;
pub mod xds;

/// Locks `m`, also when a thread panicked while holding it: a panic
/// elsewhere must not take the xDS server or the watcher down with it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
