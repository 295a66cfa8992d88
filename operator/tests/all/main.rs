//! weft-operator's tests without I/O: validation findings with their
//! paths, and translation of the Bookinfo samples against golden files.

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
