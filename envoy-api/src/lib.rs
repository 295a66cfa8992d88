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
/// Decoded on each call (about 30 ms) and freed when the last handle and
/// the messages decoded with it are dropped: it takes some 40 MB, which a
/// proxy should not keep between config loads. Hold one pool for a whole
/// load rather than calling this per message.
pub fn pool() -> DescriptorPool {
    DescriptorPool::decode(DESCRIPTORS).expect("invariant: envoy-types ships a valid descriptor set")
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
