//! Logging through the host's log (`proxy_log`): Envoy prints it under its
//! `wasm` logger, tagged with the plugin's name and root id.
//!
//! ```ignore
//! weft_plugin::info!("client {client} over its limit");
//! ```

use crate::abi::{self, LogLevel};

/// The host's current level: messages below it are dropped.
pub fn level() -> LogLevel {
    let mut raw = 0u32;
    // SAFETY: the host writes one u32.
    match crate::host::check(unsafe { abi::proxy_get_log_level(&mut raw) }) {
        Ok(()) => LogLevel::from_raw(raw),
        Err(_) => LogLevel::Trace,
    }
}

/// Logs `message` at `level`.
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: `message` outlives the call. A logging failure has nowhere
    // to be reported.
    let _ = unsafe { abi::proxy_log(level, message.as_ptr(), message.len()) };
}

/// Formats and logs only when the host would keep the message (what the
/// level macros call).
#[doc(hidden)]
pub fn log_fmt(level: LogLevel, args: std::fmt::Arguments<'_>) {
    if level >= self::level() {
        match args.as_str() {
            Some(s) => log(level, s),
            None => log(level, &args.to_string()),
        }
    }
}

#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::log_fmt($crate::LogLevel::Trace, format_args!($($arg)+)) };
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::log_fmt($crate::LogLevel::Debug, format_args!($($arg)+)) };
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::log_fmt($crate::LogLevel::Info, format_args!($($arg)+)) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::log_fmt($crate::LogLevel::Warn, format_args!($($arg)+)) };
}

#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::log_fmt($crate::LogLevel::Error, format_args!($($arg)+)) };
}

#[macro_export]
macro_rules! critical {
    ($($arg:tt)+) => { $crate::log::log_fmt($crate::LogLevel::Critical, format_args!($($arg)+)) };
}
