//! The one wasmtime engine of the process, and compiled modules cached by
//! their sha256 (a module is compiled once, however many listeners, workers
//! and config updates use it).
//!
//! ```text
//!  bytes ─sha256─► cache ─miss─► code_cache (disk, else Cranelift) ─► Linker (host ABI) ─► InstancePre
//!                    └─hit──────────────────────────────────────────────────────┘
//!  epoch thread: engine.increment_epoch() every EPOCH_TICK — the clock the
//!  per-callback CPU bound is counted in.
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, InstancePre, Linker, Module};

use super::host::Host;

/// How often the epoch advances: the granularity of the CPU bound.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The engine every module is compiled for. Epoch interruption makes a
/// callback that runs too long trap instead of holding its worker.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap_or_else(|e| {
            // Only fails for a config the host cannot run at all: nothing
            // wasm can work, and that is a build problem, not input.
            panic!("invariant: wasmtime engine with epoch interruption: {e}")
        });
        let ticking = engine.clone();
        let _ = std::thread::Builder::new().name("weft-wasm-epoch".into()).spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            ticking.increment_epoch();
        });
        engine
    })
}

/// A module ready to instantiate: compiled, its imports resolved against
/// the host ABI.
pub struct Compiled {
    pub sha256: [u8; 32],
    pub pre: InstancePre<Host>,
}

/// Compiles `bytes`, or returns the module already compiled from the same
/// bytes while anything still uses it. Errors say why the module cannot
/// run here (invalid wasm, an import the host does not provide).
pub fn compile(bytes: &[u8]) -> Result<Arc<Compiled>, String> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Weak<Compiled>>>> = OnceLock::new();
    let sha256: [u8; 32] = Sha256::digest(bytes).into();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = lock(cache).get(&sha256).and_then(Weak::upgrade) {
        return Ok(hit);
    }
    // Compiled outside the lock: another config may compile meanwhile.
    let (module, _) = super::code_cache::load_or_compile(engine(), super::code_cache::dir().as_deref(), &hex(&sha256), bytes).map_err(|e| format!("invalid wasm module: {e:#}"))?;
    check_exports(&module)?;
    let mut linker = Linker::new(engine());
    super::host::define(&mut linker).map_err(|e| format!("internal: host ABI: {e:#}"))?;
    super::wasi::define(&mut linker).map_err(|e| format!("internal: WASI: {e:#}"))?;
    let pre = linker.instantiate_pre(&module).map_err(|e| format!("cannot link the module: {e:#}"))?;
    let compiled = Arc::new(Compiled { sha256, pre });
    let mut map = lock(cache);
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(sha256, Arc::downgrade(&compiled));
    Ok(compiled)
}

/// A proxy-wasm module says which ABI it was built for; only 0.2.x is
/// spoken here (0.1.0 callbacks have other signatures).
fn check_exports(module: &Module) -> Result<(), String> {
    let abi = module.exports().find_map(|e| e.name().strip_prefix("proxy_abi_version_").map(str::to_string));
    match abi.as_deref() {
        Some("0_2_0" | "0_2_1") => Ok(()),
        Some(other) => Err(format!("proxy-wasm ABI {} is not supported (0.2.0 and 0.2.1 are)", other.replace('_', "."))),
        None => Err("not a proxy-wasm module: no proxy_abi_version_* export".into()),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves the map usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
