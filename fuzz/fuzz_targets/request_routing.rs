//! Arbitrary request data against a compiled route table: virtual host
//! selection, every matcher kind, rewrites and redirects must never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weft_proxy::model::Config;

const ROUTES: &str = include_str!("../../e2e/tests/all/bootstraps/routing.yaml");

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let text = ROUTES
            .replace("${LISTEN}", "10000")
            .replace("${ADMIN}", "9901")
            .replace("${UP_a}", "10001")
            .replace("${UP_b}", "10002");
        let loaded = weft_proxy::bootstrap::load_texts(&[("routing.yaml".into(), text)]).expect("sample loads");
        Config::compile(&loaded.bootstrap).expect("sample compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    // Layout: host \0 path \0 (name \0 value \0)*
    let mut parts = data.split(|b| *b == 0);
    let host = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let mut headers = http::HeaderMap::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name), http::HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let Some(chain) = config().listeners[0].chains.all().next() else { return };
    let weft_proxy::model::filter_chain::NetworkFilter::Http(manager) = &chain.filter else { return };
    let table = &manager.routes;
    if let Some(vhost) = table.virtual_host(&host) {
        if let Some(route) = vhost.route(&path, &headers) {
            let _ = route.matcher.rewrite_prefix(&path, "/new/");
        }
    }
});
