//! The status the operator writes on every kind it reads: Kubernetes-style
//! `conditions`, and `validationMessages` that name the offending field by
//! path (`spec.http[0].route[1].destination.port`).
//!
//! The shape is Istio's `IstioStatus` (so a status istiod wrote still
//! reads) plus `path` and `message` on each validation message. Status
//! objects are written by controllers, not users, so unlike specs they
//! accept fields they do not know, and the CRD keeps such fields.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize};

/// Status of an Istio or Weft resource, as the operator sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct Status {
    /// Current service state of the resource, at most one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<Generation>,
    /// Problems found in the spec, each naming the field it is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_messages: Vec<ValidationMessage>,
}

impl Status {
    /// Puts `condition` in place of the one of the same type. When the
    /// status value did not change, the old `lastTransitionTime` is kept,
    /// as Kubernetes conventions ask.
    pub fn set_condition(&mut self, mut condition: Condition) {
        match self
            .conditions
            .iter_mut()
            .find(|c| c.type_ == condition.type_)
        {
            Some(old) => {
                if old.status == condition.status {
                    condition.last_transition_time = old.last_transition_time.take();
                }
                *old = condition;
            }
            None => self.conditions.push(condition),
        }
    }

    /// The condition of the given type, if any.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// One aspect of a resource's state, in Kubernetes' condition shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition, such as `Accepted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether the condition holds.
    pub status: ConditionStatus,
    /// Unique, one-word, CamelCase reason for the last transition, such as
    /// `UnsupportedField`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable details about the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Last time the condition went from one status to another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Last time the condition was probed (kept for istiod's statuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<Generation>,
}

impl Condition {
    /// The spec was read, validated and translated into proxy config
    /// (possibly without its unsupported fields).
    pub const ACCEPTED: &'static str = "Accepted";
    /// For `Mesh`: the control plane is serving configuration.
    pub const READY: &'static str = "Ready";

    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.to_owned(),
            status,
            reason: Some(reason.to_owned()),
            message: Some(message.into()),
            ..Self::default()
        }
    }
}

/// Reasons the operator writes into [`Condition::reason`].
pub mod reason {
    /// Everything in the spec is valid and in effect.
    pub const ACCEPTED: &str = "Accepted";
    /// The spec has an error; none of it is in effect.
    pub const INVALID: &str = "Invalid";
    /// The spec sets fields Weft does not implement, each named by a
    /// validation message; the resource is not in effect until they are
    /// removed (half a rule would route differently from what it says).
    pub const UNSUPPORTED_FIELD: &str = "UnsupportedField";
    /// The spec refers to something (a host, subset, gateway) that does
    /// not exist.
    pub const REFERENCE_NOT_FOUND: &str = "ReferenceNotFound";
}

/// `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

/// A problem found in a resource, with the path of the field it is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidationMessage {
    /// How severe the problem is.
    pub level: Level,
    /// What kind of problem it is.
    #[serde(rename = "type")]
    pub type_: MessageType,
    /// The field the problem is about, e.g.
    /// `spec.http[0].route[1].destination.port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What is wrong, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A page documenting this kind of problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
}

impl ValidationMessage {
    pub fn new(
        level: Level,
        problem: Problem,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            level,
            type_: problem.message_type(),
            path: Some(path.into()),
            message: Some(message.into()),
            documentation_url: None,
        }
    }
}

/// How severe a validation message is, in Istio's words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    #[default]
    Unknown,
    Error,
    Warning,
    Info,
}

/// Identifies a kind of validation message, as Istio's analyzers do
/// (`IST0101`/`ReferencedResourceNotFound`); Weft's codes start `WFT`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageType {
    /// A short code uniquely identifying the message type.
    pub code: String,
    /// A human-readable name for the message type.
    pub name: String,
}

/// The kinds of problem Weft's validation reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A field Istio defines and Weft does not implement.
    UnsupportedField,
    /// A value that is out of range or malformed.
    InvalidValue,
    /// A reference to a host, subset or gateway that does not exist.
    ReferenceNotFound,
    /// Another resource already configures the same thing (two
    /// VirtualServices for one host); the older one wins.
    Conflict,
}

impl Problem {
    pub fn code(self) -> &'static str {
        match self {
            Problem::UnsupportedField => "WFT0001",
            Problem::InvalidValue => "WFT0002",
            Problem::ReferenceNotFound => "WFT0003",
            Problem::Conflict => "WFT0004",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Problem::UnsupportedField => reason::UNSUPPORTED_FIELD,
            Problem::InvalidValue => "InvalidValue",
            Problem::ReferenceNotFound => reason::REFERENCE_NOT_FOUND,
            Problem::Conflict => "Conflict",
        }
    }

    pub fn message_type(self) -> MessageType {
        MessageType {
            code: self.code().to_owned(),
            name: self.name().to_owned(),
        }
    }
}

/// A `metadata.generation` as a status records it. It is written as a
/// number; istiod writes int64s as strings of digits, and those read too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Generation(pub i64);

impl<'de> Deserialize<'de> for Generation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum IntOrString {
            Int(i64),
            String(String),
        }
        match IntOrString::deserialize(deserializer)? {
            IntOrString::Int(n) => Ok(Self(n)),
            IntOrString::String(s) => s.parse().map(Self).map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for Generation {
    fn schema_name() -> Cow<'static, str> {
        "Generation".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_condition_keeps_transition_time_while_status_holds() {
        let time = |s: &str| Time(s.parse().unwrap());
        let mut status = Status::default();
        let mut accepted = Condition::new(
            Condition::ACCEPTED,
            ConditionStatus::True,
            reason::ACCEPTED,
            "ok",
        );
        accepted.last_transition_time = Some(time("2025-01-01T00:00:00Z"));
        status.set_condition(accepted.clone());

        let mut again = accepted.clone();
        again.last_transition_time = Some(time("2025-02-01T00:00:00Z"));
        status.set_condition(again);
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(
            status.conditions[0].last_transition_time,
            Some(time("2025-01-01T00:00:00Z"))
        );

        let mut flipped = Condition::new(
            Condition::ACCEPTED,
            ConditionStatus::False,
            reason::INVALID,
            "bad",
        );
        flipped.last_transition_time = Some(time("2025-03-01T00:00:00Z"));
        status.set_condition(flipped);
        let now = status.condition(Condition::ACCEPTED).unwrap();
        assert_eq!(now.status, ConditionStatus::False);
        assert_eq!(now.last_transition_time, Some(time("2025-03-01T00:00:00Z")));
    }

    #[test]
    fn reads_istiod_string_generations() {
        let status: Status = serde_json::from_str(
            r#"{"observedGeneration": "3", "conditions": [{"type": "Reconciled", "status": "True", "observedGeneration": 2}]}"#,
        )
        .unwrap();
        assert_eq!(status.observed_generation, Some(Generation(3)));
        assert_eq!(
            status.conditions[0].observed_generation,
            Some(Generation(2))
        );
    }
}
