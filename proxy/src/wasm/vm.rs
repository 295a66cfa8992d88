//! A plugin's VM: one wasmtime instance and its root context, one per
//! worker thread (a request never leaves its worker, so a VM is never
//! shared and needs no lock).
//!
//! ```text
//!  worker thread ─ VMS[plugin] ─► Vm { store(Host), exports, generation }
//!     request ─► with_vm ─► stream callback ─► after_callback ─┬─ callouts and gRPC streams: spawned; answers to
//!                                                              │  the asking stream's Waiter while it is paused,
//!                                                              │  else to the root context
//!                                                              ├─ signals to other streams (resume, local reply)
//!                                                              └─ tick loop started when the plugin asks
//!  a trap or an overrun: VM dropped, the next request (at most one a
//!  second) gets a fresh one.
//! ```

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use wasmtime::{Store, StoreLimitsBuilder, TypedFunc, WasmParams, WasmResults};

use super::abi::{Action, MapType};
use super::engine::{lock, EPOCH_TICK};
use super::grpc_stream::{self, Event};
use super::host::{Answer, GrpcAnswer, Host, Signal, StreamData};
use super::plugin::Plugin;

/// Bounds on what one VM may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear memory per VM; growing past it traps.
    pub memory_bytes: usize,
    /// CPU time one callback may run before it is interrupted.
    pub callback_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_bytes: 256 << 20, callback_time: Duration::from_millis(200) }
    }
}

static LIMITS: Mutex<Option<Limits>> = Mutex::new(None);

/// Sets the limits of VMs made from now on (`--wasm-memory-limit-mb`,
/// `--wasm-callback-timeout-ms`).
pub fn set_limits(limits: Limits) {
    *lock(&LIMITS) = Some(limits);
}

fn limits() -> Limits {
    lock(&LIMITS).unwrap_or_default()
}

/// A new VM after a failure waits this long, so a plugin that traps on
/// every request is not re-instantiated for every request (Envoy's
/// FAIL_RELOAD back-off).
const RELOAD_BACKOFF: Duration = Duration::from_secs(1);

/// Failures, reloads and VMs made, for `/stats/prometheus`.
pub static FAILURES: AtomicU64 = AtomicU64::new(0);
pub static CREATED: AtomicU64 = AtomicU64::new(0);

type F<P, R> = Option<TypedFunc<P, R>>;
/// A stream callback: (context, size, end_of_stream) → action.
type StreamFn = F<(i32, i32, i32), i32>;
/// A gRPC callback: (context, token, message size, header count or status code).
type GrpcFn = F<(i32, i32, i32), ()>;

/// The callbacks the plugin exports (missing ones are skipped).
struct Exports {
    context_create: F<(i32, i32), ()>,
    vm_start: F<(i32, i32), i32>,
    configure: F<(i32, i32), i32>,
    tick: F<i32, ()>,
    queue_ready: F<(i32, i32), ()>,
    request_headers: StreamFn,
    request_body: StreamFn,
    response_headers: StreamFn,
    response_body: StreamFn,
    /// (context, number of trailers) → action.
    request_trailers: F<(i32, i32), i32>,
    response_trailers: F<(i32, i32), i32>,
    http_call_response: F<(i32, i32, i32, i32, i32), ()>,
    /// (context, token, message size)
    grpc_receive: GrpcFn,
    /// (context, token, status code)
    grpc_close: GrpcFn,
    /// (context, token, number of headers)
    grpc_initial_metadata: GrpcFn,
    grpc_trailing_metadata: GrpcFn,
    done: F<i32, i32>,
    log: F<i32, ()>,
    delete: F<i32, ()>,
}

/// Which stream callback to run.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    RequestTrailers,
    ResponseBody,
    ResponseTrailers,
}

/// The VM failed (trapped, ran out of time or memory): the request fails
/// or passes by the plugin's failure policy.
#[derive(Debug)]
pub struct Failed;

/// What a paused stream waits on: callout answers and other contexts'
/// resumes or replies.
#[derive(Default)]
pub struct Waiter {
    notify: tokio::sync::Notify,
    signals: Mutex<VecDeque<Signal>>,
    /// The stream waits here now: answers to what it asked for (callouts,
    /// gRPC stream events) come here, so the plugin can act on it when it
    /// hears them.
    paused: AtomicBool,
}

impl Waiter {
    pub fn push(&self, s: Signal) {
        lock(&self.signals).push_back(s);
        self.notify.notify_one();
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// The answers that came while the stream waited and are still queued
    /// (it resumed before reading them).
    pub fn take_answers(&self) -> VecDeque<Signal> {
        let mut signals = lock(&self.signals);
        let (answers, rest) = signals.drain(..).partition(Signal::is_answer);
        *signals = rest;
        answers
    }

    pub async fn next(&self) -> Signal {
        loop {
            if let Some(s) = lock(&self.signals).pop_front() {
                return s;
            }
            self.notify.notified().await;
        }
    }
}

pub struct Vm {
    store: Store<Host>,
    f: Exports,
    pub generation: u64,
    /// Streams alive in this VM, by context id.
    waiting: FxHashMap<u32, Arc<Waiter>>,
    next_context: u32,
    /// Callouts and timers need a runtime; the VM that checks a config
    /// (not a worker's) never starts them.
    detached: bool,
    ticking: bool,
    /// The CPU bound of one callback, in epoch ticks.
    budget: u64,
    pub failed: bool,
}

impl Vm {
    /// Checks that a plugin starts: a VM made, started and configured,
    /// then dropped. The error says what went wrong.
    pub fn start(plugin: &Arc<Plugin>) -> Result<(), String> {
        Vm::new(plugin, true).map(drop)
    }

    fn new(plugin: &Arc<Plugin>, detached: bool) -> Result<Vm, String> {
        let limits = limits();
        let store_limits = StoreLimitsBuilder::new().memory_size(limits.memory_bytes).trap_on_grow_failure(true).build();
        let mut store = Store::new(super::engine::engine(), Host::new(plugin, store_limits));
        store.limiter(|h| &mut h.limits);
        store.set_epoch_deadline(budget_ticks(limits));
        let instance = plugin.module.pre.instantiate(&mut store).map_err(|e| format!("cannot instantiate the module: {e:#}"))?;
        let memory = instance.get_memory(&mut store, "memory").ok_or("the module exports no memory")?;
        let malloc = ["proxy_on_memory_allocate", "malloc"]
            .iter()
            .find_map(|name| instance.get_typed_func::<i32, i32>(&mut store, name).ok())
            .ok_or("the module exports no allocator (proxy_on_memory_allocate or malloc)")?;
        store.data_mut().memory = Some(memory);
        store.data_mut().malloc = Some(malloc);
        macro_rules! export {
            ($name:literal) => {
                match instance.get_func(&mut store, $name) {
                    None => None,
                    Some(f) => Some(f.typed(&store).map_err(|_| format!("export {} has the wrong signature for ABI 0.2.1", $name))?),
                }
            };
        }
        let f = Exports {
            context_create: export!("proxy_on_context_create"),
            vm_start: export!("proxy_on_vm_start"),
            configure: export!("proxy_on_configure"),
            tick: export!("proxy_on_tick"),
            queue_ready: export!("proxy_on_queue_ready"),
            request_headers: export!("proxy_on_request_headers"),
            request_body: export!("proxy_on_request_body"),
            response_headers: export!("proxy_on_response_headers"),
            response_body: export!("proxy_on_response_body"),
            request_trailers: export!("proxy_on_request_trailers"),
            response_trailers: export!("proxy_on_response_trailers"),
            http_call_response: export!("proxy_on_http_call_response"),
            grpc_receive: export!("proxy_on_grpc_receive"),
            grpc_close: export!("proxy_on_grpc_close"),
            grpc_initial_metadata: export!("proxy_on_grpc_receive_initial_metadata"),
            grpc_trailing_metadata: export!("proxy_on_grpc_receive_trailing_metadata"),
            done: export!("proxy_on_done"),
            log: export!("proxy_on_log"),
            delete: export!("proxy_on_delete"),
        };
        static GENERATION: AtomicU64 = AtomicU64::new(1);
        let mut vm = Vm {
            store,
            f,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            waiting: FxHashMap::default(),
            next_context: 2,
            detached,
            ticking: false,
            budget: budget_ticks(limits),
            failed: false,
        };
        // WASI reactors initialise their runtime first; commands run main.
        for init in ["_initialize", "_start"] {
            if let Ok(f) = instance.get_typed_func::<(), ()>(&mut vm.store, init) {
                vm.store.set_epoch_deadline(vm.budget);
                if let Err(e) = f.call(&mut vm.store, ()) {
                    return Err(format!("{init} failed: {e:#}"));
                }
                break;
            }
        }
        let root = vm.store.data().root_context as i32;
        vm.call(|f| &f.context_create, (root, 0)).map_err(|_| "proxy_on_context_create failed for the root context".to_string())?;
        let vm_config = plugin.vm_configuration.len() as i32;
        if vm.call(|f| &f.vm_start, (root, vm_config)).map_err(|_| "proxy_on_vm_start trapped".to_string())? == Some(0) {
            return Err("proxy_on_vm_start returned false (the plugin refused to start)".into());
        }
        let config = plugin.configuration.len() as i32;
        if vm.call(|f| &f.configure, (root, config)).map_err(|_| "proxy_on_configure trapped".to_string())? == Some(0) {
            return Err("proxy_on_configure returned false (the plugin refused its configuration)".into());
        }
        CREATED.fetch_add(1, Ordering::Relaxed);
        vm.after_callback();
        Ok(vm)
    }

    /// Runs the export `pick` selects (if the plugin has it) within the
    /// CPU budget. A trap marks the VM failed.
    fn call<P: WasmParams, R: WasmResults>(&mut self, pick: fn(&Exports) -> &F<P, R>, args: P) -> Result<Option<R>, Failed> {
        let Some(f) = pick(&self.f) else { return Ok(None) };
        if self.failed {
            return Err(Failed);
        }
        self.store.set_epoch_deadline(self.budget);
        match f.call(&mut self.store, args) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                self.failed = true;
                FAILURES.fetch_add(1, Ordering::Relaxed);
                let why = match e.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt) => "ran past its CPU budget".to_string(),
                    _ => format!("{e:#}"),
                };
                tracing::error!(plugin = %self.store.data().name, "wasm plugin failed: {why}");
                Err(Failed)
            }
        }
    }

    /// A context for a new stream, registered with the waiter its
    /// callouts and signals reach.
    pub fn new_stream(&mut self, waiter: Arc<Waiter>) -> Result<u32, Failed> {
        let id = self.next_context;
        self.next_context = self.next_context.wrapping_add(1).max(2);
        let root = self.store.data().root_context as i32;
        self.call(|f| &f.context_create, (id as i32, root))?;
        self.waiting.insert(id, waiter);
        Ok(id)
    }

    /// Runs a stream callback with the stream's data in the store.
    pub fn stream_callback(&mut self, data: &mut Option<StreamData>, phase: Phase, size: usize, end_of_stream: bool) -> Result<Action, Failed> {
        let Some(context) = data.as_ref().map(|d| d.context) else { return Ok(Action::Continue) };
        let pick: fn(&Exports) -> &StreamFn = match phase {
            Phase::RequestHeaders => |f| &f.request_headers,
            Phase::RequestBody => |f| &f.request_body,
            Phase::ResponseHeaders => |f| &f.response_headers,
            Phase::ResponseBody => |f| &f.response_body,
            // Trailers end the stream: no end_of_stream argument.
            Phase::RequestTrailers | Phase::ResponseTrailers => {
                let pick: fn(&Exports) -> &F<(i32, i32), i32> = match phase {
                    Phase::RequestTrailers => |f| &f.request_trailers,
                    _ => |f| &f.response_trailers,
                };
                let r = self.with_stream(data, context, |vm| vm.call(pick, (context as i32, size as i32)));
                return Ok(r?.map(Action::from_i32).unwrap_or(Action::Continue));
            }
        };
        let r = self.with_stream(data, context, |vm| vm.call(pick, (context as i32, size as i32, i32::from(end_of_stream))));
        Ok(r?.map(Action::from_i32).unwrap_or(Action::Continue))
    }

    /// Delivers a callout's answer. As in Envoy, callouts belong to the
    /// root context: the callback gets the root's id and runs with the
    /// root effective; the stream that asked (`data`) is within reach
    /// once the plugin makes it effective (`proxy_set_effective_context`,
    /// as SDKs do from the token).
    pub fn call_response(&mut self, data: &mut Option<StreamData>, token: u32, answer: Answer) -> Result<(), Failed> {
        let context = self.store.data().root_context;
        let (c, t) = (context as i32, token as i32);
        if let Answer::Grpc(_) = answer {
            if self.store.data_mut().grpc_pending.remove(&token).is_none() {
                return Ok(()); // cancelled
            }
        }
        let r = match answer {
            Answer::Http(response) => {
                // A failed callout is an answer with no headers and no body.
                let response = response.unwrap_or_default();
                let sizes = (response.headers.len() as i32, response.body.len() as i32, response.trailers.len() as i32);
                self.store.data_mut().call_response = Some(response);
                let r = self.with_stream(data, context, |vm| vm.call(|f| &f.http_call_response, (c, t, sizes.0, sizes.1, sizes.2)));
                self.store.data_mut().call_response = None;
                r
            }
            Answer::Grpc(GrpcAnswer::Message(message)) => self.grpc_receive(data, token, message),
            Answer::Grpc(GrpcAnswer::Closed { code, message }) => self.grpc_close(data, token, (code, message)),
        };
        r.map(drop)
    }

    /// An answer to what the plugin asked for (a callout's, a gRPC stream
    /// event), with the stream that asked within reach in `data` when it
    /// waits. `false`: the plugin no longer hears of it.
    pub fn answer(&mut self, data: &mut Option<StreamData>, answer: Signal) -> bool {
        match answer {
            Signal::CallDone(token, result) => {
                let _ = self.call_response(data, token, result);
                false // a callout has one answer
            }
            Signal::Grpc(token, event) => self.grpc_event(data, token, event),
            Signal::Resume | Signal::LocalReply(_) => false,
        }
    }

    /// One event of a gRPC stream the plugin opened, for the root context
    /// (the stream's opener within reach in `data`, when it waits).
    /// `false`: the plugin no longer hears of this stream.
    pub fn grpc_event(&mut self, data: &mut Option<StreamData>, token: u32, event: Event) -> bool {
        if !self.store.data().grpc_streams.contains_key(&token) {
            return false; // cancelled
        }
        let r = match event {
            Event::InitialMetadata(pairs) => self.grpc_metadata(data, token, MapType::GrpcInitialMetadata, pairs),
            Event::Message(message) => self.grpc_receive(data, token, message),
            Event::TrailingMetadata(pairs) => self.grpc_metadata(data, token, MapType::GrpcTrailingMetadata, pairs),
            Event::Close(status) => {
                let _ = self.grpc_close(data, token, status);
                // Forgotten once both sides are over, as Envoy's.
                let streams = &mut self.store.data_mut().grpc_streams;
                match streams.get_mut(&token) {
                    Some(s) if s.local_closed => drop(streams.remove(&token)),
                    Some(s) => s.remote_closed = true,
                    None => {}
                }
                return false; // the last event
            }
        };
        r.is_ok() && self.store.data().grpc_streams.contains_key(&token)
    }

    fn grpc_receive(&mut self, data: &mut Option<StreamData>, token: u32, message: bytes::Bytes) -> Result<Option<()>, Failed> {
        let (c, t, size) = (self.store.data().root_context as i32, token as i32, message.len() as i32);
        self.store.data_mut().grpc_message = Some(message);
        let r = self.with_stream(data, c as u32, |vm| vm.call(|f| &f.grpc_receive, (c, t, size)));
        self.store.data_mut().grpc_message = None;
        r
    }

    fn grpc_close(&mut self, data: &mut Option<StreamData>, token: u32, status: super::grpc::Status) -> Result<Option<()>, Failed> {
        let (c, t, code) = (self.store.data().root_context as i32, token as i32, status.0 as i32);
        // Kept for proxy_get_status until the next close, as Envoy.
        self.store.data_mut().grpc_status = Some(status);
        self.with_stream(data, c as u32, |vm| vm.call(|f| &f.grpc_close, (c, t, code)))
    }

    fn grpc_metadata(&mut self, data: &mut Option<StreamData>, token: u32, map: MapType, pairs: Vec<(String, bytes::Bytes)>) -> Result<Option<()>, Failed> {
        let (c, t, count) = (self.store.data().root_context as i32, token as i32, pairs.len() as i32);
        let pick: fn(&Exports) -> &GrpcFn = match map {
            MapType::GrpcInitialMetadata => |f| &f.grpc_initial_metadata,
            _ => |f| &f.grpc_trailing_metadata,
        };
        self.store.data_mut().grpc_metadata = Some((map, pairs));
        let r = self.with_stream(data, c as u32, |vm| vm.call(pick, (c, t, count)));
        self.store.data_mut().grpc_metadata = None;
        r
    }

    fn with_stream<T>(&mut self, data: &mut Option<StreamData>, context: u32, f: impl FnOnce(&mut Vm) -> T) -> T {
        std::mem::swap(&mut self.store.data_mut().stream, data);
        self.store.data_mut().effective = context;
        let r = f(self);
        std::mem::swap(&mut self.store.data_mut().stream, data);
        let root = self.store.data().root_context;
        self.store.data_mut().effective = root;
        self.after_callback();
        r
    }

    /// The end of a stream: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    /// The stream's headers are in `data` for `proxy_on_log` to read.
    pub fn finish_stream(&mut self, data: &mut Option<StreamData>) {
        let Some(context) = data.as_ref().map(|d| d.context) else { return };
        self.waiting.remove(&context);
        let c = context as i32;
        self.with_stream(data, context, |vm| {
            let _ = vm.call(|f| &f.done, c).and_then(|_| vm.call(|f| &f.log, c)).and_then(|_| vm.call(|f| &f.delete, c));
        });
    }

    fn on_tick(&mut self) {
        let root = self.store.data().root_context as i32;
        let _ = self.call(|f| &f.tick, root);
        self.after_callback();
    }

    fn on_queue_ready(&mut self, queue: u32) {
        let root = self.store.data().root_context as i32;
        let _ = self.call(|f| &f.queue_ready, (root, queue as i32));
        self.after_callback();
    }

    /// Carries out what the callback asked for: callouts, signals to other
    /// streams, the tick timer.
    fn after_callback(&mut self) {
        let host = self.store.data_mut();
        // The usual case, on every callback of every request: nothing to do.
        if host.calls.is_empty() && host.signals.is_empty() && host.opening.is_empty() && (host.tick.is_none() || self.ticking) {
            return;
        }
        let calls = std::mem::take(&mut host.calls);
        let opening = std::mem::take(&mut host.opening);
        let signals = std::mem::take(&mut host.signals);
        let tick = host.tick;
        let plugin = host.plugin.clone();
        if self.detached || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        for (context, signal) in signals {
            match self.waiting.get(&context) {
                Some(w) => w.push(signal),
                None => tracing::debug!(context, "signal for a stream that is gone"),
            }
        }
        let generation = self.generation;
        for call in calls {
            let plugin = plugin.clone();
            let grpc = call.grpc.then_some(call.token);
            let task = tokio::spawn(async move {
                let (token, context) = (call.token, call.context);
                let result = super::callout::send(call).await;
                deliver(&plugin, generation, context, Signal::CallDone(token, result));
            });
            if let Some(slot) = grpc.and_then(|token| self.store.data_mut().grpc_pending.get_mut(&token)) {
                *slot = Some(task.abort_handle());
            }
        }
        for open in opening {
            let (token, context, plugin) = (open.token, open.context, plugin.clone());
            let task = tokio::spawn(grpc_stream::run(open, move |event| deliver(&plugin, generation, context, Signal::Grpc(token, event))));
            if let Some(stream) = self.store.data_mut().grpc_streams.get_mut(&token) {
                stream.task = Some(task.abort_handle());
            }
        }
        if tick.is_some() && !self.ticking {
            self.ticking = true;
            tokio::spawn(async move {
                while let Some(Some(period)) = with_existing(&plugin, generation, |vm| vm.store.data().tick) {
                    tokio::time::sleep(period).await;
                    if with_existing(&plugin, generation, Vm::on_tick).is_none() {
                        break;
                    }
                }
            });
        }
    }
}

/// Hands an answer (a callout's, a gRPC stream's event) to the VM that
/// asked: to the stream that asked if it is paused (the plugin may act on
/// it then, as the answer comes), else straight to the root context, as
/// Envoy answers whether or not the stream waits (or still exists).
/// `false`: nobody listens any more.
fn deliver(plugin: &Weak<Plugin>, generation: u64, context: u32, answer: Signal) -> bool {
    with_existing(plugin, generation, |vm| match vm.waiting.get(&context).filter(|w| w.paused.load(Ordering::Relaxed)) {
        Some(waiter) => {
            waiter.push(answer);
            true
        }
        None => vm.answer(&mut None, answer),
    })
    .unwrap_or(false)
}

fn budget_ticks(limits: Limits) -> u64 {
    (limits.callback_time.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// This worker's VMs, by plugin id.
struct Slot {
    plugin: Weak<Plugin>,
    vm: Option<Rc<RefCell<Vm>>>,
    failed_at: Option<Instant>,
}

thread_local! {
    static VMS: RefCell<FxHashMap<u64, Slot>> = RefCell::new(FxHashMap::default());
}

/// Runs `f` on this worker's VM of the plugin, made (or remade after a
/// failure, at most once per RELOAD_BACKOFF) when needed. `None`: no VM
/// can run now.
pub fn with_vm<T>(plugin: &Arc<Plugin>, f: impl FnOnce(&mut Vm) -> T) -> Option<T> {
    let vm = VMS.with(|vms| {
        let mut vms = vms.borrow_mut();
        if !vms.contains_key(&plugin.id) {
            // A new plugin: forget the VMs of plugins no config uses.
            vms.retain(|_, s| s.plugin.strong_count() > 0);
        }
        let slot = vms.entry(plugin.id).or_insert_with(|| Slot { plugin: Arc::downgrade(plugin), vm: None, failed_at: None });
        if slot.vm.is_none() {
            if slot.failed_at.is_some_and(|t| t.elapsed() < RELOAD_BACKOFF) {
                return None;
            }
            match Vm::new(plugin, false) {
                Ok(vm) => slot.vm = Some(Rc::new(RefCell::new(vm))),
                Err(e) => {
                    tracing::error!(plugin = %plugin.name, "cannot start the wasm VM: {e}");
                    slot.failed_at = Some(Instant::now());
                    return None;
                }
            }
        }
        slot.vm.clone()
    })?;
    run(plugin.id, &vm, f)
}

/// Runs `f` on a worker's VM; a VM that failed leaves its slot, to be
/// remade after the back-off.
fn run<T>(plugin: u64, vm: &Rc<RefCell<Vm>>, f: impl FnOnce(&mut Vm) -> T) -> Option<T> {
    let mut guard = vm.try_borrow_mut().ok()?;
    let r = f(&mut guard);
    if guard.failed {
        drop(guard);
        VMS.with(|vms| {
            if let Some(slot) = vms.borrow_mut().get_mut(&plugin) {
                slot.vm = None;
                slot.failed_at = Some(Instant::now());
            }
        });
    }
    Some(r)
}

/// Like `with_vm`, for work that belongs to one VM (its timers, its
/// callouts, its streams' ends): nothing when that VM is gone.
pub fn with_existing<T>(plugin: &Weak<Plugin>, generation: u64, f: impl FnOnce(&mut Vm) -> T) -> Option<T> {
    with_existing_id(plugin.upgrade()?.id, generation, f)
}

/// `with_existing` for a caller that holds the plugin (a stream): this
/// is every phase of every request.
pub fn with_existing_id<T>(id: u64, generation: u64, f: impl FnOnce(&mut Vm) -> T) -> Option<T> {
    let current = VMS.with(|vms| vms.borrow().get(&id).and_then(|s| s.vm.clone()))?;
    if current.try_borrow().ok()?.generation != generation {
        return None;
    }
    run(id, &current, f)
}

/// A shared queue got an item: its owner's root context hears of it on
/// this worker, after the callback that enqueued returns.
pub fn notify_queue(owner: Arc<Plugin>, queue: u32) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(async move {
        with_vm(&owner, |vm| vm.on_queue_ready(queue));
    });
}
