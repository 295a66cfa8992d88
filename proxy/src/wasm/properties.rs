//! `proxy_get_property`: what a plugin can read about its stream, its
//! node and itself, under Envoy's attribute names (`request.path`,
//! `source.address`, `node.id`, `plugin_root_id`, ...). Strings are their
//! bytes, integers 8 bytes little-endian, booleans one byte, as Envoy
//! serializes them. `proxy_set_property` keeps a value for the rest of
//! the stream, visible to every plugin on it (Envoy's filter state
//! `wasm.<name>`); names Envoy defines itself are read first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use super::engine::lock;
use super::host::StreamData;
use super::plugin::Plugin;

/// What the connection manager knows of a stream besides its headers.
#[derive(Debug, Default)]
pub struct StreamInfo {
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    pub tls: bool,
    pub requested_server_name: Option<std::sync::Arc<str>>,
    pub protocol: &'static str,
    /// What plugins set with `proxy_set_property`, by path.
    pub filter_state: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

impl StreamInfo {
    pub fn set_property(&self, path: &[u8], value: &[u8]) {
        lock(&self.filter_state).insert(path.to_vec(), value.to_vec());
    }

    fn property(&self, name: &[u8]) -> Option<Vec<u8>> {
        lock(&self.filter_state).get(name).cloned()
    }
}

/// The proxy's node, as its bootstrap names it.
#[derive(Debug, Default, Clone)]
pub struct Node {
    pub id: String,
    pub cluster: String,
}

static NODE: OnceLock<Node> = OnceLock::new();

/// Set once at start-up from the bootstrap.
pub fn set_node(node: Node) {
    let _ = NODE.set(node);
}

pub fn get(path: &[u8], plugin: Option<&Plugin>, stream: Option<&StreamData>) -> Option<Vec<u8>> {
    let parts: Vec<&[u8]> = path.split(|b| *b == 0).filter(|p| !p.is_empty()).collect();
    let text = |s: &str| Some(s.as_bytes().to_vec());
    let int = |i: i64| Some(i.to_le_bytes().to_vec());
    match parts.as_slice() {
        [b"plugin_name"] => text(&plugin?.name),
        [b"plugin_root_id"] => text(&plugin?.root_id),
        [b"plugin_vm_id"] => text(&plugin?.vm_id),
        [b"node", b"id"] => text(&NODE.get()?.id),
        [b"node", b"cluster"] => text(&NODE.get()?.cluster),
        [b"source", b"address"] => text(&stream?.info.source?.to_string()),
        [b"source", b"port"] => int(stream?.info.source?.port().into()),
        [b"destination", b"address"] => text(&stream?.info.destination?.to_string()),
        [b"destination", b"port"] => int(stream?.info.destination?.port().into()),
        [b"connection", b"mtls"] => Some(vec![u8::from(stream?.info.tls)]),
        [b"connection", b"requested_server_name"] => text(stream?.info.requested_server_name.as_deref()?),
        [b"request", rest @ ..] => request(rest, stream?),
        [b"response", b"code"] => int(stream?.response.as_deref()?.status.as_u16().into()),
        [b"response", b"headers", name] => header(&stream?.response.as_deref()?.headers, name),
        [name] => stream?.info.property(name),
        _ => None,
    }
}

fn request(parts: &[&[u8]], stream: &StreamData) -> Option<Vec<u8>> {
    let req = stream.request.as_deref()?;
    let bytes = |b: &[u8]| Some(b.to_vec());
    match parts {
        [b"path"] => bytes(req.raw_path()),
        [b"url_path"] => bytes(req.raw_path().split(|b| *b == b'?').next().unwrap_or_default()),
        [b"query"] => bytes(req.raw_path().splitn(2, |b| *b == b'?').nth(1).unwrap_or_default()),
        [b"host"] => header(&req.headers, b"host").or_else(|| bytes(req.uri.authority()?.as_str().as_bytes())),
        [b"scheme"] => bytes(if stream.info.tls { b"https" } else { b"http" }),
        [b"method"] => bytes(req.method.as_str().as_bytes()),
        [b"id"] => header(&req.headers, b"x-request-id"),
        [b"referer"] => header(&req.headers, b"referer"),
        [b"useragent"] => header(&req.headers, b"user-agent"),
        [b"protocol"] => bytes(stream.info.protocol.as_bytes()),
        [b"headers", name] => header(&req.headers, name),
        _ => None,
    }
}

fn header(headers: &http::HeaderMap, name: &[u8]) -> Option<Vec<u8>> {
    let name = http::HeaderName::from_bytes(&name.to_ascii_lowercase()).ok()?;
    headers.get(name).map(|v| v.as_bytes().to_vec())
}
