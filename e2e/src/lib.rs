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
pub mod h2_raw;
pub mod mesh;
pub mod pki;
pub mod proxy;
pub mod tls_client;
pub mod upstream;

pub use client::{Observed, Request};
pub use proxy::{Kind, Proxy};
pub use tls_client::TlsClient;
pub use upstream::{Seen, Upstream};

/// A free loopback port for a proxy or server to bind.
///
/// Ports come from a counter below the kernel's ephemeral range
/// (32768–60999), each checked free, so two tests running at once never get
/// the same one and a client's ephemeral port never takes one between the
/// check and the bind. (Asking the kernel for port 0 and releasing it let two
/// parallel tests pick the same port: one test's readiness probe then went
/// through the other's proxy.) The start depends on the process id so that
/// test binaries running side by side start far apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}

/// Replaces `dir/name` the way an editor, `kubectl cp` or Envoy's docs do
/// it: write aside, then `mv`, so a watcher never reads half a file.
pub fn replace_file(dir: &std::path::Path, name: &str, text: &str) {
    let aside = dir.join(format!(".{name}.tmp"));
    std::fs::write(&aside, text).expect("write");
    std::fs::rename(&aside, dir.join(name)).expect("mv");
}
