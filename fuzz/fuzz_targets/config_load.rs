//! Any bytes as a bootstrap: loading and compiling must return Ok or an
//! error, never panic. Seeds: the sample configs (see `make fuzz`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weft_proxy::bootstrap::Loader;

fn loader() -> &'static Loader {
    static LOADER: OnceLock<Loader> = OnceLock::new();
    LOADER.get_or_init(Loader::new)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(loaded) = loader().load_texts(&[("fuzz".to_string(), text.to_string())]) {
        let _ = weft_proxy::model::Config::compile(&loaded.bootstrap);
    }
});
