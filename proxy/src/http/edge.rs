//! An edge proxy's request headers (`use_remote_address: true`, no trusted
//! hops), as Envoy writes them: the peer's address is appended to
//! x-forwarded-for (this host's own address when the peer is loopback),
//! x-forwarded-proto is the connection's scheme whatever the client said,
//! and the request is external: x-envoy-external-address names the peer
//! and the x-envoy-* headers only Envoy may set are dropped (and its
//! x-request-id replaced when the proxy generates ids). Envoy 1.33+
//! trusts no address as internal unless configured, and neither do we.

use std::net::IpAddr;

use http::HeaderValue;
use pingora_http::RequestHeader;

use super::xff;
use crate::model::header::Headers;

/// Headers a client must not be able to set on an edge proxy.
const UNTRUSTED: &[&str] = &[
    "x-envoy-internal",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-original-path",
    "x-envoy-decorator-operation",
    "x-envoy-hedge-on-per-try-timeout",
];

pub fn prepare(req: &mut RequestHeader, scheme: &'static str, client: Option<IpAddr>, generate_request_id: bool) {
    let _ = req.insert_header("x-forwarded-proto", HeaderValue::from_static(scheme));
    if generate_request_id {
        // An external request's id is not trusted: a new one is generated.
        req.remove_header("x-request-id");
    }
    req.remove_matching(|name| UNTRUSTED.contains(&name));
    let Some(client) = client else { return };
    xff::append(req, if client.is_loopback() { xff::local_address().unwrap_or(client) } else { client });
    if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
        let _ = req.insert_header("x-envoy-external-address", v);
    }
}
