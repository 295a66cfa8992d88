//! The wasm HTTP filter (`envoy.filters.http.wasm`) on the request path:
//! one plugin context per request, driven through the request and the
//! response as Envoy drives it.
//!
//! ```text
//!  request headers ─► router ─► body chunks (Decoder) ─► upstream
//!        └─ Pause: wait for the callout answer / proxy_continue_stream / a local reply
//!  response headers ─► body chunks (Encoder) ─► client
//!  body Pause (StopIterationAndBuffer): chunks are held and the plugin
//!  sees the whole buffer again with the next one; a header Pause waits
//!  for proxy_continue_stream, as Envoy's StopAllIteration does.
//! ```
//! The request body reaches the plugins piece by piece as the router reads
//! it from the client ([`Decoder`]), so a streamed request (gRPC) keeps
//! streaming through them.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::thread::LocalKey;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use pingora_http::{RequestHeader, ResponseHeader};

use super::abi::Action;
use super::engine::lock;
use super::host::{LocalResponse, Signal, StreamData};
use super::plugin::Plugin;
use super::properties::StreamInfo;
use super::vm::{with_existing_id, with_vm, Phase, Waiter};
use crate::http::LocalReply;

pub const TYPE: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";

/// A configured wasm filter.
#[derive(Debug)]
pub struct Filter {
    pub plugin: Arc<Plugin>,
}

/// A request's plugin context, alive until the response is sent (then
/// `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`).
pub struct Stream {
    plugin: Arc<Plugin>,
    context: u32,
    generation: u64,
    waiter: Arc<Waiter>,
    info: Arc<StreamInfo>,
    /// The request headers as routed (see [`share_request`]) and the
    /// response headers as sent (see [`Encoder::response_sent`]), shared
    /// by the request's plugins: Envoy lets a plugin read both in later
    /// callbacks (the request's while it sees the response, both in
    /// `proxy_on_log`).
    request: Mutex<Option<Arc<RequestHeader>>>,
    response: Mutex<Option<Arc<ResponseHeader>>>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("plugin", &self.plugin.name).field("context", &self.context).finish()
    }
}

/// How a plugin left a phase of the stream.
pub enum Outcome {
    Continue,
    /// Body buffering: hold what came so far, call again with more.
    Buffer,
    Reply(LocalReply),
    /// `proxy_close_stream`: the stream is reset.
    Reset,
}

impl Outcome {
    /// On with the stream (`Ok(true)`: a plugin holds the body), or how
    /// the plugin stopped it.
    fn go_on(self) -> Result<bool, Stop> {
        match self {
            Outcome::Continue => Ok(false),
            Outcome::Buffer => Ok(true),
            Outcome::Reply(r) => Err(Stop::Reply(r)),
            Outcome::Reset => Err(Stop::Reset),
        }
    }
}

/// How a plugin ended a request early: a reply, or a reset stream.
pub enum Stop {
    Reply(LocalReply),
    Reset,
}

impl Filter {
    /// The request headers (`body_follows`: they do not end the request;
    /// its body goes through [`Decoder`]). `Err` ends the request: a reply
    /// (the plugin's, or 503 when the VM failed and the plugin does not
    /// fail open) or a reset.
    pub async fn on_request(
        &self,
        req: &mut RequestHeader,
        body_follows: bool,
        info: &Arc<StreamInfo>,
        streams: &mut Vec<Stream>,
    ) -> Result<(), Stop> {
        let waiter = Arc::new(Waiter::default());
        let Some((context, generation)) = with_vm(&self.plugin, |vm| vm.new_stream(waiter.clone()).map(|c| (c, vm.generation)))
            .and_then(Result::ok)
        else {
            return self.fail(self.plugin.failure.later_requests_pass).map_err(Stop::Reply);
        };
        let stream = Stream {
            plugin: self.plugin.clone(),
            context,
            generation,
            waiter,
            info: info.clone(),
            request: Mutex::default(),
            response: Mutex::default(),
        };
        // The headers move into the plugin's reach for the callbacks.
        let Some(lent) = REQUESTS.lend(req) else { return Ok(()) };
        let mut data = Some(StreamData::new(context, info.clone()));
        if let Some(d) = data.as_mut() {
            d.request = Some(Arc::new(lent));
        }
        let headers = data.as_ref().and_then(|d| d.request.as_ref()).map_or(0, |r| r.headers.len() + 4);
        let outcome = stream.phase(&mut data, Phase::RequestHeaders, headers, !body_follows).await;
        if let Some(r) = data.and_then(|d| d.request) {
            REQUESTS.give_back(req, unshare(r));
        }
        streams.push(stream);
        match outcome {
            Ok(Outcome::Reply(reply)) => Err(Stop::Reply(reply)),
            Ok(Outcome::Reset) => Err(Stop::Reset),
            Ok(_) => Ok(()),
            Err(()) => self.fail(self.plugin.failure.failing_request_passes).map_err(Stop::Reply),
        }
    }

    /// Envoy's answer when the plugin cannot run: 503 (`wasm_fail_stream`),
    /// or on with the request when the policy lets it pass.
    fn fail(&self, passes: bool) -> Result<(), LocalReply> {
        if passes {
            Ok(())
        } else {
            Err(LocalReply::new(503, ""))
        }
    }
}

impl Stream {
    /// Runs one phase; a pause at the end of the stream waits for the
    /// plugin to resume it. `Err`: the VM failed.
    async fn phase(&self, data: &mut Option<StreamData>, phase: Phase, size: usize, end_of_stream: bool) -> Result<Outcome, ()> {
        let action = with_existing_id(self.plugin.id, self.generation, |vm| vm.stream_callback(data, phase, size, end_of_stream))
            .ok_or(())?
            .map_err(drop)?;
        if data.as_ref().is_some_and(|d| d.close) {
            return Ok(Outcome::Reset);
        }
        if let Some(reply) = data.as_mut().and_then(|d| d.local_reply.take()) {
            return Ok(Outcome::Reply(local_reply(reply)));
        }
        let body_phase = matches!(phase, Phase::RequestBody | Phase::ResponseBody);
        match action {
            Action::Continue => Ok(Outcome::Continue),
            Action::Pause if body_phase && !end_of_stream => Ok(Outcome::Buffer),
            Action::Pause => self.wait(data).await,
        }
    }

    /// A paused stream: answers its callouts until the plugin resumes it
    /// or replies.
    async fn wait(&self, data: &mut Option<StreamData>) -> Result<Outcome, ()> {
        self.waiter.set_paused(true);
        let outcome = self.wait_for_plugin(data).await;
        self.waiter.set_paused(false);
        // Answers that came with the one that resumed it reach the plugin
        // now, the stream still within reach.
        for answer in self.waiter.take_answers() {
            with_existing_id(self.plugin.id, self.generation, |vm| vm.answer(data, answer));
        }
        outcome
    }

    async fn wait_for_plugin(&self, data: &mut Option<StreamData>) -> Result<Outcome, ()> {
        loop {
            if let Some(d) = data.as_mut() {
                if d.close {
                    return Ok(Outcome::Reset);
                }
                if let Some(reply) = d.local_reply.take() {
                    return Ok(Outcome::Reply(local_reply(reply)));
                }
                if std::mem::take(&mut d.resume) {
                    return Ok(Outcome::Continue);
                }
            }
            match self.waiter.next().await {
                Signal::Resume => return Ok(Outcome::Continue),
                Signal::LocalReply(reply) => return Ok(Outcome::Reply(local_reply(reply))),
                answer @ (Signal::CallDone(..) | Signal::Grpc(..)) => {
                    let vm_failed = with_existing_id(self.plugin.id, self.generation, |vm| {
                        vm.answer(data, answer);
                        vm.failed
                    });
                    if vm_failed.unwrap_or(true) {
                        return Err(());
                    }
                }
            }
        }
    }

    /// A request body chunk, appended to what the plugin buffered so far
    /// (`body` is all of it, changed in place). The request headers have
    /// gone upstream: the plugin reads them as they went.
    pub async fn request_body(&self, body: &mut BytesMut, end_of_stream: bool) -> Outcome {
        let mut data = Some(self.data_with(None, None));
        if let Some(d) = data.as_mut() {
            d.request_body = Some(std::mem::take(body));
        }
        let size = data.as_ref().and_then(|d| d.request_body.as_ref()).map_or(0, |b| b.len());
        let outcome = self.phase(&mut data, Phase::RequestBody, size, end_of_stream).await;
        *body = self.keep_request(data).request_body.unwrap_or_default();
        self.request_outcome(outcome, end_of_stream)
    }

    /// The request trailers (an HTTP/2 client's), as the plugin sees and
    /// changes them; they end the request.
    pub async fn request_trailers(&self, trailers: &mut http::HeaderMap) -> Outcome {
        let mut data = Some(self.data_with(None, None));
        let count = trailers.len();
        if let Some(d) = data.as_mut() {
            d.request_trailers = Some(std::mem::take(trailers));
        }
        let outcome = self.phase(&mut data, Phase::RequestTrailers, count, true).await;
        *trailers = self.keep_request(data).request_trailers.unwrap_or_default();
        self.request_outcome(outcome, true)
    }

    /// A request callback's outcome: a body pause buffers until the end of
    /// the stream; a failed VM fails the request or lets it pass, by the
    /// plugin's policy.
    fn request_outcome(&self, outcome: Result<Outcome, ()>, end_of_stream: bool) -> Outcome {
        match outcome {
            Ok(Outcome::Buffer) if end_of_stream => Outcome::Continue,
            Ok(outcome) => outcome,
            Err(()) if self.plugin.failure.failing_request_passes => Outcome::Continue,
            Err(()) => Outcome::Reply(LocalReply::new(503, "")),
        }
    }

    /// The response headers, as the plugin sees and changes them.
    /// `Buffer`: the plugin holds them until it has seen the body.
    pub async fn response_headers(&self, resp: &mut ResponseHeader, end_of_stream: bool) -> Outcome {
        let Some(lent) = RESPONSES.lend(resp) else { return Outcome::Continue };
        let mut data = Some(self.data_with(Some(Arc::new(lent)), None));
        let size = data.as_ref().and_then(|d| d.response.as_ref()).map_or(0, |r| r.headers.len() + 1);
        let outcome = self.phase(&mut data, Phase::ResponseHeaders, size, end_of_stream).await;
        if let Some(r) = self.keep_request(data).response {
            RESPONSES.give_back(resp, unshare(r));
        }
        self.response_outcome(outcome, end_of_stream)
    }

    /// A response body chunk, appended to what the plugin buffered so far
    /// (`body` is all of it, changed in place). The headers (`resp`) may
    /// still change while they are held; once sent (`None`) the plugin
    /// reads them as they went out, and its changes are lost.
    pub async fn response_body(&self, resp: Option<&mut ResponseHeader>, body: &mut BytesMut, end_of_stream: bool) -> Outcome {
        let (held, headers) = match resp {
            Some(resp) => {
                let Some(lent) = RESPONSES.lend(resp) else { return Outcome::Continue };
                (Some(resp), Some(Arc::new(lent)))
            }
            None => (None, lock(&self.response).clone()),
        };
        let mut data = Some(self.data_with(headers, Some(std::mem::take(body))));
        let size = body_len(&data);
        let outcome = self.phase(&mut data, Phase::ResponseBody, size, end_of_stream).await;
        let d = self.keep_request(data);
        if let (Some(resp), Some(r)) = (held, d.response) {
            // Held headers may have changed with the body.
            RESPONSES.give_back(resp, unshare(r));
        }
        *body = d.response_body.unwrap_or_default();
        self.response_outcome(outcome, end_of_stream)
    }

    /// The response trailers (an HTTP/2 upstream's), as the plugin sees
    /// and changes them.
    pub async fn response_trailers(&self, trailers: &mut http::HeaderMap) -> Outcome {
        let mut data = Some(self.data_with(None, None));
        let count = trailers.len();
        if let Some(d) = data.as_mut() {
            d.response = lock(&self.response).take();
            d.response_trailers = Some(std::mem::take(trailers));
        }
        let outcome = self.phase(&mut data, Phase::ResponseTrailers, count, true).await;
        let mut d = self.keep_request(data);
        *lock(&self.response) = d.response.take();
        *trailers = d.response_trailers.unwrap_or_default();
        self.response_outcome(outcome, true)
    }

    fn response_outcome(&self, outcome: Result<Outcome, ()>, end_of_stream: bool) -> Outcome {
        match outcome {
            Ok(Outcome::Continue) => Outcome::Continue,
            // A body pause buffers until the end of the stream.
            Ok(Outcome::Buffer) if !end_of_stream => Outcome::Buffer,
            Ok(Outcome::Buffer) => Outcome::Continue,
            Ok(Outcome::Reset) => Outcome::Reset,
            // Replacing a response already under way is not supported.
            Ok(Outcome::Reply(_)) => {
                tracing::debug!(plugin = %self.plugin.name, "a local reply from a response callback is ignored");
                Outcome::Continue
            }
            Err(()) if self.plugin.failure.failing_request_passes => Outcome::Continue,
            Err(()) => Outcome::Reply(LocalReply::new(503, "")),
        }
    }

    /// The stream's data for a response callback: those headers and body,
    /// and the request headers (lent; see [`keep_request`](Self::keep_request)).
    fn data_with(&self, response: Option<Arc<ResponseHeader>>, body: Option<BytesMut>) -> StreamData {
        let mut d = StreamData::new(self.context, self.info.clone());
        d.request = lock(&self.request).take();
        d.response = response;
        d.response_body = body;
        d
    }

    /// Takes the request headers back after a callback.
    fn keep_request(&self, data: Option<StreamData>) -> StreamData {
        let mut d = data.unwrap_or_else(|| StreamData::new(self.context, self.info.clone()));
        *lock(&self.request) = d.request.take();
        d
    }
}

/// The request headers as they left the proxy (the router's rewrites and
/// headers included), or as they were when a local reply ended the
/// request: what the request's plugins read from then on. Moved, not
/// copied: the request is done with them.
pub fn share_request(streams: &[Stream], req: RequestHeader) {
    share(streams, || req, |s| &s.request);
}

/// Gives every stream the same headers for its later callbacks: one
/// copy, shared; nothing made when no plugin saw the request (every
/// request comes here).
fn share<T>(streams: &[Stream], headers: impl FnOnce() -> T, slot: fn(&Stream) -> &Mutex<Option<Arc<T>>>) {
    if streams.is_empty() {
        return;
    }
    let shared = Arc::new(headers());
    for s in streams {
        *lock(slot(s)) = Some(shared.clone());
    }
}

/// Headers lent to a plugin for a callback, taken back: unshared while
/// the callback's phase runs, so not copied.
fn unshare<T: Clone>(headers: Arc<T>) -> T {
    Arc::try_unwrap(headers).unwrap_or_else(|h| (*h).clone())
}

/// A header map lent to a plugin leaves a placeholder behind; one spare
/// per worker makes the lending free of allocation (this is every
/// callback of every request).
struct Spare<T: 'static> {
    slot: &'static LocalKey<RefCell<Option<T>>>,
    make: fn() -> Option<T>,
}

thread_local! {
    static SPARE_REQUEST: RefCell<Option<RequestHeader>> = const { RefCell::new(None) };
    static SPARE_RESPONSE: RefCell<Option<ResponseHeader>> = const { RefCell::new(None) };
}

const REQUESTS: Spare<RequestHeader> = Spare { slot: &SPARE_REQUEST, make: || RequestHeader::build_no_case("GET", b"/", Some(0)).ok() };
const RESPONSES: Spare<ResponseHeader> = Spare { slot: &SPARE_RESPONSE, make: || ResponseHeader::build(200, Some(0)).ok() };

impl<T> Spare<T> {
    /// Takes the value out of `place`, leaving the spare.
    fn lend(&self, place: &mut T) -> Option<T> {
        let spare = self.slot.with(|s| s.borrow_mut().take()).or_else(self.make)?;
        Some(std::mem::replace(place, spare))
    }

    /// Puts `value` back in `place`; what was there becomes the spare.
    fn give_back(&self, place: &mut T, value: T) {
        let spare = std::mem::replace(place, value);
        self.slot.with(|s| *s.borrow_mut() = Some(spare));
    }
}

fn body_len(data: &Option<StreamData>) -> usize {
    data.as_ref().and_then(|d| d.response_body.as_ref()).map_or(0, |b| b.len())
}

impl Drop for Stream {
    fn drop(&mut self) {
        let response = lock(&self.response).take();
        let mut data = Some(self.data_with(response, None));
        with_existing_id(self.plugin.id, self.generation, |vm| vm.finish_stream(&mut data));
    }
}

/// A plugin's `proxy_send_local_response` as the proxy sends it.
fn local_reply(r: LocalResponse) -> LocalReply {
    let mut reply = LocalReply::new(r.status, "");
    reply.body = r.body;
    reply.grpc_status = r.grpc_status;
    // Envoy keeps the plugin's words with whitespace made `_` (empty stays
    // empty).
    reply.details = Some(r.details.split(char::is_whitespace).collect::<Vec<_>>().join("_").into());
    for (name, value) in r.headers {
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value)) {
            reply.extra_headers.push((n, v));
        }
    }
    reply
}

/// Request body callbacks over the wasm streams of a request, in filter
/// order (Envoy's decoder order). `buffered` is the body a plugin holds
/// (StopIterationAndBuffer); `holder` is that plugin.
pub struct Decoder<'a> {
    streams: &'a [Stream],
    buffered: BytesMut,
    holder: Option<usize>,
}

impl<'a> Decoder<'a> {
    pub fn new(streams: &'a [Stream]) -> Self {
        Decoder { streams, buffered: BytesMut::new(), holder: None }
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// A body chunk (`None` with `end_of_stream` for the end). Returns
    /// what may go upstream now: nothing while a plugin buffers.
    pub async fn body(&mut self, chunk: Option<Bytes>, end_of_stream: bool) -> Result<Option<Bytes>, Stop> {
        append(&mut self.buffered, chunk);
        for (i, s) in self.streams.iter().enumerate() {
            if s.request_body(&mut self.buffered, end_of_stream).await.go_on()? {
                self.holder = Some(i);
                return Ok(None);
            }
        }
        self.holder = None;
        Ok(Some(std::mem::take(&mut self.buffered).freeze()))
    }

    /// The request's trailers, which end it. As in Envoy, no body callback
    /// says the body has ended: each plugin's trailers callback does, and
    /// the plugins after one that held the body see it (not ending) first.
    /// Returns the held body, to go upstream before the trailers.
    pub async fn trailers(&mut self, trailers: &mut http::HeaderMap) -> Result<Bytes, Stop> {
        let holder = self.holder.take();
        for (i, s) in self.streams.iter().enumerate() {
            // Holding the body now is moot: the trailers end it.
            if holder.is_some_and(|h| i > h) && !self.buffered.is_empty() {
                s.request_body(&mut self.buffered, false).await.go_on()?;
            }
            s.request_trailers(trailers).await.go_on()?;
        }
        Ok(std::mem::take(&mut self.buffered).freeze())
    }
}

/// Adds a body chunk to what plugins hold: not copied unless a plugin is
/// buffering (the usual chunk is unshared, and becomes the buffer).
fn append(buffered: &mut BytesMut, chunk: Option<Bytes>) {
    match chunk {
        Some(c) if buffered.is_empty() => *buffered = BytesMut::from(c),
        Some(c) => buffered.extend_from_slice(&c),
        None => {}
    }
}

/// Response callbacks over the wasm streams a request went through, in
/// reverse filter order (Envoy's encoder order). `buffered` is the body
/// a plugin holds (StopIterationAndBuffer).
pub struct Encoder<'a> {
    streams: &'a [Stream],
    pub buffered: BytesMut,
}

impl<'a> Encoder<'a> {
    pub fn new(streams: &'a [Stream]) -> Self {
        Encoder { streams, buffered: BytesMut::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The response headers as they go out, after every edit: what the
    /// plugins read from then on (later body callbacks, trailers,
    /// `proxy_on_log`). One copy, shared.
    pub fn response_sent(&self, resp: &ResponseHeader) {
        share(self.streams, || resp.clone(), |s| &s.response);
    }

    /// Runs the response headers through the plugins. `Err`: a reply
    /// replaces the response (a failed VM), or the stream is reset.
    pub async fn headers(&mut self, resp: &mut ResponseHeader, end_of_stream: bool) -> Result<(), Stop> {
        for s in self.streams.iter().rev() {
            // A header pause waited in `phase`: only bodies buffer.
            s.response_headers(resp, end_of_stream).await.go_on()?;
        }
        Ok(())
    }

    /// A body chunk (`None` with `end_of_stream` for the end). Returns
    /// what may go out now: nothing while a plugin buffers.
    pub async fn body(&mut self, mut resp: Option<&mut ResponseHeader>, chunk: Option<Bytes>, end_of_stream: bool) -> Result<Option<Bytes>, Stop> {
        append(&mut self.buffered, chunk);
        for s in self.streams.iter().rev() {
            if s.response_body(resp.as_deref_mut(), &mut self.buffered, end_of_stream).await.go_on()? {
                return Ok(None);
            }
        }
        Ok(Some(std::mem::take(&mut self.buffered).freeze()))
    }

    /// The response trailers, after the body. A failed VM resets the
    /// stream (its headers are long gone).
    pub async fn trailers(&mut self, trailers: &mut http::HeaderMap) -> Result<(), ()> {
        for s in self.streams.iter().rev() {
            if let Outcome::Reply(_) | Outcome::Reset = s.response_trailers(trailers).await {
                return Err(());
            }
        }
        Ok(())
    }
}
