//! The HTTP stream of the current context: its header maps and bodies,
//! pausing and resuming, and local responses.
//!
//! Which map or body may be touched when is the ABI's rule, enforced by the
//! host: request headers from `on_request_headers` (and while the request
//! is paused there), the request body from `on_request_body`, and so on;
//! any of them may be read in `on_log`. A call out of place returns an
//! error [`Status`].

use crate::abi::{self, BufferType, MapType, StreamType};
use crate::host::{check, read_bytes, Status};
use crate::map;

/// One header (or trailer) map of the current stream. Names are
/// case-insensitive (hosts store them lower-cased); pseudo-headers such as
/// `:path`, `:method`, `:authority` and `:status` are part of the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderMap(pub(crate) MapType);

pub const REQUEST_HEADERS: HeaderMap = HeaderMap(MapType::HttpRequestHeaders);
pub const REQUEST_TRAILERS: HeaderMap = HeaderMap(MapType::HttpRequestTrailers);
pub const RESPONSE_HEADERS: HeaderMap = HeaderMap(MapType::HttpResponseHeaders);
pub const RESPONSE_TRAILERS: HeaderMap = HeaderMap(MapType::HttpResponseTrailers);

impl HeaderMap {
    /// The first value of `name`, as text (invalid UTF-8 replaced).
    pub fn get(self, name: &str) -> Option<String> {
        self.get_bytes(name).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// The first value of `name`, as bytes.
    pub fn get_bytes(self, name: &str) -> Option<Vec<u8>> {
        // SAFETY: `name` outlives the call; out-pointers come from `read_bytes`.
        read_bytes(|data, size| unsafe {
            abi::proxy_get_header_map_value(self.0, name.as_ptr(), name.len(), data, size)
        })
        .ok()
        .flatten()
    }

    /// Every pair, in the host's order, repeated names included.
    pub fn all(self) -> Result<Vec<(String, String)>, Status> {
        Ok(self
            .all_bytes()?
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect())
    }

    /// [`all`](Self::all) with raw values.
    pub fn all_bytes(self) -> Result<Vec<(String, Vec<u8>)>, Status> {
        // SAFETY: out-pointers come from `read_bytes`.
        let bytes = read_bytes(|data, size| unsafe { abi::proxy_get_header_map_pairs(self.0, data, size) })?;
        Ok(bytes.map(|b| map::deserialize(&b)).unwrap_or_default())
    }

    /// Replaces the whole map.
    pub fn set_all<K: AsRef<[u8]>, V: AsRef<[u8]>>(self, pairs: &[(K, V)]) -> Result<(), Status> {
        let bytes = map::serialize(pairs);
        // SAFETY: `bytes` outlives the call.
        check(unsafe { abi::proxy_set_header_map_pairs(self.0, bytes.as_ptr(), bytes.len()) })
    }

    /// Sets `name` to `value`, replacing every earlier value.
    pub fn set(self, name: &str, value: impl AsRef<[u8]>) -> Result<(), Status> {
        let value = value.as_ref();
        // SAFETY: both slices outlive the call.
        check(unsafe {
            abi::proxy_replace_header_map_value(self.0, name.as_ptr(), name.len(), value.as_ptr(), value.len())
        })
    }

    /// Adds a value for `name`, keeping the ones already there.
    pub fn add(self, name: &str, value: impl AsRef<[u8]>) -> Result<(), Status> {
        let value = value.as_ref();
        // SAFETY: both slices outlive the call.
        check(unsafe { abi::proxy_add_header_map_value(self.0, name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
    }

    /// Removes every value of `name` (fine when there is none).
    pub fn remove(self, name: &str) -> Result<(), Status> {
        // SAFETY: `name` outlives the call.
        check(unsafe { abi::proxy_remove_header_map_value(self.0, name.as_ptr(), name.len()) })
    }
}

/// A body buffer of the current stream. In a body callback it holds what
/// the host has buffered so far: the current chunk, or every chunk since
/// the callback returned [`Action::Pause`](crate::Action::Pause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body(BufferType);

pub const REQUEST_BODY: Body = Body(BufferType::HttpRequestBody);
pub const RESPONSE_BODY: Body = Body(BufferType::HttpResponseBody);

impl Body {
    /// Bytes currently buffered.
    pub fn len(self) -> Result<usize, Status> {
        buffer_len(self.0)
    }

    pub fn is_empty(self) -> Result<bool, Status> {
        Ok(self.len()? == 0)
    }

    /// Up to `max` bytes from `start`.
    pub fn read(self, start: usize, max: usize) -> Result<Vec<u8>, Status> {
        read_buffer(self.0, start, max)
    }

    /// Everything buffered.
    pub fn read_all(self) -> Result<Vec<u8>, Status> {
        read_buffer(self.0, 0, self.len()?)
    }

    /// Replaces everything buffered with `bytes`. The stream's
    /// `content-length`, if any, is the plugin's to fix.
    pub fn replace(self, bytes: &[u8]) -> Result<(), Status> {
        let len = self.len()?;
        self.splice(0, len, bytes)
    }

    /// Appends `bytes` to what is buffered.
    pub fn append(self, bytes: &[u8]) -> Result<(), Status> {
        let len = self.len()?;
        self.splice(len, 0, bytes)
    }

    /// Replaces `len` bytes at `start` with `bytes`: the ABI's
    /// `proxy_set_buffer_bytes` (`start` 0 and `len` 0 prepends).
    pub fn splice(self, start: usize, len: usize, bytes: &[u8]) -> Result<(), Status> {
        // SAFETY: `bytes` outlives the call.
        check(unsafe { abi::proxy_set_buffer_bytes(self.0, start, len, bytes.as_ptr(), bytes.len()) })
    }
}

pub(crate) fn buffer_len(buffer: BufferType) -> Result<usize, Status> {
    let (mut size, mut flags) = (0usize, 0u32);
    // SAFETY: the host writes through two valid pointers.
    match check(unsafe { abi::proxy_get_buffer_status(buffer, &mut size, &mut flags) }) {
        Ok(()) => Ok(size),
        Err(Status::NotFound) => Ok(0),
        Err(e) => Err(e),
    }
}

pub(crate) fn read_buffer(buffer: BufferType, start: usize, max: usize) -> Result<Vec<u8>, Status> {
    if max == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: out-pointers come from `read_bytes`.
    Ok(read_bytes(|data, size| unsafe { abi::proxy_get_buffer_bytes(buffer, start, max, data, size) })?.unwrap_or_default())
}

/// Resumes a request paused by a callback that returned
/// [`Action::Pause`](crate::Action::Pause) (e.g. after an HTTP call).
pub fn resume_request() -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { abi::proxy_continue_stream(StreamType::HttpRequest) })
}

/// Resumes a paused response.
pub fn resume_response() -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { abi::proxy_continue_stream(StreamType::HttpResponse) })
}

/// Resets the stream (no response is sent if none started).
pub fn reset() -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { abi::proxy_close_stream(StreamType::HttpRequest) })
}

/// No headers, for [`send_response`] (`&[]` alone does not name a type).
pub const NO_HEADERS: &[(&str, &str)] = &[];

/// Answers the request from the plugin instead of the upstream, as long as
/// no response headers went downstream yet. The callback that sends it
/// should return [`Action::Pause`](crate::Action::Pause). The host adds what
/// it adds to its own local responses (`content-length`, `content-type`
/// for a body, `date`, `server`...).
pub fn send_response<K: AsRef<[u8]>, V: AsRef<[u8]>>(status: u16, headers: &[(K, V)], body: impl AsRef<[u8]>) -> Result<(), Status> {
    let headers = map::serialize(headers);
    let body = body.as_ref();
    // SAFETY: every slice outlives the call; no details string (null, 0).
    check(unsafe {
        abi::proxy_send_local_response(
            u32::from(status),
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            abi::NO_GRPC_STATUS,
        )
    })
}
