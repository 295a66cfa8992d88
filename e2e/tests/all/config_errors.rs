//! Bad bootstraps: both proxies refuse them; weft-proxy names the field path.

use weft_e2e::proxy::validate;
use weft_e2e::Kind;

const GOOD: &str = include_str!("bootstraps/routing.yaml");

fn good() -> String {
    weft_e2e::proxy::render(GOOD, 10000, 9901, &[])
        .replace("${UP_a}", "1001")
        .replace("${UP_b}", "1002")
}

/// Asserts Envoy rejects `text` and weft-proxy rejects it mentioning every `expect`.
fn rejected(text: &str, expect: &[&str]) {
    let (ok, out) = validate(Kind::Envoy, text);
    assert!(
        !ok,
        "Envoy accepted a config the test expects to be bad:\n{out}"
    );
    let (ok, out) = validate(Kind::Weft, text);
    assert!(!ok, "weft-proxy accepted:\n{text}");
    for e in expect {
        assert!(
            out.contains(e),
            "weft-proxy's error does not mention {e:?}:\n{out}"
        );
    }
}

#[test]
fn good_config_validates_on_both() {
    for kind in Kind::BOTH {
        let (ok, out) = validate(kind, &good());
        assert!(ok, "{kind:?}: {out}");
    }
    let (_, out) = validate(Kind::Weft, &good());
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn invalid_regex_names_the_path() {
    let text = good().replace("/items/[0-9]+", "/items/[0-9");
    rejected(
        &text,
        &[
            "virtual_hosts[0].routes[1].match.safe_regex.regex",
            "invalid regex",
        ],
    );
}

#[test]
fn unknown_cluster_names_the_path() {
    let text = good().replace(
        "route: { cluster: b }\n              - match: { path_separated_prefix",
        "route: { cluster: nope }\n              - match: { path_separated_prefix",
    );
    rejected(
        &text,
        &[
            "virtual_hosts[0].routes[1].route.cluster",
            "unknown cluster \"nope\"",
        ],
    );
}

#[test]
fn duplicate_listener_is_rejected() {
    let listener_start = good().find("  - name: main").expect("listener");
    let clusters_start = good().find("\n  clusters:").expect("clusters") + 1;
    let listener = good()[listener_start..clusters_start].to_string();
    let text = good().replacen(&listener, &format!("{listener}{listener}"), 1);
    // Deliberate difference: Envoy 1.40 accepts a second static listener
    // with the same name (validate and start both succeed; one definition
    // silently wins). weft-proxy refuses, since the other would be dropped.
    let (envoy_ok, _) = validate(Kind::Envoy, &text);
    assert!(
        envoy_ok,
        "Envoy's behaviour changed: it now rejects duplicate listeners"
    );
    let (ok, out) = validate(Kind::Weft, &text);
    assert!(!ok);
    assert!(
        out.contains("static_resources.listeners[1].name") && out.contains("duplicate listener"),
        "{out}"
    );
}

#[test]
fn missing_required_field_is_rejected() {
    let text = good().replace("          stat_prefix: main\n", "");
    rejected(&text, &["stat_prefix"]);
}

#[test]
fn wrong_type_url_is_rejected() {
    let text = good().replace(
        "envoy.extensions.filters.http.router.v3.Router",
        "envoy.extensions.filters.http.router.v3.NoSuchThing",
    );
    rejected(&text, &["http_filters[0].typed_config"]);
}

#[test]
fn malformed_yaml_is_rejected() {
    rejected("static_resources: {listeners: [", &["malformed YAML"]);
}

#[test]
fn unknown_field_is_rejected() {
    let text = good().replace(
        "stat_prefix: main",
        "stat_prefix: main\n          no_such_field: 1",
    );
    rejected(&text, &["no_such_field"]);
}

#[test]
fn unsupported_field_is_named_not_ignored() {
    // Valid for Envoy, not implemented by weft-proxy yet: refused by name.
    let text = good().replace(
        "stat_prefix: main",
        "stat_prefix: main\n          xff_num_trusted_hops: 1",
    );
    let (ok, _) = validate(Kind::Envoy, &text);
    assert!(ok, "Envoy should accept xff_num_trusted_hops");
    let (ok, out) = validate(Kind::Weft, &text);
    assert!(!ok);
    assert!(
        out.contains("typed_config.xff_num_trusted_hops")
            && out.contains("not supported by weft-proxy"),
        "{out}"
    );
}

#[test]
fn known_but_unimplemented_extension_is_named() {
    // Envoy's buffer filter, which weft-proxy does not implement yet.
    let buffer = "          - name: envoy.filters.http.buffer\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer\n              max_request_bytes: 1024\n";
    let text = good().replacen("          http_filters:\n", &format!("          http_filters:\n{buffer}"), 1);
    let (ok, out) = validate(Kind::Envoy, &text);
    assert!(ok, "{out}");
    let (ok, out) = validate(Kind::Weft, &text);
    assert!(!ok);
    assert!(
        out.contains("http_filters[0].typed_config") && out.contains("envoy.extensions.filters.http.buffer.v3.Buffer is not supported by weft-proxy"),
        "{out}"
    );
}

/// `good()` with a local rate limit filter before the router; `extra`
/// lines go into its config.
fn with_local_ratelimit(extra: &str, bucket: &str) -> String {
    let filter = format!(
        "          - name: envoy.filters.http.local_ratelimit\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n              stat_prefix: rl\n              token_bucket: {bucket}\n{extra}"
    );
    good().replacen("          http_filters:\n", &format!("          http_filters:\n{filter}"), 1)
}

#[test]
fn local_ratelimit_field_not_implemented_is_named() {
    let fine = with_local_ratelimit("", "{ max_tokens: 1, fill_interval: 1s }");
    for kind in Kind::BOTH {
        let (ok, out) = validate(kind, &fine);
        assert!(ok, "{kind:?}: {out}");
    }
    // Valid for Envoy (it only matters with descriptors), not implemented.
    let text = with_local_ratelimit("              always_consume_default_token_bucket: false\n", "{ max_tokens: 1, fill_interval: 1s }");
    let (ok, out) = validate(Kind::Envoy, &text);
    assert!(ok, "Envoy should accept always_consume_default_token_bucket: {out}");
    let (ok, out) = validate(Kind::Weft, &text);
    assert!(!ok);
    assert!(
        out.contains("http_filters[0].typed_config.always_consume_default_token_bucket") && out.contains("not supported by weft-proxy"),
        "{out}"
    );
    // In a per-route config, the path names the filter.
    let per_route = "              typed_per_filter_config:\n                envoy.filters.http.local_ratelimit:\n                  \"@type\": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n                  stat_prefix: vhost\n                  token_bucket: { max_tokens: 1, fill_interval: 1s }\n                  stage: 1\n";
    let text = fine.replacen(
        "              domains: [\"api.example.com\", \"api.example.com:8080\"]\n",
        &format!("              domains: [\"api.example.com\", \"api.example.com:8080\"]\n{per_route}"),
        1,
    );
    let (ok, out) = validate(Kind::Envoy, &text);
    assert!(ok, "Envoy should accept stage: {out}");
    let (ok, out) = validate(Kind::Weft, &text);
    assert!(!ok);
    assert!(out.contains("virtual_hosts[0].typed_per_filter_config[\"envoy.filters.http.local_ratelimit\"].stage"), "{out}");
}

#[test]
fn local_ratelimit_errors_name_the_field() {
    // Envoy: "local rate limit token bucket fill timer must be >= 50ms".
    rejected(
        &with_local_ratelimit("", "{ max_tokens: 1, fill_interval: 0.04s }"),
        &["http_filters[0].typed_config.token_bucket.fill_interval", ">= 50ms"],
    );
    rejected(&with_local_ratelimit("", "{ max_tokens: 1 }"), &["token_bucket.fill_interval", "required"]);
    // A per-route config needs a bucket of its own.
    let per_route = "              typed_per_filter_config:\n                envoy.filters.http.local_ratelimit:\n                  \"@type\": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n                  stat_prefix: vhost\n";
    let text = with_local_ratelimit("", "{ max_tokens: 1, fill_interval: 1s }").replacen(
        "              domains: [\"api.example.com\", \"api.example.com:8080\"]\n",
        &format!("              domains: [\"api.example.com\", \"api.example.com:8080\"]\n{per_route}"),
        1,
    );
    rejected(
        &text,
        &["virtual_hosts[0].typed_per_filter_config[\"envoy.filters.http.local_ratelimit\"].token_bucket", "must be set for per filter configs"],
    );
}

#[test]
fn deprecated_cors_field_is_refused() {
    // Deliberate difference: Envoy 1.40 still accepts VirtualHost.cors (and
    // RouteAction.cors) with a deprecation warning; weft-proxy implements
    // only typed_per_filter_config policies, which replace them.
    let cors = "              cors:\n                allow_origin_string_match: [{ exact: \"https://app.example\" }]\n";
    let text = good().replacen(
        "              domains: [\"api.example.com\", \"api.example.com:8080\"]\n",
        &format!("              domains: [\"api.example.com\", \"api.example.com:8080\"]\n{cors}"),
        1,
    );
    let (ok, out) = validate(Kind::Envoy, &text);
    assert!(ok && out.contains("Using deprecated option 'envoy.config.route.v3.VirtualHost.cors'"), "{out}");
    let (ok, out) = validate(Kind::Weft, &text);
    assert!(!ok);
    assert!(out.contains("virtual_hosts[0].cors") && out.contains("not supported by weft-proxy"), "{out}");
}

/// A TLS listener bootstrap with the test certificates filled in.
fn tls_bootstrap(tls: &str, matcher: &str) -> String {
    use crate::envoy_diff_tls::{bootstrap, chain, cluster};
    let text = bootstrap(&[chain("tls", matcher, Some(tls), "")], &cluster("1001", ""));
    weft_e2e::proxy::render(&text, 10000, 9901, &[])
}

#[test]
fn tls_errors_name_the_field() {
    let good = crate::envoy_diff_tls::server_tls("", Some(weft_e2e::pki::CLIENT_ID));
    for kind in Kind::BOTH {
        let (ok, out) = validate(kind, &tls_bootstrap(&good, "{}"));
        assert!(ok, "{kind:?}: {out}");
    }
    // SAN checks on a chain nobody verified.
    let no_ca = good.replace("trusted_ca: { filename: \"${CERTS}/ca.pem\" }, ", "");
    rejected(&tls_bootstrap(&no_ca, "{}"), &["validation_context.trusted_ca", "without trusted CA"]);
    let missing = good.replace("server.pem", "missing.pem");
    rejected(&tls_bootstrap(&missing, "{}"), &["tls_certificates[0].certificate_chain.filename", "missing.pem"]);
    let wrong_key = good.replace("server.key", "client.key");
    rejected(&tls_bootstrap(&wrong_key, "{}"), &["tls_certificates[0].private_key", "does not match"]);
    let bad_cipher = good.replace("alpn_protocols: []", "alpn_protocols: [], tls_params: { cipher_suites: [NOT-A-CIPHER] }");
    rejected(&tls_bootstrap(&bad_cipher, "{}"), &["tls_params.cipher_suites[0]", "NOT-A-CIPHER"]);
}

#[test]
fn filter_chains_with_the_same_match_are_rejected() {
    use crate::envoy_diff_tls::{bootstrap, chain, cluster};
    let a = chain("a", "{ server_names: [x.example.com, y.example.com] }", None, "");
    let b = chain("b", "{ server_names: [y.example.com] }", None, "");
    let text = weft_e2e::proxy::render(&bootstrap(&[a, b], &cluster("1001", "")), 10000, 9901, &[]);
    rejected(&text, &["filter_chains[1].filter_chain_match", "multiple filter chains with the same matching rules"]);
}

#[test]
fn upgrade_configs_weft_does_not_take_are_named() {
    // Valid for Envoy; weft-proxy tunnels upgrades but not CONNECT, and
    // runs no per-upgrade filter chains.
    let with = |upgrade: &str| good().replace("stat_prefix: main", &format!("stat_prefix: main\n          upgrade_configs: [ {upgrade} ]"));
    for (upgrade, expect) in [
        ("{ upgrade_type: CONNECT }", "typed_config.upgrade_configs[0].upgrade_type: CONNECT is not supported by weft-proxy"),
        (
            r#"{ upgrade_type: websocket, filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ] }"#,
            "typed_config.upgrade_configs[0].filters",
        ),
    ] {
        let text = with(upgrade);
        let (ok, out) = validate(Kind::Envoy, &text);
        assert!(ok, "Envoy should accept {upgrade}: {out}");
        let (ok, out) = validate(Kind::Weft, &text);
        assert!(!ok && out.contains(expect), "{upgrade}: {out}");
    }
    // Twice the same type: both refuse.
    rejected(&with("{ upgrade_type: websocket }, { upgrade_type: WebSocket }"), &["typed_config.upgrade_configs[1].upgrade_type: duplicate upgrade type websocket"]);
}
