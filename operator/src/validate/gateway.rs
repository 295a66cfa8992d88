//! Gateway servers and the VirtualService `tcp` and `tls` routes bound to
//! them: servers weft cannot serve, servers that cannot share a port,
//! route values and destinations, and routes that claim what an earlier
//! one already has (a TCP port, an SNI host on a port). "Earlier" is the
//! order translation uses (namespace/name), so what is reported is what
//! translation would have left out.

use std::collections::BTreeMap;

use weft_crds::common::Labels;
use weft_crds::networking::destination_rule::TrafficPolicy;
use weft_crds::networking::virtual_service::{Destination, RouteDestination};
use weft_crds::networking::{GatewaySpec, VirtualServiceSpec};
use weft_crds::status::{Level, Problem};

use super::{check_destination, check_weights, finding, Finding};
use crate::index::gateway::{self, host_matches, Protocol};
use crate::index::{Index, Key};

/// Each server weft cannot serve, with the field at fault.
pub(super) fn servers(key: &Key, spec: &GatewaySpec, findings: &mut Vec<Finding>) {
    for (i, server) in spec.servers.iter().enumerate() {
        if let Err(e) = Protocol::of(server) {
            let problem = if e.unsupported() { Problem::UnsupportedField } else { Problem::InvalidValue };
            findings.push(finding(key, Level::Error, problem, &format!("spec.servers[{i}].{}", e.path()), &e.to_string()));
        }
    }
}

/// A VirtualService's `tcp` and `tls` routes: values and destinations.
pub(super) fn routes(index: &Index, key: &Key, spec: &VirtualServiceSpec, findings: &mut Vec<Finding>) {
    let mut report = |problem, path: String, message: &str| findings.push(finding(key, Level::Error, problem, &path, message));
    // Sidecars get no TCP or TLS listeners from weft yet.
    let tcp_mesh = spec.tcp.iter().flat_map(|t| &t.match_).any(|m| m.gateways.iter().any(|g| g == "mesh"));
    let tls_mesh = spec.tls.iter().flat_map(|t| &t.match_).any(|m| m.gateways.iter().any(|g| g == "mesh"));
    for (field, present, mesh) in [("tcp", !spec.tcp.is_empty(), tcp_mesh), ("tls", !spec.tls.is_empty(), tls_mesh)] {
        if present && (crate::index::binds_mesh(&spec.gateways) || mesh) {
            let message = format!("{field} routes are supported on gateways only by weft yet (sidecars get no {} listeners): bind the VirtualService to a Gateway", field.to_uppercase());
            report(Problem::UnsupportedField, format!("spec.{field}"), &message);
        }
    }
    for (i, tls) in spec.tls.iter().enumerate() {
        if tls.match_.is_empty() {
            report(Problem::InvalidValue, format!("spec.tls[{i}].match"), "at least one match, with sniHosts, is required");
        }
        for (j, m) in tls.match_.iter().enumerate() {
            let path = format!("spec.tls[{i}].match[{j}].sniHosts");
            if m.sni_hosts.is_empty() {
                report(Problem::InvalidValue, path.clone(), "at least one SNI host is required");
            }
            for sni in m.sni_hosts.iter().filter(|sni| !spec.hosts.iter().any(|h| host_matches(h, sni))) {
                report(Problem::InvalidValue, path.clone(), &format!("SNI host {sni} is not within the VirtualService's hosts [{}]", spec.hosts.join(", ")));
            }
        }
    }
    let tcp = spec.tcp.iter().enumerate().map(|(i, t)| (format!("spec.tcp[{i}].route"), &t.route));
    let tls = spec.tls.iter().enumerate().map(|(i, t)| (format!("spec.tls[{i}].route"), &t.route));
    for (path, route) in tcp.chain(tls) {
        if route.is_empty() {
            findings.push(finding(key, Level::Error, Problem::InvalidValue, &path, "at least one destination is required"));
        }
        check_weights(key, &route.iter().map(|d: &RouteDestination| d.weight).collect::<Vec<_>>(), &path, findings);
        for (j, d) in route.iter().enumerate() {
            let dpath = format!("{path}[{j}].destination");
            check_destination(index, key, &d.destination, &dpath, findings);
            if hashes_source_ip(index, &key.namespace, &d.destination) {
                let message = "its DestinationRule hashes on the source IP, which istiod applies to TCP connections too; weft does not yet (connections are balanced without a hash)";
                findings.push(finding(key, Level::Warning, Problem::UnsupportedField, &dpath, message));
            }
        }
    }
}

/// Whether the DestinationRule of `d`'s service hashes on the source IP
/// for `d`'s subset, as istiod reads it for `tcp_proxy` (the rule's
/// policy, unless the subset has a load balancer of its own).
fn hashes_source_ip(index: &Index, namespace: &str, d: &Destination) -> bool {
    let Some(rule) = index.service(&d.host, namespace).and_then(|s| index.destination_rule(s)) else { return false };
    let lb = |p: Option<&TrafficPolicy>| p.and_then(|p| p.load_balancer.as_ref()).map(|lb| lb.consistent_hash.as_ref().and_then(|c| c.use_source_ip) == Some(true));
    let subset = rule.spec.subsets.iter().find(|s| Some(&s.name) == d.subset.as_ref());
    lb(subset.and_then(|s| s.traffic_policy.as_ref())).or_else(|| lb(rule.spec.traffic_policy.as_ref())).unwrap_or(false)
}

/// Servers whose port is taken, among Gateways that select the same
/// proxies (the same selector); TCP ports and SNI hosts that a route
/// claims after an earlier one.
pub(super) fn conflicts(index: &Index, findings: &mut Vec<Finding>) {
    let mut by_selector: BTreeMap<&Labels, Vec<_>> = BTreeMap::new();
    for g in index.gateways.iter() {
        by_selector.entry(&g.spec.selector).or_default().push(g);
    }
    for gateways in by_selector.into_values() {
        let (ports, rejected) = gateway::merge(gateways);
        for r in rejected {
            findings.push(finding(r.gateway, Level::Error, Problem::Conflict, &format!("spec.servers[{}].port.number", r.server), &r.message));
        }
        for (port, listener) in ports {
            // What serves the port (TCP) or each SNI name (TLS): the VirtualService, the route and match.
            let mut owners: BTreeMap<&str, (&Key, (usize, usize))> = BTreeMap::new();
            for (gw, server) in &listener.servers {
                for vs in index.virtual_services.iter() {
                    let claims: Vec<((usize, usize), Vec<&str>, String)> = match listener.protocol {
                        Protocol::Http => Vec::new(),
                        Protocol::Tcp => {
                            gateway::tcp_route(vs, gw, server).map(|(i, _)| ((i, 0), vec![""], format!("spec.tcp[{i}]"))).into_iter().collect()
                        }
                        Protocol::Passthrough => gateway::tls_matches(vs, gw, server)
                            .map(|((i, j), _, m)| ((i, j), m.sni_hosts.iter().map(String::as_str).collect(), format!("spec.tls[{i}].match[{j}].sniHosts")))
                            .collect(),
                    };
                    for (at, names, path) in claims {
                        for name in names {
                            match owners.get(name) {
                                None => {
                                    owners.insert(name, (&vs.key, at));
                                }
                                Some(owner) if *owner == (&vs.key, at) => {}
                                Some((owner, _)) => {
                                    let what = if name.is_empty() { "TCP".to_string() } else { format!("SNI host {name}") };
                                    let message = format!("{what} on port {port} of Gateway {gw} is already routed by {owner}");
                                    let f = finding(&vs.key, Level::Error, Problem::Conflict, &path, &message);
                                    if !findings.contains(&f) {
                                        findings.push(f);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
