//! `envoy.filters.http.cors`: Cross-Origin Resource Sharing as Envoy does
//! it. The filter config is empty; policies come from the routes'
//! `typed_per_filter_config` (`CorsPolicy`).
//!
//! ```text
//!  Origin allowed? ─ no ─► forwarded untouched (or, with forward_not_matching_preflights: false,
//!        │                  a preflight is answered without access-control-allow-origin)
//!        yes ─► OPTIONS + Access-Control-Request-Method? ─ yes ─► 200 preflight, answered here
//!                         └─ no ─► forwarded; the response gets allow-origin, credentials, expose-headers
//! ```
//! Policies merge field by field: the route's value when it sets the
//! field, else the virtual host's (Envoy 1.40's order). Whether the filter
//! is enabled comes from the most specific policy alone. The deprecated
//! `cors` fields of VirtualHost and RouteAction are refused by the support
//! table.

use http::header::HeaderValue;
use pingora_http::{RequestHeader, ResponseHeader};
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;
use weft_envoy_api::pb::envoy::extensions::filters::http::cors::v3 as xds_cors;

use super::{Context, Edit, PerRoute, Verdict};
use crate::http::LocalReply;
use crate::model::matcher::StringMatcher;
use crate::model::{ConfigError, Fraction, Result};
use crate::stats::CorsStats;

pub const TYPE: &str = "envoy.extensions.filters.http.cors.v3.Cors";
pub const POLICY_TYPE: &str = "envoy.extensions.filters.http.cors.v3.CorsPolicy";

const ORIGIN: &str = "origin";
const REQUEST_METHOD: &str = "access-control-request-method";
const REQUEST_HEADERS: &str = "access-control-request-headers";
const REQUEST_PRIVATE_NETWORK: &str = "access-control-request-private-network";
const ALLOW_ORIGIN: &str = "access-control-allow-origin";
const ALLOW_CREDENTIALS: &str = "access-control-allow-credentials";
const ALLOW_METHODS: &str = "access-control-allow-methods";
const ALLOW_HEADERS: &str = "access-control-allow-headers";
const MAX_AGE: &str = "access-control-max-age";
const EXPOSE_HEADERS: &str = "access-control-expose-headers";
const ALLOW_PRIVATE_NETWORK: &str = "access-control-allow-private-network";

/// The filter itself: its statistics (`http.<prefix>.cors.*`).
#[derive(Debug)]
pub struct Cors {
    stats: CorsStats,
}

/// A compiled `CorsPolicy`. Empty strings and unset options mean "not set
/// here" (a less specific policy may set them).
#[derive(Debug)]
pub struct Policy {
    origins: Vec<StringMatcher>,
    /// Some matcher accepts the literal `*`: every origin is allowed.
    any_origin: bool,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: Option<bool>,
    allow_private_network_access: Option<bool>,
    forward_not_matching_preflights: Option<bool>,
    /// Unset: enabled for every request.
    filter_enabled: Option<Fraction>,
    /// Unset: never in shadow mode.
    shadow_enabled: Option<Fraction>,
}

/// What the filter adds to the response of a request whose origin it
/// allowed.
#[derive(Debug)]
pub struct ResponseHeaders {
    origin: HeaderValue,
    credentials: bool,
    expose: Option<HeaderValue>,
}

impl ResponseHeaders {
    pub fn apply(&self, resp: &mut ResponseHeader) {
        let _ = resp.insert_header(ALLOW_ORIGIN, self.origin.clone());
        if self.credentials {
            let _ = resp.insert_header(ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(expose) = &self.expose {
            let _ = resp.insert_header(EXPOSE_HEADERS, expose.clone());
        }
    }
}

fn header_value(s: &str, path: &str) -> Result<Option<HeaderValue>> {
    if s.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(s)
        .map(Some)
        .map_err(|_| ConfigError::new(path, format!("{s:?} is not a valid header value")))
}

/// A `RuntimeFractionalPercent`: without a runtime layer, its default.
fn runtime_fraction(f: Option<&xds_core::RuntimeFractionalPercent>, path: &str) -> Result<Option<Fraction>> {
    let Some(f) = f else { return Ok(None) };
    let Some(default) = f.default_value.as_ref() else {
        return Err(ConfigError::new(format!("{path}.default_value"), "default_value is required"));
    };
    Fraction::compile(Some(default), &format!("{path}.default_value"), Fraction::NEVER).map(Some)
}

impl Policy {
    pub fn compile(p: &xds_cors::CorsPolicy, path: &str) -> Result<Self> {
        let origins = p
            .allow_origin_string_match
            .iter()
            .enumerate()
            .map(|(i, m)| StringMatcher::compile(m, &format!("{path}.allow_origin_string_match[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Policy {
            any_origin: origins.iter().any(|m| m.matches("*")),
            origins,
            allow_methods: header_value(&p.allow_methods, &format!("{path}.allow_methods"))?,
            allow_headers: header_value(&p.allow_headers, &format!("{path}.allow_headers"))?,
            expose_headers: header_value(&p.expose_headers, &format!("{path}.expose_headers"))?,
            max_age: header_value(&p.max_age, &format!("{path}.max_age"))?,
            allow_credentials: p.allow_credentials.map(|b| b.value),
            allow_private_network_access: p.allow_private_network_access.map(|b| b.value),
            forward_not_matching_preflights: p.forward_not_matching_preflights.map(|b| b.value),
            filter_enabled: runtime_fraction(p.filter_enabled.as_ref(), &format!("{path}.filter_enabled"))?,
            shadow_enabled: runtime_fraction(p.shadow_enabled.as_ref(), &format!("{path}.shadow_enabled"))?,
        })
    }

    /// Drawn on every call, as Envoy reads its runtime flag on every call.
    fn enabled(&self) -> bool {
        self.filter_enabled.is_none_or(Fraction::roll)
    }

    fn shadow_enabled(&self) -> bool {
        self.shadow_enabled.is_some_and(Fraction::roll)
    }
}

/// The policies that apply to a request, most specific first; each field
/// comes from the first policy that sets it.
struct Policies<'a>([Option<&'a Policy>; 2]);

impl<'a> Policies<'a> {
    fn first<T>(&self, field: impl Fn(&'a Policy) -> Option<T>) -> Option<T> {
        self.0.iter().flatten().find_map(|p| field(p))
    }

    fn most_specific(&self) -> Option<&'a Policy> {
        self.0.iter().flatten().next().copied()
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        let Some(p) = self.0.iter().flatten().find(|p| !p.origins.is_empty()) else {
            return false;
        };
        p.any_origin || origin.to_str().is_ok_and(|o| p.origins.iter().any(|m| m.matches(o)))
    }

    fn credentials(&self) -> bool {
        self.first(|p| p.allow_credentials).unwrap_or(false)
    }
}

/// A request header as Envoy reads it: repeated values joined by `,`.
fn joined(req: &RequestHeader, name: &str) -> Option<HeaderValue> {
    let mut values = req.headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(first.clone());
    };
    let mut bytes = first.as_bytes().to_vec();
    for v in std::iter::once(second).chain(values) {
        bytes.push(b',');
        bytes.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&bytes).ok()
}

impl Cors {
    pub fn new(stat_prefix: &str) -> Self {
        Cors { stats: CorsStats::new(stat_prefix) }
    }

    pub fn on_request(&self, req: &RequestHeader, cx: &mut Context<'_>) -> Verdict {
        // Only routes that forward have a CORS policy (Envoy's route entry).
        if !cx.forwards {
            return Verdict::Continue;
        }
        fn pick(p: Option<&PerRoute>) -> Option<&Policy> {
            match p {
                Some(PerRoute::Cors(c)) => Some(c),
                _ => None,
            }
        }
        let [route, vhost] = cx.per_route;
        let policies = Policies([pick(route), pick(vhost)]);
        let Some(top) = policies.most_specific() else {
            return Verdict::Continue;
        };
        if !top.enabled() && !top.shadow_enabled() {
            return Verdict::Continue;
        }
        let Some(origin) = joined(req, ORIGIN).filter(|o| !o.is_empty()) else {
            return Verdict::Continue;
        };
        let allowed = policies.origin_allowed(&origin);
        if allowed {
            self.stats.origin_valid.inc();
        } else {
            self.stats.origin_invalid.inc();
        }
        // Shadow mode: counted, not enforced.
        if top.shadow_enabled() && !top.enabled() {
            return Verdict::Continue;
        }
        let credentials = policies.credentials();
        if allowed {
            cx.response.push(Edit::Cors(ResponseHeaders {
                origin: origin.clone(),
                credentials,
                expose: policies.first(|p| p.expose_headers.clone()),
            }));
        }
        if req.method != http::Method::OPTIONS {
            return Verdict::Continue;
        }
        let Some(method) = joined(req, REQUEST_METHOD).filter(|m| !m.is_empty()) else {
            return Verdict::Continue;
        };
        if !allowed && policies.first(|p| p.forward_not_matching_preflights).unwrap_or(true) {
            return Verdict::Continue;
        }
        Verdict::Encode(self.preflight(req, &policies, allowed.then_some(origin), credentials, method))
    }

    /// The answer to a preflight request.
    fn preflight(
        &self,
        req: &RequestHeader,
        policies: &Policies<'_>,
        origin: Option<HeaderValue>,
        credentials: bool,
        method: HeaderValue,
    ) -> LocalReply {
        let mut reply = LocalReply::new(200, "");
        reply.details = Some("cors_response".into());
        let headers = &mut reply.extra_headers;
        if let Some(origin) = origin {
            headers.push((http::HeaderName::from_static(ALLOW_ORIGIN), origin));
        }
        if credentials {
            headers.push((http::HeaderName::from_static(ALLOW_CREDENTIALS), HeaderValue::from_static("true")));
        }
        // `*` echoes what the browser asked for (Envoy 1.40).
        if let Some(methods) = policies.first(|p| p.allow_methods.as_ref()) {
            let value = if methods == "*" { method } else { methods.clone() };
            headers.push((http::HeaderName::from_static(ALLOW_METHODS), value));
        }
        if let Some(allowed) = policies.first(|p| p.allow_headers.as_ref()) {
            let value = if allowed == "*" {
                joined(req, REQUEST_HEADERS).unwrap_or_else(|| HeaderValue::from_static(""))
            } else {
                allowed.clone()
            };
            headers.push((http::HeaderName::from_static(ALLOW_HEADERS), value));
        }
        if let Some(max_age) = policies.first(|p| p.max_age.clone()) {
            headers.push((http::HeaderName::from_static(MAX_AGE), max_age));
        }
        let private_network = policies.first(|p| p.allow_private_network_access).unwrap_or(false);
        if private_network && joined(req, REQUEST_PRIVATE_NETWORK).is_some_and(|v| v == "true") {
            headers.push((http::HeaderName::from_static(ALLOW_PRIVATE_NETWORK), HeaderValue::from_static("true")));
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_envoy_api::pb::envoy::r#type::matcher::v3 as xds_matcher;

    fn exact(s: &str) -> xds_matcher::StringMatcher {
        xds_matcher::StringMatcher {
            match_pattern: Some(xds_matcher::string_matcher::MatchPattern::Exact(s.into())),
            ignore_case: false,
        }
    }

    fn policy(origins: &[&str], methods: &str) -> Policy {
        let p = xds_cors::CorsPolicy {
            allow_origin_string_match: origins.iter().map(|o| exact(o)).collect(),
            allow_methods: methods.into(),
            ..Default::default()
        };
        Policy::compile(&p, "p").expect("compiles")
    }

    #[test]
    fn fields_fall_back_to_the_less_specific_policy() {
        let route = policy(&[], "PUT");
        let vhost = policy(&["https://a"], "GET");
        let both = Policies([Some(&route), Some(&vhost)]);
        assert!(both.origin_allowed(&HeaderValue::from_static("https://a")));
        assert_eq!(both.first(|p| p.allow_methods.clone()).expect("set"), "PUT");
        let route = policy(&["https://b"], "");
        let both = Policies([Some(&route), Some(&vhost)]);
        assert!(!both.origin_allowed(&HeaderValue::from_static("https://a")), "the route's origins replace the vhost's");
        assert_eq!(both.first(|p| p.allow_methods.clone()).expect("set"), "GET");
    }

    #[test]
    fn a_matcher_accepting_star_allows_every_origin() {
        let p = policy(&["*"], "");
        assert!(Policies([Some(&p), None]).origin_allowed(&HeaderValue::from_static("https://x")));
    }

    #[test]
    fn repeated_headers_are_joined_with_commas() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        req.append_header("origin", "https://a").expect("header");
        req.append_header("origin", "https://b").expect("header");
        assert_eq!(joined(&req, "origin").expect("present"), "https://a,https://b");
    }
}
