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
//!
//! A mirrored request's body streams to each mirror too, as Envoy's shadows
//! do: every piece that goes upstream is also handed to the mirror's
//! [`Tee`], and the mirror's own `RequestBody` reads it from its [`Feed`].
//!
//! An HTTP/2 client's request may end with trailers: they go through the
//! plugins after the body and end the stream to an HTTP/2 upstream (a
//! mirror's too); an HTTP/1.1 upstream does not get them (Envoy's
//! default, no `enable_trailers`).

use std::future::poll_fn;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};

use super::clock::Progress;
use super::downstream::Downstream;
use crate::upstream;
use crate::wasm::stream::{Decoder, Stop};

/// How much of a request body is kept so that a retry can send it again:
/// Envoy's default buffer limit (`per_connection_buffer_limit_bytes`,
/// 1 MiB). A longer body is not replayed, so not retried, as in Envoy.
pub const RETRY_BUFFER_LIMIT: usize = 1024 * 1024;

/// How far a mirror may fall behind the request it copies (Envoy's
/// default buffer limit). Past it the request waits for the mirror, as
/// Envoy's shadows hold up theirs through its watermarks: a mirror gets
/// the whole body or, if it fails, none of the request's time.
pub const MIRROR_BUFFER_LIMIT: usize = 1024 * 1024;

/// Where a streamed body's pieces come from.
pub enum Source<'s> {
    /// The client's connection: the router's own request.
    Client(&'s mut Downstream),
    /// The router's copy of the client's body: a mirror's request.
    Mirror(&'s mut Feed),
    /// Nowhere: the body is whole already (a callout's).
    Whole,
}

impl Source<'_> {
    /// The same source, borrowed for a shorter while.
    pub fn reborrow(&mut self) -> Source<'_> {
        match self {
            Source::Client(session) => Source::Client(session),
            Source::Mirror(feed) => Source::Mirror(feed),
            Source::Whole => Source::Whole,
        }
    }

    /// The next piece (`None`: the end). Cancel-safe.
    async fn next(&mut self) -> Result<Option<Bytes>, Broken> {
        match self {
            Source::Client(session) => session.read_request_body().await.map_err(|e| {
                tracing::debug!(error = %e, "request body read failed");
                Broken::Client
            }),
            Source::Mirror(feed) => feed.next().await,
            Source::Whole => Ok(None),
        }
    }
}

/// The router's end of a mirror's copy of the body.
pub struct Tee {
    pieces: mpsc::UnboundedSender<Piece>,
    /// Bytes the mirror may still fall behind by; closed when it is gone.
    room: Arc<Semaphore>,
}

/// What goes down a mirror's copy: the body's pieces, then its end (with
/// the request's trailers, if it had any).
enum Piece {
    Data(Bytes),
    End(Option<http::HeaderMap>),
}

/// The mirror's end: the pieces, then the end. A feed whose tee went away
/// without the end was abandoned (the client broke off, or a plugin ended
/// the request).
pub struct Feed {
    pieces: mpsc::UnboundedReceiver<Piece>,
    room: Arc<Semaphore>,
    /// The trailers the copy ended with.
    trailers: Option<http::HeaderMap>,
}

/// A copy of a body on its way to a mirror.
pub fn tee() -> (Tee, Feed) {
    let (tx, rx) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(MIRROR_BUFFER_LIMIT));
    (Tee { pieces: tx, room: room.clone() }, Feed { pieces: rx, room, trailers: None })
}

/// The room a piece takes (one larger than the limit takes it all).
fn room_for(piece: &Bytes) -> u32 {
    piece.len().min(MIRROR_BUFFER_LIMIT) as u32
}

impl Tee {
    /// Hands a piece to the mirror once it has room for it; `false` when
    /// the mirror has gone.
    async fn send(&self, piece: &Bytes) -> bool {
        match self.room.acquire_many(room_for(piece)).await {
            // Given back by the feed when the mirror takes the piece.
            Ok(taken) => taken.forget(),
            Err(_closed) => return false,
        }
        self.pieces.send(Piece::Data(piece.clone())).is_ok()
    }

    /// Ends the mirror's copy, with the request's trailers.
    fn end(self, trailers: Option<http::HeaderMap>) {
        let _ = self.pieces.send(Piece::End(trailers));
    }
}

impl Feed {
    async fn next(&mut self) -> Result<Option<Bytes>, Broken> {
        match self.pieces.recv().await {
            Some(Piece::End(trailers)) => {
                self.trailers = trailers;
                Ok(None)
            }
            Some(Piece::Data(piece)) => {
                self.room.add_permits(room_for(&piece) as usize);
                Ok(Some(piece))
            }
            None => Err(Broken::Client),
        }
    }
}

impl Drop for Feed {
    /// A request waiting for room hears that the mirror has gone.
    fn drop(&mut self) {
        self.room.close();
    }
}

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
    /// The mirrors' copies, handed each piece that goes upstream.
    tees: Vec<Tee>,
    /// The client's trailers, once its body has ended with them.
    trailers: Option<http::HeaderMap>,
}

impl RequestBody<'static> {
    /// A body read already (for a mirror, or a callout's), or none.
    pub fn whole(body: Bytes) -> Self {
        let kept_len = body.len();
        let kept = if body.is_empty() { Vec::new() } else { vec![body] };
        RequestBody {
            kept,
            kept_len,
            ended: true,
            client_ended: true,
            overflowed: false,
            progress: None,
            plugins: None,
            stop: None,
            tees: Vec::new(),
            trailers: None,
        }
    }
}

impl<'p> RequestBody<'p> {
    /// A body still to be read from its source, through `plugins` (a
    /// mirror's has none: it gets what went through them).
    pub fn streaming(progress: &'p Progress, plugins: Option<Decoder<'p>>) -> Self {
        let plugins = plugins.filter(|p| !p.is_empty());
        RequestBody {
            kept: Vec::new(),
            kept_len: 0,
            ended: false,
            client_ended: false,
            overflowed: false,
            progress: Some(progress),
            plugins,
            stop: None,
            tees: Vec::new(),
            trailers: None,
        }
    }

    /// Copies the body to a mirror from here on (before any of it has
    /// gone upstream).
    pub fn mirror_to(&mut self, tee: Tee) {
        self.tees.push(tee);
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

    /// The trailers the body ended with (after the plugins'), for an
    /// HTTP/2 upstream.
    pub fn trailers(&self) -> Option<&http::HeaderMap> {
        self.trailers.as_ref()
    }

    /// Takes the next piece off the source (`None`: its end).
    /// Cancel-safe.
    pub async fn read_raw(&mut self, source: &mut Source<'_>) -> Result<Option<Bytes>, Broken> {
        if self.client_ended {
            return Ok(None);
        }
        let raw = source.next().await?;
        self.client_ended = raw.is_none();
        if self.client_ended {
            self.trailers = match source {
                Source::Client(session) => session.take_request_trailers(),
                Source::Mirror(feed) => feed.trailers.take(),
                Source::Whole => None,
            }
            .filter(|t| !t.is_empty());
        }
        if let Some(p) = self.progress {
            p.record(self.client_ended);
        }
        Ok(raw)
    }

    /// Hands a piece from [`read_raw`](Self::read_raw) through the plugins:
    /// what goes upstream now (`None` while they hold it, or at the end).
    pub async fn accept(&mut self, raw: Option<Bytes>) -> Result<Option<Bytes>, Broken> {
        let end = raw.is_none();
        let out = match (self.plugins.as_mut(), self.trailers.as_mut()) {
            // The trailers end the body: what a plugin held goes on with
            // them, after their callbacks.
            (Some(plugins), Some(trailers)) if end => plugins.trailers(trailers).await.map(Some),
            (Some(plugins), _) => plugins.body(raw, end).await,
            (None, _) => Ok(raw),
        }
        .map_err(|stop| {
            self.stop = Some(stop);
            Broken::Plugin
        })?;
        self.ended = end;
        let piece = out.filter(|p| !p.is_empty());
        if let Some(piece) = piece.as_ref().filter(|_| !self.tees.is_empty()) {
            let mut i = 0;
            while i < self.tees.len() {
                if self.tees[i].send(piece).await {
                    i += 1;
                } else {
                    self.tees.swap_remove(i);
                }
            }
        }
        if end {
            for tee in self.tees.drain(..) {
                tee.end(self.trailers.clone());
            }
        }
        let Some(piece) = piece else { return Ok(None) };
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
    pub async fn send_h1(&mut self, conn: &mut upstream::h1::Connection, source: &mut Source<'_>, chunked: bool) -> Result<(), Broken> {
        let up = |e: upstream::h1::Error| Broken::Upstream(e.into());
        for piece in self.kept.clone() {
            conn.send_body(&piece, chunked, false).await.map_err(up)?;
        }
        while !self.ended {
            let pending = conn.head_pending();
            let raw = tokio::select! {
                biased;
                raw = self.read_raw(source) => raw?,
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
        let mut pump = H2Pump { writer, pending: None, ending: false };
        if body.ended() {
            pump.end(body)?;
            return Ok(None);
        }
        Ok(Some(pump))
    }

    /// Ends the stream: with the body's trailers, or an empty DATA frame.
    fn end(&mut self, body: &RequestBody) -> Result<(), Broken> {
        let sent = match body.trailers() {
            Some(trailers) => self.writer.send_trailers(trailers.clone()),
            None => self.writer.send_data(Bytes::new(), true),
        };
        sent.map_err(|e| Broken::Upstream(e.into()))
    }

    /// Waits, cancel-safely, for what moves the body next: a piece from
    /// the client, or room in the upstream's window for the one pending.
    /// Hand it to [`advance`](Self::advance).
    pub async fn ready(&mut self, body: &mut RequestBody<'_>, source: &mut Source<'_>) -> Result<Ready, Broken> {
        let Some(data) = self.pending.as_ref() else {
            return Ok(Ready::Piece(body.read_raw(source).await?));
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
                        self.end(body)?;
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
                self.writer.send_data(piece, end && body.trailers().is_none()).map_err(up)?;
                if end && body.trailers().is_some() {
                    self.end(body)?;
                }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn piece(len: usize) -> Bytes {
        Bytes::from(vec![b'x'; len])
    }

    #[tokio::test]
    async fn a_mirror_gets_every_piece_then_the_end() {
        let (tee, mut feed) = tee();
        assert!(tee.send(&piece(3)).await);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        tee.end(Some(trailers.clone()));
        assert_eq!(feed.next().await.ok(), Some(Some(piece(3))));
        assert_eq!(feed.next().await.ok(), Some(None));
        assert_eq!(feed.trailers, Some(trailers));
    }

    #[tokio::test]
    async fn a_copy_abandoned_without_its_end_fails_the_mirror() {
        let (tee, mut feed) = tee();
        assert!(tee.send(&piece(3)).await);
        drop(tee);
        assert!(feed.next().await.is_ok());
        assert!(matches!(feed.next().await, Err(Broken::Client)));
    }

    #[tokio::test]
    async fn a_mirror_too_far_behind_holds_up_the_request_until_it_takes_or_goes() {
        let (tee, mut feed) = tee();
        assert!(tee.send(&piece(MIRROR_BUFFER_LIMIT)).await);
        // No room left: the next piece waits for the mirror.
        let waits = tokio::time::timeout(Duration::from_millis(50), tee.send(&piece(1))).await;
        assert!(waits.is_err(), "sent past the limit");
        assert!(feed.next().await.is_ok());
        assert!(tee.send(&piece(1)).await, "room once the mirror took a piece");
        // Full, then the mirror goes: the wait ends, the copy is let go.
        let last = piece(MIRROR_BUFFER_LIMIT);
        let sending = tee.send(&last);
        drop(feed);
        assert!(!sending.await);
    }
}
