//! An HTTP/2 downstream connection. Our HTTP/2 server (`downstream::h2`)
//! accepts its streams and hands each to `Connection`, which serves it
//! like an HTTP/1.1 request in a task of its own; we decide when the
//! connection drains (the server then sends GOAWAY, lets the open streams
//! finish and closes):
//!
//! ```text
//!  shutdown ─────────────┐
//!  listener replaced ────┤
//!  idle timeout, no stream open ─┼─► closing ─► GOAWAY, streams finish, close
//!  max_requests_per_connection ──┤
//!  max_connection_duration ──────┘
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio::sync::watch;

use super::downstream::{h2, Downstream};
use super::HttpProxy;
use crate::filter::ConnectionState;

/// Serves one HTTP/2 connection until it closes.
pub async fn serve(proxy: Arc<HttpProxy>, stream: Stream, state: ConnectionState, shutdown: &ShutdownWatch) {
    let streams = watch::Sender::new(0);
    let (closing, watch) = watch::channel(false);
    let (mut shutdown, mut drained) = (shutdown.clone(), proxy.drained.subscribe());
    // Read once, as an HTTP/1.1 connection reads its limits.
    let (idle, max_duration, max_requests, limits) = {
        let manager = proxy.manager.load();
        let limits = h2::Limits { max_header_bytes: manager.max_request_header_bytes, options: manager.http2 };
        (manager.idle_timeout, manager.max_connection_duration, manager.max_requests_per_connection, limits)
    };
    let opened = AtomicU32::new(0);
    let connection = Arc::new(Connection { proxy, state, streams: streams.clone(), opened, max_requests, closing: closing.clone(), shutdown: shutdown.clone() });
    let served = h2::accept(stream, limits, watch, |server| {
        tokio::spawn(connection.clone().serve_stream(server));
    });
    tokio::pin!(served);
    tokio::select! {
        _ = &mut served => return,
        Ok(_) = shutdown.wait_for(|closing| *closing) => {}
        Ok(_) = drained.wait_for(|drained| *drained) => {}
        // Envoy's GOAWAY at the idle timeout: a client does not start a
        // request on a connection being closed.
        () = idle_for(streams.subscribe(), idle.unwrap_or_default()), if idle.is_some() => {}
        () = tokio::time::sleep(max_duration.unwrap_or_default()), if max_duration.is_some() => {}
    }
    closing.send_replace(true);
    served.await;
}

/// Returns once an HTTP/2 connection has had no stream open for `idle`
/// (`streams` counts them).
async fn idle_for(mut streams: watch::Receiver<usize>, idle: Duration) {
    loop {
        if streams.wait_for(|open| *open == 0).await.is_err() {
            return std::future::pending().await;
        }
        tokio::select! {
            () = tokio::time::sleep(idle) => return,
            // A stream opened: the idle clock starts again when it is over.
            _ = streams.wait_for(|open| *open > 0) => {}
        }
    }
}

/// One HTTP/2 downstream connection: each of its streams is served in a
/// task of its own, and the requests share the connection's filter state.
struct Connection {
    proxy: Arc<HttpProxy>,
    state: ConnectionState,
    /// Streams being served, for the idle timeout.
    streams: watch::Sender<usize>,
    /// Streams opened so far, for max_requests_per_connection.
    opened: AtomicU32,
    max_requests: Option<u32>,
    /// Makes the server drain the connection (GOAWAY).
    closing: watch::Sender<bool>,
    shutdown: ShutdownWatch,
}

/// Counts a stream as open for as long as it lives.
struct OpenStream<'a>(&'a watch::Sender<usize>);

impl<'a> OpenStream<'a> {
    fn new(streams: &'a watch::Sender<usize>) -> Self {
        streams.send_modify(|open| *open += 1);
        OpenStream(streams)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
    }
}

impl Connection {
    async fn serve_stream(self: Arc<Self>, server: h2::Server) {
        let _open = OpenStream::new(&self.streams);
        let opened = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_requests.is_some_and(|max| opened >= max) {
            self.closing.send_replace(true);
        }
        let mut session = Downstream::H2(server);
        let served = self.proxy.process_request(&mut session, &self.shutdown, &self.state, false).await;
        let Downstream::H2(mut server) = session else { return };
        // An aborted stream is reset: dropped without its end.
        if served {
            server.finish();
        }
    }
}
