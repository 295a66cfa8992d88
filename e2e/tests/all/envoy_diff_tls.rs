//! TLS against Envoy: termination with SNI filter-chain selection and
//! ALPN, mutual TLS with SAN checks and `x-forwarded-client-cert`, and a
//! mesh hop (plaintext in, mTLS between two proxies) in all four
//! combinations of Envoy and weft-proxy.

use weft_e2e::pki::{CLIENT_ID, OTHER_ID, SERVER_ID};
use weft_e2e::tls_client::Negotiated;
use weft_e2e::{Kind, Observed, Proxy, Request, TlsClient, Upstream};

use crate::describe;

/// A filter chain: `matcher` is a `filter_chain_match` flow mapping, `tls`
/// a `DownstreamTlsContext` flow mapping (None: plaintext), `hcm_extra`
/// extra HCM fields; the chain's routes answer with `x-chain: <name>` and
/// tell the upstream the client's SNI (`x-sni`, absent without one).
pub fn chain(name: &str, matcher: &str, tls: Option<&str>, hcm_extra: &str) -> String {
    let transport = match tls {
        Some(ctx) => {
            let fields: String = ctx.lines().map(|l| format!("          {l}\n")).collect();
            format!(
                "      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n{fields}"
            )
        }
        None => String::new(),
    };
    format!(
        r#"    - name: {name}
      filter_chain_match: {matcher}
{transport}      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          {hcm_extra}
          route_config:
            response_headers_to_add: [ {{ header: {{ key: x-chain, value: {name} }} }} ]
            request_headers_to_add: [ {{ header: {{ key: x-sni, value: "%REQUESTED_SERVER_NAME%" }} }} ]
            virtual_hosts:
            - {{ name: all, domains: ["*"], routes: [ {{ match: {{ prefix: "/" }}, route: {{ cluster: up }} }} ] }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#
    )
}

/// A bootstrap with the given chains in front of the `up` upstream.
pub fn bootstrap(chains: &[String], cluster: &str) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: ${{ADMIN}} }} }}
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: ${{LISTEN}} }} }}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}
    filter_chains:
{}  clusters:
{cluster}"#,
        chains.concat()
    )
}

/// The `up` cluster pointing at the recording upstream (or at `${BACK}`).
pub fn cluster(port: &str, transport: &str) -> String {
    format!(
        r#"  - name: up
    connect_timeout: 1s
{transport}    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#
    )
}

const SERVER_CERT: &str = r#"tls_certificates: [ { certificate_chain: { filename: "${CERTS}/server.pem" }, private_key: { filename: "${CERTS}/server.key" } } ]"#;

/// A server's `DownstreamTlsContext` fields, one per line; with `peer`,
/// a client certificate whose URI SAN is `peer` is required.
pub fn server_tls(alpn: &str, peer: Option<&str>) -> String {
    match peer {
        None => format!("common_tls_context: {{ {SERVER_CERT}, alpn_protocols: [{alpn}] }}"),
        Some(id) => format!(
            "require_client_certificate: true\ncommon_tls_context: {{ {SERVER_CERT}, alpn_protocols: [{alpn}], validation_context: {{ trusted_ca: {{ filename: \"${{CERTS}}/ca.pem\" }}, match_typed_subject_alt_names: [ {{ san_type: URI, matcher: {{ exact: \"{id}\" }} }} ] }} }}"
        ),
    }
}

/// What one TLS request produced, comparable across proxies.
#[derive(Debug, PartialEq)]
enum Seen {
    Answered { response: Observed, negotiated: Negotiated, upstream: Vec<String> },
    /// The handshake failed or the connection closed without a response.
    Refused,
}

async fn tls_request(proxy: &Proxy, up: &Upstream, client: &TlsClient, req: &Request) -> Seen {
    up.take();
    match client.send(proxy.port, req).await {
        Ok((response, negotiated)) => Seen::Answered {
            response: response.normalized(),
            negotiated,
            upstream: up.take().iter().map(describe).collect(),
        },
        Err(_) => Seen::Refused,
    }
}

/// The same request from each client, one connection each.
async fn tls_requests(proxy: &Proxy, up: &Upstream, clients: &[TlsClient], req: &Request) -> Vec<Seen> {
    let mut seen = Vec::new();
    for c in clients {
        seen.push(tls_request(proxy, up, c, req).await);
    }
    seen
}

#[tokio::test]
async fn sni_chain_selection_and_alpn_match_envoy() {
    let up = Upstream::start("up").await;
    let tls = |alpn: &str| server_tls(alpn, None);
    let chains = [
        chain("exact", "{ server_names: [a.example.com] }", Some(&tls("")), ""),
        chain("wildcard", "{ server_names: [\"*.example.com\"] }", Some(&tls("h2, http/1.1")), ""),
        chain("tls-default", "{ transport_protocol: tls }", Some(&tls("http/1.1")), ""),
        chain("plain", "{ transport_protocol: raw_buffer }", None, ""),
    ];
    let template = bootstrap(&chains, &cluster("${UP_up}", ""));
    let req = Request::get("/hello").header("host", "svc.local");
    let clients = [
        TlsClient::sni("a.example.com").alpn(&["http/1.1"]).verify(),
        TlsClient::sni("deep.b.example.com").alpn(&["h2", "http/1.1"]),
        TlsClient::sni("b.example.com").alpn(&["http/1.1"]),
        TlsClient::sni("other.org").alpn(&["h2", "http/1.1"]),
        TlsClient::default(),
    ];
    let mut results = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let mut seen = tls_requests(&proxy, &up, &clients, &req).await;
        up.take();
        let plain = proxy.send(&req).await.normalized();
        seen.push(Seen::Answered {
            response: plain,
            negotiated: Negotiated { alpn: None, version: "plaintext".into() },
            upstream: up.take().iter().map(describe).collect(),
        });
        results.push(seen);
    }
    let (envoy, weft) = (&results[0], &results[1]);
    for (i, (e, w)) in envoy.iter().zip(weft).enumerate() {
        assert_eq!(e, w, "case {i}: left Envoy, right weft-proxy");
    }
    // The cases really exercised what they name.
    let chain_of = |s: &Seen| match s {
        Seen::Answered { response, .. } => response.header("x-chain").unwrap_or("-").to_string(),
        Seen::Refused => "refused".into(),
    };
    let chains: Vec<String> = weft.iter().map(chain_of).collect();
    assert_eq!(chains, ["exact", "wildcard", "wildcard", "tls-default", "tls-default", "plain"]);
    let Seen::Answered { negotiated, upstream, .. } = &weft[1] else { unreachable!() };
    assert_eq!(negotiated.alpn.as_deref(), Some("h2"));
    assert!(upstream[0].contains("x-forwarded-proto: https"), "{upstream:?}");
    let sni = |s: &Seen| match s {
        Seen::Answered { upstream, .. } => upstream.concat().lines().find_map(|l| l.strip_prefix("x-sni: ")).map(str::to_string),
        Seen::Refused => None,
    };
    let snis: Vec<Option<String>> = weft.iter().map(sni).collect();
    assert_eq!(snis[0].as_deref(), Some("a.example.com"), "{weft:?}");
    assert_eq!(snis[4], None, "no SNI, no header: {weft:?}");
}

#[tokio::test]
async fn mutual_tls_san_checks_and_xfcc_match_envoy() {
    let up = Upstream::start("up").await;
    let xfcc = "forward_client_cert_details: SANITIZE_SET\n          set_current_client_cert_details: { subject: true, uri: true, dns: true }";
    let chains = [chain("mtls", "{}", Some(&server_tls("", Some(CLIENT_ID))), xfcc)];
    let template = bootstrap(&chains, &cluster("${UP_up}", ""));
    let req = Request::get("/id").header("host", "svc.local").header("x-forwarded-client-cert", "By=forged");
    let clients = [
        TlsClient::sni("svc.local").identity("client").verify(),
        TlsClient::sni("svc.local"),                    // no client certificate
        TlsClient::sni("svc.local").identity("other"),  // trusted CA, wrong SAN
        TlsClient::sni("svc.local").identity("rogue"),  // right SAN, untrusted CA
    ];
    let mut results = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let seen = tls_requests(&proxy, &up, &clients, &req).await;
        results.push(seen);
    }
    assert_eq!(results[0], results[1], "left Envoy, right weft-proxy");
    let outcome: Vec<bool> = results[1].iter().map(|s| matches!(s, Seen::Answered { .. })).collect();
    assert_eq!(outcome, [true, false, false, false]);
    let Seen::Answered { upstream, .. } = &results[1][0] else { unreachable!() };
    assert!(upstream[0].contains(&format!("URI={CLIENT_ID}")), "{upstream:?}");
    assert!(!upstream[0].contains("forged"), "{upstream:?}");
}

/// client ─plaintext─► front ─mTLS─► back ─► upstream, for every pairing.
#[tokio::test]
async fn mesh_hop_over_mutual_tls_works_between_envoy_and_weft_both_ways() {
    mesh_hop(false).await;
}

/// The same hop with HTTP/2 between the proxies (ALPN h2), as sidecars talk.
#[tokio::test]
async fn mesh_hop_over_http2_and_mutual_tls_works_between_envoy_and_weft_both_ways() {
    mesh_hop(true).await;
}

async fn mesh_hop(http2: bool) {
    let up = Upstream::start("up").await;
    let append = "forward_client_cert_details: APPEND_FORWARD\n          set_current_client_cert_details: { uri: true }";
    let alpn = if http2 { "h2, http/1.1" } else { "" };
    let back = bootstrap(&[chain("inbound", "{}", Some(&server_tls(alpn, Some(CLIENT_ID))), append)], &cluster("${UP_up}", ""));
    let protocol = if http2 {
        "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n"
    } else {
        ""
    };
    let upstream_tls = |want: &str| {
        format!(
            r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound.example.com
        common_tls_context:
          tls_certificates: [ {{ certificate_chain: {{ filename: "${{CERTS}}/client.pem" }}, private_key: {{ filename: "${{CERTS}}/client.key" }} }} ]
          validation_context:
            trusted_ca: {{ filename: "${{CERTS}}/ca.pem" }}
            match_typed_subject_alt_names: [ {{ san_type: URI, matcher: {{ exact: "{want}" }} }} ]
"#
        )
    };
    let front = |want: &str| {
        bootstrap(&[chain("outbound", "{}", None, "")], &cluster("${BACK}", &format!("{protocol}{}", upstream_tls(want))))
    };
    let requests = [
        Request::get("/hop").header("host", "svc.local"),
        Request::get("/hop2").header("host", "svc.local").method("POST").body("payload"),
    ];
    let mut results = Vec::new();
    for back_kind in Kind::BOTH {
        let back_proxy = Proxy::start(back_kind, &back, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        for front_kind in Kind::BOTH {
            for want in [SERVER_ID, OTHER_ID] {
                let template = front(want).replace("${BACK}", &back_proxy.port.to_string());
                let front_proxy = Proxy::start(front_kind, &template, &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
                let mut seen = Vec::new();
                for req in &requests {
                    up.take();
                    let response = front_proxy.send(req).await.normalized();
                    seen.push((response, up.take().iter().map(describe).collect::<Vec<_>>()));
                }
                results.push(((back_kind, front_kind, want), seen));
            }
        }
    }
    let reference = &results[0].1; // Envoy → Envoy, right SAN
    let reference_bad = &results[1].1; // Envoy → Envoy, wrong SAN
    for ((back_kind, front_kind, want), seen) in &results {
        let expected = if *want == SERVER_ID { reference } else { reference_bad };
        assert_eq!(seen, expected, "front {front_kind:?} → back {back_kind:?} (server SAN {want}) differs from Envoy → Envoy");
    }
    let (ok, _) = &reference[0];
    assert_eq!(ok.status, 200);
    assert!(reference[0].1[0].contains(&format!("URI={CLIENT_ID}")), "{:?}", reference[0].1);
    let (bad, upstream) = &reference_bad[0];
    assert_eq!(bad.status, 503);
    assert!(upstream.is_empty());
    // Envoy 1.40 keeps the TLS reason out of the body (it is logged).
    assert!(bad.body_str().ends_with("reset reason: remote connection failure"), "{}", bad.body_str());
}
