//! Compiled code kept on disk: a module's machine code, as Cranelift made
//! it, stored by the sha256 of the module and the engine's compatibility
//! hash, so a restarted proxy (or a second one on the node) loads it in
//! milliseconds instead of compiling it again.
//!
//! ```text
//!  $WEFT_WASM_CACHE/<sha256>-<engine hash>.cwasm
//!  hit: Module::deserialize_file ─► Module    miss/unusable: compile, write aside, rename
//! ```
//! Loading compiled code runs it without verification, so only files in a
//! directory this user owns and nobody else can write are used.
//! `WEFT_WASM_CODE_CACHE=off` turns it off. Entries not used for a week
//! are removed when a new one is written.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use wasmtime::{Engine, Module};

/// How long an entry nobody loaded is kept.
const UNUSED_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where modules fetched over HTTP (`remote`) and compiled code are kept:
/// `$WEFT_WASM_CACHE`, else the system's temporary directory.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("WEFT_WASM_CACHE").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("weft-wasm-cache"))
}

/// The directory for compiled code, unless `WEFT_WASM_CODE_CACHE=off`.
pub fn dir() -> Option<PathBuf> {
    (!std::env::var("WEFT_WASM_CODE_CACHE").is_ok_and(|v| v == "off")).then(cache_dir)
}

/// Whether the module came from disk or was compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Disk,
    Compiled,
}

/// The module for `bytes` (whose sha256 is `sha256`): from `dir` when a
/// usable entry is there, else compiled and stored for next time. Only a
/// failure to compile is an error; the cache failing only costs time.
pub fn load_or_compile(engine: &Engine, dir: Option<&Path>, sha256: &str, bytes: &[u8]) -> Result<(Module, Origin), wasmtime::Error> {
    let Some(dir) = dir.filter(|d| private_dir(d)) else { return Ok((Module::new(engine, bytes)?, Origin::Compiled)) };
    let path = dir.join(format!("{sha256}-{:016x}.cwasm", compatibility(engine)));
    if std::fs::metadata(&path).is_ok_and(|m| m.uid() == euid() && m.mode() & 0o022 == 0) {
        // SAFETY (the one unsafe call of the proxy, allowed on this module):
        // the file is in a directory only this user can write,
        // written by `store` from `Module::serialize`; wasmtime checks its
        // header, version and engine settings and refuses a mismatch.
        match unsafe { Module::deserialize_file(engine, &path) } {
            Ok(module) => {
                // Marks it used, for pruning.
                let _ = std::fs::File::options().append(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
                return Ok((module, Origin::Disk));
            }
            Err(e) => tracing::debug!(path = %path.display(), "compiled wasm in the cache is unusable, compiling: {e:#}"),
        }
    }
    let module = Module::new(engine, bytes)?;
    store(dir, &path, &module);
    Ok((module, Origin::Compiled))
}

/// Creates the directory (owner only) or checks an existing one is this
/// user's and not writable by others.
fn private_dir(dir: &Path) -> bool {
    if std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).is_err() {
        return false;
    }
    let ok = std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == euid() && m.mode() & 0o022 == 0);
    if !ok {
        tracing::warn!(dir = %dir.display(), "not caching compiled wasm: the directory is not private to this user");
    }
    ok
}

fn store(dir: &Path, path: &Path, module: &Module) {
    let Ok(code) = module.serialize() else { return };
    // Written aside and renamed: a proxy starting meanwhile never reads
    // half a file.
    let aside = path.with_extension(format!("{}.tmp", std::process::id()));
    if std::fs::write(&aside, code).and_then(|_| std::fs::rename(&aside, path)).is_err() {
        let _ = std::fs::remove_file(&aside);
        return;
    }
    prune(dir);
}

fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let path = entry.path();
        let stale = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| now.duration_since(t).ok()).is_some_and(|age| age > UNUSED_FOR);
        if stale && path.extension().is_some_and(|e| e == "cwasm") {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Code compiled by another wasmtime version or with other settings is
/// stored under another name.
fn compatibility(engine: &Engine) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    h.finish()
}

/// This process's effective user: Linux gives it `/proc/self` as owner
/// (no unsafe libc call needed). Unknown → no user matches.
fn euid() -> u32 {
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAT: &str = r#"(module (func (export "f") (result i32) (i32.const 7)))"#;

    fn engine() -> Engine {
        Engine::default()
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-code-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_second_load_comes_from_disk_and_runs() {
        let (engine, dir) = (engine(), temp("hit"));
        let (_, first) = load_or_compile(&engine, Some(&dir), "abc", WAT.as_bytes()).expect("compiles");
        assert_eq!(first, Origin::Compiled);
        let (module, second) = load_or_compile(&engine, Some(&dir), "abc", WAT.as_bytes()).expect("loads");
        assert_eq!(second, Origin::Disk);
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instantiates");
        let f = instance.get_typed_func::<(), i32>(&mut store, "f").expect("export");
        assert_eq!(f.call(&mut store, ()).expect("runs"), 7);
        let mode = std::fs::metadata(&dir).expect("dir").mode() & 0o777;
        assert_eq!(mode, 0o700, "the directory is the user's only");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_entry_is_compiled_again_and_replaced() {
        let (engine, dir) = (engine(), temp("damaged"));
        load_or_compile(&engine, Some(&dir), "abc", WAT.as_bytes()).expect("compiles");
        let entry = std::fs::read_dir(&dir).expect("dir").flatten().next().expect("an entry").path();
        std::fs::write(&entry, b"not compiled code").expect("damage it");
        let (_, origin) = load_or_compile(&engine, Some(&dir), "abc", WAT.as_bytes()).expect("compiles again");
        assert_eq!(origin, Origin::Compiled);
        assert_eq!(load_or_compile(&engine, Some(&dir), "abc", WAT.as_bytes()).expect("loads").1, Origin::Disk);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_others_can_write_is_not_used() {
        let (engine, dir) = (engine(), temp("shared"));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
        for _ in 0..2 {
            assert_eq!(load_or_compile(&engine, Some(&dir), "abc", WAT.as_bytes()).expect("compiles").1, Origin::Compiled);
        }
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0, "nothing written");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
