//! WasmPlugins as translation reads them: where the module is (its `url`
//! parsed once, here, for validation and translation alike) and which
//! proxies a plugin selects, as istiod selects them.

use std::net::IpAddr;

use weft_crds::common::Labels;
use weft_crds::extensions::WasmPluginSpec;

use super::Key;

/// The namespace whose configuration applies mesh-wide (Istio's root
/// namespace; a `Mesh` that changes it is reported unsupported).
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Where a plugin's module comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Module {
    /// `file:///ABS/PATH`: read by each proxy from its own disk.
    File(String),
    /// `http://HOST[:PORT]/PATH` (an IP address or a DNS name): fetched by
    /// each proxy and checked against `sha256` (lowercase hex).
    Http { uri: String, host: String, port: u16, sha256: String },
}

/// A `url` or `sha256` weft cannot use, with the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModuleError {
    #[error("OCI images are not supported by weft; use file:// or http://")]
    Oci,
    #[error("https:// is not supported by weft yet (weft-proxy fetches modules over plain HTTP); use http:// with sha256, or file://")]
    Https,
    #[error("unknown scheme {0}:// (file://, http:// and oci:// are Istio's)")]
    Scheme(String),
    #[error("a file:// URL needs an absolute path (file:///path/to/plugin.wasm)")]
    RelativeFile,
    #[error("invalid http:// URL: {0}")]
    Http(String),
    #[error("{0:?} is neither an IP address nor a DNS name")]
    HostName(String),
    #[error("an http:// module needs its sha256, which the proxies check")]
    MissingSha256,
    #[error("{0:?} is not a sha256 (64 hex digits)")]
    Sha256(String),
}

impl ModuleError {
    /// The field at fault.
    pub fn path(&self) -> &'static str {
        match self {
            ModuleError::MissingSha256 | ModuleError::Sha256(_) => "spec.sha256",
            _ => "spec.url",
        }
    }

    /// Whether weft lacks the feature (rather than the value being wrong).
    pub fn unsupported(&self) -> bool {
        matches!(self, ModuleError::Oci | ModuleError::Https)
    }
}

impl Module {
    /// Reads Istio's `url` (a URL without a scheme is an OCI image, as in
    /// Istio) and, for http://, its `sha256`.
    pub fn parse(url: &str, sha256: Option<&str>) -> Result<Module, ModuleError> {
        let Some((scheme, rest)) = url.split_once("://") else { return Err(ModuleError::Oci) };
        match scheme.to_ascii_lowercase().as_str() {
            "oci" => Err(ModuleError::Oci),
            "https" => Err(ModuleError::Https),
            "file" if rest.starts_with('/') && rest.len() > 1 => Ok(Module::File(rest.to_string())),
            "file" => Err(ModuleError::RelativeFile),
            "http" => {
                let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| ModuleError::Http(e.to_string()))?;
                let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| ModuleError::Http("no host".into()))?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let dns_name = host.split('.').all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
                if host.parse::<IpAddr>().is_err() && !dns_name {
                    return Err(ModuleError::HostName(host.to_string()));
                }
                let sha256 = sha256.ok_or(ModuleError::MissingSha256)?;
                if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ModuleError::Sha256(sha256.to_string()));
                }
                Ok(Module::Http { uri: url.to_string(), host: host.to_string(), port: uri.port_u16().unwrap_or(80), sha256: sha256.to_ascii_lowercase() })
            }
            other => Err(ModuleError::Scheme(other.to_string())),
        }
    }
}

/// A WasmPlugin in effect.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub key: Key,
    pub spec: WasmPluginSpec,
    pub module: Module,
}

impl Plugin {
    /// Whether the plugin applies to a proxy in `namespace` with `labels`:
    /// a plugin selects in its own namespace, or everywhere from the root
    /// namespace; by `selector.matchLabels`, all proxies without one.
    pub fn selects(&self, namespace: &str, labels: &Labels) -> bool {
        let in_scope = self.key.namespace == namespace || self.key.namespace == ROOT_NAMESPACE;
        let wanted = self.spec.selector.iter().flat_map(|s| &s.match_labels);
        in_scope && wanted.into_iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// The order of plugins within a phase: higher `priority` first, then
    /// by namespace/name.
    pub fn order(a: &Plugin, b: &Plugin) -> std::cmp::Ordering {
        let priority = |p: &Plugin| p.spec.priority.unwrap_or(0);
        priority(b).cmp(&priority(a)).then_with(|| a.key.cmp(&b.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn urls() {
        assert_eq!(Module::parse("file:///opt/p.wasm", None), Ok(Module::File("/opt/p.wasm".into())));
        assert_eq!(Module::parse("file://opt/p.wasm", None), Err(ModuleError::RelativeFile));
        assert_eq!(
            Module::parse("http://10.0.0.1:8000/p.wasm", Some(&SHA.to_uppercase())),
            Ok(Module::Http { uri: "http://10.0.0.1:8000/p.wasm".into(), host: "10.0.0.1".into(), port: 8000, sha256: SHA.into() })
        );
        assert!(matches!(Module::parse("http://[::1]/p.wasm", Some(SHA)), Ok(Module::Http { host, port: 80, .. }) if host == "::1"));
        assert_eq!(Module::parse("http://10.0.0.1/p.wasm", None), Err(ModuleError::MissingSha256));
        assert_eq!(Module::parse("http://10.0.0.1/p.wasm", Some("abc")), Err(ModuleError::Sha256("abc".into())));
        assert!(matches!(Module::parse("http://m.example/p.wasm", Some(SHA)), Ok(Module::Http { host, port: 80, .. }) if host == "m.example"));
        assert_eq!(Module::parse("http://bad_name/p.wasm", Some(SHA)), Err(ModuleError::HostName("bad_name".into())));
        assert_eq!(Module::parse("https://m.example/p.wasm", Some(SHA)), Err(ModuleError::Https));
        assert_eq!(Module::parse("oci://ghcr.io/x/p:1", None), Err(ModuleError::Oci));
        assert_eq!(Module::parse("ghcr.io/x/p:1", None), Err(ModuleError::Oci), "Istio's default scheme is OCI");
        assert_eq!(Module::parse("ftp://x/p.wasm", None), Err(ModuleError::Scheme("ftp".into())));
    }
}
