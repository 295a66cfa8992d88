//! TLS with Envoy's `DownstreamTlsContext` / `UpstreamTlsContext` semantics,
//! on BoringSSL through Pingora's `boring` re-export.
//!
//! ```text
//!  accept ─► inspector (ClientHello: SNI, ALPN) ─► filter chain ─► ServerTls handshake ─► HCM / tcp_proxy
//!  connect ─► ClientTls handshake (SNI, ALPN, client cert, CA + SAN checks) ─► upstream session
//! ```
//! Contexts are built once per config; a handshake only creates an `Ssl`.

mod context;
pub mod inspector;
mod peer;

pub use context::{ClientTls, ServerTls};
pub use peer::{PeerIdentity, RecordPeer};

pub const DOWNSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
pub const UPSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
pub const RAW_BUFFER: &str = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
