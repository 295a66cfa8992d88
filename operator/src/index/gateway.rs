//! Gateways as translation and validation read them: what each server
//! asks of the proxy, how the servers of the Gateways selecting one proxy
//! share its ports, and which VirtualService routes serve a server; all
//! as istiod decides them.
//!
//! ```text
//!  servers ─Protocol::of─► HTTP | TCP | TLS passthrough ─merge─► one listener per port
//!  VirtualServices naming the gateway, hosts within the server's ─► tcp_route / tls_matches
//! ```
//! istiod merges servers by port: HTTP servers share a port, TLS
//! passthrough servers share one (told apart by SNI) unless they repeat a
//! host, and any other server on a taken port is left out.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use weft_crds::networking::gateway::{Server, ServerTlsMode};
use weft_crds::networking::virtual_service::{TcpRoute, TlsMatchAttributes, TlsRoute};
use weft_crds::networking::{GatewaySpec, VirtualServiceSpec};

use super::{Key, Rule};

/// What a server asks of the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Plaintext HTTP: routes from the VirtualServices' `http`.
    Http,
    /// Opaque TCP: the first `tcp` route that applies.
    Tcp,
    /// TLS or HTTPS with `tls.mode: PASSTHROUGH`: `tls` routes, by SNI; the
    /// proxy never terminates TLS.
    Passthrough,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Http => "HTTP",
            Protocol::Tcp => "TCP",
            Protocol::Passthrough => "TLS passthrough",
        })
    }
}

/// A server weft cannot serve.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServerError {
    #[error("protocol {0} is not supported by weft yet (HTTP, TCP, and TLS or HTTPS with tls.mode PASSTHROUGH are)")]
    Protocol(String),
    #[error("a {0} server needs TLS settings (weft supports tls.mode PASSTHROUGH)")]
    MissingTls(String),
    #[error("a {0} server cannot have TLS settings (HTTPS and TLS servers can; an HTTP server only httpsRedirect)")]
    PlaintextTls(String),
    #[error("tls.mode {0} is not supported by weft yet: terminating TLS at the gateway needs its certificates (SDS), which weft does not serve; PASSTHROUGH is supported")]
    TlsMode(String),
}

impl ServerError {
    /// The field at fault, below `spec.servers[i]`.
    pub fn path(&self) -> &'static str {
        match self {
            ServerError::Protocol(_) => "port.protocol",
            ServerError::MissingTls(_) | ServerError::PlaintextTls(_) => "tls",
            ServerError::TlsMode(_) => "tls.mode",
        }
    }

    /// Whether weft lacks the feature (rather than the value being wrong).
    pub fn unsupported(&self) -> bool {
        matches!(self, ServerError::Protocol(_) | ServerError::TlsMode(_))
    }
}

impl Protocol {
    /// What `server` asks for, as istiod reads it (an unset `tls.mode` is
    /// PASSTHROUGH, the proto's default).
    pub fn of(server: &Server) -> Result<Protocol, ServerError> {
        let protocol = server.port.protocol.to_ascii_uppercase();
        let passthrough = server.tls.as_ref().map(|t| t.mode.unwrap_or(ServerTlsMode::Passthrough) == ServerTlsMode::Passthrough);
        match (protocol.as_str(), passthrough) {
            // An HTTP server's `tls` may only redirect to HTTPS (checked with the fields).
            ("HTTP", None | Some(true)) => Ok(Protocol::Http),
            ("TCP", None) => Ok(Protocol::Tcp),
            ("HTTP" | "TCP", Some(_)) => Err(ServerError::PlaintextTls(protocol)),
            ("TLS" | "HTTPS", None) => Err(ServerError::MissingTls(protocol)),
            ("TLS" | "HTTPS", Some(true)) => Ok(Protocol::Passthrough),
            ("TLS" | "HTTPS", Some(false)) => {
                let mode = server.tls.as_ref().and_then(|t| t.mode).map(|m| serde_json::to_value(m).ok());
                let name = mode.flatten().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                Err(ServerError::TlsMode(name))
            }
            _ => Err(ServerError::Protocol(server.port.protocol.clone())),
        }
    }
}

/// One port of a gateway proxy and the servers merged on it.
#[derive(Debug)]
pub struct Listener<'a> {
    pub protocol: Protocol,
    /// (gateway `namespace/name`, server), in the gateways' order.
    pub servers: Vec<(String, &'a Server)>,
}

/// A server left out because its port is taken.
#[derive(Debug)]
pub struct Rejected<'a> {
    pub gateway: &'a Key,
    /// Its index in `spec.servers`.
    pub server: usize,
    pub message: String,
}

/// The ports of a proxy selected by `gateways` (in order: the first
/// server on a port decides its protocol). Servers weft cannot serve are
/// skipped (validation reports them).
pub fn merge<'a>(gateways: impl IntoIterator<Item = &'a Rule<GatewaySpec>>) -> (BTreeMap<u32, Listener<'a>>, Vec<Rejected<'a>>) {
    let mut ports: BTreeMap<u32, Listener<'a>> = BTreeMap::new();
    let mut rejected = Vec::new();
    for g in gateways {
        let name = format!("{}/{}", g.key.namespace, g.key.name);
        for (i, server) in g.spec.servers.iter().enumerate() {
            let Ok(protocol) = Protocol::of(server) else { continue };
            let port = server.port.number;
            let listener = match ports.entry(port) {
                Entry::Vacant(e) => {
                    e.insert(Listener { protocol, servers: vec![(name.clone(), server)] });
                    continue;
                }
                Entry::Occupied(e) => e.into_mut(),
            };
            let first = &listener.servers[0].0;
            let conflict = if listener.protocol != protocol {
                Some(format!("port {port} already serves {} for Gateway {first}: a port serves one protocol", listener.protocol))
            } else if protocol == Protocol::Tcp {
                Some(format!("port {port} already serves opaque TCP for Gateway {first}: nothing tells two TCP servers apart"))
            } else if protocol == Protocol::Passthrough {
                let taken = listener.servers.iter().find_map(|(g, s)| server.hosts.iter().find(|h| s.hosts.contains(h)).map(|h| (g, h)));
                taken.map(|(g, h)| format!("host {h} is already passed through on port {port} for Gateway {g}"))
            } else {
                None
            };
            match conflict {
                Some(message) => rejected.push(Rejected { gateway: &g.key, server: i, message }),
                None => listener.servers.push((name.clone(), server)),
            }
        }
    }
    (ports, rejected)
}

/// Whether a `gateways` entry in a rule of `namespace` names `gateway`
/// (`None`: the sidecars, "mesh").
pub fn names_gateway(entry: &str, namespace: &str, gateway: Option<&str>) -> bool {
    match gateway {
        None => entry == "mesh",
        Some(g) => {
            let qualified = if entry.contains('/') { entry.to_string() } else { format!("{namespace}/{entry}") };
            qualified == g
        }
    }
}

/// Gateway server host `sh` (`*`, `ns/host`, `*.suffix`) admits VirtualService
/// host `h`; also whether a VirtualService host admits an SNI name.
pub fn host_matches(sh: &str, h: &str) -> bool {
    let sh = sh.split_once('/').map_or(sh, |(_, host)| host);
    sh == "*" || sh == h || sh.strip_prefix('*').is_some_and(|suffix| h.ends_with(suffix))
}

/// Whether `vs` is bound to `gateway` (`namespace/name`) and routes one
/// of `server`'s hosts.
pub fn binds(vs: &Rule<VirtualServiceSpec>, gateway: &str, server: &Server) -> bool {
    vs.spec.gateways.iter().any(|g| names_gateway(g, &vs.key.namespace, Some(gateway)))
        && vs.spec.hosts.iter().any(|h| server.hosts.iter().any(|sh| host_matches(sh, h)))
}

/// Whether an L4 match's `port` and `gateways` hold on `server` of `gateway`.
fn l4_applies(port: Option<u32>, gateways: &[String], namespace: &str, gateway: &str, server: &Server) -> bool {
    port.is_none_or(|p| p == server.port.number) && (gateways.is_empty() || gateways.iter().any(|g| names_gateway(g, namespace, Some(gateway))))
}

/// The `tcp` route of `vs` that serves `server` of `gateway`, with its
/// index: the first with destinations whose matches (any of them; none
/// means all) hold.
pub fn tcp_route<'v>(vs: &'v Rule<VirtualServiceSpec>, gateway: &str, server: &Server) -> Option<(usize, &'v TcpRoute)> {
    if !binds(vs, gateway, server) {
        return None;
    }
    let ns = &vs.key.namespace;
    vs.spec.tcp.iter().enumerate().find(|(_, t)| {
        !t.route.is_empty() && (t.match_.is_empty() || t.match_.iter().any(|m| l4_applies(m.port, &m.gateways, ns, gateway, server)))
    })
}

/// The `tls` matches of `vs` that apply on `server` of `gateway`, each
/// with its route and their indices (route, match), in order: each
/// becomes a filter chain selected by its `sniHosts`.
pub fn tls_matches<'v>(
    vs: &'v Rule<VirtualServiceSpec>,
    gateway: &'v str,
    server: &'v Server,
) -> impl Iterator<Item = ((usize, usize), &'v TlsRoute, &'v TlsMatchAttributes)> + 'v {
    let bound = binds(vs, gateway, server);
    let ns = &vs.key.namespace;
    vs.spec
        .tls
        .iter()
        .enumerate()
        .filter(move |(_, t)| bound && !t.route.is_empty())
        .flat_map(move |(i, t)| {
            t.match_
                .iter()
                .enumerate()
                .filter(move |(_, m)| l4_applies(m.port, &m.gateways, ns, gateway, server))
                .map(move |(j, m)| ((i, j), t, m))
        })
}
