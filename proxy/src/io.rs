//! Stream wrappers. [`Buffered`]: a TLS downstream socket with writes
//! buffered (one MSS), as Pingora's own listeners arrange it, so that a
//! handshake flight or small TLS records leave in one `send`. Writers flush
//! at the end of a response, after every chunked or close-delimited body
//! write, and whenever the buffer fills, so streaming is not delayed.
//! Plain-text connections are not buffered ([`plain`]): our HTTP/1.1 codec
//! builds each write whole.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest, UniqueID,
    UniqueIDType,
};

use crate::model::cluster::ConnectionSlot;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};

/// Pingora's default L4 write buffer: one TCP segment on loopback/Ethernet.
const WRITE_BUFFER: usize = 1460;

#[derive(Debug)]
pub struct Buffered(BufWriter<L4Stream>);

/// A downstream TCP connection as Pingora's stream, unbuffered.
pub fn plain(tcp: tokio::net::TcpStream) -> L4Stream {
    use std::os::fd::AsRawFd;
    let fd = tcp.as_raw_fd();
    let mut stream = L4Stream::from(tcp);
    // Addresses are looked up lazily, once per connection.
    stream.set_socket_digest(SocketDigest::from_raw_fd(fd));
    stream
}

impl Buffered {
    pub fn new(tcp: tokio::net::TcpStream) -> Self {
        Buffered(BufWriter::with_capacity(WRITE_BUFFER, plain(tcp)))
    }

    /// Puts bytes already read (by the TLS inspector) back in front.
    pub fn rewind(&mut self, data: &[u8]) {
        self.0.get_mut().rewind(data);
    }
}

impl AsyncRead for Buffered {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Buffered {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Buffered {
    async fn shutdown(&mut self) {
        let _ = self.0.flush().await;
        Shutdown::shutdown(self.0.get_mut()).await
    }
}

impl UniqueID for Buffered {
    fn id(&self) -> UniqueIDType {
        self.0.get_ref().id()
    }
}

impl Ssl for Buffered {}

#[async_trait]
impl Peek for Buffered {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.0.get_mut().try_peek(buf).await
    }
}

impl GetTimingDigest for Buffered {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.0.get_ref().get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.0.get_ref().get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.0.get_ref().get_write_pending_time()
    }
}

impl GetProxyDigest for Buffered {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.0.get_ref().get_proxy_digest()
    }
}

impl GetSocketDigest for Buffered {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.0.get_ref().get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.0.get_mut().set_socket_digest(digest)
    }
}

/// An upstream connection counted against its cluster's max_connections:
/// the slot is released when the connection is dropped (closed), wherever
/// it is then (in use, or idle in a pool).
#[derive(Debug)]
pub struct Counted {
    inner: Stream,
    _slot: ConnectionSlot,
}

impl Counted {
    pub fn new(inner: Stream, slot: ConnectionSlot) -> Self {
        Counted { inner, _slot: slot }
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Counted {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for Counted {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Counted {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<pingora_core::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

#[async_trait]
impl Peek for Counted {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

impl GetTimingDigest for Counted {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Counted {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Counted {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

/// Copies bytes both ways (a TCP proxy, an upgraded HTTP connection) until both sides are done (a side that ends is
/// half-closed on the other, as Envoy does), an error, or `idle` passes
/// without a byte either way.
pub async fn splice<A, B>(a: &mut A, b: &mut B, idle: Option<Duration>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut from_a, mut from_b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        let quiet = async {
            match idle {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        // Reads are cancel-safe: the branch that loses the race loses no bytes.
        tokio::select! {
            r = a.read(&mut from_a), if a_open => match r {
                Ok(n) if n > 0 => {
                    if b.write_all(&from_a[..n]).await.is_err() || b.flush().await.is_err() {
                        return;
                    }
                }
                _ => {
                    a_open = false;
                    let _ = b.shutdown().await;
                }
            },
            r = b.read(&mut from_b), if b_open => match r {
                Ok(n) if n > 0 => {
                    if a.write_all(&from_b[..n]).await.is_err() || a.flush().await.is_err() {
                        return;
                    }
                }
                _ => {
                    b_open = false;
                    let _ = a.shutdown().await;
                }
            },
            _ = quiet => return,
        }
    }
}
