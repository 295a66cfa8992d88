//! The downstream side of one request, whichever codec carries it: our own
//! HTTP/1.1 codec (`h1`, plaintext and TLS) or our HTTP/2 session on the
//! `h2` crate (`h2`: h2c and ALPN `h2`). The connection manager and the
//! router see only this.

pub mod h1;
pub mod h2;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::Stream;
use pingora_http::{RequestHeader, ResponseHeader};

use super::header_map;

/// A failed read or write: the stream is aborted.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Marks a request whose target carried a `#fragment`. The request's URI no
/// longer shows it (Pingora drops it), but Envoy refuses such a request
/// with 400, so the connection manager must know.
#[derive(Debug, Clone, Copy)]
pub struct Fragment;

/// The client connection's facts, taken once when it is accepted (every
/// request on it, or stream, reads them).
#[derive(Default)]
pub struct Peer {
    /// The client's address (the socket's peer).
    pub client: Option<SocketAddr>,
    /// The address the client connected to.
    pub server: Option<SocketAddr>,
    /// The TLS connection's facts (peer certificate, SNI), if TLS.
    pub ssl: Option<Arc<SslDigest>>,
}

impl Peer {
    pub fn of(stream: &Stream) -> Peer {
        let socket = stream.get_socket_digest();
        Peer {
            client: socket.as_ref().and_then(|s| s.peer_addr()).and_then(|a| a.as_inet()).copied(),
            server: socket.as_ref().and_then(|s| s.local_addr()).and_then(|a| a.as_inet()).copied(),
            ssl: stream.get_ssl_digest(),
        }
    }
}

/// The reply to a request that could not be served at all: its status,
/// no body.
fn error_response(status: u16) -> Option<Box<ResponseHeader>> {
    let mut resp = ResponseHeader::build_no_case(status, Some(2)).ok()?;
    header_map::insert(&mut resp, header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Some(Box::new(resp))
}

pub enum Downstream {
    H1(h1::Server),
    H2(h2::Server),
}

impl Downstream {
    /// Reads the request header: `Ok(false)` when the client went away
    /// first, `Err(status)` for a request to refuse (400, 431).
    pub async fn read_request(&mut self) -> Result<bool, u16> {
        match self {
            Downstream::H1(s) => s.read_request().await.map_err(|h1::BadRequest(status)| status),
            // The stream's header is read before the stream is served.
            Downstream::H2(_) => Ok(true),
        }
    }

    pub fn req_header(&self) -> &RequestHeader {
        match self {
            Downstream::H1(s) => s.req_header(),
            Downstream::H2(s) => s.req_header(),
        }
    }

    /// The request as the router edits it. HTTP/1.1: moved out of the
    /// codec (ours already has no header-case map); HTTP/2: a copy sized
    /// for the router's additions (`routable_copy`).
    pub fn take_request(&mut self) -> RequestHeader {
        match self {
            Downstream::H1(s) => s.take_request(),
            Downstream::H2(s) => super::routable_copy(s.req_header()),
        }
    }

    pub fn is_http2(&self) -> bool {
        matches!(self, Downstream::H2(_))
    }

    pub fn peer(&self) -> &Peer {
        match self {
            Downstream::H1(s) => s.peer(),
            Downstream::H2(s) => s.peer(),
        }
    }

    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.peer().client
    }

    pub fn server_addr(&self) -> Option<SocketAddr> {
        self.peer().server
    }

    pub fn ssl_digest(&self) -> Option<&Arc<SslDigest>> {
        self.peer().ssl.as_ref()
    }

    pub fn is_body_empty(&mut self) -> bool {
        match self {
            Downstream::H1(s) => s.is_body_empty(),
            Downstream::H2(s) => s.is_body_empty(),
        }
    }

    /// The next piece of the request body; `None` at its end.
    pub async fn read_request_body(&mut self) -> Result<Option<Bytes>, Error> {
        match self {
            Downstream::H1(s) => Ok(s.read_body().await?),
            Downstream::H2(s) => Ok(s.read_body().await?),
        }
    }

    /// The request's trailers, once its body has been read to its end
    /// (HTTP/2 only: Envoy's HTTP/1 codec drops them by default).
    pub fn take_request_trailers(&mut self) -> Option<http::HeaderMap> {
        match self {
            Downstream::H1(_) => None,
            Downstream::H2(s) => s.take_trailers(),
        }
    }

    /// Sends what the response has ready, in one write where the codec
    /// allows: the header (the first time), a piece of body, and with
    /// `end` the end of the stream, or the trailers (HTTP/2 only; an
    /// HTTP/1.1 client does not get them, as from Envoy by default).
    pub async fn respond(
        &mut self,
        header: Option<Box<ResponseHeader>>,
        body: Option<Bytes>,
        end: bool,
        trailers: Option<http::HeaderMap>,
    ) -> Result<(), Error> {
        match self {
            Downstream::H1(s) => Ok(s.respond(header, body, end).await?),
            Downstream::H2(s) => Ok(s.respond(header, body, end, trailers).await?),
        }
    }

    /// After a 101 (HTTP/1.1 only): the client's connection and what it
    /// sent after its request, for a tunnel.
    pub fn tunnel(&mut self) -> Option<(&mut pingora_core::protocols::Stream, bytes::BytesMut)> {
        match self {
            Downstream::H1(s) => Some(s.tunnel()),
            Downstream::H2(_) => None,
        }
    }

    /// The connection closes after this response (HTTP/1.1; an HTTP/2
    /// connection's streams end on their own).
    /// An HTTP/1.1 request with a body none of which has been read yet.
    pub fn body_unread(&self) -> bool {
        match self {
            Downstream::H1(s) => s.body_unread(),
            Downstream::H2(_) => false,
        }
    }

    pub fn disable_keepalive(&mut self) {
        match self {
            Downstream::H1(s) => s.disable_keepalive(),
            // An HTTP/2 connection drains as a whole (`h2_connection`).
            Downstream::H2(_) => {}
        }
    }

    /// Answers a request that could not be served at all (400, 431).
    pub async fn respond_error(&mut self, status: u16) {
        match self {
            Downstream::H1(s) => s.respond_error(status).await,
            Downstream::H2(s) => {
                if let Some(resp) = error_response(status) {
                    let _ = s.respond(Some(resp), None, true, None).await;
                }
            }
        }
    }

    pub fn response_written(&self) -> Option<&ResponseHeader> {
        match self {
            Downstream::H1(s) => s.response_written(),
            Downstream::H2(s) => s.response_written(),
        }
    }

    pub fn body_bytes_read(&self) -> usize {
        match self {
            Downstream::H1(s) => s.body_bytes_read(),
            Downstream::H2(s) => s.body_bytes_read(),
        }
    }

    pub fn body_bytes_sent(&self) -> usize {
        match self {
            Downstream::H1(s) => s.body_bytes_sent(),
            Downstream::H2(s) => s.body_bytes_sent(),
        }
    }
}
