//! Reading resources from YAML text (standalone mode's files, `kubectl`
//! manifests): each document is dispatched on `apiVersion` and `kind` to
//! its type, and any field the type does not know is an error that names
//! it with its path, so a typo is never silently ignored.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::extensions::{self, WasmPlugin};
use crate::mesh::{self, Mesh};
use crate::networking::{
    self, DestinationRule, Gateway, ServiceEntry, VirtualService, WorkloadEntry,
};

/// A resource of one of the kinds Weft reads.
// Resources are read once per file and handed on; boxing the larger
// variants would buy nothing but noise at every match.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Resource {
    DestinationRule(DestinationRule),
    Gateway(Gateway),
    ServiceEntry(ServiceEntry),
    VirtualService(VirtualService),
    WorkloadEntry(WorkloadEntry),
    WasmPlugin(WasmPlugin),
    Mesh(Mesh),
}

/// Why a YAML stream did not read as resources. `index` counts documents
/// from 0, including empty ones.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("document {index}: not YAML")]
    Yaml {
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("document {index}: no apiVersion and kind")]
    MissingType { index: usize },
    #[error("document {index}: {api_version} {kind} is not a kind Weft reads")]
    UnknownKind {
        index: usize,
        api_version: String,
        kind: String,
    },
    #[error("document {index} ({kind} {name}): {path}: {message}")]
    Invalid {
        index: usize,
        kind: String,
        name: String,
        /// Where in the document, e.g. `spec.http[0].rout`.
        path: String,
        message: String,
    },
}

/// Reads every non-empty document of a YAML stream.
pub fn from_yaml(text: &str) -> Result<Vec<Resource>, DocumentError> {
    let mut resources = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let mut value =
            Value::deserialize(document).map_err(|source| DocumentError::Yaml { index, source })?;
        if value.is_null() {
            continue;
        }
        value
            .apply_merge()
            .map_err(|source| DocumentError::Yaml { index, source })?;
        resources.push(Resource::from_value(index, value)?);
    }
    Ok(resources)
}

impl Resource {
    fn from_value(index: usize, value: Value) -> Result<Self, DocumentError> {
        let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
        let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
            return Err(DocumentError::MissingType { index });
        };
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
            .to_owned();
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let document = Document {
            index,
            kind: &kind,
            name: &name,
            value,
        };
        match (group, kind.as_str()) {
            (networking::GROUP, _) if !networking::VERSIONS.contains(&version) => {}
            (networking::GROUP, "DestinationRule") => {
                return document.read().map(Self::DestinationRule)
            }
            (networking::GROUP, "Gateway") => return document.read().map(Self::Gateway),
            (networking::GROUP, "ServiceEntry") => return document.read().map(Self::ServiceEntry),
            (networking::GROUP, "VirtualService") => {
                return document.read().map(Self::VirtualService)
            }
            (networking::GROUP, "WorkloadEntry") => {
                return document.read().map(Self::WorkloadEntry)
            }
            (extensions::GROUP, "WasmPlugin") if version == extensions::VERSION => {
                return document.read().map(Self::WasmPlugin)
            }
            (mesh::GROUP, "Mesh") if version == mesh::VERSION => {
                return document.read().map(Self::Mesh)
            }
            _ => {}
        }
        Err(DocumentError::UnknownKind {
            index,
            api_version,
            kind,
        })
    }

    /// The resource's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::DestinationRule(_) => "DestinationRule",
            Resource::Gateway(_) => "Gateway",
            Resource::ServiceEntry(_) => "ServiceEntry",
            Resource::VirtualService(_) => "VirtualService",
            Resource::WorkloadEntry(_) => "WorkloadEntry",
            Resource::WasmPlugin(_) => "WasmPlugin",
            Resource::Mesh(_) => "Mesh",
        }
    }

    /// The resource's `metadata`.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Resource::DestinationRule(r) => &r.metadata,
            Resource::Gateway(r) => &r.metadata,
            Resource::ServiceEntry(r) => &r.metadata,
            Resource::VirtualService(r) => &r.metadata,
            Resource::WorkloadEntry(r) => &r.metadata,
            Resource::WasmPlugin(r) => &r.metadata,
            Resource::Mesh(r) => &r.metadata,
        }
    }
}

/// The fields a resource may have besides its kind's `spec` and `status`.
const TOP_LEVEL_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// `ObjectMeta`'s fields, which its type does not check for typos itself.
const METADATA_FIELDS: [&str; 15] = [
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

/// One document on its way into a type.
struct Document<'a> {
    index: usize,
    kind: &'a str,
    name: &'a str,
    value: Value,
}

impl Document<'_> {
    fn read<T: DeserializeOwned>(self) -> Result<T, DocumentError> {
        self.known_fields("", &self.value, &TOP_LEVEL_FIELDS)?;
        if let Some(metadata) = self.value.get("metadata") {
            self.known_fields("metadata.", metadata, &METADATA_FIELDS)?;
        }
        serde_path_to_error::deserialize(self.value).map_err(|error| DocumentError::Invalid {
            index: self.index,
            kind: self.kind.to_owned(),
            name: self.name.to_owned(),
            path: error.path().to_string(),
            message: error.into_inner().to_string(),
        })
    }

    /// Refuses a field of `object` that is not in `known`, as
    /// `deny_unknown_fields` does for specs, with serde's wording.
    fn known_fields(
        &self,
        prefix: &str,
        object: &Value,
        known: &[&str],
    ) -> Result<(), DocumentError> {
        let Some(mapping) = object.as_mapping() else {
            return Ok(());
        };
        let unknown = mapping.keys().find_map(|key| match key.as_str() {
            Some(key) if known.contains(&key) => None,
            Some(key) => Some(key.to_owned()),
            None => Some(format!("{key:?}")),
        });
        match unknown {
            None => Ok(()),
            Some(field) => Err(DocumentError::Invalid {
                index: self.index,
                kind: self.kind.to_owned(),
                name: self.name.to_owned(),
                path: format!("{prefix}{field}"),
                message: format!(
                    "unknown field `{field}`, expected one of {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }
}
