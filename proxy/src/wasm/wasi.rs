//! The few WASI (preview 1) calls plugin toolchains import even in a
//! proxy: stdout/stderr (to the proxy's log), clocks, random bytes,
//! environment (`vm_config.environment_variables`), and exits. No files,
//! no sockets: like Envoy's, this host gives plugins no ambient authority.

use wasmtime::{Caller, Linker};

use super::host::{read, write as put, Host};

type C<'a> = Caller<'a, Host>;
type R = wasmtime::Result<i32>;

const SUCCESS: i32 = 0;
const BADF: i32 = 8;
const FAULT: i32 = 21;
const INVAL: i32 = 28;
const NOSYS: i32 = 52;

fn environment(caller: &C<'_>) -> Vec<Vec<u8>> {
    caller
        .data()
        .plugin
        .upgrade()
        .map(|p| p.environment.iter().map(|(k, v)| format!("{k}={v}\0").into_bytes()).collect())
        .unwrap_or_default()
}

pub fn define(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        linker.func_wrap(module, "fd_write", |mut caller: C<'_>, fd: i32, iovs: i32, count: i32, written: i32| -> R {
            if fd != 1 && fd != 2 {
                return Ok(BADF);
            }
            let mut text = Vec::new();
            for i in 0..count {
                let Some(iov) = read(&caller, iovs.wrapping_add(i * 8), 8) else { return Ok(FAULT) };
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let Some(data) = read(&caller, ptr, len) else { return Ok(FAULT) };
                text.extend_from_slice(&data);
            }
            let msg = String::from_utf8_lossy(&text);
            let msg = msg.trim_end_matches('\n');
            let name = &caller.data().name;
            if !msg.is_empty() {
                if fd == 1 {
                    tracing::info!(target: "wasm", "wasm log {name}: {msg}");
                } else {
                    tracing::error!(target: "wasm", "wasm log {name}: {msg}");
                }
            }
            Ok(if put(&mut caller, written, &(text.len() as u32).to_le_bytes()) { SUCCESS } else { FAULT })
        })?;
        linker.func_wrap(module, "fd_read", |_c: C<'_>, _fd: i32, _iovs: i32, _n: i32, _read: i32| -> R { Ok(BADF) })?;
        linker.func_wrap(module, "fd_close", |_c: C<'_>, _fd: i32| -> R { Ok(BADF) })?;
        linker.func_wrap(module, "fd_seek", |_c: C<'_>, _fd: i32, _off: i64, _whence: i32, _out: i32| -> R { Ok(BADF) })?;
        linker.func_wrap(module, "fd_fdstat_get", |mut caller: C<'_>, fd: i32, out: i32| -> R {
            if !(0..=2).contains(&fd) {
                return Ok(BADF);
            }
            // A character device, no flags, no rights restrictions.
            let mut stat = [0u8; 24];
            stat[0] = 2;
            stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
            stat[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
            Ok(if put(&mut caller, out, &stat) { SUCCESS } else { FAULT })
        })?;
        linker.func_wrap(module, "fd_prestat_get", |_c: C<'_>, _fd: i32, _out: i32| -> R { Ok(BADF) })?;
        linker.func_wrap(module, "fd_prestat_dir_name", |_c: C<'_>, _fd: i32, _p: i32, _l: i32| -> R { Ok(BADF) })?;
        linker.func_wrap(module, "args_sizes_get", |mut caller: C<'_>, count: i32, size: i32| -> R {
            Ok(if put(&mut caller, count, &0u32.to_le_bytes()) && put(&mut caller, size, &0u32.to_le_bytes()) { SUCCESS } else { FAULT })
        })?;
        linker.func_wrap(module, "args_get", |_c: C<'_>, _argv: i32, _buf: i32| -> R { Ok(SUCCESS) })?;
        linker.func_wrap(module, "environ_sizes_get", |mut caller: C<'_>, count: i32, size: i32| -> R {
            let env = environment(&caller);
            let bytes: usize = env.iter().map(Vec::len).sum();
            Ok(if put(&mut caller, count, &(env.len() as u32).to_le_bytes()) && put(&mut caller, size, &(bytes as u32).to_le_bytes()) {
                SUCCESS
            } else {
                FAULT
            })
        })?;
        linker.func_wrap(module, "environ_get", |mut caller: C<'_>, pointers: i32, buf: i32| -> R {
            let mut at = buf;
            for (i, entry) in environment(&caller).iter().enumerate() {
                if !put(&mut caller, pointers.wrapping_add(i as i32 * 4), &at.to_le_bytes()) || !put(&mut caller, at, entry) {
                    return Ok(FAULT);
                }
                at = at.wrapping_add(entry.len() as i32);
            }
            Ok(SUCCESS)
        })?;
        linker.func_wrap(module, "clock_time_get", |mut caller: C<'_>, clock: i32, _precision: i64, out: i32| -> R {
            let nanos = match clock {
                0 => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64,
                1..=3 => monotonic_nanos(),
                _ => return Ok(INVAL),
            };
            Ok(if put(&mut caller, out, &nanos.to_le_bytes()) { SUCCESS } else { FAULT })
        })?;
        linker.func_wrap(module, "clock_res_get", |mut caller: C<'_>, _clock: i32, out: i32| -> R {
            Ok(if put(&mut caller, out, &1u64.to_le_bytes()) { SUCCESS } else { FAULT })
        })?;
        linker.func_wrap(module, "random_get", |mut caller: C<'_>, ptr: i32, len: i32| -> R {
            let bytes: Vec<u8> = (0..len as u32).map(|_| rand::random::<u8>()).collect();
            Ok(if put(&mut caller, ptr, &bytes) { SUCCESS } else { FAULT })
        })?;
        linker.func_wrap(module, "sched_yield", |_c: C<'_>| -> R { Ok(SUCCESS) })?;
        linker.func_wrap(module, "poll_oneoff", |_c: C<'_>, _i: i32, _o: i32, _n: i32, _r: i32| -> R { Ok(NOSYS) })?;
        linker.func_wrap(module, "proc_exit", |_c: C<'_>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::format_err!("the plugin exited with code {code}"))
        })?;
    }
    Ok(())
}

fn monotonic_nanos() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}
