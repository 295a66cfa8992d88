//! weft-operator: Istio-compatible resources in, Envoy v3 xDS out.
//!
//! ```text
//!  resources (YAML dir | Kubernetes) ─► translate ─► xds::Hub ─ADS─► weft-proxy / Envoy
//!                                                        ▲ ACK/NACK ─► status
//! ```
//! - `xds`: the ADS server (state-of-the-world and delta), per-proxy
//!   snapshots, proxies identified as Istio identifies them.
//! - `bootstrap`: the Envoy bootstrap that connects a proxy to us.

pub mod bootstrap;
pub mod xds;
