//! Who is connecting: a proxy identified as Istio identifies it, so an
//! Istio-style Envoy bootstrap connects unchanged.
//!
//! `node.id` is `ROLE~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`, with
//! ROLE `sidecar` or `router` (a gateway); `node.metadata` carries
//! `NAMESPACE`, `LABELS` and `WORKLOAD_NAME`, which win over the id.

use std::collections::BTreeMap;

use weft_envoy_api::pb::envoy::config::core::v3::Node;
use weft_envoy_api::pb::google::protobuf::{value::Kind as ValueKind, Struct};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Sidecar,
    Gateway,
}

impl Role {
    /// The first field of an Istio node id.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Role::Sidecar => "sidecar",
            Role::Gateway => "router",
        }
    }
}

/// A connected proxy, as translation needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Proxy {
    pub id: String,
    pub role: Role,
    pub ip: String,
    pub workload: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NodeError {
    #[error("node.id {0:?}: expected ROLE~IP~NAME.NAMESPACE~DOMAIN with ROLE sidecar or router")]
    Id(String),
    #[error("the first request of a stream carries no node")]
    Missing,
}

impl Proxy {
    pub fn from_node(node: Option<&Node>) -> Result<Proxy, NodeError> {
        let node = node.ok_or(NodeError::Missing)?;
        let parts: Vec<&str> = node.id.split('~').collect();
        let [role, ip, name, _domain] = parts[..] else {
            return Err(NodeError::Id(node.id.clone()));
        };
        let role = match role {
            "sidecar" => Role::Sidecar,
            "router" => Role::Gateway,
            _ => return Err(NodeError::Id(node.id.clone())),
        };
        let (pod, id_namespace) = name.split_once('.').unwrap_or((name, ""));
        let metadata = node.metadata.as_ref();
        let namespace =
            string_field(metadata, "NAMESPACE").unwrap_or_else(|| id_namespace.to_string());
        let workload = string_field(metadata, "WORKLOAD_NAME").unwrap_or_else(|| pod.to_string());
        let labels = metadata
            .and_then(|m| m.fields.get("LABELS"))
            .and_then(|v| match &v.kind {
                Some(ValueKind::StructValue(s)) => Some(s),
                _ => None,
            })
            .map(|s| {
                s.fields
                    .iter()
                    .filter_map(|(k, v)| match &v.kind {
                        Some(ValueKind::StringValue(v)) => Some((k.clone(), v.clone())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Proxy {
            id: node.id.clone(),
            role,
            ip: ip.to_string(),
            workload,
            namespace,
            labels,
        })
    }
}

fn string_field(s: Option<&Struct>, name: &str) -> Option<String> {
    match &s?.fields.get(name)?.kind {
        Some(ValueKind::StringValue(v)) if !v.is_empty() => Some(v.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_envoy_api::pb::google::protobuf::Value;

    fn string(v: &str) -> Value {
        Value {
            kind: Some(ValueKind::StringValue(v.into())),
        }
    }

    #[test]
    fn istio_sidecar_id_and_metadata() {
        let labels = Struct {
            fields: [
                ("app".to_string(), string("reviews")),
                ("version".to_string(), string("v2")),
            ]
            .into(),
        };
        let metadata = Struct {
            fields: [
                ("NAMESPACE".to_string(), string("bookinfo")),
                (
                    "LABELS".to_string(),
                    Value {
                        kind: Some(ValueKind::StructValue(labels)),
                    },
                ),
            ]
            .into(),
        };
        let node = Node {
            id: "sidecar~10.1.2.3~reviews-v2-abc.bookinfo~bookinfo.svc.cluster.local".into(),
            metadata: Some(metadata),
            ..Default::default()
        };
        let p = Proxy::from_node(Some(&node)).expect("valid node");
        assert_eq!(p.role, Role::Sidecar);
        assert_eq!(p.ip, "10.1.2.3");
        assert_eq!(p.workload, "reviews-v2-abc");
        assert_eq!(p.namespace, "bookinfo");
        assert_eq!(p.labels.get("version").map(String::as_str), Some("v2"));
    }

    #[test]
    fn gateway_without_metadata_uses_the_id() {
        let node = Node {
            id: "router~127.0.0.1~ingress.istio-system~istio-system.svc.cluster.local".into(),
            ..Default::default()
        };
        let p = Proxy::from_node(Some(&node)).expect("valid node");
        assert_eq!(
            (p.role, p.namespace.as_str(), p.workload.as_str()),
            (Role::Gateway, "istio-system", "ingress")
        );
    }

    #[test]
    fn bad_ids_name_the_problem() {
        for id in ["", "sidecar~1.2.3.4", "proxy~1~a.b~c"] {
            let node = Node {
                id: id.into(),
                ..Default::default()
            };
            assert_eq!(Proxy::from_node(Some(&node)), Err(NodeError::Id(id.into())));
        }
        assert_eq!(Proxy::from_node(None), Err(NodeError::Missing));
    }
}
