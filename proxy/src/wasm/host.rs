//! The host side of the proxy-wasm ABI: the `env.proxy_*` functions a
//! plugin imports, acting on the state of the callback in progress.
//!
//! Host functions never block and never run plugin callbacks: what needs
//! the network or another context (HTTP callouts, resuming a stream from
//! a timer) is recorded here and carried out by the VM's caller once the
//! callback has returned (see `vm.rs`).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora_http::{RequestHeader, ResponseHeader};
use wasmtime::{Caller, Linker, Memory, StoreLimits, TypedFunc};

use super::abi::{self, BufferType, MapType, MetricType, Status};
use super::plugin::Plugin;
use super::properties::{self, StreamInfo};
use super::shared;
use super::{grpc_stream, grpc};

/// The store's data: everything host functions can see.
pub struct Host {
    pub plugin: std::sync::Weak<Plugin>,
    /// For log lines: the plugin's name and root id.
    pub name: String,
    pub limits: StoreLimits,
    pub memory: Option<Memory>,
    /// The plugin's allocator (`proxy_on_memory_allocate` or `malloc`):
    /// how the host hands bytes to the plugin.
    pub malloc: Option<TypedFunc<i32, i32>>,
    pub root_context: u32,
    /// The context host calls act on (`proxy_set_effective_context`).
    pub effective: u32,
    pub tick: Option<Duration>,
    /// The stream whose callback runs, with its headers and bodies.
    pub stream: Option<StreamData>,
    /// The response an `on_http_call_response` callback reads.
    pub call_response: Option<CallResponse>,
    /// The message an `on_grpc_receive` callback reads.
    pub grpc_message: Option<Bytes>,
    /// The status `proxy_get_status` gives in `on_grpc_close`.
    pub grpc_status: Option<(u32, Bytes)>,
    /// The metadata an `on_grpc_receive_{initial,trailing}_metadata`
    /// callback reads, with its map type.
    pub grpc_metadata: Option<(MapType, Vec<(String, Bytes)>)>,
    /// HTTP and gRPC callouts asked for during this callback.
    pub calls: Vec<Callout>,
    /// Unary gRPC calls not answered yet, with the task sending each once
    /// it left. Cancelling removes the call (its answer is then dropped)
    /// and stops it: not sent at all when cancelled in the callback that
    /// made it, reset on the wire otherwise.
    pub grpc_pending: std::collections::HashMap<u32, Option<tokio::task::AbortHandle>>,
    /// Open gRPC streams, by token.
    pub grpc_streams: std::collections::HashMap<u32, grpc_stream::Handle>,
    /// gRPC streams opened during this callback, started after it.
    pub opening: Vec<grpc_stream::Opening>,
    next_http_token: u32,
    /// Envoy's numbering: odd tokens for unary calls, even for streams.
    next_grpc_token: u32,
    /// Resumes and local replies for streams other than the running one.
    pub signals: Vec<(u32, Signal)>,
    /// `proxy_define_metric` ids index this.
    metrics: Vec<super::metrics::Metric>,
    /// Shared queues that became ready, to tell their owners.
    pub ready_queues: Vec<u32>,
    /// `proxy_done` was called by the root context.
    pub done: bool,
}

impl Host {
    pub fn new(plugin: &std::sync::Arc<Plugin>, limits: StoreLimits) -> Self {
        Host {
            plugin: std::sync::Arc::downgrade(plugin),
            name: format!("{} {}", plugin.name, plugin.root_id),
            limits,
            memory: None,
            malloc: None,
            root_context: 1,
            effective: 1,
            tick: None,
            stream: None,
            call_response: None,
            grpc_message: None,
            grpc_status: None,
            grpc_metadata: None,
            calls: Vec::new(),
            grpc_pending: std::collections::HashMap::new(),
            grpc_streams: std::collections::HashMap::new(),
            opening: Vec::new(),
            next_http_token: 1,
            next_grpc_token: 1,
            signals: Vec::new(),
            metrics: Vec::new(),
            ready_queues: Vec::new(),
            done: false,
        }
    }

    /// The running stream, if host calls act on it.
    fn stream(&mut self) -> Option<&mut StreamData> {
        let effective = self.effective;
        self.stream.as_mut().filter(|s| s.context == effective)
    }

    /// `proxy_continue_stream` on the effective context: the running
    /// stream, or another one (signalled once the callback returns).
    fn resume(&mut self) {
        match self.stream() {
            Some(s) => s.resume = true,
            None => self.signals.push((self.effective, Signal::Resume)),
        }
    }

    /// Queues a callout for the effective context (sent after the
    /// callback) and returns its token; a gRPC call is pending until its
    /// answer or its cancellation.
    fn send_call(&mut self, cluster: std::sync::Arc<crate::model::Cluster>, headers: Vec<(String, Bytes)>, body: Bytes, timeout: Duration, grpc: bool) -> u32 {
        let token = if grpc { self.grpc_token(false) } else { next_token(&mut self.next_http_token, |t| t != 0) };
        self.calls.push(Callout { token, context: self.effective, cluster, headers, body, timeout, grpc });
        if grpc {
            self.grpc_pending.insert(token, None);
        }
        token
    }

    /// Opens a gRPC stream for the effective context (started after the
    /// callback) and returns its token.
    fn open_stream(&mut self, cluster: std::sync::Arc<crate::model::Cluster>, headers: Vec<(String, Bytes)>) -> u32 {
        let token = self.grpc_token(true);
        let (opening, handle) = grpc_stream::Opening::new(token, self.effective, cluster, headers);
        self.opening.push(opening);
        self.grpc_streams.insert(token, handle);
        token
    }

    /// The next gRPC token for a stream or a unary call not in use.
    fn grpc_token(&mut self, stream: bool) -> u32 {
        let (pending, streams) = (&self.grpc_pending, &self.grpc_streams);
        next_token(&mut self.next_grpc_token, |t| {
            grpc_stream::is_stream_token(t) == stream && !pending.contains_key(&t) && !streams.contains_key(&t)
        })
    }

    /// `proxy_send_local_response` on the effective context, likewise.
    fn reply(&mut self, reply: LocalResponse) {
        match self.stream() {
            Some(s) => s.local_reply = Some(reply),
            None => self.signals.push((self.effective, Signal::LocalReply(reply))),
        }
    }
}

/// Takes tokens from `next` until one is `free` (skipping 0, which the
/// ABI never hands out).
fn next_token(next: &mut u32, free: impl Fn(u32) -> bool) -> u32 {
    loop {
        let token = *next;
        *next = next.wrapping_add(1);
        if token != 0 && free(token) {
            return token;
        }
    }
}

/// A stream's side of a callback: moved into the store for the call and
/// back out after.
pub struct StreamData {
    pub context: u32,
    pub request: Option<std::sync::Arc<RequestHeader>>,
    pub request_body: Option<BytesMut>,
    pub response: Option<std::sync::Arc<ResponseHeader>>,
    pub response_body: Option<BytesMut>,
    /// An HTTP/2 client's trailers, during `proxy_on_request_trailers`.
    pub request_trailers: Option<http::HeaderMap>,
    /// An HTTP/2 upstream's trailers, during `proxy_on_response_trailers`.
    pub response_trailers: Option<http::HeaderMap>,
    pub info: std::sync::Arc<StreamInfo>,
    /// Set by `proxy_send_local_response`.
    pub local_reply: Option<LocalResponse>,
    /// Set by `proxy_continue_stream`.
    pub resume: bool,
    /// Set by `proxy_close_stream`: the stream is reset.
    pub close: bool,
}

impl StreamData {
    pub fn new(context: u32, info: std::sync::Arc<StreamInfo>) -> Self {
        StreamData {
            context,
            request: None,
            request_body: None,
            response: None,
            response_body: None,
            request_trailers: None,
            response_trailers: None,
            info,
            local_reply: None,
            resume: false,
            close: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: u16,
    pub body: Bytes,
    pub headers: Vec<(String, Bytes)>,
    pub details: String,
    /// What a gRPC client gets as `grpc-status` (`None`: the HTTP status's).
    pub grpc_status: Option<u32>,
}

/// What a stream waits for while it is paused.
#[derive(Debug)]
pub enum Signal {
    Resume,
    LocalReply(LocalResponse),
    CallDone(u32, Answer),
    /// An event of a gRPC stream the waiting stream opened.
    Grpc(u32, grpc_stream::Event),
}

impl Signal {
    /// An answer to what a plugin asked for, rather than a command.
    pub fn is_answer(&self) -> bool {
        matches!(self, Signal::CallDone(..) | Signal::Grpc(..))
    }
}

/// How a callout ended.
#[derive(Debug)]
pub enum Answer {
    /// `Err`: no response at all (the plugin sees an empty one).
    Http(Result<CallResponse, ()>),
    Grpc(GrpcAnswer),
}

#[derive(Debug, Clone, Default)]
pub struct CallResponse {
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
    pub trailers: Vec<(String, Bytes)>,
}

/// A unary gRPC call's end: its one message, or a status that is not OK.
#[derive(Debug, Clone)]
pub enum GrpcAnswer {
    Message(Bytes),
    Closed { code: u32, message: Bytes },
}

/// A callout a plugin asked for (`proxy_http_call`, `proxy_grpc_call`).
#[derive(Debug)]
pub struct Callout {
    pub token: u32,
    pub context: u32,
    pub cluster: std::sync::Arc<crate::model::Cluster>,
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
    pub timeout: Duration,
    /// A gRPC call: its answer is a message or a status.
    pub grpc: bool,
}

type C<'a> = Caller<'a, Host>;
type R = wasmtime::Result<i32>;

/// Where a gRPC call goes: a serialized `GrpcService` naming an Envoy gRPC
/// cluster (and maybe an authority), else the bytes are the cluster's
/// name. The authority defaults to the cluster name, as Envoy's.
fn grpc_target(service: &[u8]) -> (String, String) {
    use weft_envoy_api::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
    use weft_envoy_api::pb::envoy::config::core::v3::GrpcService;
    use weft_envoy_api::prost::Message;
    if let Ok(GrpcService { target_specifier: Some(TargetSpecifier::EnvoyGrpc(g)), .. }) = GrpcService::decode(service) {
        if !g.cluster_name.is_empty() {
            let authority = if g.authority.is_empty() { g.cluster_name.clone() } else { g.authority };
            return (g.cluster_name, authority);
        }
    }
    let name = String::from_utf8_lossy(service).into_owned();
    (name.clone(), name)
}

/// A gRPC call's or stream's cluster and request headers. `None` (Envoy:
/// a parse failure) when the service is neither a `GrpcService` nor a
/// known cluster's name.
fn grpc_request(caller: &C<'_>, service: &[u8], service_name: &str, method: &str) -> Option<(std::sync::Arc<crate::model::Cluster>, Headers)> {
    let (cluster_name, authority) = grpc_target(service);
    let cluster = caller.data().plugin.upgrade()?.clusters.load().get(&cluster_name).cloned()?;
    let headers = vec![
        (":method".to_string(), Bytes::from_static(b"POST")),
        (":path".to_string(), Bytes::from(format!("/{service_name}/{method}"))),
        (":authority".to_string(), Bytes::from(authority)),
        ("content-type".to_string(), Bytes::from_static(b"application/grpc")),
        ("te".to_string(), Bytes::from_static(b"trailers")),
    ];
    Some((cluster, headers))
}

/// Header pairs as a plugin reads and writes them.
type Headers = Vec<(String, Bytes)>;

/// A serialized header map as owned pairs, names lower-cased as Envoy
/// keeps them.
fn owned_pairs(raw: &[u8]) -> Option<Vec<(String, Bytes)>> {
    let pairs = abi::deserialize_pairs(raw)?;
    Some(pairs.into_iter().map(|(k, v)| (String::from_utf8_lossy(k).to_ascii_lowercase(), Bytes::copy_from_slice(v))).collect())
}

/// Reads `len` bytes at `ptr` of the plugin's memory.
pub fn read(caller: &C<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let memory = caller.data().memory?;
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize)?;
    memory.data(caller).get(start..end).map(<[u8]>::to_vec)
}

/// Writes `bytes` at `ptr` of the plugin's memory; `false` out of bounds.
pub fn write(caller: &mut C<'_>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(memory) = caller.data().memory else { return false };
    let start = ptr as u32 as usize;
    match memory.data_mut(caller).get_mut(start..start.saturating_add(bytes.len())) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

fn put_u32(caller: &mut C<'_>, ptr: i32, v: u32) -> bool {
    write(caller, ptr, &v.to_le_bytes())
}

/// Hands `data` to the plugin: allocated in its memory with its own
/// allocator, the address and size written at `ptr_out` and `size_out`.
/// Empty data is a null pointer, as Envoy hands it.
fn give(caller: &mut C<'_>, data: &[u8], ptr_out: i32, size_out: i32) -> wasmtime::Result<Status> {
    let mut ptr = 0i32;
    if !data.is_empty() {
        let Some(malloc) = caller.data().malloc.clone() else { return Ok(Status::InternalFailure) };
        ptr = malloc.call(&mut *caller, data.len() as i32)?;
        if ptr == 0 || !write(caller, ptr, data) {
            return Ok(Status::InternalFailure);
        }
    }
    if !put_u32(caller, ptr_out, ptr as u32) || !put_u32(caller, size_out, data.len() as u32) {
        return Ok(Status::InvalidMemoryAccess);
    }
    Ok(Status::Ok)
}

fn text(caller: &C<'_>, ptr: i32, len: i32) -> Option<String> {
    read(caller, ptr, len).and_then(|b| String::from_utf8(b).ok())
}

macro_rules! status {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(Status::InvalidMemoryAccess as i32),
        }
    };
}

/// Registers every `env.proxy_*` function of ABI 0.2.1 (and the 0.2.0
/// names SDKs still import).
pub fn define(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_log", |caller: C<'_>, level: i32, ptr: i32, len: i32| -> R {
        let msg = status!(read(&caller, ptr, len));
        let msg = String::from_utf8_lossy(&msg);
        let name = &caller.data().name;
        // Envoy's wording: "wasm log <name> <root_id>: <message>".
        match abi::log_level(level) {
            Some(tracing::Level::TRACE) => tracing::trace!(target: "wasm", "wasm log {name}: {msg}"),
            Some(tracing::Level::DEBUG) => tracing::debug!(target: "wasm", "wasm log {name}: {msg}"),
            Some(tracing::Level::INFO) => tracing::info!(target: "wasm", "wasm log {name}: {msg}"),
            Some(tracing::Level::WARN) => tracing::warn!(target: "wasm", "wasm log {name}: {msg}"),
            Some(_) => tracing::error!(target: "wasm", "wasm log {name}: {msg}"),
            None => return Ok(Status::BadArgument as i32),
        }
        Ok(Status::Ok as i32)
    })?;
    linker.func_wrap("env", "proxy_get_log_level", |mut caller: C<'_>, out: i32| -> R {
        let level = abi::level_number(tracing::level_filters::LevelFilter::current());
        Ok(if put_u32(&mut caller, out, level as u32) { Status::Ok } else { Status::InvalidMemoryAccess } as i32)
    })?;
    linker.func_wrap("env", "proxy_get_current_time_nanoseconds", |mut caller: C<'_>, out: i32| -> R {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ok(if write(&mut caller, out, &(now.as_nanos() as u64).to_le_bytes()) { Status::Ok } else { Status::InvalidMemoryAccess } as i32)
    })?;
    linker.func_wrap("env", "proxy_set_tick_period_milliseconds", |mut caller: C<'_>, ms: i32| -> R {
        let host = caller.data_mut();
        host.tick = (ms != 0).then(|| Duration::from_millis(ms as u32 as u64));
        Ok(Status::Ok as i32)
    })?;
    linker.func_wrap("env", "proxy_set_effective_context", |mut caller: C<'_>, context: i32| -> R {
        caller.data_mut().effective = context as u32;
        Ok(Status::Ok as i32)
    })?;
    linker.func_wrap("env", "proxy_done", |mut caller: C<'_>| -> R {
        caller.data_mut().done = true;
        Ok(Status::Ok as i32)
    })?;

    // Buffers: bodies, configurations, callout responses.
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: C<'_>, kind: i32, start: i32, max: i32, ptr_out: i32, size_out: i32| -> R {
            let Some(kind) = BufferType::from_i32(kind) else { return Ok(Status::BadArgument as i32) };
            let data: Bytes = {
                let host = caller.data_mut();
                let plugin = host.plugin.upgrade();
                match kind {
                    BufferType::PluginConfiguration => plugin.map(|p| p.configuration.clone()),
                    BufferType::VmConfiguration => plugin.map(|p| p.vm_configuration.clone()),
                    BufferType::CallResponseBody => host.call_response.as_ref().map(|c| c.body.clone()),
                    BufferType::GrpcReceiveBuffer => host.grpc_message.clone(),
                    BufferType::RequestBody => host.stream().and_then(|s| s.request_body.as_ref()).map(|b| Bytes::copy_from_slice(b)),
                    BufferType::ResponseBody => host.stream().and_then(|s| s.response_body.as_ref()).map(|b| Bytes::copy_from_slice(b)),
                }
                .unwrap_or_default()
            };
            let start = (start as u32 as usize).min(data.len());
            let end = start.saturating_add(max as u32 as usize).min(data.len());
            Ok(give(&mut caller, &data[start..end], ptr_out, size_out)? as i32)
        },
    )?;
    linker.func_wrap("env", "proxy_get_buffer_status", |mut caller: C<'_>, kind: i32, len_out: i32, flags_out: i32| -> R {
        let host = caller.data_mut();
        let len = match BufferType::from_i32(kind) {
            Some(BufferType::PluginConfiguration) => host.plugin.upgrade().map(|p| p.configuration.len()),
            Some(BufferType::VmConfiguration) => host.plugin.upgrade().map(|p| p.vm_configuration.len()),
            Some(BufferType::CallResponseBody) => host.call_response.as_ref().map(|c| c.body.len()),
            Some(BufferType::GrpcReceiveBuffer) => host.grpc_message.as_ref().map(Bytes::len),
            Some(BufferType::RequestBody) => host.stream().and_then(|s| s.request_body.as_ref()).map(|b| b.len()),
            Some(BufferType::ResponseBody) => host.stream().and_then(|s| s.response_body.as_ref()).map(|b| b.len()),
            None => return Ok(Status::BadArgument as i32),
        };
        let Some(len) = len else { return Ok(Status::NotFound as i32) };
        let ok = put_u32(&mut caller, len_out, len as u32) && put_u32(&mut caller, flags_out, 0);
        Ok(if ok { Status::Ok } else { Status::InvalidMemoryAccess } as i32)
    })?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: C<'_>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| -> R {
            let data = status!(read(&caller, ptr, len));
            let host = caller.data_mut();
            let body = match BufferType::from_i32(kind) {
                Some(BufferType::RequestBody) => host.stream().map(|s| s.request_body.get_or_insert_with(BytesMut::new)),
                Some(BufferType::ResponseBody) => host.stream().map(|s| s.response_body.get_or_insert_with(BytesMut::new)),
                _ => return Ok(Status::BadArgument as i32),
            };
            let Some(body) = body else { return Ok(Status::NotFound as i32) };
            Ok(splice(body, start as u32 as usize, size as u32 as usize, &data) as i32)
        },
    )?;

    // Header maps.
    linker.func_wrap("env", "proxy_get_header_map_pairs", |mut caller: C<'_>, map: i32, ptr_out: i32, size_out: i32| -> R {
        let Some(map) = MapType::from_i32(map) else { return Ok(Status::BadArgument as i32) };
        let pairs = headers_of(caller.data_mut(), map);
        let Some(pairs) = pairs else { return Ok(Status::NotFound as i32) };
        let bytes = abi::serialize_pairs(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_ref())));
        Ok(give(&mut caller, &bytes, ptr_out, size_out)? as i32)
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: C<'_>, map: i32, kptr: i32, klen: i32, ptr_out: i32, size_out: i32| -> R {
            let Some(map) = MapType::from_i32(map) else { return Ok(Status::BadArgument as i32) };
            let key = status!(text(&caller, kptr, klen)).to_ascii_lowercase();
            let Some(pairs) = headers_of(caller.data_mut(), map) else { return Ok(Status::NotFound as i32) };
            // Several values of one name read as Envoy joins them.
            let values: Vec<&Bytes> = pairs.iter().filter(|(k, _)| *k == key).map(|(_, v)| v).collect();
            if values.is_empty() {
                return Ok(Status::NotFound as i32);
            }
            let joined = values.iter().map(|v| v.as_ref()).collect::<Vec<_>>().join(&b","[..]);
            Ok(give(&mut caller, &joined, ptr_out, size_out)? as i32)
        },
    )?;
    for (name, op) in [
        ("proxy_add_header_map_value", Edit::Add),
        ("proxy_replace_header_map_value", Edit::Replace),
    ] {
        linker.func_wrap("env", name, move |mut caller: C<'_>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| -> R {
            let key = status!(read(&caller, kptr, klen));
            let value = status!(read(&caller, vptr, vlen));
            Ok(edit_headers(caller.data_mut(), map, op, &key, Some(&value)) as i32)
        })?;
    }
    linker.func_wrap("env", "proxy_remove_header_map_value", |mut caller: C<'_>, map: i32, kptr: i32, klen: i32| -> R {
        let key = status!(read(&caller, kptr, klen));
        Ok(edit_headers(caller.data_mut(), map, Edit::Remove, &key, None) as i32)
    })?;
    linker.func_wrap("env", "proxy_set_header_map_pairs", |mut caller: C<'_>, map: i32, ptr: i32, len: i32| -> R {
        let data = status!(read(&caller, ptr, len));
        let Some(pairs) = abi::deserialize_pairs(&data) else { return Ok(Status::BadArgument as i32) };
        let host = caller.data_mut();
        let status = edit_headers(host, map, Edit::Clear, b"", None);
        if status != Status::Ok {
            return Ok(status as i32);
        }
        for (k, v) in pairs {
            let s = edit_headers(host, map, Edit::Add, k, Some(v));
            if s != Status::Ok {
                return Ok(s as i32);
            }
        }
        Ok(Status::Ok as i32)
    })?;
    linker.func_wrap("env", "proxy_get_header_map_size", |mut caller: C<'_>, map: i32, out: i32| -> R {
        let Some(map) = MapType::from_i32(map) else { return Ok(Status::BadArgument as i32) };
        let Some(pairs) = headers_of(caller.data_mut(), map) else { return Ok(Status::NotFound as i32) };
        let size: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        Ok(if put_u32(&mut caller, out, size as u32) { Status::Ok } else { Status::InvalidMemoryAccess } as i32)
    })?;

    // Stream control.
    linker.func_wrap("env", "proxy_continue_stream", |mut caller: C<'_>, _which: i32| -> R {
        caller.data_mut().resume();
        Ok(Status::Ok as i32)
    })?;
    // ABI 0.2.0 names.
    for name in ["proxy_continue_request", "proxy_continue_response"] {
        linker.func_wrap("env", name, |mut caller: C<'_>| -> R {
            caller.data_mut().resume();
            Ok(Status::Ok as i32)
        })?;
    }
    // Envoy resets the HTTP stream for the request (0) and response (1)
    // sides alike; the downstream connection (2) is a network filter's.
    linker.func_wrap("env", "proxy_close_stream", |mut caller: C<'_>, which: i32| -> R {
        Ok(match which {
            0 | 1 => {
                if let Some(stream) = caller.data_mut().stream() {
                    stream.close = true;
                }
                Status::Ok
            }
            2 => Status::Ok,
            3 => Status::Unimplemented,
            _ => Status::BadArgument,
        } as i32)
    })?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: C<'_>, status: i32, dptr: i32, dlen: i32, bptr: i32, blen: i32, hptr: i32, hlen: i32, grpc_status: i32| -> R {
            let details = String::from_utf8_lossy(&status!(read(&caller, dptr, dlen))).into_owned();
            let body = Bytes::from(status!(read(&caller, bptr, blen)));
            let raw = status!(read(&caller, hptr, hlen));
            let Some(headers) = owned_pairs(&raw) else { return Ok(Status::BadArgument as i32) };
            if !(100..=999).contains(&status) {
                return Ok(Status::BadArgument as i32);
            }
            // -1: no gRPC status of its own.
            let grpc_status = u32::try_from(grpc_status).ok();
            caller.data_mut().reply(LocalResponse { status: status as u16, body, headers, details, grpc_status });
            Ok(Status::Ok as i32)
        },
    )?;

    // Properties.
    linker.func_wrap("env", "proxy_get_property", |mut caller: C<'_>, ptr: i32, len: i32, ptr_out: i32, size_out: i32| -> R {
        let path = status!(read(&caller, ptr, len));
        let value = {
            let host = caller.data_mut();
            let plugin = host.plugin.upgrade();
            let effective = host.effective;
            let stream = host.stream.as_ref().filter(|s| s.context == effective);
            properties::get(&path, plugin.as_deref(), stream)
        };
        match value {
            Some(v) => Ok(give(&mut caller, &v, ptr_out, size_out)? as i32),
            None => Ok(Status::NotFound as i32),
        }
    })?;
    linker.func_wrap("env", "proxy_set_property", |mut caller: C<'_>, ptr: i32, len: i32, vptr: i32, vlen: i32| -> R {
        let path = status!(read(&caller, ptr, len));
        let value = status!(read(&caller, vptr, vlen));
        // A stream's property: none outside a stream, as Envoy.
        let Some(stream) = caller.data_mut().stream() else { return Ok(Status::NotFound as i32) };
        stream.info.set_property(&path, &value);
        Ok(Status::Ok as i32)
    })?;

    // Shared data and queues (process-wide, per vm_id, as Envoy's).
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: C<'_>, kptr: i32, klen: i32, ptr_out: i32, size_out: i32, cas_out: i32| -> R {
            let key = status!(text(&caller, kptr, klen));
            let Some(vm_id) = caller.data().plugin.upgrade().map(|p| p.vm_id.clone()) else { return Ok(Status::NotFound as i32) };
            let Some((value, cas)) = shared::get(&vm_id, &key) else { return Ok(Status::NotFound as i32) };
            let s = give(&mut caller, &value, ptr_out, size_out)?;
            if s == Status::Ok && !put_u32(&mut caller, cas_out, cas) {
                return Ok(Status::InvalidMemoryAccess as i32);
            }
            Ok(s as i32)
        },
    )?;
    linker.func_wrap("env", "proxy_set_shared_data", |caller: C<'_>, kptr: i32, klen: i32, vptr: i32, vlen: i32, cas: i32| -> R {
        let key = status!(text(&caller, kptr, klen));
        let value = status!(read(&caller, vptr, vlen));
        let Some(vm_id) = caller.data().plugin.upgrade().map(|p| p.vm_id.clone()) else { return Ok(Status::NotFound as i32) };
        Ok(shared::set(&vm_id, key, Bytes::from(value), cas as u32) as i32)
    })?;
    linker.func_wrap("env", "proxy_register_shared_queue", |mut caller: C<'_>, nptr: i32, nlen: i32, out: i32| -> R {
        let name = status!(text(&caller, nptr, nlen));
        let Some(plugin) = caller.data().plugin.upgrade() else { return Ok(Status::NotFound as i32) };
        let id = shared::register_queue(&plugin, &name);
        Ok(if put_u32(&mut caller, out, id) { Status::Ok } else { Status::InvalidMemoryAccess } as i32)
    })?;
    linker.func_wrap("env", "proxy_resolve_shared_queue", |mut caller: C<'_>, vptr: i32, vlen: i32, nptr: i32, nlen: i32, out: i32| -> R {
        let vm_id = status!(text(&caller, vptr, vlen));
        let name = status!(text(&caller, nptr, nlen));
        match shared::resolve_queue(&vm_id, &name) {
            Some(id) => Ok(if put_u32(&mut caller, out, id) { Status::Ok } else { Status::InvalidMemoryAccess } as i32),
            None => Ok(Status::NotFound as i32),
        }
    })?;
    linker.func_wrap("env", "proxy_enqueue_shared_queue", |caller: C<'_>, id: i32, ptr: i32, len: i32| -> R {
        let data = status!(read(&caller, ptr, len));
        Ok(shared::enqueue(id as u32, Bytes::from(data)) as i32)
    })?;
    linker.func_wrap("env", "proxy_dequeue_shared_queue", |mut caller: C<'_>, id: i32, ptr_out: i32, size_out: i32| -> R {
        match shared::dequeue(id as u32) {
            Ok(Some(data)) => Ok(give(&mut caller, &data, ptr_out, size_out)? as i32),
            Ok(None) => Ok(Status::Empty as i32),
            Err(s) => Ok(s as i32),
        }
    })?;

    // HTTP callouts.
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut caller: C<'_>,
         uptr: i32,
         ulen: i32,
         hptr: i32,
         hlen: i32,
         bptr: i32,
         blen: i32,
         tptr: i32,
         tlen: i32,
         timeout_ms: i32,
         token_out: i32|
         -> R {
            let cluster_name = status!(text(&caller, uptr, ulen));
            let raw = status!(read(&caller, hptr, hlen));
            let body = Bytes::from(status!(read(&caller, bptr, blen)));
            let _trailers = status!(read(&caller, tptr, tlen));
            let Some(headers) = owned_pairs(&raw) else { return Ok(Status::BadArgument as i32) };
            // Envoy refuses a callout without these.
            for required in [":method", ":path", ":authority"] {
                if !headers.iter().any(|(k, v)| k == required && !v.is_empty()) {
                    return Ok(Status::BadArgument as i32);
                }
            }
            let Some(plugin) = caller.data().plugin.upgrade() else { return Ok(Status::InternalFailure as i32) };
            let Some(cluster) = plugin.clusters.load().get(&cluster_name).cloned() else {
                return Ok(Status::BadArgument as i32);
            };
            let token = caller.data_mut().send_call(cluster, headers, body, Duration::from_millis(timeout_ms as u32 as u64), false);
            Ok(if put_u32(&mut caller, token_out, token) { Status::Ok } else { Status::InvalidMemoryAccess } as i32)
        },
    )?;
    // gRPC: unary calls (callout.rs) and streams (grpc_stream.rs).
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut caller: C<'_>,
         sptr: i32,
         slen: i32,
         nptr: i32,
         nlen: i32,
         mptr: i32,
         mlen: i32,
         hptr: i32,
         hlen: i32,
         bptr: i32,
         blen: i32,
         timeout_ms: i32,
         token_out: i32|
         -> R {
            let service = status!(read(&caller, sptr, slen));
            let service_name = status!(text(&caller, nptr, nlen));
            let method = status!(text(&caller, mptr, mlen));
            let raw = status!(read(&caller, hptr, hlen));
            let message = status!(read(&caller, bptr, blen));
            let Some(metadata) = owned_pairs(&raw) else { return Ok(Status::BadArgument as i32) };
            let Some((cluster, mut headers)) = grpc_request(&caller, &service, &service_name, &method) else {
                return Ok(Status::ParseFailure as i32);
            };
            let timeout = Duration::from_millis(timeout_ms as u32 as u64);
            if !timeout.is_zero() {
                headers.push(("grpc-timeout".to_string(), Bytes::from(format!("{}m", timeout.as_millis()))));
            }
            headers.extend(metadata);
            let token = caller.data_mut().send_call(cluster, headers, grpc::frame(&message), timeout, true);
            Ok(if put_u32(&mut caller, token_out, token) { Status::Ok } else { Status::InvalidMemoryAccess } as i32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut caller: C<'_>, sptr: i32, slen: i32, nptr: i32, nlen: i32, mptr: i32, mlen: i32, hptr: i32, hlen: i32, token_out: i32| -> R {
            let service = status!(read(&caller, sptr, slen));
            let service_name = status!(text(&caller, nptr, nlen));
            let method = status!(text(&caller, mptr, mlen));
            let raw = status!(read(&caller, hptr, hlen));
            let Some(metadata) = owned_pairs(&raw) else { return Ok(Status::BadArgument as i32) };
            let Some((cluster, mut headers)) = grpc_request(&caller, &service, &service_name, &method) else {
                return Ok(Status::ParseFailure as i32);
            };
            if !cluster.http2 {
                // Envoy would send it as HTTP/1.1; a stream of messages and
                // its trailers need HTTP/2, so we refuse it and say why.
                tracing::warn!(plugin = %caller.data().name, cluster = %cluster.name, "a gRPC stream needs an HTTP/2 cluster (http2_protocol_options)");
                return Ok(Status::BadArgument as i32);
            }
            headers.extend(metadata);
            let token = caller.data_mut().open_stream(cluster, headers);
            Ok(if put_u32(&mut caller, token_out, token) { Status::Ok } else { Status::InvalidMemoryAccess } as i32)
        },
    )?;
    linker.func_wrap("env", "proxy_grpc_send", |mut caller: C<'_>, token: i32, ptr: i32, len: i32, end: i32| -> R {
        let message = Bytes::from(status!(read(&caller, ptr, len)));
        let token = token as u32;
        if !grpc_stream::is_stream_token(token) {
            return Ok(Status::BadArgument as i32); // a unary call's token
        }
        let Some(stream) = caller.data_mut().grpc_streams.get_mut(&token) else { return Ok(Status::NotFound as i32) };
        // Sending on a side that is over does nothing, as in Envoy.
        let _ = stream.outgoing.send(grpc_stream::Outgoing::Message(message, end != 0));
        Ok(Status::Ok as i32)
    })?;
    // Cancelling a unary call, or closing it, stops it and drops its
    // answer: no callback. Cancelling a stream resets it, with no more
    // callbacks; closing it ends the plugin's side. An unknown token is,
    // as in Envoy, a bad argument when odd (a call's) and not found when
    // even (a stream's).
    for (name, cancel) in [("proxy_grpc_cancel", true), ("proxy_grpc_close", false)] {
        linker.func_wrap("env", name, move |mut caller: C<'_>, token: i32| -> R {
            let host = caller.data_mut();
            let token = token as u32;
            if let Some(sending) = host.grpc_pending.remove(&token) {
                host.calls.retain(|c| c.token != token);
                if let Some(task) = sending {
                    task.abort();
                }
                return Ok(Status::Ok as i32);
            }
            let Some(stream) = host.grpc_streams.get_mut(&token) else {
                return Ok(if grpc_stream::is_stream_token(token) { Status::NotFound } else { Status::BadArgument } as i32);
            };
            if cancel || stream.remote_closed {
                host.opening.retain(|o| o.token != token);
                if let Some(stream) = host.grpc_streams.remove(&token) {
                    if cancel {
                        stream.cancel();
                    }
                }
            } else if !stream.local_closed {
                stream.local_closed = true;
                let _ = stream.outgoing.send(grpc_stream::Outgoing::Close);
            }
            Ok(Status::Ok as i32)
        })?;
    }
    linker.func_wrap("env", "proxy_get_status", |mut caller: C<'_>, code_out: i32, ptr_out: i32, size_out: i32| -> R {
        let Some((code, message)) = caller.data().grpc_status.clone() else { return Ok(Status::NotFound as i32) };
        if !put_u32(&mut caller, code_out, code) {
            return Ok(Status::InvalidMemoryAccess as i32);
        }
        Ok(give(&mut caller, &message, ptr_out, size_out)? as i32)
    })?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_c: C<'_>, _n: i32, _nl: i32, _a: i32, _al: i32, _r: i32, _rs: i32| -> R { Ok(Status::NotFound as i32) },
    )?;

    // Metrics.
    linker.func_wrap("env", "proxy_define_metric", |mut caller: C<'_>, kind: i32, nptr: i32, nlen: i32, out: i32| -> R {
        let Some(kind) = MetricType::from_i32(kind) else { return Ok(Status::BadArgument as i32) };
        let name = status!(text(&caller, nptr, nlen));
        let Some(plugin) = caller.data().plugin.upgrade() else { return Ok(Status::InternalFailure as i32) };
        let Some(metric) = plugin.metrics.define(kind, &name) else { return Ok(Status::BadArgument as i32) };
        let host = caller.data_mut();
        host.metrics.push(metric);
        let id = host.metrics.len() as u32;
        Ok(if put_u32(&mut caller, out, id) { Status::Ok } else { Status::InvalidMemoryAccess } as i32)
    })?;
    linker.func_wrap("env", "proxy_increment_metric", |caller: C<'_>, id: i32, offset: i64| -> R {
        match metric(&caller, id) {
            Some(m) => Ok(m.increment(offset) as i32),
            None => Ok(Status::NotFound as i32),
        }
    })?;
    linker.func_wrap("env", "proxy_record_metric", |caller: C<'_>, id: i32, value: i64| -> R {
        match metric(&caller, id) {
            Some(m) => Ok(m.record(value as u64) as i32),
            None => Ok(Status::NotFound as i32),
        }
    })?;
    linker.func_wrap("env", "proxy_get_metric", |mut caller: C<'_>, id: i32, out: i32| -> R {
        let Some(value) = metric(&caller, id).map(|m| m.get()) else { return Ok(Status::NotFound as i32) };
        Ok(if write(&mut caller, out, &value.to_le_bytes()) { Status::Ok } else { Status::InvalidMemoryAccess } as i32)
    })?;
    Ok(())
}

fn metric(caller: &C<'_>, id: i32) -> Option<super::metrics::Metric> {
    let index = (id as u32 as usize).checked_sub(1)?;
    caller.data().metrics.get(index).cloned()
}

/// Envoy's `setBuffer`: at 0, the first `size` bytes are replaced (a
/// prepend when `size` is 0); at or past the end, an append; elsewhere
/// refused.
fn splice(body: &mut BytesMut, start: usize, size: usize, data: &[u8]) -> Status {
    if start == 0 {
        let rest = body.split_off(size.min(body.len()));
        body.clear();
        body.extend_from_slice(data);
        body.extend_from_slice(&rest);
        Status::Ok
    } else if start >= body.len() {
        body.extend_from_slice(data);
        Status::Ok
    } else {
        Status::BadArgument
    }
}

/// A header map as the plugin sees it: pseudo-headers first, then the
/// rest in order (HTTP/1.1's `host` shows as `:authority`, as in Envoy).
fn headers_of(host: &mut Host, map: MapType) -> Option<Vec<(String, Bytes)>> {
    match map {
        MapType::RequestHeaders => {
            let stream = host.stream()?;
            let tls = stream.info.tls;
            let req = stream.request.as_deref()?;
            Some(request_pairs(req, tls))
        }
        MapType::ResponseHeaders => Some(response_pairs(host.stream()?.response.as_deref()?)),
        MapType::ResponseTrailers => Some(pairs(host.stream()?.response_trailers.as_ref()?)),
        MapType::CallResponseHeaders => host.call_response.as_ref().map(|c| c.headers.clone()),
        MapType::CallResponseTrailers => host.call_response.as_ref().map(|c| c.trailers.clone()),
        MapType::GrpcInitialMetadata | MapType::GrpcTrailingMetadata => {
            host.grpc_metadata.as_ref().filter(|(m, _)| *m == map).map(|(_, pairs)| pairs.clone())
        }
        // Outside `proxy_on_request_trailers`: an empty map.
        MapType::RequestTrailers => Some(host.stream()?.request_trailers.as_ref().map(pairs).unwrap_or_default()),
    }
}

/// A header map as the plugin reads it.
pub fn pairs(map: &http::HeaderMap) -> Vec<(String, Bytes)> {
    map.iter().map(|(k, v)| (k.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes()))).collect()
}

/// Response headers as the plugin reads them: `:status` first.
pub fn response_pairs(resp: &ResponseHeader) -> Vec<(String, Bytes)> {
    let mut out = vec![(":status".to_string(), Bytes::from(resp.status.as_u16().to_string()))];
    out.extend(pairs(&resp.headers));
    out
}

pub fn request_pairs(req: &RequestHeader, tls: bool) -> Vec<(String, Bytes)> {
    let authority = req
        .headers
        .get(http::header::HOST)
        .map(|h| Bytes::copy_from_slice(h.as_bytes()))
        .or_else(|| req.uri.authority().map(|a| Bytes::copy_from_slice(a.as_str().as_bytes())))
        .unwrap_or_default();
    let mut pairs = vec![
        (":authority".to_string(), authority),
        (":path".to_string(), Bytes::copy_from_slice(req.raw_path())),
        (":method".to_string(), Bytes::copy_from_slice(req.method.as_str().as_bytes())),
        (":scheme".to_string(), Bytes::from_static(if tls { b"https" } else { b"http" })),
    ];
    pairs.extend(
        req.headers
            .iter()
            .filter(|(k, _)| *k != http::header::HOST)
            .map(|(k, v)| (k.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes()))),
    );
    pairs
}

#[derive(Debug, Clone, Copy)]
enum Edit {
    Add,
    Replace,
    Remove,
    Clear,
}

fn edit_headers(host: &mut Host, map: i32, op: Edit, key: &[u8], value: Option<&[u8]>) -> Status {
    let Some(stream) = host.stream() else { return Status::NotFound };
    let key = key.to_ascii_lowercase();
    let name = match op {
        Edit::Clear => None,
        _ if key.starts_with(b":") => None,
        _ => match http::HeaderName::from_bytes(&key) {
            Ok(n) => Some(n),
            Err(_) => return Status::BadArgument,
        },
    };
    let value = match value.map(http::HeaderValue::from_bytes) {
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return Status::BadArgument,
        None => None,
    };
    match MapType::from_i32(map) {
        Some(MapType::RequestHeaders) => {
            // Copied on write once shared (a response callback's edit).
            let Some(req) = stream.request.as_mut().map(std::sync::Arc::make_mut) else { return Status::NotFound };
            if edit_regular(req, op, name.as_ref(), value.as_ref()) {
                return Status::Ok;
            }
            // Pseudo-headers: what they stand for.
            match (op, value, &key[..]) {
                (Edit::Add | Edit::Replace, Some(v), b":path") => {
                    let _ = req.set_raw_path(v.as_bytes());
                }
                (Edit::Add | Edit::Replace, Some(v), b":authority") => {
                    let _ = req.insert_header(http::header::HOST, v);
                }
                (Edit::Add | Edit::Replace, Some(v), b":method") => match http::Method::from_bytes(v.as_bytes()) {
                    Ok(m) => req.set_method(m),
                    Err(_) => return Status::BadArgument,
                },
                _ => {}
            }
            Status::Ok
        }
        Some(MapType::ResponseHeaders) => {
            let Some(resp) = stream.response.as_mut().map(std::sync::Arc::make_mut) else { return Status::NotFound };
            if edit_regular(resp, op, name.as_ref(), value.as_ref()) {
                return Status::Ok;
            }
            if let (Edit::Add | Edit::Replace, Some(v), b":status") = (op, value, &key[..]) {
                match v.to_str().ok().and_then(|s| s.parse::<u16>().ok()) {
                    Some(code) => {
                        let _ = resp.set_status(code);
                    }
                    None => return Status::BadArgument,
                }
            }
            Status::Ok
        }
        Some(map @ (MapType::RequestTrailers | MapType::ResponseTrailers)) => {
            let trailers = if map == MapType::RequestTrailers { &mut stream.request_trailers } else { &mut stream.response_trailers };
            let Some(trailers) = trailers.as_mut() else { return Status::NotFound };
            edit_regular(trailers, op, name.as_ref(), value.as_ref());
            Status::Ok
        }
        Some(_) => Status::Ok, // callout maps: read-only here
        None => Status::BadArgument,
    }
}

/// An edit of ordinary headers, the same on requests and responses;
/// `false` when it is about a pseudo-header (the caller's business).
fn edit_regular(h: &mut impl crate::model::header::Headers, op: Edit, name: Option<&http::HeaderName>, value: Option<&http::HeaderValue>) -> bool {
    match (op, name, value) {
        (Edit::Clear, _, _) => {
            let names: Vec<http::HeaderName> = h.names().cloned().collect();
            for n in &names {
                h.remove(n);
            }
        }
        (Edit::Remove, Some(n), _) => h.remove(n),
        (Edit::Add, Some(n), Some(v)) => h.append(n, v),
        (Edit::Replace, Some(n), Some(v)) => h.insert(n, v),
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_buffer_follows_envoy() {
        let mut b = BytesMut::from(&b"hello world"[..]);
        assert_eq!(splice(&mut b, 0, 5, b"HOWDY"), Status::Ok);
        assert_eq!(&b[..], b"HOWDY world");
        assert_eq!(splice(&mut b, 0, 0, b">"), Status::Ok);
        assert_eq!(&b[..], b">HOWDY world");
        assert_eq!(splice(&mut b, 100, 0, b"!"), Status::Ok);
        assert_eq!(&b[..], b">HOWDY world!");
        assert_eq!(splice(&mut b, 3, 1, b"x"), Status::BadArgument);
        assert_eq!(splice(&mut b, 0, usize::MAX, b"new"), Status::Ok);
        assert_eq!(&b[..], b"new");
    }
}
