//! Whole-system tests. `envoy_diff_*` run the same bootstrap and requests on
//! Envoy (the oracle) and weft-proxy and compare what clients and upstreams
//! observe; `config_*` check bad input is rejected with its field path.

mod config_errors;
mod envoy_diff_access_log;
mod envoy_diff_balancing;
mod envoy_diff_breakers;
mod envoy_diff_cors;
mod envoy_diff_dns;
mod envoy_diff_downstream_http1;
mod envoy_diff_dynamic;
mod envoy_diff_fault;
mod envoy_diff_grpc_local_reply;
mod envoy_diff_health;
mod envoy_diff_http2;
mod envoy_diff_path_normalization;
mod envoy_diff_ratelimit;
mod envoy_diff_retries;
mod envoy_diff_routing;
mod envoy_diff_streaming;
mod envoy_diff_tcp;
mod envoy_diff_tls;
mod envoy_diff_upgrade;
mod envoy_diff_upstream_framing;
mod malformed_http;
mod traffic_bookinfo;
mod traffic_drain;
mod wasm_host;
mod wasm_testkit;
mod wasm_plugins;
mod xds_ads;
mod xds_dns;
mod xds_gateway_tcp;
mod xds_standalone;
mod xds_wasmplugin;

use weft_e2e::{Kind, Observed, Proxy, Request, Seen, Upstream};

/// What one request produced: the client's view and the upstream requests it caused.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub response: Observed,
    /// (upstream name, normalized request) for every upstream attempt.
    pub upstream: Vec<(String, String)>,
}

/// The upstream's view of a request with volatile values masked.
pub fn describe(seen: &Seen) -> String {
    let mut headers: Vec<String> = seen
        .headers
        .iter()
        .map(|(k, v)| match k.as_str() {
            "x-request-id" => format!("{k}: <masked>"),
            _ => format!("{k}: {v}"),
        })
        .collect();
    headers.sort();
    format!(
        "{} {}\n{}\n{}",
        seen.method,
        seen.path,
        headers.join("\n"),
        String::from_utf8_lossy(&seen.body)
    )
}

/// Runs every request through a proxy of `kind`, one at a time.
pub async fn run(
    kind: Kind,
    template: &str,
    upstreams: &[&Upstream],
    requests: &[Request],
) -> Vec<Outcome> {
    let proxy = Proxy::start(kind, template, upstreams)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for u in upstreams {
        u.take();
    }
    let mut out = Vec::new();
    for req in requests {
        let response = proxy.send(req).await.normalized();
        let mut upstream = Vec::new();
        for u in upstreams {
            for s in u.take() {
                upstream.push((u.name.clone(), describe(&s)));
            }
        }
        upstream.sort();
        out.push(Outcome { response, upstream });
    }
    out
}

/// Runs the requests on Envoy and weft-proxy and asserts identical outcomes.
pub async fn assert_same_on_both(
    template: &str,
    upstreams: &[&Upstream],
    requests: &[Request],
) -> Vec<Outcome> {
    let envoy = run(Kind::Envoy, template, upstreams, requests).await;
    let weft = run(Kind::Weft, template, upstreams, requests).await;
    for (i, (e, w)) in envoy.iter().zip(&weft).enumerate() {
        assert_eq!(
            e, w,
            "request {i} ({} {}) differs: left Envoy, right weft-proxy",
            requests[i].method, requests[i].path
        );
    }
    weft
}
