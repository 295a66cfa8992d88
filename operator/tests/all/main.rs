//! weft-operator's tests without I/O: validation findings with their
//! paths, and translation of the Bookinfo samples against golden files.

mod incremental;
mod translate;
mod translate_dns;
mod validate;

use std::path::PathBuf;

pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Every resource of the demo's configuration directory.
pub fn bookinfo() -> Vec<weft_crds::Resource> {
    weft_operator::standalone::files(&repo("config/samples/bookinfo"))
        .iter()
        .flat_map(|f| weft_operator::standalone::read(f).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// The gateway TCP/TLS scenario (`tests/fixtures/gateway-tcp-tls.yaml`)
/// with fixed addresses and ports.
pub fn gateway_tcp_tls() -> String {
    let path = repo("operator/tests/fixtures/gateway-tcp-tls.yaml");
    let template = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    template.replace("${NET}", "10.0.0").replace("${TCP}", "31400").replace("${TLS}", "8443")
}
