//! The request body on its way upstream, as Envoy's router moves it: piece
//! by piece as the client sends it, a copy kept for retries while it is
//! small enough.
//!
//! ```text
//!  client ─► read ─► keep (≤ 1 MiB) ─► upstream attempt
//!                        └──── replayed by the next attempt
//! ```
//! An HTTP/1.1 upstream gets the whole body before its response is read.
//! An HTTP/2 upstream's body goes on beside the response ([`H2Pump`]), so
//! a bidirectional gRPC stream works through the router.

use std::future::poll_fn;

use bytes::Bytes;

use super::clock::Progress;
use super::downstream::Downstream;
use crate::upstream;

/// How much of a request body is kept so that a retry can send it again:
/// Envoy's default buffer limit (`per_connection_buffer_limit_bytes`,
/// 1 MiB). A longer body is not replayed, so not retried, as in Envoy.
pub const RETRY_BUFFER_LIMIT: usize = 1024 * 1024;

/// Which side a body transfer failed on.
#[derive(Debug)]
pub enum Broken {
    /// The client went away or framed its body wrongly.
    Client,
    Upstream(upstream::Error),
}

/// What the router has of the request body.
pub struct RequestBody<'p> {
    /// Every piece read from the client so far, while they can all be
    /// kept (pieces are reference-counted: keeping costs no copy).
    kept: Vec<Bytes>,
    kept_len: usize,
    /// The client's body has ended.
    ended: bool,
    /// More than [`RETRY_BUFFER_LIMIT`] came: `kept` was let go.
    overflowed: bool,
    /// Told of each piece, for the router's clocks.
    progress: Option<&'p Progress>,
}

impl RequestBody<'static> {
    /// A body read already (a filter needed it), or none.
    pub fn whole(body: Bytes) -> Self {
        let kept_len = body.len();
        let kept = if body.is_empty() { Vec::new() } else { vec![body] };
        RequestBody { kept, kept_len, ended: true, overflowed: false, progress: None }
    }
}

impl<'p> RequestBody<'p> {
    /// A body still to be read from the client.
    pub fn streaming(progress: &'p Progress) -> Self {
        RequestBody { kept: Vec::new(), kept_len: 0, ended: false, overflowed: false, progress: Some(progress) }
    }

    /// The client's body has been read to its end.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// A new attempt can send the body from its start.
    pub fn replayable(&self) -> bool {
        !self.overflowed
    }

    /// The whole body in one piece, when it has ended and is kept so.
    pub fn as_whole(&self) -> Option<Bytes> {
        match (self.ended, self.kept.as_slice()) {
            (true, []) => Some(Bytes::new()),
            (true, [one]) => Some(one.clone()),
            _ => None,
        }
    }

    /// The pieces read so far (for an attempt to send first).
    pub fn kept(&self) -> &[Bytes] {
        &self.kept
    }

    /// The client's next piece, kept for replay while within the limit;
    /// `None` at the end. Cancel-safe: a piece is only taken off the
    /// connection when it is returned.
    pub async fn read(&mut self, session: &mut Downstream) -> Result<Option<Bytes>, Broken> {
        if self.ended {
            return Ok(None);
        }
        match session.read_request_body().await {
            Ok(Some(data)) => {
                if let Some(p) = self.progress {
                    p.record(false);
                }
                if !self.overflowed {
                    self.kept_len += data.len();
                    if self.kept_len > RETRY_BUFFER_LIMIT {
                        self.overflowed = true;
                        self.kept = Vec::new();
                    } else {
                        self.kept.push(data.clone());
                    }
                }
                Ok(Some(data))
            }
            Ok(None) => {
                self.ended = true;
                if let Some(p) = self.progress {
                    p.record(true);
                }
                Ok(None)
            }
            Err(e) => {
                tracing::debug!(error = %e, "request body read failed");
                Err(Broken::Client)
            }
        }
    }

    /// Sends the body to an HTTP/1.1 upstream after its header
    /// ([`upstream::h1::Connection::start`]): what is kept, then the rest
    /// as the client sends it, to the end.
    pub async fn send_h1(&mut self, conn: &mut upstream::h1::Connection, session: &mut Downstream, chunked: bool) -> Result<(), Broken> {
        let up = |e: upstream::h1::Error| Broken::Upstream(e.into());
        for piece in self.kept.clone() {
            conn.send_body(&piece, chunked, false).await.map_err(up)?;
        }
        while let Some(piece) = self.read(session).await? {
            conn.send_body(&piece, chunked, false).await.map_err(up)?;
        }
        conn.send_body(&[], chunked, true).await.map_err(up)
    }
}

/// The rest of a request body on its way to an HTTP/2 upstream, moved a
/// step at a time beside the response (each step is cancel-safe, so the
/// router can wait on it and on the upstream together).
pub struct H2Pump {
    writer: h2::SendStream<Bytes>,
    /// A piece read from the client that the upstream's window has not
    /// taken all of yet.
    pending: Option<Bytes>,
}

impl H2Pump {
    /// Queues what is kept (h2 holds it until the window takes it; it is
    /// at most [`RETRY_BUFFER_LIMIT`]); ends the stream if the body has.
    pub fn start(mut writer: h2::SendStream<Bytes>, body: &RequestBody) -> Result<Option<H2Pump>, Broken> {
        let up = |e: h2::Error| Broken::Upstream(e.into());
        for piece in body.kept() {
            writer.send_data(piece.clone(), false).map_err(up)?;
        }
        if body.ended() {
            writer.send_data(Bytes::new(), true).map_err(up)?;
            return Ok(None);
        }
        Ok(Some(H2Pump { writer, pending: None }))
    }

    /// One step: a piece read from the client, or some of it sent as the
    /// upstream's window allows. `Ok(true)`: the body has all been sent.
    pub async fn step(&mut self, body: &mut RequestBody<'_>, session: &mut Downstream) -> Result<bool, Broken> {
        let up = |e: h2::Error| Broken::Upstream(e.into());
        let Some(data) = self.pending.as_mut() else {
            match body.read(session).await? {
                Some(data) if data.is_empty() => {}
                Some(data) => self.pending = Some(data),
                None => {
                    self.writer.send_data(Bytes::new(), true).map_err(up)?;
                    return Ok(true);
                }
            }
            return Ok(false);
        };
        // The client is not read further until the upstream takes this
        // piece: its window is the back-pressure.
        self.writer.reserve_capacity(data.len());
        let window = match self.writer.capacity() {
            0 => match poll_fn(|cx| self.writer.poll_capacity(cx)).await {
                Some(window) => window.map_err(up)?,
                None => return Err(Broken::Upstream("upstream stream closed".into())),
            },
            window => window,
        };
        let piece = data.split_to(window.min(data.len()));
        if data.is_empty() {
            self.pending = None;
        }
        self.writer.send_data(piece, false).map_err(up)?;
        Ok(false)
    }
}
