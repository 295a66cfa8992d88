//! The proxy-wasm ABI 0.2.1 as the host exposes it: the raw imports from
//! module `env` and the enums they take (spec: proxy-wasm/spec,
//! `abi-versions/v0.2.1`). Nothing here is safe to call directly; the other
//! modules wrap it. The callbacks the host calls live in `dispatch`.
//!
//! Conventions of the ABI, relied on by the wrappers:
//! - every import returns a `proxy_status_t` (here a raw `u32`, turned into
//!   [`Status`](crate::Status) by `check`: a host may return values this
//!   crate does not know, and those must not become an invalid enum);
//! - `size_t` is `usize` (32 bits on wasm32); booleans are `u32`;
//! - a value the host returns (`*mut *mut u8`, `*mut usize`) was allocated
//!   in our memory through `proxy_on_memory_allocate`, and the plugin owns
//!   it from then on (`take_host_bytes`).

/// `proxy_log_level_t`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    pub(crate) fn from_raw(raw: u32) -> LogLevel {
        match raw {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Critical,
        }
    }
}

/// `proxy_buffer_type_t`: which byte buffer a buffer call reads or writes.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    HttpRequestBody = 0,
    HttpResponseBody = 1,
    DownstreamData = 2,
    UpstreamData = 3,
    HttpCallResponseBody = 4,
    GrpcCallMessage = 5,
    VmConfiguration = 6,
    PluginConfiguration = 7,
}

/// `proxy_map_type_t`: which header (or trailer, or metadata) map.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    HttpRequestHeaders = 0,
    HttpRequestTrailers = 1,
    HttpResponseHeaders = 2,
    HttpResponseTrailers = 3,
    GrpcInitialMetadata = 4,
    GrpcTrailingMetadata = 5,
    HttpCallResponseHeaders = 6,
    HttpCallResponseTrailers = 7,
}

/// `proxy_stream_type_t`: the direction `proxy_continue_stream` and
/// `proxy_close_stream` act on.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    HttpRequest = 0,
    HttpResponse = 1,
    Downstream = 2,
    Upstream = 3,
}

/// `proxy_metric_type_t`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

/// `proxy_action_t`, returned by the stream callbacks.
pub const ACTION_CONTINUE: u32 = 0;
pub const ACTION_PAUSE: u32 = 1;

/// `proxy_send_local_response`'s `grpc_status` for "not a gRPC response".
pub const NO_GRPC_STATUS: i32 = -1;

#[link(wasm_import_module = "env")]
extern "C" {
    pub fn proxy_log(level: LogLevel, message_data: *const u8, message_size: usize) -> u32;
    pub fn proxy_get_log_level(return_level: *mut u32) -> u32;
    pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;

    pub fn proxy_set_effective_context(context_id: u32) -> u32;
    pub fn proxy_done() -> u32;

    pub fn proxy_get_buffer_status(buffer: BufferType, return_size: *mut usize, return_flags: *mut u32) -> u32;
    pub fn proxy_get_buffer_bytes(
        buffer: BufferType,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    pub fn proxy_set_buffer_bytes(buffer: BufferType, start: usize, size: usize, data: *const u8, data_size: usize) -> u32;

    pub fn proxy_get_header_map_pairs(map: MapType, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    pub fn proxy_set_header_map_pairs(map: MapType, data: *const u8, size: usize) -> u32;
    pub fn proxy_get_header_map_value(
        map: MapType,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    pub fn proxy_add_header_map_value(
        map: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    pub fn proxy_replace_header_map_value(
        map: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    pub fn proxy_remove_header_map_value(map: MapType, key_data: *const u8, key_size: usize) -> u32;

    pub fn proxy_continue_stream(stream: StreamType) -> u32;
    pub fn proxy_close_stream(stream: StreamType) -> u32;
    #[allow(clippy::too_many_arguments)]
    pub fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;

    #[allow(clippy::too_many_arguments)]
    pub fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        return_call_id: *mut u32,
    ) -> u32;

    pub fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    pub fn proxy_set_shared_data(key_data: *const u8, key_size: usize, value_data: *const u8, value_size: usize, cas: u32) -> u32;

    pub fn proxy_register_shared_queue(name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    pub fn proxy_resolve_shared_queue(
        vm_id_data: *const u8,
        vm_id_size: usize,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    pub fn proxy_enqueue_shared_queue(queue_id: u32, value_data: *const u8, value_size: usize) -> u32;
    pub fn proxy_dequeue_shared_queue(queue_id: u32, return_value_data: *mut *mut u8, return_value_size: *mut usize) -> u32;

    pub fn proxy_define_metric(kind: MetricType, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    pub fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    pub fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    pub fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;

    pub fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    pub fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
}
