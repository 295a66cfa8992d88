//! The TLS inspector reads untrusted bytes before any handshake: it must
//! never panic, and a decision, once made, must not change as more bytes
//! arrive (the inspector stops reading at the first decision).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy::tls::inspector::hello_from;

fuzz_target!(|data: &[u8]| {
    let first = (0..=data.len().min(64 * 1024)).find_map(|n| hello_from(&data[..n]).map(|h| (n, h)));
    if let Some((_, hello)) = first {
        assert_eq!(hello_from(data), Some(hello), "more bytes changed the decision");
    }
});
