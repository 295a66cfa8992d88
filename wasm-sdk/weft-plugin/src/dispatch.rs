//! The callbacks the host calls (`proxy_on_*`), implemented once: they
//! find the plugin's context for a context id and call its trait method.
//!
//! ```text
//! host ─ proxy_on_context_create(id, 0) ──► new root (the plugin! factory)
//!      ─ proxy_on_context_create(id, root) ► root.new_http_context(id)
//!      ─ proxy_on_request_headers(id, ..) ─► contexts[id].on_request_headers
//!      ─ proxy_on_http_call_response(root, call, ..) ► the caller's callback
//!      ─ proxy_on_done / _log / _delete(id) ► and the context is dropped
//! ```
//!
//! A context is taken out of its table while its callback runs, so a host
//! that calls back into the VM from inside a host call (re-entrancy) finds
//! it busy and gets the default answer instead of a double borrow.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use crate::abi::{self, BufferType, LogLevel, ACTION_CONTINUE, ACTION_PAUSE};
use crate::callout::{OnResponse, Response};
use crate::context::{Action, HttpContext, RootContext};
use crate::{http, log};

/// Contexts by id; `None` while the context's callback runs.
type Table<T> = HashMap<u32, Option<Box<T>>, BuildHasherDefault<IdHash>>;

/// Context and call ids are numbers the host hands out, not input an
/// attacker picks: one multiply spreads them over the table. (std's
/// SipHash was a visible share of every callback's cost in the bench.)
#[derive(Default)]
struct IdHash(u64);

impl Hasher for IdHash {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u32(u32::from(*b) ^ (self.0 as u32).rotate_left(8));
        }
    }

    fn write_u32(&mut self, n: u32) {
        // Fibonacci hashing: 2^64 / the golden ratio, odd.
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default)]
struct State {
    new_root: Option<Rc<dyn Fn() -> Box<dyn RootContext>>>,
    roots: Table<dyn RootContext>,
    streams: Table<dyn HttpContext>,
    /// Call id → (context that made the call, its callback).
    callouts: HashMap<u32, (u32, OnResponse), BuildHasherDefault<IdHash>>,
    /// The context whose callback is running (0: none).
    current: u32,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
}

/// Registers the plugin; what `plugin!`'s `_initialize` calls.
#[doc(hidden)]
pub fn __init<R: RootContext + 'static>(new_root: fn() -> R) {
    #[cfg(target_os = "wasi")]
    {
        extern "C" {
            fn __wasm_call_ctors();
        }
        // SAFETY: the module's static constructors (wasi-libc, std), run
        // once: `_initialize` is their only caller and the host calls it once.
        unsafe { __wasm_call_ctors() };
    }
    std::panic::set_hook(Box::new(|info| log::log(LogLevel::Critical, &format!("plugin panicked: {info}"))));
    STATE.with_borrow_mut(|s| s.new_root = Some(Rc::new(move || Box::new(new_root()))));
}

pub(crate) fn register_callout(call_id: u32, on_response: OnResponse) {
    STATE.with_borrow_mut(|s| {
        let current = s.current;
        s.callouts.insert(call_id, (current, on_response));
    });
}

/// Runs `f` on a context taken out of `table`, with `current` set to it.
fn with<T: ?Sized, R>(id: u32, table: fn(&mut State) -> &mut Table<T>, default: R, f: impl FnOnce(&mut T) -> R) -> R {
    let taken = STATE.with_borrow_mut(|s| {
        let ctx = table(s).get_mut(&id).and_then(Option::take)?;
        Some((ctx, std::mem::replace(&mut s.current, id)))
    });
    let Some((mut ctx, previous)) = taken else {
        return default;
    };
    let result = f(&mut ctx);
    STATE.with_borrow_mut(|s| {
        s.current = previous;
        // Deleted meanwhile: the context is dropped here.
        if let Some(slot) = table(s).get_mut(&id) {
            *slot = Some(ctx);
        }
    });
    result
}

fn roots(s: &mut State) -> &mut Table<dyn RootContext> {
    &mut s.roots
}

fn streams(s: &mut State) -> &mut Table<dyn HttpContext> {
    &mut s.streams
}

fn action(a: Action) -> u32 {
    match a {
        Action::Continue => ACTION_CONTINUE,
        Action::Pause => ACTION_PAUSE,
    }
}

fn stream_callback(id: u32, f: impl FnOnce(&mut dyn HttpContext) -> Action) -> u32 {
    action(with(id, streams, Action::Continue, |ctx| f(ctx)))
}

/// Allocates `size` bytes the host fills and hands over (see
/// `host::take_host_bytes`).
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    Box::into_raw(Box::<[u8]>::new_uninit_slice(size)).cast::<u8>()
}

/// Advertises the ABI version; never called.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(id: u32, root_id: u32) {
    if root_id == 0 {
        // The factory runs user code: no borrow of STATE held across it.
        match STATE.with_borrow(|s| s.new_root.clone()).map(|new| new()) {
            Some(root) => {
                STATE.with_borrow_mut(|s| s.roots.insert(id, Some(root)));
            }
            None => log::log(LogLevel::Critical, "no plugin registered: call weft_plugin::plugin!(..) in the plugin crate"),
        }
    } else if let Some(ctx) = with(root_id, roots, None, |root| root.new_http_context(id)) {
        STATE.with_borrow_mut(|s| s.streams.insert(id, Some(ctx)));
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(id: u32, vm_config_size: usize) -> bool {
    let config = http::read_buffer(BufferType::VmConfiguration, 0, vm_config_size).unwrap_or_default();
    with(id, roots, false, |root| root.on_vm_start(&config))
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(id: u32, config_size: usize) -> bool {
    let config = http::read_buffer(BufferType::PluginConfiguration, 0, config_size).unwrap_or_default();
    with(id, roots, false, |root| root.on_configure(&config))
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(id: u32) {
    with(id, roots, (), |root| root.on_tick());
}

#[no_mangle]
pub extern "C" fn proxy_on_queue_ready(id: u32, queue_id: u32) {
    with(id, roots, (), |root| root.on_queue_ready(queue_id));
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(id: u32, num_headers: usize, end_of_stream: u32) -> u32 {
    stream_callback(id, |ctx| ctx.on_request_headers(num_headers, end_of_stream != 0))
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(id: u32, body_size: usize, end_of_stream: u32) -> u32 {
    stream_callback(id, |ctx| ctx.on_request_body(body_size, end_of_stream != 0))
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(id: u32, num_trailers: usize) -> u32 {
    stream_callback(id, |ctx| ctx.on_request_trailers(num_trailers))
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(id: u32, num_headers: usize, end_of_stream: u32) -> u32 {
    stream_callback(id, |ctx| ctx.on_response_headers(num_headers, end_of_stream != 0))
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(id: u32, body_size: usize, end_of_stream: u32) -> u32 {
    stream_callback(id, |ctx| ctx.on_response_body(body_size, end_of_stream != 0))
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(id: u32, num_trailers: usize) -> u32 {
    stream_callback(id, |ctx| ctx.on_response_trailers(num_trailers))
}

/// Called on the root context that owns the VM, whichever context made the
/// call: the callback runs with the caller made effective again.
#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(_root_id: u32, call_id: u32, num_headers: usize, body_size: usize, num_trailers: usize) {
    let Some((caller, on_response)) = STATE.with_borrow_mut(|s| s.callouts.remove(&call_id)) else {
        return;
    };
    let alive = STATE.with_borrow(|s| s.streams.contains_key(&caller) || s.roots.contains_key(&caller));
    if !alive {
        return;
    }
    // SAFETY: no pointers. The caller is alive, so the host knows its id.
    let _ = unsafe { abi::proxy_set_effective_context(caller) };
    let response = Response::read(num_headers, body_size, num_trailers);
    let previous = STATE.with_borrow_mut(|s| std::mem::replace(&mut s.current, caller));
    on_response(response);
    STATE.with_borrow_mut(|s| s.current = previous);
}

#[no_mangle]
pub extern "C" fn proxy_on_done(id: u32) -> bool {
    with(id, roots, true, |root| root.on_done())
}

#[no_mangle]
pub extern "C" fn proxy_on_log(id: u32) {
    with(id, streams, (), |ctx| ctx.on_log());
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(id: u32) {
    STATE.with_borrow_mut(|s| {
        s.streams.remove(&id);
        s.roots.remove(&id);
        s.callouts.retain(|_, (caller, _)| *caller != id);
    });
}
