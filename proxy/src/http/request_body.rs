//! The request body on its way upstream, as Envoy's router moves it: piece
//! by piece as the client sends it, a copy kept for retries while it is
//! small enough.
//!
//! ```text
//!  client ─► read ─► plugins' body callbacks ─► keep (≤ 1 MiB) ─► upstream attempt
//!                                                   └──── replayed by the next attempt
//! ```
//! An HTTP/1.1 upstream gets the body to its end before its response is
//! read, unless it answers first.
//! An HTTP/2 upstream's body goes on beside the response ([`H2Pump`]), so
//! a bidirectional gRPC stream works through the router.
//!
//! Reading is two steps: taking a piece off the client's connection
//! (cancel-safe: the router races it against the upstream) and handing it
//! through the plugins (not raced: a plugin's callback runs to its end).

use std::future::poll_fn;

use bytes::Bytes;

use super::clock::Progress;
use super::downstream::Downstream;
use crate::upstream;
use crate::wasm::stream::{Decoder, Stop};

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
    /// A plugin ended the request from a body callback (its reply or
    /// reset is [`RequestBody::take_stop`]).
    Plugin,
}

/// What the router has of the request body.
pub struct RequestBody<'p> {
    /// Every piece read from the client so far, while they can all be
    /// kept (pieces are reference-counted: keeping costs no copy).
    kept: Vec<Bytes>,
    kept_len: usize,
    /// The body has ended: the client's, and what the plugins held of it
    /// has gone through them.
    ended: bool,
    /// The client has sent its last piece.
    client_ended: bool,
    /// More than [`RETRY_BUFFER_LIMIT`] came: `kept` was let go.
    overflowed: bool,
    /// Told of each piece, for the router's clocks.
    progress: Option<&'p Progress>,
    /// The request's plugins' body callbacks (none without plugins).
    plugins: Option<Decoder<'p>>,
    /// How a plugin ended the request.
    stop: Option<Stop>,
}

impl RequestBody<'static> {
    /// A body read already (for a mirror, or a callout's), or none.
    pub fn whole(body: Bytes) -> Self {
        let kept_len = body.len();
        let kept = if body.is_empty() { Vec::new() } else { vec![body] };
        RequestBody { kept, kept_len, ended: true, client_ended: true, overflowed: false, progress: None, plugins: None, stop: None }
    }
}

impl<'p> RequestBody<'p> {
    /// A body still to be read from the client, through `plugins`.
    pub fn streaming(progress: &'p Progress, plugins: Decoder<'p>) -> Self {
        let plugins = Some(plugins).filter(|p| !p.is_empty());
        RequestBody { kept: Vec::new(), kept_len: 0, ended: false, client_ended: false, overflowed: false, progress: Some(progress), plugins, stop: None }
    }

    /// How a plugin ended the request, after [`Broken::Plugin`].
    pub fn take_stop(&mut self) -> Option<Stop> {
        self.stop.take()
    }

    /// The body has ended: the client's has been read to its end and what
    /// the plugins held of it has gone through them.
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

    /// Takes the client's next piece off the connection (`None`: its end).
    /// Cancel-safe.
    pub async fn read_raw(&mut self, session: &mut Downstream) -> Result<Option<Bytes>, Broken> {
        if self.client_ended {
            return Ok(None);
        }
        let raw = session.read_request_body().await.map_err(|e| {
            tracing::debug!(error = %e, "request body read failed");
            Broken::Client
        })?;
        self.client_ended = raw.is_none();
        if let Some(p) = self.progress {
            p.record(self.client_ended);
        }
        Ok(raw)
    }

    /// Hands a piece from [`read_raw`](Self::read_raw) through the plugins:
    /// what goes upstream now (`None` while they hold it, or at the end).
    pub async fn accept(&mut self, raw: Option<Bytes>) -> Result<Option<Bytes>, Broken> {
        let end = raw.is_none();
        let out = match self.plugins.as_mut() {
            Some(plugins) => plugins.body(raw, end).await.map_err(|stop| {
                self.stop = Some(stop);
                Broken::Plugin
            })?,
            None => raw,
        };
        self.ended = end;
        let Some(piece) = out.filter(|p| !p.is_empty()) else { return Ok(None) };
        if !self.overflowed {
            self.kept_len += piece.len();
            if self.kept_len > RETRY_BUFFER_LIMIT {
                self.overflowed = true;
                self.kept = Vec::new();
            } else {
                self.kept.push(piece.clone());
            }
        }
        Ok(Some(piece))
    }

    /// Sends the body to an HTTP/1.1 upstream after its header
    /// ([`upstream::h1::Connection::start`]): what is kept, then the rest
    /// as the client sends it, to the end.
    pub async fn send_h1(&mut self, conn: &mut upstream::h1::Connection, session: &mut Downstream, chunked: bool) -> Result<(), Broken> {
        let up = |e: upstream::h1::Error| Broken::Upstream(e.into());
        for piece in self.kept.clone() {
            conn.send_body(&piece, chunked, false).await.map_err(up)?;
        }
        while !self.ended {
            let pending = conn.head_pending();
            let raw = tokio::select! {
                biased;
                raw = self.read_raw(session) => raw?,
                // Nothing from the client yet: the header goes now.
                () = std::future::ready(()), if pending => {
                    conn.send_head().await.map_err(up)?;
                    continue;
                }
                // The upstream answers before the body is all there (it
                // refuses the upload): the answer goes to the client, the
                // rest of the body nowhere, as from Envoy.
                early = conn.answered_early(), if !pending => {
                    early.map_err(up)?;
                    return Ok(());
                }
            };
            if let Some(piece) = self.accept(raw).await? {
                conn.send_body(&piece, chunked, false).await.map_err(up)?;
            }
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
    /// The pending piece is the body's last: it ends the stream.
    ending: bool,
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
        Ok(Some(H2Pump { writer, pending: None, ending: false }))
    }

    /// Waits, cancel-safely, for what moves the body next: a piece from
    /// the client, or room in the upstream's window for the one pending.
    /// Hand it to [`advance`](Self::advance).
    pub async fn ready(&mut self, body: &mut RequestBody<'_>, session: &mut Downstream) -> Result<Ready, Broken> {
        let Some(data) = self.pending.as_ref() else {
            return Ok(Ready::Piece(body.read_raw(session).await?));
        };
        // The client is not read further until the upstream takes this
        // piece: its window is the back-pressure.
        self.writer.reserve_capacity(data.len());
        match self.writer.capacity() {
            0 => match poll_fn(|cx| self.writer.poll_capacity(cx)).await {
                Some(window) => Ok(Ready::Window(window.map_err(|e| Broken::Upstream(e.into()))?)),
                None => Err(Broken::Upstream("upstream stream closed".into())),
            },
            window => Ok(Ready::Window(window)),
        }
    }

    /// Moves the body on by what [`ready`](Self::ready) found (a piece goes
    /// through the plugins). `Ok(true)`: the body has all been sent.
    pub async fn advance(&mut self, ready: Result<Ready, Broken>, body: &mut RequestBody<'_>) -> Result<bool, Broken> {
        let up = |e: h2::Error| Broken::Upstream(e.into());
        match ready? {
            Ready::Piece(raw) => {
                let end = raw.is_none();
                match body.accept(raw).await? {
                    Some(piece) => self.pending = Some(piece),
                    None if end => {
                        self.writer.send_data(Bytes::new(), true).map_err(up)?;
                        return Ok(true);
                    }
                    None => {}
                }
                // The last piece ends the stream once it is all sent.
                if end {
                    self.ending = true;
                }
            }
            Ready::Window(window) => {
                let Some(data) = self.pending.as_mut().filter(|_| window > 0) else { return Ok(false) };
                let piece = data.split_to(window.min(data.len()));
                let last = data.is_empty();
                if last {
                    self.pending = None;
                }
                let end = last && self.ending;
                self.writer.send_data(piece, end).map_err(up)?;
                return Ok(end);
            }
        }
        Ok(false)
    }
}

/// What [`H2Pump::ready`] found.
pub enum Ready {
    /// A piece from the client (`None`: its end).
    Piece(Option<Bytes>),
    /// Room in the upstream's window for this many bytes.
    Window(usize),
}
