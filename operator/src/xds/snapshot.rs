//! A proxy's complete xDS configuration at one moment: every resource of
//! every type, each with a version derived from its bytes.
//!
//! Versions are content hashes, so two translations that produce the same
//! resource produce the same version, and a stream re-sends only what
//! changed — across pushes and across operator restarts.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;
use weft_envoy_api::pb::google::protobuf::Any;

/// The resource types the operator serves; `Kind::ALL` is the push order.
pub use weft_envoy_api::ResourceType as Kind;

/// One named resource and the version of its encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    pub version: String,
    pub type_url: String,
    /// The resource wrapped in a `google.protobuf.Any`, encoded once:
    /// state-of-the-world responses write these bytes to every proxy (see
    /// `wire`).
    pub any: bytes::Bytes,
    /// The message's own bytes (the Any's `value`), a view into `any`.
    pub value: bytes::Bytes,
}

impl Resource {
    /// Wraps a message; the version is a hash of its encoded bytes.
    pub fn new<M: Message + prost::Name>(name: impl Into<String>, message: &M) -> Resource {
        Resource::encoded(name, M::type_url(), message.encoded_len(), |buf| message.encode_raw(buf))
    }

    /// A resource of `type_url` whose encoding (`len` bytes) `encode`
    /// writes: for messages assembled from parts encoded before.
    pub fn encoded(name: impl Into<String>, type_url: String, len: usize, encode: impl FnOnce(&mut Vec<u8>)) -> Resource {
        use prost::encoding::{encode_key, encode_varint, WireType};
        // The Any's fields by hand, so the message is encoded once, in
        // place: type_url (1), then value (2).
        let mut buf = Vec::with_capacity(type_url.len() + len + 16);
        encode_key(1, WireType::LengthDelimited, &mut buf);
        encode_varint(type_url.len() as u64, &mut buf);
        buf.extend_from_slice(type_url.as_bytes());
        encode_key(2, WireType::LengthDelimited, &mut buf);
        encode_varint(len as u64, &mut buf);
        let start = buf.len();
        encode(&mut buf);
        debug_assert_eq!(buf.len() - start, len, "the encoding of {type_url} is not the length announced");
        let any = bytes::Bytes::from(buf);
        let value = any.slice(start..);
        let version = format!("{:016x}", fnv1a(&value));
        Resource { name: name.into(), version, type_url, any, value }
    }

    /// As a protobuf `Any` (a copy).
    pub fn body(&self) -> Any {
        Any { type_url: self.type_url.clone(), value: self.value.to_vec() }
    }
}

/// Resources shared by many snapshots (the clusters every sidecar gets),
/// with the version of the whole set computed once.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    map: Arc<BTreeMap<String, Arc<Resource>>>,
    version: String,
}

impl Layer {
    pub fn new(resources: impl IntoIterator<Item = Resource>) -> Layer {
        Layer::shared(resources.into_iter().map(Arc::new))
    }

    /// A layer of resources other layers may hold too.
    pub fn shared(resources: impl IntoIterator<Item = Arc<Resource>>) -> Layer {
        let map: BTreeMap<String, Arc<Resource>> = resources.into_iter().map(|r| (r.name.clone(), r)).collect();
        let version = set_version(map.values().map(|r| &**r));
        Layer { map: Arc::new(map), version }
    }
}

/// Every resource of every kind for one proxy: per kind, a shared layer
/// and the proxy's own resources (which win on a name clash). Cheap to
/// share and compare: streams hold an `Arc<Snapshot>`, and the version of
/// each kind (a hash of names and versions) is computed once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    kinds: BTreeMap<Kind, Set>,
}

#[derive(Debug, Clone, Default)]
struct Set {
    shared: Layer,
    own: BTreeMap<String, Arc<Resource>>,
    version: std::sync::OnceLock<String>,
}

impl Snapshot {
    pub fn insert(&mut self, kind: Kind, resource: Resource) {
        let set = self.kinds.entry(kind).or_default();
        set.version = Default::default();
        set.own.insert(resource.name.clone(), Arc::new(resource));
    }

    /// Adds a resource shared with other snapshots.
    pub fn insert_shared(&mut self, kind: Kind, resource: Arc<Resource>) {
        let set = self.kinds.entry(kind).or_default();
        set.version = Default::default();
        set.own.insert(resource.name.clone(), resource);
    }

    /// Uses `layer` as the shared resources of `kind`.
    pub fn share(&mut self, kind: Kind, layer: Layer) {
        let set = self.kinds.entry(kind).or_default();
        set.version = Default::default();
        set.shared = layer;
    }

    pub fn get(&self, kind: Kind, name: &str) -> Option<&Arc<Resource>> {
        let set = self.kinds.get(&kind)?;
        set.own.get(name).or_else(|| set.shared.map.get(name))
    }

    /// The resources of one kind.
    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &Arc<Resource>> {
        self.kinds.get(&kind).into_iter().flat_map(|set| {
            let shadowed = |r: &&Arc<Resource>| !set.own.contains_key(&r.name);
            set.shared.map.values().filter(shadowed).chain(set.own.values())
        })
    }

    pub fn len(&self, kind: Kind) -> usize {
        self.of(kind).count()
    }

    /// The version of all resources of `kind` together.
    pub fn version(&self, kind: Kind) -> &str {
        match self.kinds.get(&kind) {
            Some(set) => set.version.get_or_init(|| {
                let own = set_version(set.own.values().map(|r| &**r));
                format!("{}{}", set.shared.version, own)
            }),
            None => "",
        }
    }

    /// Whether two snapshots hold the same resources (by versions).
    pub fn same(&self, other: &Snapshot) -> bool {
        let kinds = |s: &Snapshot| s.kinds.keys().copied().collect::<Vec<_>>();
        kinds(self) == kinds(other) && self.kinds.keys().all(|k| self.version(*k) == other.version(*k))
    }
}

impl Snapshot {
    /// Every resource as proto3 JSON with Envoy's field names, by kind and
    /// name: for golden files and debugging (decodes the descriptor pool,
    /// tens of MB: not for the push path).
    pub fn to_json(&self) -> serde_json::Value {
        let pool = weft_envoy_api::pool();
        let options = weft_envoy_api::prost_reflect::SerializeOptions::new().use_proto_field_name(true);
        let mut out = serde_json::Map::new();
        for kind in self.kinds.keys() {
            let mut by_name = serde_json::Map::new();
            let mut resources: Vec<&Arc<Resource>> = self.of(*kind).collect();
            resources.sort_by(|a, b| a.name.cmp(&b.name));
            for r in resources {
                let name = &r.name;
                let value = pool
                    .get_message_by_name(weft_envoy_api::type_name(&r.type_url))
                    .and_then(|desc| weft_envoy_api::prost_reflect::DynamicMessage::decode(desc, &r.value[..]).ok())
                    .and_then(|m| m.serialize_with_options(serde_json::value::Serializer, &options).ok())
                    .unwrap_or(serde_json::Value::Null);
                by_name.insert(name.clone(), value);
            }
            out.insert(format!("{kind:?}"), serde_json::Value::Object(by_name));
        }
        serde_json::Value::Object(out)
    }
}

/// A version for a set of resources: a hash of their names and versions.
pub fn set_version<'a>(resources: impl Iterator<Item = &'a Resource>) -> String {
    let mut bytes = Vec::new();
    for r in resources {
        bytes.extend_from_slice(r.name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(r.version.as_bytes());
        bytes.push(0);
    }
    format!("{:016x}", fnv1a(&bytes))
}

/// FNV-1a, 64 bit: stable across builds and processes (std's hasher is
/// not), which keeps versions valid when the operator restarts.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_envoy_api::pb::envoy::config::cluster::v3::Cluster;

    #[test]
    fn version_follows_content() {
        let a = Cluster {
            name: "a".into(),
            ..Default::default()
        };
        let b = Cluster {
            name: "b".into(),
            ..Default::default()
        };
        assert_eq!(
            Resource::new("a", &a).version,
            Resource::new("a", &a.clone()).version
        );
        assert_ne!(
            Resource::new("a", &a).version,
            Resource::new("b", &b).version
        );
        assert_eq!(
            Resource::new("a", &a).type_url,
            Kind::Cluster.type_url()
        );
    }

    #[test]
    fn encoded_once_as_prost_encodes_an_any() {
        let c = Cluster { name: "a".into(), ..Default::default() };
        let r = Resource::new("a", &c);
        let any = Any { type_url: Kind::Cluster.type_url().into(), value: c.encode_to_vec() };
        assert_eq!(r.any, any.encode_to_vec());
        assert_eq!(r.body(), any);
    }

    #[test]
    fn type_urls_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_type_url(k.type_url()), Some(k));
        }
        assert_eq!(Kind::from_type_url("type.googleapis.com/foo"), None);
    }
}
