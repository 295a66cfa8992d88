//! Test kit for whole-system tests: upstream servers that record what they
//! see, a raw HTTP/1.1 client, and launchers for weft-proxy and the Envoy
//! oracle running the same bootstrap.
//!
//! ```text
//!  client ──► proxy (Envoy | weft-proxy) ──► Upstream (records Seen)
//!     └── Observed { status, headers, body } ──┘ compared across proxies
//! ```

pub mod bootstrap;
pub mod client;
pub mod demo;
pub mod mesh;
pub mod pki;
pub mod proxy;
pub mod tls_client;
pub mod upstream;

pub use client::{Observed, Request};
pub use proxy::{Kind, Proxy};
pub use tls_client::TlsClient;
pub use upstream::{Seen, Upstream};

/// A free loopback port (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Replaces `dir/name` the way an editor, `kubectl cp` or Envoy's docs do
/// it: write aside, then `mv`, so a watcher never reads half a file.
pub fn replace_file(dir: &std::path::Path, name: &str, text: &str) {
    let aside = dir.join(format!(".{name}.tmp"));
    std::fs::write(&aside, text).expect("write");
    std::fs::rename(&aside, dir.join(name)).expect("mv");
}
