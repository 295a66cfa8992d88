//! VirtualService HTTP routes → Envoy routes, as istiod writes them: one
//! Envoy route per match of each `http` entry, in order (first match
//! wins); destinations become (weighted) clusters `outbound|PORT|SUBSET|HOST`;
//! faults and CORS are per-route filter configs; Istio's defaults where a
//! field is absent (no timeout; two retries on connection failures).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use weft_crds::common::{Labels, StringMatch};
use weft_crds::networking::virtual_service::http::{CorsPolicy, HttpFaultInjection, HttpMatchRequest};
use weft_crds::networking::virtual_service::{Destination, HeaderOperations, Headers, HttpRoute};
use weft_crds::networking::VirtualServiceSpec;
use weft_envoy_api::pb::envoy::config::core::v3 as core;
use weft_envoy_api::pb::envoy::config::route::v3 as xds_route;
use weft_envoy_api::pb::envoy::extensions::filters::common::fault::v3 as common_fault;
use weft_envoy_api::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCors;
use weft_envoy_api::pb::envoy::extensions::filters::http::fault::v3 as xds_fault;
use weft_envoy_api::pb::envoy::r#type::matcher::v3 as matcher;
use weft_envoy_api::pb::google::protobuf::{Any, BoolValue, UInt32Value};

use super::cluster;
use super::envoy::{any, duration, percent, CORS, FAULT};
use crate::index::gateway::names_gateway;
use crate::index::{Index, Rule};

/// Where the routes are built: which proxy, which port, which gateway.
pub struct Scope<'a> {
    pub index: &'a Index,
    /// The proxy's workload labels (`match.sourceLabels`).
    pub labels: &'a Labels,
    /// The port the virtual host serves (`match.port`).
    pub port: u32,
    /// `namespace/name` of the gateway, or `None` on a sidecar ("mesh").
    pub gateway: Option<String>,
}

/// A destination that names no known service or port: reported by
/// validation, skipped here.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{path}: {message}")]
pub struct Unresolved {
    pub path: String,
    pub message: String,
}

/// The Envoy routes of a VirtualService. A route that delegates is
/// replaced by the delegate VirtualService's routes, each matching what
/// both match (as Istio merges them; one level deep).
pub fn routes(scope: &Scope<'_>, vs: &Rule<VirtualServiceSpec>) -> Result<Vec<xds_route::Route>, Unresolved> {
    let mut out = Vec::new();
    for (i, http) in vs.spec.http.iter().enumerate() {
        let path = format!("spec.http[{i}]");
        let Some(d) = &http.delegate else {
            emit(scope, vs, http, &path, &mut out)?;
            continue;
        };
        let namespace = d.namespace.as_deref().unwrap_or(&vs.key.namespace);
        let name = d.name.as_deref().unwrap_or_default();
        let delegate = scope
            .index
            .virtual_services
            .iter()
            .find(|r| r.key.namespace == namespace && r.key.name == name)
            .ok_or_else(|| Unresolved { path: format!("{path}.delegate"), message: format!("no VirtualService {namespace}/{name}") })?;
        for dh in delegate.spec.http.iter().filter(|dh| dh.delegate.is_none()) {
            let Some(matches) = merge_matches(&http.match_, &dh.match_) else { continue };
            let merged = HttpRoute { match_: matches, ..dh.clone() };
            emit(scope, delegate, &merged, &format!("{path}.delegate"), &mut out)?;
        }
    }
    Ok(out)
}

/// One `http` entry: a route per match that applies here.
fn emit(scope: &Scope<'_>, vs: &Rule<VirtualServiceSpec>, http: &HttpRoute, path: &str, out: &mut Vec<xds_route::Route>) -> Result<(), Unresolved> {
    let action = action(scope, vs, http, path)?;
    let matches: Vec<Option<&HttpMatchRequest>> =
        if http.match_.is_empty() { vec![None] } else { http.match_.iter().map(Some).collect() };
    for m in matches {
        if !m.is_none_or(|m| applies(scope, vs, m)) {
            continue;
        }
        let mut route = xds_route::Route {
            name: http.name.clone().unwrap_or_default(),
            r#match: Some(route_match(m)),
            action: Some(action.clone()),
            typed_per_filter_config: filters(http),
            ..Default::default()
        };
        if let Some(h) = &http.headers {
            let (add, remove) = header_ops(h.request.as_ref());
            route.request_headers_to_add = add;
            route.request_headers_to_remove = remove;
            let (add, remove) = header_ops(h.response.as_ref());
            route.response_headers_to_add = add;
            route.response_headers_to_remove = remove;
        }
        out.push(route);
    }
    Ok(())
}

/// The matches of a delegate route under its root route: every pair that
/// can both hold, merged. `None` when none can (the route never applies);
/// an empty list matches everything.
fn merge_matches(root: &[HttpMatchRequest], delegate: &[HttpMatchRequest]) -> Option<Vec<HttpMatchRequest>> {
    match (root.is_empty(), delegate.is_empty()) {
        (true, _) => Some(delegate.to_vec()),
        (false, true) => Some(root.to_vec()),
        (false, false) => {
            let merged: Vec<HttpMatchRequest> = root.iter().flat_map(|r| delegate.iter().filter_map(move |d| merge_match(r, d))).collect();
            (!merged.is_empty()).then_some(merged)
        }
    }
}

/// A delegate's match within its root's: the delegate's URI must lie
/// inside the root's; other conditions add up (the delegate's win on the
/// same header or parameter).
fn merge_match(root: &HttpMatchRequest, delegate: &HttpMatchRequest) -> Option<HttpMatchRequest> {
    let uri = match (&root.uri, &delegate.uri) {
        (None, d) => d.clone(),
        (r, None) => r.clone(),
        (Some(r), Some(d)) => {
            let inside = match (r, d) {
                (StringMatch { prefix: Some(p), .. }, StringMatch { prefix: Some(q), .. }) => q.starts_with(p.as_str()),
                (StringMatch { prefix: Some(p), .. }, StringMatch { exact: Some(e), .. }) => e.starts_with(p.as_str()),
                (StringMatch { exact: Some(e), .. }, StringMatch { exact: Some(f), .. }) => e == f,
                (StringMatch { exact: Some(_), .. }, _) => false,
                // A regex on either side cannot be checked here.
                _ => true,
            };
            if !inside {
                return None;
            }
            Some(d.clone())
        }
    };
    let union = |a: &BTreeMap<String, StringMatch>, b: &BTreeMap<String, StringMatch>| {
        let mut m = a.clone();
        m.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
        m
    };
    let mut source_labels = root.source_labels.clone();
    source_labels.extend(delegate.source_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    Some(HttpMatchRequest {
        uri,
        headers: union(&root.headers, &delegate.headers),
        without_headers: union(&root.without_headers, &delegate.without_headers),
        query_params: union(&root.query_params, &delegate.query_params),
        method: delegate.method.clone().or_else(|| root.method.clone()),
        authority: delegate.authority.clone().or_else(|| root.authority.clone()),
        scheme: delegate.scheme.clone().or_else(|| root.scheme.clone()),
        port: delegate.port.or(root.port),
        ignore_uri_case: delegate.ignore_uri_case.or(root.ignore_uri_case),
        source_labels,
        gateways: root.gateways.clone(),
        name: delegate.name.clone().or_else(|| root.name.clone()),
        ..HttpMatchRequest::default()
    })
}

/// The route a service gets without a VirtualService.
pub fn default_route(cluster: String) -> xds_route::Route {
    default_route_hashed(cluster, Vec::new())
}

/// [`default_route`] for a service whose load balancer hashes requests.
pub fn default_route_hashed(cluster: String, hash_policy: Vec<xds_route::route_action::HashPolicy>) -> xds_route::Route {
    xds_route::Route {
        name: "default".into(),
        r#match: Some(route_match(None)),
        action: Some(xds_route::route::Action::Route(xds_route::RouteAction {
            hash_policy,
            cluster_specifier: Some(xds_route::route_action::ClusterSpecifier::Cluster(cluster)),
            timeout: Some(duration(Duration::ZERO)),
            retry_policy: Some(default_retry()),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Istio's default retry policy, minus the gRPC conditions weft-proxy
/// does not implement yet.
fn default_retry() -> xds_route::RetryPolicy {
    xds_route::RetryPolicy {
        retry_on: "connect-failure,refused-stream,retriable-status-codes".into(),
        num_retries: Some(UInt32Value { value: 2 }),
        retriable_status_codes: vec![503],
        ..other_hosts()
    }
}

/// What Istio puts on every retry policy: a retry goes to another host
/// (previous_hosts predicate, up to 5 draws).
fn other_hosts() -> xds_route::RetryPolicy {
    use weft_envoy_api::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
    xds_route::RetryPolicy {
        retry_host_predicate: vec![xds_route::retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(xds_route::retry_policy::retry_host_predicate::ConfigType::TypedConfig(any(&PreviousHostsPredicate {}))),
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

/// Whether a match applies on this proxy and port at all.
fn applies(scope: &Scope<'_>, vs: &Rule<VirtualServiceSpec>, m: &HttpMatchRequest) -> bool {
    let port_ok = m.port.is_none_or(|p| p == scope.port);
    let labels_ok = m.source_labels.iter().all(|(k, v)| scope.labels.get(k) == Some(v));
    let gateways_ok = m.gateways.is_empty() || m.gateways.iter().any(|g| names_gateway(g, &vs.key.namespace, scope.gateway.as_deref()));
    port_ok && labels_ok && gateways_ok
}

fn route_match(m: Option<&HttpMatchRequest>) -> xds_route::RouteMatch {
    use xds_route::route_match::PathSpecifier;
    let Some(m) = m else {
        return xds_route::RouteMatch { path_specifier: Some(PathSpecifier::Prefix("/".into())), ..Default::default() };
    };
    let path = match &m.uri {
        Some(StringMatch { exact: Some(p), .. }) => PathSpecifier::Path(p.clone()),
        Some(StringMatch { prefix: Some(p), .. }) => PathSpecifier::Prefix(p.clone()),
        Some(StringMatch { regex: Some(r), .. }) => PathSpecifier::SafeRegex(regex(r.as_str())),
        _ => PathSpecifier::Prefix("/".into()),
    };
    let mut headers: Vec<xds_route::HeaderMatcher> = Vec::new();
    for (name, value) in [(":method", &m.method), (":authority", &m.authority), (":scheme", &m.scheme)] {
        if let Some(v) = value {
            headers.push(header(name, v, false));
        }
    }
    headers.extend(m.headers.iter().map(|(k, v)| header(k, v, false)));
    headers.extend(m.without_headers.iter().map(|(k, v)| header(k, v, true)));
    let query_parameters = m
        .query_params
        .iter()
        .map(|(name, v)| xds_route::QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(match string_matcher(v) {
                Some(sm) => xds_route::query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(sm),
                None => xds_route::query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true),
            }),
        })
        .collect();
    xds_route::RouteMatch {
        path_specifier: Some(path),
        case_sensitive: m.ignore_uri_case.filter(|i| *i).map(|_| BoolValue { value: false }),
        headers,
        query_parameters,
        ..Default::default()
    }
}

fn regex(r: &str) -> matcher::RegexMatcher {
    matcher::RegexMatcher { regex: r.to_string(), ..Default::default() }
}

/// Istio's StringMatch; an empty one (`{}`) means "present".
fn string_matcher(m: &StringMatch) -> Option<matcher::StringMatcher> {
    use matcher::string_matcher::MatchPattern;
    let pattern = match m {
        StringMatch { exact: Some(v), .. } => MatchPattern::Exact(v.clone()),
        StringMatch { prefix: Some(v), .. } => MatchPattern::Prefix(v.clone()),
        StringMatch { regex: Some(v), .. } => MatchPattern::SafeRegex(regex(v)),
        _ => return None,
    };
    Some(matcher::StringMatcher { match_pattern: Some(pattern), ignore_case: false })
}

fn header(name: &str, m: &StringMatch, invert: bool) -> xds_route::HeaderMatcher {
    use xds_route::header_matcher::HeaderMatchSpecifier;
    xds_route::HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(match string_matcher(m) {
            Some(sm) => HeaderMatchSpecifier::StringMatch(sm),
            None => HeaderMatchSpecifier::PresentMatch(true),
        }),
        invert_match: invert,
        ..Default::default()
    }
}

fn action(scope: &Scope<'_>, vs: &Rule<VirtualServiceSpec>, http: &HttpRoute, path: &str) -> Result<xds_route::route::Action, Unresolved> {
    use xds_route::route::Action;
    if let Some(r) = &http.redirect {
        use xds_route::redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier};
        let code = match r.redirect_code.unwrap_or(301) {
            302 => RedirectResponseCode::Found,
            303 => RedirectResponseCode::SeeOther,
            307 => RedirectResponseCode::TemporaryRedirect,
            308 => RedirectResponseCode::PermanentRedirect,
            _ => RedirectResponseCode::MovedPermanently,
        };
        return Ok(Action::Redirect(xds_route::RedirectAction {
            host_redirect: r.authority.clone().unwrap_or_default(),
            port_redirect: r.port.unwrap_or_default(),
            path_rewrite_specifier: r.uri.clone().map(PathRewriteSpecifier::PathRedirect),
            scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
            response_code: code as i32,
            ..Default::default()
        }));
    }
    if let Some(d) = &http.direct_response {
        let body = d.body.as_ref().and_then(|b| b.string.clone()).map(|s| core::DataSource {
            specifier: Some(core::data_source::Specifier::InlineString(s)),
            ..Default::default()
        });
        return Ok(Action::DirectResponse(xds_route::DirectResponseAction { status: d.status, body, ..Default::default() }));
    }
    use xds_route::route_action::{ClusterSpecifier, HostRewriteSpecifier};
    let mut hash_policy = Vec::new();
    let targets: Vec<(String, u32, Option<&Headers>)> = http
        .route
        .iter()
        .enumerate()
        .map(|(j, d)| {
            let (name, hash) = resolve_with_hash(scope, &vs.key.namespace, &d.destination, &format!("{path}.route[{j}].destination"))?;
            // As istiod: the first destination's consistent hash decides.
            if j == 0 {
                hash_policy = hash;
            }
            let weight = d.weight.map_or(if http.route.len() == 1 { 100 } else { 0 }, |w| w.max(0) as u32);
            Ok((name, weight, d.headers.as_ref()))
        })
        .collect::<Result<_, Unresolved>>()?;
    let clusters = match &targets[..] {
        [(name, _, None)] => ClusterSpecifier::Cluster(name.clone()),
        _ => ClusterSpecifier::WeightedClusters(xds_route::WeightedCluster {
            clusters: targets
                .iter()
                .filter(|(_, w, _)| *w > 0)
                .map(|(name, weight, headers)| {
                    let (request_headers_to_add, request_headers_to_remove) = header_ops(headers.and_then(|h| h.request.as_ref()));
                    let (response_headers_to_add, response_headers_to_remove) = header_ops(headers.and_then(|h| h.response.as_ref()));
                    xds_route::weighted_cluster::ClusterWeight {
                        name: name.clone(),
                        weight: Some(UInt32Value { value: *weight }),
                        request_headers_to_add,
                        request_headers_to_remove,
                        response_headers_to_add,
                        response_headers_to_remove,
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        }),
    };
    let mut ra = xds_route::RouteAction {
        hash_policy,
        cluster_specifier: Some(clusters),
        timeout: Some(duration(http.timeout.as_ref().map_or(Duration::ZERO, |t| t.0))),
        retry_policy: Some(match &http.retries {
            Some(r) if r.attempts == Some(0) => xds_route::RetryPolicy::default(),
            Some(r) => xds_route::RetryPolicy {
                retry_on: r.retry_on.clone().unwrap_or_else(|| default_retry().retry_on),
                num_retries: Some(UInt32Value { value: r.attempts.unwrap_or(2).max(0) as u32 }),
                per_try_timeout: r.per_try_timeout.as_ref().map(|d| duration(d.0)),
                retriable_status_codes: if r.retry_on.is_none() { vec![503] } else { Vec::new() },
                ..other_hosts()
            },
            None => default_retry(),
        }),
        ..Default::default()
    };
    if let Some(rw) = &http.rewrite {
        if let Some(uri) = &rw.uri {
            ra.prefix_rewrite = uri.clone();
        }
        if let Some(authority) = &rw.authority {
            ra.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(authority.clone()));
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            ra.regex_rewrite = Some(matcher::RegexMatchAndSubstitute {
                pattern: Some(regex(rr.match_.as_deref().unwrap_or_default())),
                substitution: rr.rewrite.clone().unwrap_or_default(),
            });
        }
    }
    let mirrors = http.mirror.iter().map(|d| (d, http.mirror_percentage.as_ref().map(|p| p.value)));
    let more = http.mirrors.iter().map(|m| (&m.destination, m.percentage.as_ref().map(|p| p.value)));
    for (j, (dest, share)) in mirrors.chain(more).enumerate() {
        let name = resolve(scope, &vs.key.namespace, dest, &format!("{path}.mirror[{j}]"))?;
        ra.request_mirror_policies.push(xds_route::route_action::RequestMirrorPolicy {
            cluster: name,
            runtime_fraction: Some(core::RuntimeFractionalPercent {
                default_value: Some(percent(share.unwrap_or(100.0))),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Ok(Action::Route(ra))
}

/// `outbound|PORT|SUBSET|HOST` for a destination of a rule in `namespace`.
pub(super) fn resolve(scope: &Scope<'_>, namespace: &str, d: &Destination, path: &str) -> Result<String, Unresolved> {
    resolve_with_hash(scope, namespace, d, path).map(|(name, _)| name)
}

/// [`resolve`], and the hash policy the destination's load balancer needs.
fn resolve_with_hash(
    scope: &Scope<'_>,
    namespace: &str,
    d: &Destination,
    path: &str,
) -> Result<(String, Vec<xds_route::route_action::HashPolicy>), Unresolved> {
    let unresolved = |message: String| Unresolved { path: path.to_string(), message };
    let service = scope
        .index
        .service(&d.host, namespace)
        .ok_or_else(|| unresolved(format!("host \"{}\" is not a service of the mesh", d.host)))?;
    let port = match (d.port.as_ref().and_then(|p| p.number), &service.ports[..]) {
        (Some(n), _) => service.port(n).map(|p| p.number).ok_or_else(|| unresolved(format!("service \"{}\" has no port {n}", service.host)))?,
        (None, [only]) => only.number,
        (None, _) => return Err(unresolved(format!("service \"{}\" has several ports: set port.number", service.host))),
    };
    let subset = d.subset.as_deref().unwrap_or_default();
    let hash = cluster::hash_policy(cluster::policy(scope.index, service, port, subset).as_ref());
    Ok((cluster::name(port, subset, &service.host), hash))
}

fn header_ops(ops: Option<&HeaderOperations>) -> (Vec<core::HeaderValueOption>, Vec<String>) {
    use core::header_value_option::HeaderAppendAction;
    let Some(ops) = ops else { return (Vec::new(), Vec::new()) };
    let option = |(k, v): (&String, &String), action: HeaderAppendAction| core::HeaderValueOption {
        header: Some(core::HeaderValue { key: k.clone(), value: v.clone(), ..Default::default() }),
        append_action: action as i32,
        ..Default::default()
    };
    let add = ops
        .set
        .iter()
        .map(|h| option(h, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .chain(ops.add.iter().map(|h| option(h, HeaderAppendAction::AppendIfExistsOrAdd)))
        .collect();
    (add, ops.remove.clone())
}

/// Per-route filter configs: fault injection and CORS.
fn filters(http: &HttpRoute) -> HashMap<String, Any> {
    let mut out = HashMap::new();
    if let Some(f) = &http.fault {
        out.insert(FAULT.to_string(), any(&fault(f)));
    }
    if let Some(c) = &http.cors_policy {
        out.insert(CORS.to_string(), any(&cors(c)));
    }
    out
}

fn fault(f: &HttpFaultInjection) -> xds_fault::HttpFault {
    let delay = f.delay.as_ref().map(|d| common_fault::FaultDelay {
        fault_delay_secifier: d
            .fixed_delay
            .as_ref()
            .map(|fd| common_fault::fault_delay::FaultDelaySecifier::FixedDelay(duration(fd.0))),
        percentage: Some(percent(d.percentage.as_ref().map_or_else(|| d.percent.unwrap_or(100) as f64, |p| p.value))),
    });
    let abort = f.abort.as_ref().map(|a| xds_fault::FaultAbort {
        error_type: a.http_status.map(|s| xds_fault::fault_abort::ErrorType::HttpStatus(s.max(0) as u32)),
        percentage: Some(percent(a.percentage.as_ref().map_or(100.0, |p| p.value))),
        ..Default::default()
    });
    xds_fault::HttpFault { delay, abort, ..Default::default() }
}

fn cors(c: &CorsPolicy) -> EnvoyCors {
    let exact = |s: &String| matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(s.clone())),
        ignore_case: false,
    };
    EnvoyCors {
        allow_origin_string_match: c.allow_origins.iter().filter_map(string_matcher).chain(c.allow_origin.iter().map(exact)).collect(),
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c.max_age.as_ref().map(|d| d.0.as_secs().to_string()).unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        ..Default::default()
    }
}
