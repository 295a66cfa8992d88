//! Upstream connections: TCP, then TLS for clusters with a transport
//! socket; HTTP/1.1 keep-alive and HTTP/2 multiplexed pools per worker.
//!
//! Each worker runs its own single-threaded runtime (see `server`), so the
//! pool is thread-local: no locks, no idle-watch task per connection and no
//! per-reuse syscalls. A pooled connection the upstream has closed is found
//! out when it is used; the caller retries once on a fresh one (`forward`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use pingora_core::connectors::http::v2::{self, ConnectionRef, H2HandshakeSettings};
use pingora_core::protocols::http::v2::client::Http2Session;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::tls::SslStream;
use pingora_core::tls::error::ErrorStack;
use pingora_core::protocols::{GetSocketDigest, SocketDigest, Stream};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;

use crate::io::Counted;
use crate::model::cluster::ConnectionBudget;
use crate::tls::ClientTls;

/// Idle connections kept per upstream address and worker.
const MAX_IDLE_PER_HOST: usize = 256;
/// How a cluster reuses its connections: its `HttpProtocolOptions`'
/// `common_http_protocol_options`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reuse {
    /// Idle connections older than this are closed instead of reused
    /// (`None`: no limit).
    pub idle_timeout: Option<Duration>,
    /// Requests (HTTP/2: streams) a connection carries before it is let go
    /// (`None`: no limit).
    pub max_requests: Option<u32>,
    /// How long a connection is used for new requests after it was made
    /// (`None`: no limit).
    pub max_duration: Option<Duration>,
}

impl Reuse {
    /// Unset: Envoy's default idle timeout is 1 h, but servers usually
    /// close idle connections sooner (60 s is common), so an unset one is
    /// just under that: a reused connection is rarely one being closed.
    pub const DEFAULT: Reuse = Reuse { idle_timeout: Some(Duration::from_secs(55)), max_requests: None, max_duration: None };
}

/// Pooled connections are told apart by address and by the TLS identity
/// they were made with (0: plaintext).
pub type PoolKey = (SocketAddr, u64);

pub mod h1;

thread_local! {
    static IDLE: RefCell<HashMap<PoolKey, Vec<(h1::Connection, Instant)>>> = RefCell::new(HashMap::new());
    /// HTTP/2: one multiplexed connection per upstream and worker.
    static H2: RefCell<HashMap<PoolKey, Arc<H2Pooled>>> = RefCell::new(HashMap::new());
}

/// This worker's HTTP/2 connection to an upstream. The cell is shared while
/// the connection is being made, so concurrent requests wait for one
/// handshake instead of each opening a connection.
#[derive(Default)]
struct H2Pooled {
    conn: OnceCell<ConnectionRef>,
    /// Streams opened on it so far (for `max_requests`).
    opened: std::sync::atomic::AtomicU32,
    /// When its last stream was opened (for `idle_timeout`).
    last_used: std::sync::Mutex<Option<Instant>>,
    /// When it was made (for `max_duration`).
    made: std::sync::OnceLock<Instant>,
}

/// Concurrent streams we open on one HTTP/2 connection before opening
/// another (the server's SETTINGS may lower it).
const H2_MAX_STREAMS: usize = 100;

/// An upstream request's session: an HTTP/1.1 connection (our own client,
/// `h1`) or an HTTP/2 stream (Pingora's).
pub enum Session {
    H1(h1::Connection),
    /// Boxed: Pingora's stream state is large, and sessions are moved.
    H2(Box<Http2Session>),
}

/// A failed exchange, for the access log and debug logs.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The upstream sent something that is not HTTP (Envoy's `protocol error`
/// reset reason), as opposed to closing or failing.
pub fn is_protocol_error(e: &Error) -> bool {
    e.downcast_ref::<h1::Error>().is_some_and(h1::Error::is_protocol)
}

impl Session {
    /// The next piece of the response body; `None` at its end.
    pub async fn read_body(&mut self) -> Result<Option<bytes::Bytes>, Error> {
        match self {
            Session::H1(h1) => Ok(h1.read_body().await?),
            Session::H2(h2) => Ok(h2.read_response_body().await?),
        }
    }

    /// The response body has been read to its end.
    pub fn done(&mut self) -> bool {
        match self {
            Session::H1(h1) => h1.done(),
            Session::H2(h2) => h2.response_finished(),
        }
    }

    /// The connection's local address (for `%UPSTREAM_LOCAL_ADDRESS%`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        let digest = match self {
            Session::H1(h1) => h1.stream().get_socket_digest(),
            Session::H2(h2) => h2.digest().and_then(|d| d.socket_digest.clone()),
        };
        digest.and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())
    }
}

/// Where and how to connect: a cluster's host with the cluster's settings.
pub struct Target<'a> {
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    pub tls: Option<&'a ClientTls>,
    /// The cluster's max_connections / max_pending_requests (requests);
    /// `None` for connections outside it (health checks, tcp_proxy).
    pub budget: Option<&'a Arc<ConnectionBudget>>,
    pub reuse: Reuse,
    /// The cluster's `upstream_connection_options.tcp_keepalive`.
    pub keepalive: Option<&'a socket2::TcpKeepalive>,
    /// The cluster's HTTP/2 streams per connection and windows.
    pub h2: crate::model::http2::Http2Options,
}

impl Target<'_> {
    pub fn key(&self) -> PoolKey {
        (self.addr, self.tls.map_or(0, |t| t.id))
    }
}

/// Why a new connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP: refused, unreachable, timed out; the reason as Envoy words it
    /// (`delayed connect error: Connection refused`), empty when unknown.
    Tcp(String),
    /// The TLS handshake failed; BoringSSL's reason, as Envoy reports it.
    Tls(String),
    /// max_connections reached and max_pending_requests waiting already.
    Overflow,
}

/// A session to `target`: a pooled connection when one is idle (HTTP/1.1)
/// or has room for a stream (HTTP/2), else a new one. The flag says
/// whether a connection was reused.
pub async fn checkout(target: &Target<'_>, http2: bool) -> Result<(Session, bool), ConnectError> {
    if http2 {
        return checkout_h2(target).await;
    }
    let Reuse { idle_timeout, max_requests, max_duration } = target.reuse;
    loop {
        if let Some(conn) = take_idle(target.key(), idle_timeout) {
            return Ok((Session::H1(conn), true));
        }
        let Some(budget) = target.budget else {
            return Ok((Session::H1(h1::Connection::new(connect(target).await?, max_requests, max_duration)), false));
        };
        if let Some(slot) = budget.try_open() {
            let stream: Stream = Box::new(Counted::new(connect(target).await?, slot));
            return Ok((Session::H1(h1::Connection::new(stream, max_requests, max_duration)), false));
        }
        // At max_connections: wait (as a pending request) for one to
        // close or come back idle.
        if !budget.wait().await {
            return Err(ConnectError::Overflow);
        }
    }
}

/// Returns a finished session to this worker's pool if it can be reused
/// (an HTTP/2 stream just ends; its connection stays pooled).
pub async fn checkin(session: Session, pool: PoolKey, budget: &ConnectionBudget) {
    let Session::H1(conn) = session else { return };
    // Keep-alive as the response allows (HTTP/1.1 default, `connection:
    // close`, HTTP/1.0, a body we could not delimit) and the cluster's
    // max_requests_per_connection.
    if !conn.reusable() {
        conn.close().await;
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(pool).or_default();
        if list.len() < MAX_IDLE_PER_HOST {
            list.push((conn, Instant::now()));
        }
    });
    budget.idle();
}

/// Envoy's transport failure reason for a failed connect: the OS's words
/// without Rust's `(os error N)`.
fn connect_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let words = text.split(" (os error").next().unwrap_or_default();
    format!("delayed connect error: {words}")
}

/// A new connection: TCP within the connect timeout, then TLS when the
/// cluster has a transport socket (the handshake counts against the same
/// timeout, as in Envoy).
pub async fn connect(target: &Target<'_>) -> Result<Stream, ConnectError> {
    let connecting = async {
        let tcp = TcpStream::connect(target.addr).await.map_err(|e| ConnectError::Tcp(connect_error(&e)))?;
        let _ = tcp.set_nodelay(true);
        if let Some(keepalive) = target.keepalive {
            if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_keepalive(keepalive) {
                tracing::debug!(error = %e, "cannot set TCP keep-alive on an upstream connection");
            }
        }
        let fd = tcp.as_raw_fd();
        let mut l4 = L4Stream::from(tcp);
        l4.set_socket_digest(SocketDigest::from_raw_fd(fd));
        let Some(tls) = target.tls else {
            return Ok(Box::new(l4) as Stream);
        };
        let ssl = tls.ssl().map_err(|e| ConnectError::Tls(envoy_tls_error(&e)))?;
        let mut stream = SslStream::new(ssl, l4).map_err(|_| ConnectError::Tcp(String::new()))?;
        match stream.connect().await {
            Ok(()) => Ok(Box::new(stream) as Stream),
            Err(e) => Err(ConnectError::Tls(e.ssl_error().map(envoy_tls_error).unwrap_or_default())),
        }
    };
    tokio::time::timeout(target.connect_timeout, connecting).await.map_err(|_| ConnectError::Tcp(String::new()))?
}

/// A stream on this worker's HTTP/2 connection to the target, opening the
/// connection (and handshaking HTTP/2) when there is none or it is full.
///
/// Requests that find the connection full move on to the next one, made
/// by the first of them: each round serves a connection's worth, so a
/// burst of N requests takes N / max_concurrent_streams rounds (Envoy's
/// pool likewise opens a connection per that many pending streams). The
/// bound stops a server that takes no streams at all from making us
/// open connections forever.
async fn checkout_h2(target: &Target<'_>) -> Result<(Session, bool), ConnectError> {
    const ROUNDS: usize = 64;
    let key = target.key();
    for _ in 0..ROUNDS {
        let pooled = H2.with(|h2| h2.borrow_mut().entry(key).or_default().clone());
        let mut made = false;
        let conn = pooled
            .conn
            .get_or_try_init(|| async {
                made = true;
                let stream = connect(target).await?;
                let mut settings = H2HandshakeSettings::new();
                settings.max_streams = target.h2.max_concurrent_streams.map_or(H2_MAX_STREAMS, |n| n as usize);
                settings.stream_window_size = target.h2.initial_stream_window_size;
                settings.connection_window_size = target.h2.initial_connection_window_size;
                let _ = pooled.made.set(Instant::now());
                v2::handshake(stream, settings).await.map_err(|_| ConnectError::Tcp(String::new()))
            })
            .await?;
        let now = Instant::now();
        let lived_long_enough = target.reuse.max_duration.zip(pooled.made.get()).is_some_and(|(max, made)| now.duration_since(*made) >= max);
        let idle_too_long = {
            let mut last_used = pooled.last_used.lock().unwrap_or_else(|p| p.into_inner());
            let stale = conn.is_idle() && target.reuse.idle_timeout.zip(*last_used).is_some_and(|(idle, at)| now.duration_since(at) >= idle);
            *last_used = Some(now);
            stale
        };
        if !idle_too_long && !lived_long_enough && !conn.is_closed() && !conn.is_shutting_down() {
            if let Ok(Some(stream)) = conn.spawn_stream().await {
                let opened = pooled.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                // At max_requests_per_connection: its streams finish, the
                // next request opens another.
                if target.reuse.max_requests.is_some_and(|max| opened >= max) {
                    forget_h2(key, &pooled);
                }
                return Ok((Session::H2(Box::new(stream)), !made));
            }
        }
        // Closed, draining (GOAWAY), idle too long, old enough or full: the
        // next request gets a new one.
        forget_h2(key, &pooled);
    }
    Err(ConnectError::Tcp(String::new()))
}

/// Takes an HTTP/2 connection out of the pool (if it is still the pooled one).
fn forget_h2(key: PoolKey, pooled: &Arc<H2Pooled>) {
    H2.with(|h2| {
        let mut h2 = h2.borrow_mut();
        if h2.get(&key).is_some_and(|c| Arc::ptr_eq(c, pooled)) {
            h2.remove(&key);
        }
    });
}

/// BoringSSL's error queue the way Envoy prints a transport failure:
/// `TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end`.
fn envoy_tls_error(stack: &ErrorStack) -> String {
    let mut out = String::from("TLS_error:");
    for e in stack.errors() {
        // The packed code is what Envoy prints; `library_reason` would
        // only give its parts.
        #[allow(deprecated)]
        let code = e.code();
        out.push_str(&format!(
            "|{}:{}:OPENSSL_internal:{}",
            code,
            e.library().unwrap_or(""),
            e.reason().unwrap_or("")
        ));
    }
    out.push_str(":TLS_error_end");
    out
}

/// Drops this worker's idle HTTP/1.1 connections to an upstream.
pub fn forget_idle(key: PoolKey) {
    IDLE.with(|idle| idle.borrow_mut().remove(&key));
}

/// An idle connection to `key`, idle for less than `timeout`.
fn take_idle(key: PoolKey, timeout: Option<Duration>) -> Option<h1::Connection> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&key)?;
        // Most recently used first: the warmest connection is the least
        // likely to have been closed by the upstream.
        while let Some((conn, since)) = list.pop() {
            if timeout.is_none_or(|t| since.elapsed() < t) && !conn.past_its_time() {
                return Some(conn);
            }
        }
        None
    })
}
