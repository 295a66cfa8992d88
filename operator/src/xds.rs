//! The xDS server: per-proxy snapshots streamed over ADS (gRPC), in both
//! the state-of-the-world and the delta protocol.
//!
//! ```text
//!  translation ──set_generator──► Hub ──Arc<Snapshot> per proxy (watch)──► stream task
//!                                  ▲                                        │ sotw::Stream | delta::Stream
//!                                  └──── ACK / NACK events ◄────────────────┘ (pure state machines)
//! ```
//! `snapshot`, `sotw`, `delta` and `node` do no I/O; `hub` and `server` are
//! the glue.

pub mod delta;
pub mod hub;
pub mod node;
pub mod server;
pub mod snapshot;
pub mod sotw;
pub mod wire;
#[cfg(test)]
mod testing;

pub use hub::Hub;
pub use node::{Proxy, Role};
pub use snapshot::{Kind, Resource, Snapshot};

/// What a proxy said about the last response of one type.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Applied; `version` is the response's version.
    Ack { kind: Kind, version: String },
    /// Rejected with the proxy's `message`; it keeps its previous config.
    /// `version` is the one it still has (SotW) or the rejected one (delta).
    Nack {
        kind: Kind,
        version: String,
        message: String,
    },
}
