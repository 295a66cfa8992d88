//! Finds the file descriptor set that `envoy-types` generates beside its
//! prost code (`src/generated/types.bin`) and copies it into OUT_DIR, so the
//! descriptor pool and the prost types always come from the same protos.
//! `envoy-types` does not export the bytes, hence this lookup.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("envoy_types.bin");
    let src = envoy_types_dir().join("src/generated/types.bin");
    std::fs::copy(&src, &out).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.toml");
}

/// Must equal the `=` pin of envoy-types in the workspace Cargo.toml.
const ENVOY_TYPES_VERSION: &str = "0.7.7";

/// The source directory of the `envoy-types` package in this build: the
/// crates.io source cache first, then whatever `cargo metadata` resolves
/// (vendored or git sources).
fn envoy_types_dir() -> PathBuf {
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    if let Ok(registries) = std::fs::read_dir(cargo_home.join("registry/src")) {
        for registry in registries.flatten() {
            let dir = registry
                .path()
                .join(format!("envoy-types-{ENVOY_TYPES_VERSION}"));
            if dir.join("src/generated/types.bin").exists() {
                return dir;
            }
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("Cargo.toml");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8 metadata");
    // Small dependency-free scan: find `"manifest_path":".../envoy-types-X/Cargo.toml"`.
    for part in text.split("\"manifest_path\":\"").skip(1) {
        let path = &part[..part.find('"').expect("closing quote")];
        let p = PathBuf::from(path);
        let dir = p.parent().expect("manifest dir");
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_envoy_types = name.starts_with("envoy-types-") || name == "envoy-types";
        if is_envoy_types && dir.join("src/generated/types.bin").exists() {
            return dir.to_path_buf();
        }
    }
    panic!("envoy-types package not found in cargo metadata");
}
