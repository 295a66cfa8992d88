//! The request headers a Bookinfo service copies from its incoming request
//! to every call it makes, as Istio's Bookinfo services do.
//!
//! The sidecars start and end spans, but only the app knows which outgoing
//! call belongs to which incoming request: by forwarding these headers it
//! lets the proxies stitch one trace (`x-request-id`, W3C, B3, Lightstep,
//! Datadog, Cloud Trace, SkyWalking) and lets traffic rules match on the
//! user (`end-user`, `cookie`, `authorization`, `jwt`).

use http::HeaderMap;

/// Forwarded by exact name (lower case, as `http` stores names).
const FORWARDED: &[&str] = &[
    // Istio's request id: access logs and consistent trace sampling.
    "x-request-id",
    // W3C Trace Context.
    "traceparent",
    "tracestate",
    // Zipkin B3, multi-header and single-header forms.
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    // Lightstep.
    "x-ot-span-context",
    // Google Cloud Trace and gRPC's binary context.
    "x-cloud-trace-context",
    "grpc-trace-bin",
    // SkyWalking.
    "sw8",
    // Who is asking: traffic rules match on these.
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
];

/// Forwarded by prefix: Datadog's `x-datadog-trace-id`, `-parent-id`,
/// `-sampling-priority`, `-origin`, `-tags`, …
const FORWARDED_PREFIXES: &[&str] = &["x-datadog-"];

/// Whether `name` (lower case) is a header Bookinfo forwards.
pub fn is_forwarded(name: &str) -> bool {
    FORWARDED.contains(&name) || FORWARDED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The headers of `incoming` to send on an outgoing call, every value of
/// each kept in order.
pub fn forward(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in incoming {
        if is_forwarded(name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn keeps_tracing_and_user_headers_only() {
        let mut incoming = HeaderMap::new();
        for (name, value) in [
            ("x-request-id", "r1"),
            ("traceparent", "00-abc-def-01"),
            ("x-b3-traceid", "abc"),
            ("x-datadog-trace-id", "42"),
            ("end-user", "jason"),
            ("host", "productpage:9080"),
            ("content-length", "0"),
            ("accept", "text/html"),
        ] {
            incoming.insert(name, HeaderValue::from_static(value));
        }
        let out = forward(&incoming);
        assert_eq!(out.len(), 5, "{out:?}");
        assert_eq!(out["x-request-id"], "r1");
        assert_eq!(out["x-datadog-trace-id"], "42");
        assert_eq!(out["end-user"], "jason");
        assert!(!out.contains_key("host"));
        assert!(!out.contains_key("content-length"));
    }

    #[test]
    fn keeps_repeated_values() {
        let mut incoming = HeaderMap::new();
        incoming.append("cookie", HeaderValue::from_static("a=1"));
        incoming.append("cookie", HeaderValue::from_static("user=jason"));
        let out = forward(&incoming);
        let cookies: Vec<_> = out.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "user=jason"]);
    }
}
