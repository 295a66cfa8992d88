//! Route tables: virtual host selection, route matching and route actions.
//!
//! Selection follows Envoy: a virtual host by `domains` (exact, then the
//! longest `*suffix`, then the longest `prefix*`, then `*`), then the first
//! route whose match accepts the request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use weft_envoy_api::pb::envoy::config::route::v3 as xds_route;

use super::cluster::Cluster;
use crate::filter::PerRoute;
use super::hash_policy::HashPolicy;
use super::header::HeaderMutations;
use super::matcher::{regex, HeaderMatcher, QueryMatcher};
use super::{duration, ConfigError, Fraction, Result};

#[derive(Debug)]
pub struct RouteTable {
    pub name: String,
    exact: HashMap<String, usize>,
    suffixes: Vec<(String, usize)>, // longest first
    prefixes: Vec<(String, usize)>, // longest first
    any: Option<usize>,
    pub vhosts: Vec<VirtualHost>,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub routes: Vec<Route>,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
    pub per_filter: PerFilter,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: Action,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
    pub per_filter: PerFilter,
}

/// `typed_per_filter_config`: filter overrides keyed by filter name.
#[derive(Debug, Default)]
pub struct PerFilter(Vec<(String, PerRoute)>);

impl PerFilter {
    fn compile(map: &HashMap<String, weft_envoy_api::pb::google::protobuf::Any>, path: &str) -> Result<Self> {
        let mut names: Vec<&String> = map.keys().collect();
        names.sort(); // stable error order
        let mut out = Vec::new();
        for name in names {
            let p = format!("{path}.typed_per_filter_config[\"{name}\"]");
            out.push((name.clone(), PerRoute::compile(&map[name], &p)?));
        }
        Ok(PerFilter(out))
    }

    pub fn get(&self, filter: &str) -> Option<&PerRoute> {
        self.0.iter().find(|(n, _)| n == filter).map(|(_, p)| p)
    }
}

#[derive(Debug)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
    SeparatedPrefix(String),
}

#[derive(Debug)]
pub struct RouteMatch {
    path: PathMatch,
    case_sensitive: bool,
    headers: Vec<HeaderMatcher>,
    query: Vec<QueryMatcher>,
}

#[derive(Debug)]
pub enum Action {
    Forward(Forward),
    Redirect(Redirect),
    Direct { status: u16, body: bytes::Bytes },
}

/// A weighted target of a route (a single `cluster` is one target of weight 1).
#[derive(Debug)]
pub struct Target {
    pub cluster: Arc<Cluster>,
    pub weight: u64,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
}

#[derive(Debug)]
pub struct Forward {
    pub targets: Vec<Target>,
    pub total_weight: u64,
    /// `None` disables the timeout (Envoy's `timeout: 0s`).
    pub timeout: Option<Duration>,
    /// The route's `idle_timeout`: `None` when unset (the connection
    /// manager's applies), `Some(None)` when disabled (`0s`).
    pub idle_timeout: Option<Option<Duration>>,
    pub retry: Option<Arc<RetryPolicy>>,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<(Regex, String)>,
    pub host_rewrite: Option<http::HeaderValue>,
    /// The route's mirrors, else its virtual host's, else its route
    /// configuration's (the most specific non-empty list, as Envoy).
    pub mirrors: Arc<[Mirror]>,
    /// Hashes the request for RING_HASH / MAGLEV clusters.
    pub hash_policy: Option<HashPolicy>,
    /// Host becomes the chosen host's name (DNS name or endpoint hostname).
    pub auto_host_rewrite: bool,
    /// `upgrade_configs`: overrides the connection manager's.
    pub upgrades: super::upgrade::Upgrades,
}

/// `request_mirror_policies[]`: a fire-and-forget copy of the request.
#[derive(Debug)]
pub struct Mirror {
    pub cluster: Arc<Cluster>,
    /// Share of requests mirrored.
    pub fraction: Fraction,
    /// Append `-shadow` to the host, as Envoy does unless disabled.
    pub shadow_suffix: bool,
}

impl Mirror {
    /// A `request_mirror_policies` list at `path`.
    fn compile_all(
        policies: &[xds_route::route_action::RequestMirrorPolicy],
        path: &str,
        clusters: &ClusterLookup<'_>,
    ) -> Result<Arc<[Mirror]>> {
        policies
            .iter()
            .enumerate()
            .map(|(i, m)| Mirror::compile(m, &format!("{path}.request_mirror_policies[{i}]"), clusters))
            .collect()
    }

    fn compile(
        m: &xds_route::route_action::RequestMirrorPolicy,
        path: &str,
        clusters: &ClusterLookup<'_>,
    ) -> Result<Self> {
        let cluster = clusters.get(&m.cluster, format!("{path}.cluster"))?;
        // Without a runtime layer a runtime_key always falls back to the
        // default, as it does in an Envoy with no runtime configured.
        let fraction = Fraction::compile(
            m.runtime_fraction.as_ref().and_then(|f| f.default_value.as_ref()),
            &format!("{path}.runtime_fraction.default_value"),
            Fraction::ALWAYS,
        )?;
        Ok(Mirror { cluster, fraction, shadow_suffix: !m.disable_shadow_host_suffix_append })
    }

    /// Whether this request is mirrored.
    pub fn sampled(&self) -> bool {
        self.fraction.roll()
    }
}

#[derive(Debug)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u32>,
    pub path: Option<String>,
    /// Replaces the matched prefix in the redirect's path.
    pub prefix_rewrite: Option<String>,
    pub status: u16,
    pub strip_query: bool,
}

/// Which failures a retry policy retries (`retry_on`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub five_xx: bool,
    pub gateway_error: bool,
    pub connect_failure: bool,
    pub reset: bool,
    pub retriable_4xx: bool,
    pub refused_stream: bool,
    pub retriable_status_codes: bool,
}

impl RetryOn {
    /// Parses Envoy's comma-separated `retry_on`; unknown tokens are errors.
    pub fn parse(spec: &str) -> std::result::Result<Self, String> {
        let mut on = RetryOn::default();
        for token in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match token {
                "5xx" => on.five_xx = true,
                "gateway-error" => on.gateway_error = true,
                "connect-failure" => on.connect_failure = true,
                "reset" => on.reset = true,
                "retriable-4xx" => on.retriable_4xx = true,
                "refused-stream" => on.refused_stream = true,
                "retriable-status-codes" => on.retriable_status_codes = true,
                other => {
                    return Err(format!(
                        "retry condition \"{other}\" is not supported by weft-proxy"
                    ))
                }
            }
        }
        Ok(on)
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub on: RetryOn,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub status_codes: Vec<u16>,
    pub base_interval: Duration,
    pub max_interval: Duration,
    /// `retry_host_predicate` previous_hosts: a retry avoids the hosts
    /// already tried, drawing up to `host_selection_attempts` times.
    pub avoid_previous_hosts: bool,
    /// `host_selection_retry_max_attempts` (Envoy's default: 1).
    pub host_selection_attempts: u32,
}

/// The retry host predicate weft-proxy implements.
const PREVIOUS_HOSTS: &str = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

impl RetryPolicy {
    pub fn compile(p: &xds_route::RetryPolicy, path: &str) -> Result<Self> {
        let on = RetryOn::parse(&p.retry_on)
            .map_err(|e| ConfigError::new(format!("{path}.retry_on"), e))?;
        let base = p
            .retry_back_off
            .as_ref()
            .and_then(|b| b.base_interval.as_ref())
            .map(duration)
            .unwrap_or(Duration::from_millis(25));
        let max = p
            .retry_back_off
            .as_ref()
            .and_then(|b| b.max_interval.as_ref())
            .map(duration)
            .unwrap_or(base * 10);
        if base.is_zero() {
            return Err(ConfigError::new(
                format!("{path}.retry_back_off.base_interval"),
                "must be greater than 0",
            ));
        }
        if max < base {
            return Err(ConfigError::new(
                format!("{path}.retry_back_off.max_interval"),
                "must be at least base_interval",
            ));
        }
        let mut status_codes = Vec::new();
        for (i, code) in p.retriable_status_codes.iter().enumerate() {
            match u16::try_from(*code) {
                Ok(c) if (100..600).contains(&c) => status_codes.push(c),
                _ => {
                    return Err(ConfigError::new(
                        format!("{path}.retriable_status_codes[{i}]"),
                        format!("{code} is not an HTTP status"),
                    ))
                }
            }
        }
        let mut avoid_previous_hosts = false;
        for (i, predicate) in p.retry_host_predicate.iter().enumerate() {
            use xds_route::retry_policy::retry_host_predicate::ConfigType;
            let type_name = match &predicate.config_type {
                Some(ConfigType::TypedConfig(any)) => weft_envoy_api::type_name(&any.type_url),
                None => "",
            };
            if type_name != PREVIOUS_HOSTS {
                return Err(ConfigError::new(
                    format!("{path}.retry_host_predicate[{i}].typed_config"),
                    format!("retry host predicate {type_name:?} is not supported by weft-proxy (previous_hosts is)"),
                ));
            }
            avoid_previous_hosts = true;
        }
        Ok(RetryPolicy {
            avoid_previous_hosts,
            host_selection_attempts: p.host_selection_retry_max_attempts.max(1) as u32,
            on,
            num_retries: p.num_retries.as_ref().map(|n| n.value).unwrap_or(1),
            per_try_timeout: p
                .per_try_timeout
                .as_ref()
                .map(duration)
                .filter(|d| !d.is_zero()),
            status_codes,
            base_interval: base,
            max_interval: max,
        })
    }

    /// Whether a response status is retriable under this policy.
    pub fn retries_status(&self, status: u16) -> bool {
        (self.on.five_xx && status >= 500)
            || (self.on.gateway_error && matches!(status, 502..=504))
            || (self.on.retriable_4xx && status == 409)
            || (self.on.retriable_status_codes && self.status_codes.contains(&status))
    }
}

/// How a route config finds the clusters it names.
pub struct ClusterLookup<'a> {
    known: &'a HashMap<String, Arc<Cluster>>,
    /// Envoy's `validate_clusters`: an unknown name is a config error (the
    /// default for an inline route_config) or a 503 at request time (RDS).
    validate: bool,
}

impl ClusterLookup<'_> {
    fn get(&self, name: &str, path: String) -> Result<Arc<Cluster>> {
        match self.known.get(name) {
            Some(c) => Ok(c.clone()),
            None if !self.validate => Ok(Arc::new(Cluster::not_found(name))),
            None => Err(ConfigError::new(path, format!("unknown cluster \"{name}\""))),
        }
    }
}

/// What the levels above a route give it when it sets none of its own:
/// its virtual host's retry policy, and the most specific non-empty list
/// of mirrors (virtual host, else route configuration).
#[derive(Clone, Copy)]
struct Defaults<'a> {
    retry: Option<&'a Arc<RetryPolicy>>,
    mirrors: &'a Arc<[Mirror]>,
}

impl RouteTable {
    /// `validate_clusters` is Envoy's default for where the config comes
    /// from (inline: true, RDS: false); the config's own field wins.
    pub fn compile(
        rc: &xds_route::RouteConfiguration,
        path: &str,
        clusters: &HashMap<String, Arc<Cluster>>,
        validate_clusters: bool,
    ) -> Result<Self> {
        let clusters = &ClusterLookup {
            known: clusters,
            validate: rc.validate_clusters.as_ref().map_or(validate_clusters, |b| b.value),
        };
        let mirrors = Mirror::compile_all(&rc.request_mirror_policies, path, clusters)?;
        let mut table = RouteTable {
            name: rc.name.clone(),
            exact: HashMap::new(),
            suffixes: Vec::new(),
            prefixes: Vec::new(),
            any: None,
            vhosts: Vec::new(),
            request_headers: HeaderMutations::compile(
                &rc.request_headers_to_add,
                &rc.request_headers_to_remove,
                path,
                "request",
            )?,
            response_headers: HeaderMutations::compile(
                &rc.response_headers_to_add,
                &rc.response_headers_to_remove,
                path,
                "response",
            )?,
        };
        for (i, vh) in rc.virtual_hosts.iter().enumerate() {
            let vpath = format!("{path}.virtual_hosts[{i}]");
            if vh.domains.is_empty() {
                return Err(ConfigError::new(
                    format!("{vpath}.domains"),
                    "at least one domain is required",
                ));
            }
            for (j, d) in vh.domains.iter().enumerate() {
                let dpath = format!("{vpath}.domains[{j}]");
                let d = d.to_ascii_lowercase();
                let slot = if d == "*" {
                    if table.any.replace(i).is_some() {
                        return Err(dup_domain(&dpath, &d));
                    }
                    continue;
                } else if let Some(suffix) = d.strip_prefix('*') {
                    (&mut table.suffixes, suffix.to_string())
                } else if let Some(prefix) = d.strip_suffix('*') {
                    (&mut table.prefixes, prefix.to_string())
                } else {
                    if d.contains('*') {
                        return Err(ConfigError::new(
                            dpath,
                            format!("wildcard in the middle of \"{d}\""),
                        ));
                    }
                    if table.exact.insert(d.clone(), i).is_some() {
                        return Err(dup_domain(&dpath, &d));
                    }
                    continue;
                };
                if slot.0.iter().any(|(s, _)| *s == slot.1) {
                    return Err(dup_domain(&dpath, &d));
                }
                slot.0.push((slot.1, i));
            }
            table
                .vhosts
                .push(VirtualHost::compile(vh, &vpath, clusters, &mirrors)?);
        }
        table.suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        table.prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Ok(table)
    }

    /// The virtual host for a request's `:authority`/`Host`.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        // Most clients send the host in lowercase already: no copy then.
        let host: std::borrow::Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            host.to_ascii_lowercase().into()
        } else {
            host.into()
        };
        let index = self
            .exact
            .get(host.as_ref())
            .copied()
            // Envoy requires a wildcard to cover at least one character.
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(self.any)?;
        self.vhosts.get(index)
    }
}

fn dup_domain(path: &str, d: &str) -> ConfigError {
    ConfigError::new(
        path,
        format!("domain \"{d}\" is used by more than one virtual host"),
    )
}

impl VirtualHost {
    fn compile(
        vh: &xds_route::VirtualHost,
        path: &str,
        clusters: &ClusterLookup<'_>,
        table_mirrors: &Arc<[Mirror]>,
    ) -> Result<Self> {
        let retry = match &vh.retry_policy {
            Some(p) => Some(Arc::new(RetryPolicy::compile(
                p,
                &format!("{path}.retry_policy"),
            )?)),
            None => None,
        };
        let mut mirrors = Mirror::compile_all(&vh.request_mirror_policies, path, clusters)?;
        if mirrors.is_empty() {
            mirrors = table_mirrors.clone();
        }
        let defaults = Defaults { retry: retry.as_ref(), mirrors: &mirrors };
        let mut routes = Vec::new();
        for (i, r) in vh.routes.iter().enumerate() {
            routes.push(Route::compile(
                r,
                &format!("{path}.routes[{i}]"),
                clusters,
                defaults,
            )?);
        }
        Ok(VirtualHost {
            name: vh.name.clone(),
            routes,
            request_headers: HeaderMutations::compile(
                &vh.request_headers_to_add,
                &vh.request_headers_to_remove,
                path,
                "request",
            )?,
            response_headers: HeaderMutations::compile(
                &vh.response_headers_to_add,
                &vh.response_headers_to_remove,
                path,
                "response",
            )?,
            per_filter: PerFilter::compile(&vh.typed_per_filter_config, path)?,
        })
    }

    /// The first route that matches.
    pub fn route(&self, path: &str, headers: &http::HeaderMap) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.matcher.matches(path, headers))
    }
}

impl Route {
    fn compile(
        r: &xds_route::Route,
        path: &str,
        clusters: &ClusterLookup<'_>,
        defaults: Defaults<'_>,
    ) -> Result<Self> {
        use xds_route::route::Action as A;
        let Some(m) = &r.r#match else {
            return Err(ConfigError::new(
                format!("{path}.match"),
                "match is required",
            ));
        };
        let matcher = RouteMatch::compile(m, &format!("{path}.match"))?;
        if let (Some(A::Route(ra)), PathMatch::Regex(_)) = (&r.action, &matcher.path) {
            if !ra.prefix_rewrite.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.route.prefix_rewrite"),
                    "prefix_rewrite needs a prefix or path match",
                ));
            }
        }
        let action = match &r.action {
            Some(A::Route(ra)) => Action::Forward(Forward::compile(
                ra,
                &format!("{path}.route"),
                clusters,
                defaults,
            )?),
            Some(A::Redirect(rd)) => {
                Action::Redirect(Redirect::compile(rd, &format!("{path}.redirect"))?)
            }
            Some(A::DirectResponse(d)) => {
                let p = format!("{path}.direct_response");
                if !(200..600).contains(&d.status) {
                    return Err(ConfigError::new(
                        format!("{p}.status"),
                        format!("{} is not in [200, 600)", d.status),
                    ));
                }
                let body = match &d.body {
                    Some(ds) => super::listener::data_source(ds, &format!("{p}.body"))?,
                    None => bytes::Bytes::new(),
                };
                Action::Direct {
                    status: d.status as u16,
                    body,
                }
            }
            Some(_) => {
                return Err(ConfigError::new(
                    path,
                    "this route action is not supported by weft-proxy",
                ))
            }
            None => {
                return Err(ConfigError::new(
                    path,
                    "one of route, redirect or direct_response is required",
                ))
            }
        };
        Ok(Route {
            name: r.name.clone(),
            matcher,
            action,
            request_headers: HeaderMutations::compile(
                &r.request_headers_to_add,
                &r.request_headers_to_remove,
                path,
                "request",
            )?,
            response_headers: HeaderMutations::compile(
                &r.response_headers_to_add,
                &r.response_headers_to_remove,
                path,
                "response",
            )?,
            per_filter: PerFilter::compile(&r.typed_per_filter_config, path)?,
        })
    }
}

impl RouteMatch {
    fn compile(m: &xds_route::RouteMatch, path: &str) -> Result<Self> {
        use xds_route::route_match::PathSpecifier as P;
        let case_sensitive = m.case_sensitive.as_ref().map(|b| b.value).unwrap_or(true);
        let fold = |s: &String| {
            if case_sensitive {
                s.clone()
            } else {
                s.to_ascii_lowercase()
            }
        };
        let path_match = match &m.path_specifier {
            Some(P::Prefix(p)) => PathMatch::Prefix(fold(p)),
            Some(P::Path(p)) => PathMatch::Exact(fold(p)),
            Some(P::SafeRegex(r)) => PathMatch::Regex(regex(r, &format!("{path}.safe_regex"))?),
            Some(P::PathSeparatedPrefix(p)) => {
                if p.contains(['?', '#']) || (p.ends_with('/') && p.len() > 1) {
                    return Err(ConfigError::new(
                        format!("{path}.path_separated_prefix"),
                        format!("\"{p}\" must not contain ?/# or end with /"),
                    ));
                }
                PathMatch::SeparatedPrefix(fold(p))
            }
            Some(_) => {
                return Err(ConfigError::new(
                    path,
                    "this path specifier is not supported by weft-proxy",
                ))
            }
            None => {
                return Err(ConfigError::new(
                    path,
                    "a path specifier (prefix, path, safe_regex, ...) is required",
                ))
            }
        };
        let headers = m
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| HeaderMatcher::compile(h, &format!("{path}.headers[{i}]")))
            .collect::<Result<_>>()?;
        let query = m
            .query_parameters
            .iter()
            .enumerate()
            .map(|(i, q)| QueryMatcher::compile(q, &format!("{path}.query_parameters[{i}]")))
            .collect::<Result<_>>()?;
        Ok(RouteMatch {
            path: path_match,
            case_sensitive,
            headers,
            query,
        })
    }

    /// Replaces the matched part of the path with `new` (`prefix_rewrite`);
    /// an exact `path` match replaces the whole path, keeping the query.
    pub fn rewrite_prefix(&self, full_path: &str, new: &str) -> String {
        let (path_only, query) = full_path
            .split_once('?')
            .map_or((full_path, None), |(p, q)| (p, Some(q)));
        let rest = match &self.path {
            PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) => {
                path_only.get(p.len()..).unwrap_or("")
            }
            PathMatch::Exact(_) | PathMatch::Regex(_) => "",
        };
        match query {
            Some(q) => format!("{new}{rest}?{q}"),
            None => format!("{new}{rest}"),
        }
    }

    /// `full_path` is the request's `:path` including any query string.
    pub fn matches(&self, full_path: &str, headers: &http::HeaderMap) -> bool {
        let (path_only, query) = full_path.split_once('?').unwrap_or((full_path, ""));
        // Compared in place (this runs for every route tried): a
        // case-insensitive pattern was lowercased when compiled.
        let starts = |s: &str, p: &str| {
            s.len() >= p.len() && {
                let head = &s.as_bytes()[..p.len()];
                if self.case_sensitive {
                    head == p.as_bytes()
                } else {
                    head.eq_ignore_ascii_case(p.as_bytes())
                }
            }
        };
        let path_ok = match &self.path {
            // Envoy matches `prefix` against the whole :path, query included.
            PathMatch::Prefix(p) => starts(full_path, p),
            PathMatch::Exact(p) => path_only.len() == p.len() && starts(path_only, p),
            PathMatch::Regex(r) => r.is_match(path_only),
            PathMatch::SeparatedPrefix(p) => {
                starts(path_only, p) && matches!(path_only.as_bytes().get(p.len()), None | Some(b'/'))
            }
        };
        path_ok
            && self.headers.iter().all(|h| h.matches(headers))
            && self.query.iter().all(|q| q.matches(query))
    }
}

impl Forward {
    fn compile(
        ra: &xds_route::RouteAction,
        path: &str,
        clusters: &ClusterLookup<'_>,
        defaults: Defaults<'_>,
    ) -> Result<Self> {
        use xds_route::route_action::{ClusterSpecifier as C, HostRewriteSpecifier as H};
        let lookup = |name: &str, p: String| clusters.get(name, p);
        let (targets, total_weight) = match &ra.cluster_specifier {
            Some(C::Cluster(name)) => (
                vec![Target {
                    cluster: lookup(name, format!("{path}.cluster"))?,
                    weight: 1,
                    request_headers: HeaderMutations::default(),
                    response_headers: HeaderMutations::default(),
                }],
                1,
            ),
            Some(C::WeightedClusters(wc)) => {
                let wpath = format!("{path}.weighted_clusters");
                let mut targets = Vec::new();
                let mut sum = 0u64;
                for (i, cw) in wc.clusters.iter().enumerate() {
                    let cpath = format!("{wpath}.clusters[{i}]");
                    let weight = cw.weight.as_ref().map(|w| w.value as u64).unwrap_or(0);
                    sum += weight;
                    targets.push(Target {
                        cluster: lookup(&cw.name, format!("{cpath}.name"))?,
                        weight,
                        request_headers: HeaderMutations::compile(
                            &cw.request_headers_to_add,
                            &cw.request_headers_to_remove,
                            &cpath,
                            "request",
                        )?,
                        response_headers: HeaderMutations::compile(
                            &cw.response_headers_to_add,
                            &cw.response_headers_to_remove,
                            &cpath,
                            "response",
                        )?,
                    });
                }
                #[allow(deprecated)]
                let total = wc
                    .total_weight
                    .as_ref()
                    .map(|t| t.value as u64)
                    .unwrap_or(sum);
                if total != sum {
                    return Err(ConfigError::new(
                        format!("{wpath}.total_weight"),
                        format!("weights sum to {sum}, not {total}"),
                    ));
                }
                if sum == 0 {
                    return Err(ConfigError::new(
                        format!("{wpath}.clusters"),
                        "the sum of weights must be greater than 0",
                    ));
                }
                (targets, sum)
            }
            Some(_) => {
                return Err(ConfigError::new(
                    path,
                    "this cluster specifier is not supported by weft-proxy",
                ))
            }
            None => {
                return Err(ConfigError::new(
                    path,
                    "cluster or weighted_clusters is required",
                ))
            }
        };
        let timeout = match &ra.timeout {
            Some(d) if duration(d).is_zero() => None,
            Some(d) => Some(duration(d)),
            None => Some(Duration::from_secs(15)),
        };
        // Unset: the connection manager's stream_idle_timeout applies.
        let idle_timeout = ra.idle_timeout.as_ref().map(|d| Some(duration(d)).filter(|d| !d.is_zero()));
        let retry = match &ra.retry_policy {
            Some(p) => Some(Arc::new(RetryPolicy::compile(
                p,
                &format!("{path}.retry_policy"),
            )?)),
            None => defaults.retry.cloned(),
        };
        let prefix_rewrite = (!ra.prefix_rewrite.is_empty()).then(|| ra.prefix_rewrite.clone());
        let regex_rewrite = match &ra.regex_rewrite {
            Some(rr) => {
                let rpath = format!("{path}.regex_rewrite");
                let Some(pattern) = &rr.pattern else {
                    return Err(ConfigError::new(
                        format!("{rpath}.pattern"),
                        "pattern is required",
                    ));
                };
                let re = Regex::new(&pattern.regex).map_err(|e| {
                    ConfigError::new(
                        format!("{rpath}.pattern.regex"),
                        format!("invalid regex \"{}\": {e}", pattern.regex),
                    )
                })?;
                // RE2 substitutions use \1; the regex crate uses ${1}.
                Some((re, re2_substitution(&rr.substitution)))
            }
            None => None,
        };
        if prefix_rewrite.is_some() && regex_rewrite.is_some() {
            return Err(ConfigError::new(
                path,
                "prefix_rewrite and regex_rewrite are mutually exclusive",
            ));
        }
        let mut auto_host_rewrite = false;
        let host_rewrite = match &ra.host_rewrite_specifier {
            Some(H::HostRewriteLiteral(h)) => {
                Some(http::HeaderValue::from_str(h).map_err(|_| {
                    ConfigError::new(format!("{path}.host_rewrite_literal"), "invalid host")
                })?)
            }
            Some(H::AutoHostRewrite(b)) => {
                auto_host_rewrite = b.value;
                None
            }
            Some(_) => {
                return Err(ConfigError::new(
                    path,
                    "this host rewrite is not supported by weft-proxy",
                ))
            }
            None => None,
        };
        let mut mirrors = Mirror::compile_all(&ra.request_mirror_policies, path, clusters)?;
        if mirrors.is_empty() {
            mirrors = defaults.mirrors.clone();
        }
        Ok(Forward {
            targets,
            total_weight,
            timeout,
            retry,
            prefix_rewrite,
            regex_rewrite,
            host_rewrite,
            mirrors,
            hash_policy: HashPolicy::compile(&ra.hash_policy, &format!("{path}.hash_policy"))?,
            idle_timeout,
            auto_host_rewrite,
            upgrades: super::upgrade::Upgrades::compile_route(&ra.upgrade_configs, &format!("{path}.upgrade_configs"))?,
        })
    }

    /// Picks a target for a random value (weighted clusters).
    pub fn pick(&self, random: u64) -> &Target {
        let mut point = random % self.total_weight;
        for t in &self.targets {
            if point < t.weight {
                return t;
            }
            point -= t.weight;
        }
        // Unreachable when weights sum to total_weight; fall back to the first.
        &self.targets[0]
    }
}

/// Converts RE2 `\N` back-references to the regex crate's `${N}`.
fn re2_substitution(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

impl Redirect {
    fn compile(r: &xds_route::RedirectAction, path: &str) -> Result<Self> {
        use xds_route::redirect_action::{PathRewriteSpecifier as P, SchemeRewriteSpecifier as S};
        let scheme = match &r.scheme_rewrite_specifier {
            Some(S::HttpsRedirect(true)) => Some("https".to_string()),
            Some(S::HttpsRedirect(false)) | None => None,
            Some(S::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
        };
        let (path_redirect, prefix_rewrite) = match &r.path_rewrite_specifier {
            Some(P::PathRedirect(p)) => (Some(p.clone()), None),
            Some(P::PrefixRewrite(p)) => (None, Some(p.clone())),
            Some(_) => {
                return Err(ConfigError::new(
                    path,
                    "regex_rewrite in redirects is not supported by weft-proxy yet",
                ))
            }
            None => (None, None),
        };
        let status = match r.response_code {
            0 => 301,
            1 => 302,
            2 => 303,
            3 => 307,
            4 => 308,
            n => {
                return Err(ConfigError::new(
                    format!("{path}.response_code"),
                    format!("unknown response code {n}"),
                ))
            }
        };
        Ok(Redirect {
            scheme,
            host: (!r.host_redirect.is_empty()).then(|| r.host_redirect.clone()),
            port: (r.port_redirect != 0).then_some(r.port_redirect),
            path: path_redirect,
            prefix_rewrite,
            status,
            strip_query: r.strip_query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_envoy_api::pb::envoy::config::route::v3 as r;

    fn table(domains: &[&[&str]]) -> RouteTable {
        let rc = r::RouteConfiguration {
            virtual_hosts: domains
                .iter()
                .enumerate()
                .map(|(i, d)| r::VirtualHost {
                    name: format!("vh{i}"),
                    domains: d.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        RouteTable::compile(&rc, "rc", &HashMap::new(), true).expect("compiles")
    }

    fn pick<'a>(t: &'a RouteTable, host: &str) -> Option<&'a str> {
        t.virtual_host(host).map(|v| v.name.as_str())
    }

    #[test]
    fn domain_precedence_is_exact_then_longest_suffix_then_prefix_then_any() {
        let t = table(&[&["*"], &["*.com"], &["*.example.com"], &["api.example.com"], &["api.*"]]);
        assert_eq!(pick(&t, "api.example.com"), Some("vh3"));
        assert_eq!(pick(&t, "API.EXAMPLE.COM"), Some("vh3"));
        assert_eq!(pick(&t, "www.example.com"), Some("vh2"));
        assert_eq!(pick(&t, "other.com"), Some("vh1"));
        assert_eq!(pick(&t, "api.net"), Some("vh4"));
        assert_eq!(pick(&t, "elsewhere"), Some("vh0"));
        // a wildcard must cover at least one character
        assert_eq!(pick(&t, ".example.com"), Some("vh1"));
    }

    #[test]
    fn duplicate_domains_are_rejected_with_path() {
        let rc = r::RouteConfiguration {
            virtual_hosts: vec![
                r::VirtualHost { name: "a".into(), domains: vec!["x.com".into()], ..Default::default() },
                r::VirtualHost { name: "b".into(), domains: vec!["X.com".into()], ..Default::default() },
            ],
            ..Default::default()
        };
        let err = RouteTable::compile(&rc, "rc", &HashMap::new(), true).expect_err("duplicate");
        assert_eq!(err.path, "rc.virtual_hosts[1].domains[0]");
    }

    #[test]
    fn retry_on_parses_envoy_tokens_and_names_unknown_ones() {
        let on = RetryOn::parse("5xx, gateway-error,retriable-status-codes").expect("parses");
        assert!(on.five_xx && on.gateway_error && on.retriable_status_codes && !on.reset);
        let err = RetryOn::parse("5xx,envoy-ratelimited").expect_err("unsupported");
        assert!(err.contains("envoy-ratelimited"), "{err}");
    }

    #[test]
    fn retriable_statuses_follow_the_policy() {
        let policy = |spec: &str, codes: Vec<u16>| RetryPolicy {
            on: RetryOn::parse(spec).expect("parses"),
            num_retries: 1,
            per_try_timeout: None,
            status_codes: codes,
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
            avoid_previous_hosts: false,
            host_selection_attempts: 1,
        };
        assert!(policy("5xx", vec![]).retries_status(500));
        assert!(!policy("gateway-error", vec![]).retries_status(500));
        assert!(policy("gateway-error", vec![]).retries_status(503));
        assert!(policy("retriable-4xx", vec![]).retries_status(409));
        assert!(!policy("retriable-4xx", vec![]).retries_status(404));
        assert!(policy("retriable-status-codes", vec![418]).retries_status(418));
        assert!(!policy("5xx", vec![418]).retries_status(418));
    }

    #[test]
    fn re2_backreferences_become_regex_crate_syntax() {
        assert_eq!(re2_substitution("/\\2/\\1"), "/${2}/${1}");
        assert_eq!(re2_substitution("a$b"), "a$$b");
    }
}
