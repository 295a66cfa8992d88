//! Types several kinds share: Istio's `StringMatch`, `Percent`, port and
//! workload selectors, policy target references, `Duration`, and the schema
//! helpers that make our CRDs say what Istio's say (protobuf `oneof`s,
//! free-form `Struct`s, keyed lists).

mod duration;

use std::collections::BTreeMap;

use schemars::transform::Transform;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use duration::{Duration, InvalidDuration};

/// Label names to values, as in `metadata.labels`.
pub type Labels = BTreeMap<String, String>;

/// Matches a string one of three ways; Istio writes it `{exact: ..}`,
/// `{prefix: ..}` or `{regex: ..}` (a protobuf `oneof`: at most one is set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = OneOf(&["exact", "prefix", "regex"]))]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 style regex-based match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl StringMatch {
    pub fn exact(value: impl Into<String>) -> Self {
        Self {
            exact: Some(value.into()),
            ..Self::default()
        }
    }

    pub fn prefix(value: impl Into<String>) -> Self {
        Self {
            prefix: Some(value.into()),
            ..Self::default()
        }
    }

    pub fn regex(value: impl Into<String>) -> Self {
        Self {
            regex: Some(value.into()),
            ..Self::default()
        }
    }
}

/// A percentage in the range 0.0 to 100.0, written `{value: 12.5}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

impl Percent {
    pub fn new(value: f64) -> Self {
        Self { value }
    }
}

/// Selects a port of a service by number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// Valid port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
}

impl PortSelector {
    pub fn number(number: u32) -> Self {
        Self {
            number: Some(number),
        }
    }
}

/// Istio's `istio.type.v1beta1.WorkloadSelector`: the pods/VMs a
/// configuration applies to, by label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// One or more labels that indicate a specific set of pods/VMs on which
    /// a policy should be applied.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
}

/// Istio's `istio.type.v1beta1.PolicyTargetReference`: a resource (such
/// as a Gateway API `Gateway`) a policy attaches to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// Group of the target resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the target resource.
    pub kind: String,
    /// Name of the target resource.
    pub name: String,
    /// Namespace of the referent; only the policy's own namespace is
    /// supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Schema transform for a protobuf `oneof`: at most one of the named
/// properties may be set. It writes the constraint as Istio's generated
/// CRDs do (`oneOf: [{not: {anyOf: [required..]}}, {required: [a]}, ..]`);
/// a second group on the same message goes under `allOf`.
pub(crate) struct OneOf(pub &'static [&'static str]);

impl Transform for OneOf {
    fn transform(&mut self, schema: &mut Schema) {
        let required = |name: &&str| json!({ "required": [name] });
        let none_set =
            json!({ "not": { "anyOf": self.0.iter().map(required).collect::<Vec<_>>() } });
        let branches: Vec<Value> = std::iter::once(none_set)
            .chain(self.0.iter().map(required))
            .collect();
        let Some(object) = schema.as_object_mut() else {
            return;
        };
        let mut groups = match object.remove("allOf") {
            Some(Value::Array(groups)) => groups,
            _ => Vec::new(),
        };
        if let Some(first) = object.remove("oneOf") {
            groups.push(json!({ "oneOf": first }));
        }
        if groups.is_empty() {
            object.insert("oneOf".into(), branches.into());
        } else {
            groups.push(json!({ "oneOf": branches }));
            object.insert("allOf".into(), groups.into());
        }
    }
}

/// Schema of a protobuf `Struct`: any JSON object, kept as written.
pub(crate) fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
