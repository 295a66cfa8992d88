//! Upstream connections: connecting through Pingora's transport connector,
//! and a keep-alive pool per worker thread.
//!
//! Each worker runs its own single-threaded runtime (see `server`), so the
//! pool is thread-local: no locks, no idle-watch task per connection and no
//! per-reuse syscalls. A pooled connection the upstream has closed is found
//! out when it is used; the caller retries once on a fresh one (`forward`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::HttpPeer;

/// Idle connections kept per upstream address and worker.
const MAX_IDLE_PER_HOST: usize = 256;
/// Idle connections older than this are closed instead of reused (Envoy's
/// default upstream idle timeout is 1 h; servers usually close sooner).
const IDLE_TIMEOUT: Duration = Duration::from_secs(55);

thread_local! {
    static IDLE: RefCell<HashMap<SocketAddr, Vec<(Stream, Instant)>>> = RefCell::new(HashMap::new());
}

/// Opens new upstream connections (Pingora's L4 connector: connect timeout,
/// socket options, TLS later).
pub struct Connector {
    transport: TransportConnector,
}

impl Default for Connector {
    fn default() -> Self {
        Self::new()
    }
}

impl Connector {
    pub fn new() -> Self {
        Connector { transport: TransportConnector::new(None) }
    }

    /// A session to `peer`: a pooled connection when one is idle, else a new
    /// one. The flag says whether it was reused.
    pub async fn checkout(&self, peer: &HttpPeer, addr: SocketAddr) -> pingora_error::Result<(HttpSession, bool)> {
        if let Some(stream) = take_idle(addr) {
            return Ok((HttpSession::new(stream), true));
        }
        let stream = self.transport.new_stream(peer).await?;
        Ok((HttpSession::new_with_options(stream, peer), false))
    }

    /// Returns a finished session to this worker's pool if it can be reused.
    pub async fn checkin(&self, mut session: HttpSession, addr: SocketAddr) {
        // Keep-alive as the response allows (HTTP/1.1 default, `connection:
        // close`, HTTP/1.0, a body we could not delimit).
        session.respect_keepalive();
        if let Some(stream) = session.reuse().await {
            IDLE.with(|idle| {
                let mut idle = idle.borrow_mut();
                let list = idle.entry(addr).or_default();
                if list.len() < MAX_IDLE_PER_HOST {
                    list.push((stream, Instant::now()));
                }
            });
        }
    }
}

fn take_idle(addr: SocketAddr) -> Option<Stream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        // Most recently used first: the warmest connection is the least
        // likely to have been closed by the upstream.
        while let Some((stream, since)) = list.pop() {
            if since.elapsed() < IDLE_TIMEOUT {
                return Some(stream);
            }
        }
        None
    })
}
