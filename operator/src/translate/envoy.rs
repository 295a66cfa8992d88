//! Small constructors for the Envoy messages translation builds, so the
//! translation reads as what it means.

use weft_envoy_api::pb::envoy::config::core::v3 as core;
use weft_envoy_api::pb::envoy::config::listener::v3 as xds_listener;
use weft_envoy_api::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use weft_envoy_api::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use weft_envoy_api::pb::google::protobuf::{Any, Duration as PbDuration};
use weft_envoy_api::prost::{Message, Name};

pub fn any<M: Message + Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

pub fn duration(d: std::time::Duration) -> PbDuration {
    PbDuration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

pub fn socket(address: &str, port: u32) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: address.to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// "From the ADS stream".
pub fn ads() -> core::ConfigSource {
    core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(Default::default())),
        resource_api_version: core::ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// Istio's percentages (0–100, fractional) as Envoy's, in millionths.
pub fn percent(value: f64) -> FractionalPercent {
    FractionalPercent {
        numerator: (value.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    }
}

pub fn http_filter<M: Message + Name>(name: &str, config: &M) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: name.to_string(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }
}

pub const FAULT: &str = "envoy.filters.http.fault";
pub const CORS: &str = "envoy.filters.http.cors";
pub const ROUTER: &str = "envoy.filters.http.router";
pub const HCM: &str = "envoy.filters.network.http_connection_manager";
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";

/// A listener's network filter.
pub fn network_filter<M: Message + Name>(name: &str, config: &M) -> xds_listener::Filter {
    xds_listener::Filter { name: name.to_string(), config_type: Some(xds_listener::filter::ConfigType::TypedConfig(any(config))) }
}

/// Istio's HTTP filter chain, as far as weft implements it: `early`
/// (WasmPlugins of the AUTHN and AUTHZ phases, where Istio's own authn and
/// authz filters would follow), CORS and fault injection (both configured
/// per route), `late` (STATS, then UNSPECIFIED_PHASE plugins), the router.
pub fn http_filters(early: Vec<hcm::HttpFilter>, late: Vec<hcm::HttpFilter>) -> Vec<hcm::HttpFilter> {
    use weft_envoy_api::pb::envoy::extensions::filters::http::{cors::v3::Cors, fault::v3::HttpFault, router::v3::Router};
    let mut chain = early;
    chain.push(http_filter(CORS, &Cors::default()));
    chain.push(http_filter(FAULT, &HttpFault::default()));
    chain.extend(late);
    chain.push(http_filter(ROUTER, &Router::default()));
    chain
}
