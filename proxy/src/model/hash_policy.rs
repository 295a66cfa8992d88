//! A route's `hash_policy`: the request hash that RING_HASH and MAGLEV
//! clusters pick hosts by. Computed as Envoy computes it (xxHash64 of the
//! value; several policies combined by rotate-and-xor, a `terminal` one
//! that produced a hash ends the list), so the same request lands on the
//! same host through weft-proxy or Envoy.

use std::net::IpAddr;

use pingora_http::RequestHeader;
use weft_envoy_api::pb::envoy::config::route::v3 as xds_route;
use xxhash_rust::xxh64::Xxh64;

use super::{ConfigError, Result};

#[derive(Debug)]
enum Method {
    Header(http::HeaderName),
    QueryParameter(String),
    SourceIp,
}

#[derive(Debug)]
pub struct HashPolicy {
    methods: Vec<(Method, bool)>,
}

impl HashPolicy {
    pub fn compile(policies: &[xds_route::route_action::HashPolicy], path: &str) -> Result<Option<Self>> {
        use xds_route::route_action::hash_policy::PolicySpecifier as P;
        let mut methods = Vec::new();
        for (i, p) in policies.iter().enumerate() {
            let ppath = format!("{path}[{i}]");
            let method = match &p.policy_specifier {
                Some(P::Header(h)) => {
                    // Envoy's `:authority` is HTTP/1.1's Host.
                    let name = if h.header_name == ":authority" { "host" } else { h.header_name.as_str() };
                    Method::Header(http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                        ConfigError::new(format!("{ppath}.header.header_name"), format!("invalid header name \"{}\"", h.header_name))
                    })?)
                }
                Some(P::QueryParameter(q)) => Method::QueryParameter(q.name.clone()),
                Some(P::ConnectionProperties(c)) if c.source_ip => Method::SourceIp,
                Some(P::ConnectionProperties(_)) => continue, // hashes nothing
                Some(_) => return Err(ConfigError::new(ppath, "this hash policy is not supported by weft-proxy yet")),
                None => return Err(ConfigError::new(ppath, "policy_specifier is required")),
            };
            methods.push((method, p.terminal));
        }
        Ok((!methods.is_empty()).then_some(HashPolicy { methods }))
    }

    /// The request's hash, or `None` when no policy applies to it.
    pub fn hash(&self, req: &RequestHeader, source: Option<IpAddr>) -> Option<u64> {
        let mut hash: Option<u64> = None;
        for (method, terminal) in &self.methods {
            if let Some(new) = evaluate(method, req, source) {
                // Rotating keeps two equal policies from cancelling out.
                hash = Some(hash.map_or(0, |h| h.rotate_left(1)) ^ new);
            }
            if *terminal && hash.is_some() {
                break;
            }
        }
        hash
    }
}

fn evaluate(method: &Method, req: &RequestHeader, source: Option<IpAddr>) -> Option<u64> {
    match method {
        Method::Header(name) => {
            let mut values: Vec<&[u8]> = req.headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
            if values.is_empty() {
                return None;
            }
            // Order-independent, as Envoy: sorted values, hashed as one stream.
            values.sort();
            let mut h = Xxh64::new(0);
            for v in values {
                h.update(v);
            }
            Some(h.digest())
        }
        Method::QueryParameter(name) => {
            let path = req.raw_path();
            let query = path.iter().position(|b| *b == b'?').map(|i| &path[i + 1..])?;
            // The first occurrence, undecoded.
            query.split(|b| *b == b'&').find_map(|pair| {
                let (k, v) = match pair.iter().position(|b| *b == b'=') {
                    Some(i) => (&pair[..i], &pair[i + 1..]),
                    None => (pair, &[][..]),
                };
                (k == name.as_bytes()).then(|| xxhash_rust::xxh64::xxh64(v, 0))
            })
        }
        Method::SourceIp => source.map(|ip| xxhash_rust::xxh64::xxh64(ip.to_string().as_bytes(), 0)),
    }
}
