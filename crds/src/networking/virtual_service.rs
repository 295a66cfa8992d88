//! `VirtualService`: how requests to a set of hosts are matched and routed
//! (HTTP, TLS by SNI, opaque TCP). The HTTP-only parts of a route (match,
//! rewrite, redirect, retries, fault, CORS) are in [`http`].

pub mod http;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use self::http::*;
use crate::common::{Duration, Labels, Percent, PortSelector};
use crate::status::Status;

/// Routing rules applied when a host is addressed.
// Several printer columns are strings; clippy takes the repeated
// `type_ = "string"` for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    namespaced,
    status = "Status",
    derive = "PartialEq",
    shortname = "vs",
    category = "istio-io",
    category = "networking-istio-io",
    doc = "Configuration affecting label/content routing, sni routing, etc. See https://istio.io/docs/reference/config/networking/virtual-service.html"
)]
#[kube(printcolumn(
    name = "Gateways",
    type_ = "string",
    json_path = ".spec.gateways",
    description = "The names of gateways and sidecars that should apply these routes"
))]
#[kube(printcolumn(
    name = "Hosts",
    type_ = "string",
    json_path = ".spec.hosts",
    description = "The destination hosts to which traffic is being sent"
))]
#[kube(printcolumn(
    name = "Age",
    type_ = "date",
    json_path = ".metadata.creationTimestamp"
))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// The destination hosts to which traffic is being sent: DNS names
    /// (with an optional wildcard prefix), short names or IP addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The gateways and sidecars that apply these routes; `mesh` means all
    /// sidecars, and is the default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Ordered HTTP route rules; the first that matches a request is used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    /// Ordered route rules for non-terminated TLS and HTTPS traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    /// Ordered route rules for opaque TCP traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    /// The namespaces this virtual service is visible in (`.` this one,
    /// `*` all); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// The service instances a request or connection is forwarded to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// The name of a service from the service registry.
    pub host: String,
    /// The name of a subset within the service, from a DestinationRule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The port on the host that is being addressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

impl Destination {
    pub fn host(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            ..Self::default()
        }
    }
}

/// One HTTP routing rule: conditions, and what to do with matching
/// requests (forward, redirect, respond directly or delegate).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// The name assigned to the route for debugging purposes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, any of which activates the rule (all of a match's
    /// fields must hold).
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "match")]
    pub match_: Vec<HttpMatchRequest>,
    /// Weighted destinations to forward to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    /// Send a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    /// Answer with a fixed response instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    /// Take the routes from another VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// Rewrite the URI and Authority before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Timeout for HTTP requests; disabled by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retry policy for HTTP requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Faults injected on the client side (delays, aborts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    /// Copy requests to this destination as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// Copy requests to each of these destinations as well.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated: use `mirrorPercentage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u32>,
    /// Deprecated spelling of `mirrorPercent`, still accepted by Istio.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "mirror_percent"
    )]
    pub mirror_percent_snake_case: Option<u32>,
    /// Percentage of the traffic copied to `mirror`; 100 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// Cross-Origin Resource Sharing policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// Header manipulation rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Names the VirtualService an HTTP route delegates to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    /// Name of the delegate VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the delegate VirtualService; the delegating one's when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Request and response header manipulation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Applied before forwarding the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// Applied before returning the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Header changes: overwrite, append, remove.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite the headers named by key with the given values.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub set: Labels,
    /// Append the given values to the headers named by key.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub add: Labels,
    /// Remove the named headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// An HTTP destination with its share of traffic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Where to forward the request.
    pub destination: Destination,
    /// Relative share of traffic forwarded to this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Header manipulation rules for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// A destination requests are copied to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Where to copy the requests.
    pub destination: Destination,
    /// Percentage of the traffic copied; 100 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// A routing rule for non-terminated TLS traffic, matched by SNI.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// Conditions, any of which activates the rule.
    #[serde(rename = "match")]
    pub match_: Vec<TlsMatchAttributes>,
    /// Weighted destinations to forward the connection to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// A routing rule for opaque TCP traffic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// Conditions, any of which activates the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "match")]
    pub match_: Vec<L4MatchAttributes>,
    /// Weighted destinations to forward the connection to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// A TLS or TCP destination with its share of traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Where to forward the connection.
    pub destination: Destination,
    /// Relative share of traffic forwarded to this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// Conditions on a TLS connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// SNI values to match; wildcard prefixes allowed.
    pub sni_hosts: Vec<String>,
    /// IPv4 or IPv6 destination addresses, with optional subnet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// The port on the host that is being addressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Only for client workloads with these labels.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub source_labels: Labels,
    /// Only on these gateways (overrides the VirtualService's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Only for client workloads in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// Conditions on a TCP connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    /// IPv4 or IPv6 destination addresses, with optional subnet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// The port on the host that is being addressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Deprecated by Istio and ignored there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_subnet: Option<String>,
    /// Only for client workloads with these labels.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub source_labels: Labels,
    /// Only on these gateways (overrides the VirtualService's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Only for client workloads in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}
