//! gRPC streams a plugin opens (`proxy_grpc_stream`): one HTTP/2 stream to
//! a cluster, carried by a task on the plugin's worker. Messages go out as
//! the plugin sends them; what comes back reaches the plugin as it
//! arrives, in the order Envoy's async gRPC client reports it:
//!
//! ```text
//!  response headers ─► proxy_on_grpc_receive_initial_metadata (empty for a trailers-only response)
//!  each message     ─► proxy_on_grpc_receive
//!  trailers         ─► proxy_on_grpc_receive_trailing_metadata, then proxy_on_grpc_close(grpc-status)
//!  not HTTP 200, a reset, a compressed frame, no trailers ─► proxy_on_grpc_close(code) alone
//! ```
//! `proxy_grpc_close` ends the plugin's side (the upstream may go on
//! sending); `proxy_grpc_cancel` resets the stream and nothing more is
//! heard of it. Streams are the root context's, as callouts are.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::grpc::{self, code};
use super::host::{pairs, response_pairs};
use crate::model::Cluster;

/// Envoy's numbering of gRPC tokens: even for streams, odd for unary
/// calls (one counter serves both).
pub fn is_stream_token(token: u32) -> bool {
    token & 1 == 0
}

/// What the plugin sends on an open stream.
#[derive(Debug)]
pub enum Outgoing {
    /// `proxy_grpc_send`: a message, the plugin's last when `true`.
    Message(Bytes, bool),
    /// `proxy_grpc_close`: the plugin's side ends.
    Close,
}

/// What the upstream's side of a stream tells the plugin.
#[derive(Debug)]
pub enum Event {
    InitialMetadata(Vec<(String, Bytes)>),
    Message(Bytes),
    TrailingMetadata(Vec<(String, Bytes)>),
    Close(grpc::Status),
}

/// The host's hold on an open stream, by token.
#[derive(Debug)]
pub struct Handle {
    pub outgoing: mpsc::UnboundedSender<Outgoing>,
    /// The task carrying the stream, once started (after the callback
    /// that opened it returns).
    pub task: Option<tokio::task::AbortHandle>,
    /// `proxy_grpc_close` was called.
    pub local_closed: bool,
    /// `proxy_on_grpc_close` ran: the upstream's side is over.
    pub remote_closed: bool,
}

impl Handle {
    /// Stops the stream: reset on the wire if it started.
    pub fn cancel(self) {
        if let Some(task) = self.task {
            task.abort();
        }
    }
}

/// A stream asked for during a callback, started once it returns.
pub struct Opening {
    pub token: u32,
    /// The context that opened it: its events wait for that stream when
    /// it is paused (so the plugin can act on it), else go to the root.
    pub context: u32,
    cluster: Arc<Cluster>,
    headers: Vec<(String, Bytes)>,
    outgoing: mpsc::UnboundedReceiver<Outgoing>,
}

impl Opening {
    pub fn new(token: u32, context: u32, cluster: Arc<Cluster>, headers: Vec<(String, Bytes)>) -> (Opening, Handle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = Handle { outgoing: tx, task: None, local_closed: false, remote_closed: false };
        (Opening { token, context, cluster, headers, outgoing: rx }, handle)
    }
}

/// Carries the stream to its end. `deliver` hands the plugin one event
/// and says whether it still listens (`false`: cancelled, or its VM is
/// gone), else the stream is reset.
pub async fn run(open: Opening, mut deliver: impl FnMut(Event) -> bool) {
    let Opening { cluster, headers, mut outgoing, .. } = open;
    let Some(req) = super::callout::request_header(&headers) else {
        deliver(Event::Close((code::INTERNAL, Bytes::new())));
        return;
    };
    let mut opened = match crate::http::open_stream(&cluster, req).await {
        Ok(opened) => opened,
        Err(answer) => {
            // The router's own answer (no host, connect failure, ...).
            let status = match answer {
                Ok(called) => grpc::local_status(called.resp.status.as_u16(), &called.body),
                Err(_) => (code::INTERNAL, Bytes::new()),
            };
            deliver(Event::Close(status));
            return;
        }
    };
    let body = &mut opened.body;
    let plugin_side = async move {
        if write(body, &mut outgoing).await {
            // Its side is over; it may still drop the stream (cancel, or
            // its VM goes).
            while outgoing.recv().await.is_some() {}
        }
    };
    tokio::select! {
        // The upstream ended it: what the plugin still sends is moot.
        () = read(&mut opened.session, &mut deliver) => {}
        // The plugin is gone.
        () = plugin_side => {}
    }
    // Dropping the stream resets it if either side is still open.
}

/// Sends the plugin's messages until its side ends (`true`) or the plugin
/// is gone (`false`).
async fn write(body: &mut h2::SendStream<Bytes>, outgoing: &mut mpsc::UnboundedReceiver<Outgoing>) -> bool {
    while let Some(next) = outgoing.recv().await {
        let (data, end) = match next {
            Outgoing::Message(message, end) => (grpc::frame(&message), end),
            Outgoing::Close => (Bytes::new(), true),
        };
        // h2 queues what the peer's window does not take yet. A failed
        // send is a reset stream: the reader hears of it.
        if body.send_data(data, end).is_err() || end {
            return true;
        }
    }
    false
}

/// Reads the upstream's side, handing each part to the plugin.
async fn read(session: &mut pingora_core::protocols::http::v2::client::Http2Session, deliver: &mut impl FnMut(Event) -> bool) {
    let internal = || Event::Close((code::INTERNAL, Bytes::new()));
    if session.read_response_header().await.is_err() {
        deliver(internal());
        return;
    }
    let trailers_only = session.response_finished();
    let Some(resp) = session.response_header() else {
        deliver(internal());
        return;
    };
    let status = resp.status.as_u16();
    let headers = resp.headers.clone();
    if !deliver(Event::InitialMetadata(if trailers_only { Vec::new() } else { response_pairs(resp) })) {
        return;
    }
    let ends_with_status = trailers_only && grpc::status_of(&headers).is_some();
    if status != 200 && !ends_with_status {
        deliver(Event::Close((grpc::http_to_grpc(status), grpc::with_details(b""))));
        return;
    }
    if trailers_only {
        end(&headers, deliver);
        return;
    }
    let mut buf = BytesMut::new();
    loop {
        match session.read_response_body().await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                while let Some(message) = grpc::next_message(&mut buf) {
                    let Ok(message) = message else {
                        deliver(internal());
                        return;
                    };
                    if !deliver(Event::Message(message)) {
                        return;
                    }
                }
            }
            Ok(None) => break,
            Err(_) => {
                deliver(internal());
                return;
            }
        }
    }
    match session.read_trailers().await {
        Ok(Some(trailers)) => end(&trailers, deliver),
        // The body ended without trailers: no status came.
        Ok(None) => {
            deliver(Event::Close((code::UNKNOWN, Bytes::new())));
        }
        Err(_) => {
            deliver(internal());
        }
    }
}

/// Trailers (or a trailers-only response's headers): trailing metadata,
/// then the close with their status (UNKNOWN without one).
fn end(trailers: &http::HeaderMap, deliver: &mut impl FnMut(Event) -> bool) {
    if deliver(Event::TrailingMetadata(pairs(trailers))) {
        deliver(Event::Close(grpc::status_of(trailers).unwrap_or((code::UNKNOWN, Bytes::new()))));
    }
}
