//! State shared by every VM of the same `vm_id` on the host (one VM per
//! worker thread on Envoy): a key-value store with compare-and-swap, and
//! named queues.
//!
//! The store's CAS value changes on every write: read, compute, write back
//! with the CAS you read, and start over on [`Status::CasMismatch`] —
//! [`update`] does that loop.

use crate::abi;
use crate::host::{check, read_bytes, Status};

/// A value and the CAS it was read with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub cas: u32,
}

/// Reads `key`; `None` when it was never set.
pub fn get(key: &str) -> Result<Option<Entry>, Status> {
    let mut cas = 0u32;
    // SAFETY: `key` outlives the call; out-pointers come from `read_bytes`
    // and the host writes one u32 to `cas`.
    let value = read_bytes(|data, size| unsafe { abi::proxy_get_shared_data(key.as_ptr(), key.len(), data, size, &mut cas) })?;
    Ok(value.map(|value| Entry { value, cas }))
}

/// Writes `key`. With `cas`, only if nobody wrote since it was read
/// (`Err(CasMismatch)` otherwise); without, unconditionally.
pub fn set(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    // SAFETY: both slices outlive the call.
    check(unsafe { abi::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas.unwrap_or(0)) })
}

/// Attempts [`update`] makes before it gives up with `CasMismatch`.
pub const UPDATE_ATTEMPTS: usize = 16;

/// Read-modify-write of `key` under CAS. `f` gets the current value
/// (`None` if unset) and returns the value to write (`None`: leave it) and
/// a result; it runs again when another VM wrote in between.
pub fn update<T>(key: &str, mut f: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T)) -> Result<T, Status> {
    for _ in 0..UPDATE_ATTEMPTS {
        let current = get(key)?;
        let (new, result) = f(current.as_ref().map(|e| e.value.as_slice()));
        let Some(new) = new else {
            return Ok(result);
        };
        // A key never written has no CAS: the first writer races
        // unconditionally (the ABI has no "create if absent").
        match set(key, &new, current.map(|e| e.cas)) {
            Ok(()) => return Ok(result),
            Err(Status::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Status::CasMismatch)
}

/// A shared queue, by the id the host gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Queue(pub u32);

impl Queue {
    /// Creates (or opens) a queue of this VM; its consumers get
    /// [`RootContext::on_queue_ready`](crate::RootContext::on_queue_ready).
    pub fn register(name: &str) -> Result<Queue, Status> {
        let mut id = 0u32;
        // SAFETY: `name` outlives the call; the host writes one u32.
        check(unsafe { abi::proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) })?;
        Ok(Queue(id))
    }

    /// Opens a queue another VM (`vm_id`) registered.
    pub fn resolve(vm_id: &str, name: &str) -> Result<Option<Queue>, Status> {
        let mut id = 0u32;
        // SAFETY: both slices outlive the call; the host writes one u32.
        let status = unsafe { abi::proxy_resolve_shared_queue(vm_id.as_ptr(), vm_id.len(), name.as_ptr(), name.len(), &mut id) };
        match check(status) {
            Ok(()) => Ok(Some(Queue(id))),
            Err(Status::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn enqueue(self, value: &[u8]) -> Result<(), Status> {
        // SAFETY: `value` outlives the call.
        check(unsafe { abi::proxy_enqueue_shared_queue(self.0, value.as_ptr(), value.len()) })
    }

    /// The oldest item; `None` when the queue is empty.
    pub fn dequeue(self) -> Result<Option<Vec<u8>>, Status> {
        // SAFETY: out-pointers come from `read_bytes`.
        match read_bytes(|data, size| unsafe { abi::proxy_dequeue_shared_queue(self.0, data, size) }) {
            Err(Status::Empty) => Ok(None),
            other => other,
        }
    }
}
