//! Safe wrappers for the host calls that belong to no bigger topic: status
//! codes, memory handed over by the host, time, the tick timer, properties
//! and `proxy_done`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::abi;

/// A host call that did not succeed (`proxy_status_t` other than `OK`).
///
/// Most of these mean the call was made where the ABI does not allow it:
/// e.g. response headers read from `on_request_headers` (`NotFound` or
/// `BadArgument`, depending on the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    NotFound,
    BadArgument,
    SerializationFailure,
    ParseFailure,
    InvalidMemoryAccess,
    Empty,
    CasMismatch,
    InternalFailure,
    Unimplemented,
    /// A code ABI 0.2.1 does not define.
    Unknown(u32),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::NotFound => f.write_str("not found"),
            Status::BadArgument => f.write_str("bad argument"),
            Status::SerializationFailure => f.write_str("serialization failure"),
            Status::ParseFailure => f.write_str("parse failure"),
            Status::InvalidMemoryAccess => f.write_str("invalid memory access"),
            Status::Empty => f.write_str("empty"),
            Status::CasMismatch => f.write_str("compare-and-swap mismatch"),
            Status::InternalFailure => f.write_str("internal failure"),
            Status::Unimplemented => f.write_str("unimplemented"),
            Status::Unknown(code) => write!(f, "unknown host status {code}"),
        }
    }
}

impl std::error::Error for Status {}

/// Turns a raw `proxy_status_t` into a `Result`.
pub(crate) fn check(raw: u32) -> Result<(), Status> {
    Err(match raw {
        0 => return Ok(()),
        1 => Status::NotFound,
        2 => Status::BadArgument,
        3 => Status::SerializationFailure,
        4 => Status::ParseFailure,
        6 => Status::InvalidMemoryAccess,
        7 => Status::Empty,
        8 => Status::CasMismatch,
        10 => Status::InternalFailure,
        12 => Status::Unimplemented,
        other => Status::Unknown(other),
    })
}

/// Takes ownership of bytes the host wrote into memory it got from
/// `proxy_on_memory_allocate` (see `dispatch`).
///
/// # Safety
/// `data` is null, or was returned by `proxy_on_memory_allocate(size)` for
/// exactly this `size` and is not owned by anything else.
pub(crate) unsafe fn take_host_bytes(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: per the contract above, `data` is a `Box<[u8]>` of `size`
    // bytes leaked by `proxy_on_memory_allocate`, now initialised by the host.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(data, size)) }.into_vec()
}

/// Runs a host call that returns bytes through `(data, size)` out-pointers.
/// `NotFound` becomes `Ok(None)`.
pub(crate) fn read_bytes(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    match check(call(&mut data, &mut size)) {
        // SAFETY: on success the host filled (data, size) through our allocator.
        Ok(()) => Ok(Some(unsafe { take_host_bytes(data, size) })),
        Err(Status::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The host's wall clock (may be frozen for the duration of a callback).
pub fn now() -> SystemTime {
    let mut nanos: u64 = 0;
    // SAFETY: the host writes one u64 through a valid pointer.
    let status = unsafe { abi::proxy_get_current_time_nanoseconds(&mut nanos) };
    match check(status) {
        Ok(()) => UNIX_EPOCH + Duration::from_nanos(nanos),
        Err(_) => UNIX_EPOCH,
    }
}

/// Asks the host to call [`RootContext::on_tick`](crate::RootContext::on_tick)
/// every `period` (rounded down to milliseconds); zero stops the timer.
/// Only meaningful from a root context.
pub fn set_tick_period(period: Duration) -> Result<(), Status> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: no pointers.
    check(unsafe { abi::proxy_set_tick_period_milliseconds(ms) })
}

/// Serialises a property path: segments joined by NUL.
pub(crate) fn property_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

/// A host property, e.g. `["request", "path"]`, `["source", "address"]`,
/// `["plugin_root_id"]`. `None` when the host has no such property (the set
/// of properties is host-specific; values are raw bytes, numbers are
/// little-endian integers on Envoy).
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let path = property_path(path);
    // SAFETY: `path` outlives the call; out-pointers come from `read_bytes`.
    read_bytes(|data, size| unsafe { abi::proxy_get_property(path.as_ptr(), path.len(), data, size) })
}

/// [`property`] as text; `None` when missing, unreadable or not UTF-8.
pub fn property_string(path: &[&str]) -> Option<String> {
    property(path).ok().flatten().and_then(|v| String::from_utf8(v).ok())
}

/// Sets a host property (Envoy: only under `filter_state`-like paths).
pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), Status> {
    let path = property_path(path);
    // SAFETY: both slices outlive the call.
    check(unsafe { abi::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// Tells the host a context that returned `false` from `on_done` is finished.
pub fn done() -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { abi::proxy_done() })
}
