//! Loading an Envoy v3 `Bootstrap` from `-c FILE` and `--config-yaml`.
//!
//! ```text
//!  file (YAML/JSON) ─┐
//!                    ├─► serde_json::Value ─► DynamicMessage ─► support check ─► pb Bootstrap
//!  --config-yaml ────┘        (merged as protobuf MergeFrom, like Envoy)
//! ```
//! Every error names the field path. Fields weft-proxy does not implement are
//! rejected here (see [`support`]) so that nothing is silently ignored.

mod support;

use std::path::Path;

use prost::Message;
use weft_envoy_api::pb::envoy::config::bootstrap::v3::Bootstrap;
use weft_envoy_api::pb::envoy::service::discovery::v3::DiscoveryResponse;
use weft_envoy_api::prost;
use weft_envoy_api::prost_reflect::{DynamicMessage, MessageDescriptor};

const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";
const DISCOVERY_RESPONSE: &str = "envoy.service.discovery.v3.DiscoveryResponse";

/// Why a bootstrap could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: malformed YAML/JSON: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {error}")]
    Decode {
        origin: String,
        error: weft_envoy_api::DecodeError,
    },
    #[error("{0}")]
    Unsupported(#[from] support::Unsupported),
    #[error("no configuration: pass -c FILE or --config-yaml")]
    Empty,
    #[error("the config loader panicked (a weft-proxy bug; please report it with the config)")]
    LoaderPanicked,
}

/// A loaded bootstrap, and its JSON form for `/config_dump`.
pub struct Loaded {
    pub bootstrap: Bootstrap,
    pub json: serde_json::Value,
}

/// Loads the bootstrap from a file and/or inline YAML (inline wins for
/// scalars and appends to lists, as Envoy's `--config-yaml` does).
pub fn load(file: Option<&Path>, inline_yaml: Option<&str>) -> Result<Loaded, LoadError> {
    load_with(&Loader::new(), file, inline_yaml)
}

/// [`load`] with a descriptor pool the caller keeps (to load more after).
pub fn load_with(loader: &Loader, file: Option<&Path>, inline_yaml: Option<&str>) -> Result<Loaded, LoadError> {
    let mut texts = Vec::new();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        texts.push((path.display().to_string(), text));
    }
    if let Some(text) = inline_yaml {
        texts.push(("--config-yaml".to_string(), text.to_string()));
    }
    loader.load_texts(&texts)
}

/// Loads a bootstrap from YAML/JSON texts, each named by its origin for
/// error messages; later texts merge over earlier ones.
pub fn load_texts(texts: &[(String, String)]) -> Result<Loaded, LoadError> {
    // One descriptor pool for the whole load, freed when it returns.
    Loader::new().load_texts(texts)
}

/// Holds the descriptor pool across loads, for callers that load often
/// (fuzzing, and later config streams); a one-off load should not keep it.
pub struct Loader {
    pool: weft_envoy_api::prost_reflect::DescriptorPool,
}

impl Default for Loader {
    fn default() -> Self {
        Self::new()
    }
}

impl Loader {
    pub fn new() -> Self {
        Loader { pool: weft_envoy_api::pool_for(&support::roots()) }
    }

    pub fn load_texts(&self, texts: &[(String, String)]) -> Result<Loaded, LoadError> {
        if texts.is_empty() {
            return Err(LoadError::Empty);
        }
        let desc = self.pool.get_message_by_name(BOOTSTRAP).expect("invariant: Bootstrap is in the pool");
        // Concatenated protobuf encodings decode as MergeFrom of each part.
        let mut bytes = Vec::new();
        for (origin, text) in texts {
            let part = decode_text(&desc, origin, text)?;
            part.encode(&mut bytes).map_err(|e| syntax("bootstrap", e))?;
        }
        let merged = DynamicMessage::decode(desc, bytes.as_slice()).map_err(|e| syntax("bootstrap", e))?;
        support::check(&merged)?;
        let bootstrap = Bootstrap::decode(bytes.as_slice()).map_err(|e| syntax("bootstrap", e))?;
        Ok(Loaded { bootstrap, json: to_json(&merged) })
    }

    /// Loads a file-based xDS source (`path_config_source`): a
    /// `DiscoveryResponse` in YAML/JSON whose resources are all `type_name`
    /// (e.g. `envoy.config.listener.v3.Listener`), checked like a bootstrap.
    pub fn load_resources<M: Message + Default>(&self, path: &Path, type_name: &str) -> Result<Vec<M>, LoadError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: origin.clone(), source })?;
        let desc = self.pool.get_message_by_name(DISCOVERY_RESPONSE).expect("invariant: DiscoveryResponse is in the pool");
        let message = decode_text(&desc, &origin, &text)?;
        support::check(&message).map_err(|mut e| {
            e.path = format!("{origin}: {}", e.path);
            e
        })?;
        let response = DiscoveryResponse::decode(message.encode_to_vec().as_slice()).map_err(|e| syntax(&origin, e))?;
        response
            .resources
            .iter()
            .enumerate()
            .map(|(i, any)| {
                let got = weft_envoy_api::type_name(&any.type_url);
                if got != type_name {
                    return Err(LoadError::Syntax {
                        origin: format!("{origin}: resources[{i}]"),
                        message: format!("expected {type_name}, got {got}"),
                    });
                }
                M::decode(any.value.as_slice()).map_err(|e| syntax(&format!("{origin}: resources[{i}]"), e))
            })
            .collect()
    }
}

impl Loader {
    /// Decodes one xDS resource off the wire (an `Any` of `type_name`),
    /// checked against the supported subset like a bootstrap.
    pub fn decode_resource<M: Message + Default>(
        &self,
        any: &weft_envoy_api::pb::google::protobuf::Any,
        type_name: &str,
        origin: &str,
    ) -> Result<M, LoadError> {
        let got = weft_envoy_api::type_name(&any.type_url);
        if got != type_name {
            return Err(syntax(origin, format!("expected {type_name}, got {got}")));
        }
        let desc = self
            .pool
            .get_message_by_name(type_name)
            .ok_or_else(|| syntax(origin, format!("{type_name} is not supported by weft-proxy")))?;
        let message = DynamicMessage::decode(desc, any.value.as_slice()).map_err(|e| syntax(origin, e))?;
        support::check(&message).map_err(|mut e| {
            e.path = format!("{origin}.{}", e.path);
            e
        })?;
        M::decode(any.value.as_slice()).map_err(|e| syntax(origin, e))
    }
}

impl Loader {
    /// A resource as Envoy's `/config_dump` shows it: proto3 JSON with the
    /// proto field names, and its `@type`.
    pub fn dump_json<M: Message + prost::Name>(&self, message: &M) -> serde_json::Value {
        let decoded = self
            .pool
            .get_message_by_name(&M::full_name())
            .and_then(|desc| DynamicMessage::decode(desc, message.encode_to_vec().as_slice()).ok());
        let mut json = decoded.map(|m| to_json(&m)).unwrap_or_default();
        if let serde_json::Value::Object(map) = &mut json {
            map.insert("@type".into(), M::type_url().into());
        }
        json
    }
}

fn syntax(origin: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Syntax { origin: origin.into(), message: e.to_string() }
}

/// Parses YAML (a superset of JSON) and decodes it as the message `desc`.
fn decode_text(desc: &MessageDescriptor, origin: &str, text: &str) -> Result<DynamicMessage, LoadError> {
    let value: serde_json::Value = serde_yaml::from_str(text).map_err(|e| syntax(origin, e))?;
    weft_envoy_api::decode_json(desc.clone(), &value).map_err(|error| {
        // The pool holds only what weft-proxy implements: an `Any` of another
        // type Envoy knows is unsupported, not unknown.
        let missing = error.message.strip_prefix("message '").and_then(|m| m.strip_suffix("' not found"));
        match missing {
            Some(name) if weft_envoy_api::known(name) => LoadError::Unsupported(support::Unsupported {
                path: error.path.clone(),
                what: format!("extension type {name}"),
            }),
            _ => LoadError::Decode { origin: origin.into(), error },
        }
    })
}

/// Proto3 JSON with Envoy's snake_case field names (what Envoy's
/// `/config_dump` shows).
fn to_json(message: &DynamicMessage) -> serde_json::Value {
    let options = weft_envoy_api::prost_reflect::SerializeOptions::new().use_proto_field_name(true);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or(serde_json::Value::Null)
}
