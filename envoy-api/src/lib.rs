//! Envoy v3 API, shared by weft-proxy and weft-operator.
//!
//! ```text
//!  YAML / JSON ──serde──► DynamicMessage (descriptor pool) ──encode──► prost type
//!  xDS wire bytes ───────────────────────────────────────────decode──► prost type
//! ```
//! Both encodings land in the same prost messages from `envoy-types`, so the
//! bootstrap file and the xDS stream share one model (ARCHITECTURE principle 1).
//! This crate holds no logic beyond that decoding.

pub use envoy_types::pb;
pub use prost;
pub use prost_reflect;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types.bin"));

/// The descriptor pool of every message `envoy-types` compiles.
///
/// Decoded on each call and freed when the last handle and the messages
/// decoded with it are dropped: it takes tens of MB, which a proxy should
/// not keep between config loads. Prefer [`pool_for`].
pub fn pool() -> DescriptorPool {
    DescriptorPool::decode(DESCRIPTORS).expect("invariant: envoy-types ships a valid descriptor set")
}

/// A pool holding only the files that define `roots` (message full names)
/// and what they import: enough to decode those messages from JSON, a
/// fraction of the full pool's memory and time. Types outside it (in `Any`)
/// fail to decode; [`known`] tells whether Envoy would know them.
pub fn pool_for(roots: &[&str]) -> DescriptorPool {
    use std::collections::{HashMap, HashSet};
    let set = <prost_types::FileDescriptorSet as prost::Message>::decode(DESCRIPTORS)
        .expect("invariant: envoy-types ships a valid descriptor set");
    let by_name: HashMap<&str, &prost_types::FileDescriptorProto> =
        set.file.iter().map(|f| (f.name(), f)).collect();
    let mut wanted: Vec<&str> = set
        .file
        .iter()
        .filter(|f| roots.iter().any(|r| defines(f, r)))
        .map(|f| f.name())
        .collect();
    let mut keep: HashSet<&str> = HashSet::new();
    while let Some(name) = wanted.pop() {
        if keep.insert(name) {
            if let Some(file) = by_name.get(name) {
                wanted.extend(file.dependency.iter().map(String::as_str));
            }
        }
    }
    let subset = prost_types::FileDescriptorSet {
        file: set.file.iter().filter(|f| keep.contains(f.name())).cloned().collect(),
    };
    DescriptorPool::from_file_descriptor_set(subset).expect("invariant: an import-closed subset is valid")
}

/// Whether `full_name` is a message Envoy's API defines (in the full set).
pub fn known(full_name: &str) -> bool {
    let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(DESCRIPTORS) else {
        return false;
    };
    set.file.iter().any(|f| defines(f, full_name))
}

/// Whether a file defines a message (top-level or nested) named `full_name`.
fn defines(file: &prost_types::FileDescriptorProto, full_name: &str) -> bool {
    let Some(rest) = full_name.strip_prefix(file.package()).and_then(|r| r.strip_prefix('.')) else {
        return false;
    };
    fn find(messages: &[prost_types::DescriptorProto], path: &str) -> bool {
        let (head, tail) = path.split_once('.').map_or((path, None), |(h, t)| (h, Some(t)));
        messages.iter().any(|m| m.name() == head && tail.is_none_or(|t| find(&m.nested_type, t)))
    }
    find(&file.message_type, rest)
}

/// The full message name in an `Any` type URL (`type.googleapis.com/NAME`).
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// A decoding error with the field path where it happened
/// (`static_resources.listeners[0].address: unknown field ...`).
#[derive(Debug)]
pub struct DecodeError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() || self.path == "." {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes a message from its proto3 JSON form (Envoy's YAML is read as JSON
/// first, as Envoy does), with `Any` resolved through the pool. Unknown
/// fields are errors, as they are for Envoy.
pub fn decode_json(
    desc: MessageDescriptor,
    value: &serde_json::Value,
) -> Result<DynamicMessage, DecodeError> {
    let options = prost_reflect::DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    DynamicMessage::deserialize_with_options(desc, de, &options).map_err(|e| DecodeError {
        path: track.path().to_string(),
        message: e.to_string(),
    })
}

/// The xDS resource types weft serves and follows, in the order a change
/// is applied: clusters before the endpoints that warm them, listeners
/// after the clusters they name, routes last (Envoy's make-before-break
/// order). Shared by the ADS server (operator) and client (proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl ResourceType {
    pub const ALL: [ResourceType; 4] = [ResourceType::Cluster, ResourceType::Endpoint, ResourceType::Listener, ResourceType::Route];

    /// The message's full name.
    pub fn message(self) -> &'static str {
        match self {
            ResourceType::Cluster => "envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => "envoy.config.endpoint.v3.ClusterLoadAssignment",
            ResourceType::Listener => "envoy.config.listener.v3.Listener",
            ResourceType::Route => "envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    /// The discovery service's short name, which error paths start with
    /// (`cds.resources[2].…`).
    pub fn api(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
        }
    }

    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        Self::ALL.into_iter().find(|k| type_name(url) == k.message())
    }

    /// Listeners and clusters are subscribed as a whole (wildcard);
    /// endpoints and routes by the names the others use.
    pub fn wildcard_by_default(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }
}
