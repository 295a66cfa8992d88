//! Invalid inputs paired with the finding each must produce.

use weft_crds::status::Level;
use weft_operator::validate::validate;

use crate::bookinfo;

/// The Bookinfo configuration plus `extra`: the findings as
/// "Level code kind/name path".
fn findings(extra: &str) -> Vec<String> {
    let mut resources = bookinfo();
    resources.extend(weft_crds::from_yaml(extra).expect("test YAML reads"));
    let v = validate(&resources);
    v.findings
        .iter()
        .map(|f| {
            let level = if f.message.level == Level::Error { "Error" } else { "Warning" };
            format!("{level} {} {}/{} {}", f.message.type_.code, f.key.kind, f.key.name, f.message.path.as_deref().unwrap_or(""))
        })
        .collect()
}

const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: t }\nspec:\n";

#[test]
fn the_samples_are_valid() {
    assert_eq!(findings(""), Vec::<String>::new());
}

#[test]
fn unknown_subset_host_and_port() {
    let f = findings(&format!(
        "{VS}  hosts: [t]\n  http:\n  - route:\n    - destination: {{ host: reviews, subset: v9 }}\n      weight: 50\n    - destination: {{ host: nowhere }}\n      weight: 50\n  - route:\n    - destination: {{ host: ratings, port: {{ number: 1 }} }}\n"
    ));
    assert_eq!(
        f,
        [
            "Error WFT0003 VirtualService/t spec.http[0].route[0].destination.subset",
            "Error WFT0003 VirtualService/t spec.http[0].route[1].destination.host",
            "Error WFT0003 VirtualService/t spec.http[1].route[0].destination.port.number",
        ]
    );
}

#[test]
fn invalid_regex_and_weights() {
    let f = findings(&format!(
        "{VS}  hosts: [t]\n  http:\n  - match:\n    - uri: {{ regex: \"(\" }}\n    route:\n    - destination: {{ host: ratings }}\n      weight: 60\n    - destination: {{ host: details }}\n      weight: 60\n"
    ));
    assert_eq!(
        f,
        ["Error WFT0002 VirtualService/t spec.http[0].route", "Error WFT0002 VirtualService/t spec.http[0].match[0].uri.regex"]
    );
}

#[test]
fn unsupported_fields_are_named() {
    // TCP routes for the sidecars (no gateways: "mesh"), and a match field weft lacks.
    let f = findings(&format!("{VS}  hosts: [t]\n  tcp:\n  - match: [ {{ sourceLabels: {{ app: x }} }} ]\n    route: [ {{ destination: {{ host: ratings }} }} ]\n"));
    assert_eq!(f, ["Error WFT0001 VirtualService/t spec.tcp[0].match[0].sourceLabels.app"]);
    let f = findings(&format!("{VS}  hosts: [t]\n  tcp:\n  - route: [ {{ destination: {{ host: ratings }} }} ]\n"));
    assert_eq!(f, ["Error WFT0001 VirtualService/t spec.tcp"]);
    let tls = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: t }\nspec:\n  host: ratings\n  trafficPolicy: { tls: { mode: ISTIO_MUTUAL } }\n";
    assert_eq!(findings(tls), ["Error WFT0001 DestinationRule/t spec.trafficPolicy.tls.mode"]);
}

#[test]
fn a_second_virtual_service_for_a_host_conflicts() {
    let f = findings(&format!("{VS}  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{ host: reviews }}\n"));
    assert_eq!(f, ["Error WFT0004 VirtualService/t spec.hosts[0]"]);
}

#[test]
fn invalid_resources_are_left_out_and_the_rest_kept() {
    let mut resources = bookinfo();
    let good = resources.len();
    resources.extend(weft_crds::from_yaml(&format!("{VS}  hosts: [t]\n  http:\n  - route:\n    - destination: {{ host: nowhere }}\n")).expect("reads"));
    assert_eq!(validate(&resources).accepted.len(), good);
}

const WASM: &str = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: { name: w, namespace: istio-system }\nspec:\n";
const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[test]
fn a_wasm_plugin_in_weft_s_subset_is_valid() {
    let spec = format!(
        "  selector: {{ matchLabels: {{ istio: ingressgateway }} }}\n  url: http://10.0.0.1:8000/p.wasm\n  sha256: {SHA}\n  pluginName: root\n  pluginConfig: {{ a: {{ b: [1, {{ c: d }}] }} }}\n  phase: AUTHN\n  priority: 10\n  failStrategy: FAIL_OPEN\n  type: HTTP\n  vmConfig: {{ env: [ {{ name: A, value: x }}, {{ name: HOME, valueFrom: HOST }} ] }}\n  match: [ {{ mode: CLIENT }} ]\n"
    );
    assert_eq!(findings(&format!("{WASM}{spec}")), Vec::<String>::new());
}

#[test]
fn wasm_plugin_module_urls() {
    let url = |url: &str, extra: &str| findings(&format!("{WASM}  url: {url}\n{extra}"));
    assert_eq!(url("oci://ghcr.io/x/p:1", ""), ["Error WFT0001 WasmPlugin/w spec.url"]);
    assert_eq!(url("ghcr.io/x/p:1", ""), ["Error WFT0001 WasmPlugin/w spec.url"], "no scheme means OCI, as in Istio");
    assert_eq!(url("https://m.example/p.wasm", &format!("  sha256: {SHA}\n")), ["Error WFT0001 WasmPlugin/w spec.url"]);
    assert_eq!(url("http://10.0.0.1/p.wasm", ""), ["Error WFT0002 WasmPlugin/w spec.sha256"]);
    assert_eq!(url("http://10.0.0.1/p.wasm", "  sha256: abc\n"), ["Error WFT0002 WasmPlugin/w spec.sha256"]);
    assert_eq!(url("http://m.example/p.wasm", &format!("  sha256: {SHA}\n")), Vec::<String>::new(), "a DNS name is fetched through a STRICT_DNS cluster");
    assert_eq!(url("http://bad_name/p.wasm", &format!("  sha256: {SHA}\n")), ["Error WFT0002 WasmPlugin/w spec.url"]);
    assert_eq!(url("file://p.wasm", ""), ["Error WFT0002 WasmPlugin/w spec.url"]);
    assert_eq!(url("ftp://m.example/p.wasm", ""), ["Error WFT0002 WasmPlugin/w spec.url"]);
    assert_eq!(url("file:///p.wasm", &format!("  sha256: {SHA}\n")), ["Warning WFT0001 WasmPlugin/w spec.sha256"], "not checked, but kept");
    // The message says what to do instead.
    let mut resources = bookinfo();
    resources.extend(weft_crds::from_yaml(&format!("{WASM}  url: oci://ghcr.io/x/p:1\n")).expect("reads"));
    let v = validate(&resources);
    assert_eq!(v.findings[0].message.message.as_deref(), Some("OCI images are not supported by weft; use file:// or http://"));
    assert!(v.index.wasm_plugins.is_empty(), "left out");
}

#[test]
fn wasm_plugin_fields_weft_does_not_implement() {
    let f = findings(&format!(
        "{WASM}  url: file:///p.wasm\n  type: NETWORK\n  imagePullPolicy: Always\n  imagePullSecret: s\n  verificationKey: k\n  targetRefs: [ {{ kind: Gateway, name: g }} ]\n  match: [ {{ mode: SERVER, ports: [ {{ number: 8080 }} ] }} ]\n"
    ));
    assert_eq!(
        f,
        [
            "Error WFT0001 WasmPlugin/w spec.imagePullPolicy",
            "Error WFT0001 WasmPlugin/w spec.imagePullSecret",
            "Error WFT0001 WasmPlugin/w spec.match[0].ports[0].number",
            "Error WFT0001 WasmPlugin/w spec.targetRefs[0].kind",
            "Error WFT0001 WasmPlugin/w spec.targetRefs[0].name",
            "Error WFT0001 WasmPlugin/w spec.verificationKey",
        ]
    );
    // A NETWORK plugin is reported once its fields are otherwise fine.
    assert_eq!(findings(&format!("{WASM}  url: file:///p.wasm\n  type: NETWORK\n")), ["Error WFT0001 WasmPlugin/w spec.type"]);
}

const GW: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: edge }\nspec:\n  selector: { istio: ingressgateway }\n  servers:\n";

#[test]
fn tcp_and_tls_routes_on_a_gateway_are_valid() {
    assert_eq!(findings(&crate::gateway_tcp_tls()), Vec::<String>::new());
}

#[test]
fn tcp_and_tls_route_errors() {
    let gw = format!("{GW}  - {{ port: {{ number: 9000, name: tcp, protocol: TCP }}, hosts: [\"*\"] }}\n---\n");
    let f = findings(&format!(
        "{gw}{VS}  hosts: [a.example.com]\n  gateways: [edge]\n  tcp:\n  - route:\n    - {{ destination: {{ host: ratings, subset: v9 }}, weight: 60 }}\n    - {{ destination: {{ host: nowhere }}, weight: 60 }}\n  - route: []\n  tls:\n  - match: [ {{ sniHosts: [] }}, {{ sniHosts: [a.example.com, b.example.com] }} ]\n    route: [ {{ destination: {{ host: ratings, port: {{ number: 1 }} }} }} ]\n  - match: []\n    route: [ {{ destination: {{ host: ratings }} }} ]\n"
    ));
    assert_eq!(
        f,
        [
            "Error WFT0002 VirtualService/t spec.tls[0].match[0].sniHosts",
            "Error WFT0002 VirtualService/t spec.tls[0].match[1].sniHosts",
            "Error WFT0002 VirtualService/t spec.tls[1].match",
            "Error WFT0002 VirtualService/t spec.tcp[0].route",
            "Error WFT0003 VirtualService/t spec.tcp[0].route[0].destination.subset",
            "Error WFT0003 VirtualService/t spec.tcp[0].route[1].destination.host",
            "Error WFT0002 VirtualService/t spec.tcp[1].route",
            "Error WFT0003 VirtualService/t spec.tls[0].route[0].destination.port.number",
        ],
        "no SNI host, one outside the hosts (b.example.com), no match; weights, unknown subset, host and port; no destination"
    );
}

#[test]
fn gateway_servers_weft_cannot_serve() {
    let f = findings(&format!(
        "{GW}  - {{ port: {{ number: 27017, name: mongo, protocol: MONGO }}, hosts: [\"*\"] }}\n  - {{ port: {{ number: 8443, name: tls, protocol: TLS }}, hosts: [\"*\"] }}\n  - {{ port: {{ number: 8444, name: https, protocol: HTTPS }}, hosts: [\"*\"], tls: {{ mode: SIMPLE }} }}\n  - {{ port: {{ number: 9000, name: tcp, protocol: TCP }}, hosts: [\"*\"], tls: {{ mode: PASSTHROUGH }} }}\n"
    ));
    assert_eq!(
        f,
        [
            "Error WFT0001 Gateway/edge spec.servers[0].port.protocol",
            "Error WFT0002 Gateway/edge spec.servers[1].tls",
            "Error WFT0001 Gateway/edge spec.servers[2].tls.mode",
            "Error WFT0002 Gateway/edge spec.servers[3].tls",
        ],
        "MONGO; TLS without tls settings; TLS termination; TLS settings on TCP"
    );
    let messages: Vec<String> = validate_extra(&format!("{GW}  - {{ port: {{ number: 8444, name: https, protocol: HTTPS }}, hosts: [\"*\"], tls: {{ mode: MUTUAL }} }}\n"));
    assert!(messages[0].contains("tls.mode MUTUAL is not supported by weft yet") && messages[0].contains("PASSTHROUGH is supported"), "{messages:?}");
}

#[test]
fn ports_and_sni_hosts_claimed_twice_conflict() {
    let other = GW.replace("name: edge", "name: edge2");
    let tcp_vs = |name: &str| format!("{}  hosts: [\"*\"]\n  gateways: [edge]\n  tcp:\n  - route: [ {{ destination: {{ host: ratings }} }} ]\n", VS.replace("name: t", &format!("name: {name}")));
    let tls_vs = |name: &str, sni: &str| {
        format!("{}  hosts: [\"*.example.com\"]\n  gateways: [edge]\n  tls:\n  - match: [ {{ sniHosts: [{sni}] }} ]\n    route: [ {{ destination: {{ host: details }} }} ]\n", VS.replace("name: t", &format!("name: {name}")))
    };
    let f = findings(&[
        format!("{GW}  - {{ port: {{ number: 9000, name: tcp, protocol: TCP }}, hosts: [\"*\"] }}\n  - {{ port: {{ number: 8443, name: tls, protocol: TLS }}, hosts: [\"*.example.com\"], tls: {{}} }}\n"),
        // Bookinfo's gateway serves HTTP on 8080 for the same proxies.
        format!("{other}  - {{ port: {{ number: 8080, name: tcp, protocol: TCP }}, hosts: [\"*\"] }}\n  - {{ port: {{ number: 9000, name: tcp2, protocol: TCP }}, hosts: [\"*\"] }}\n  - {{ port: {{ number: 8443, name: tls, protocol: TLS }}, hosts: [\"*.example.com\"], tls: {{}} }}\n"),
        tcp_vs("tcp-a"),
        tcp_vs("tcp-b"),
        tls_vs("tls-a", "a.example.com"),
        tls_vs("tls-b", "b.example.com, a.example.com"),
        tls_vs("tls-c", "c.example.com"),
    ]
    .join("---\n"));
    assert_eq!(
        f,
        [
            "Error WFT0004 Gateway/edge2 spec.servers[0].port.number",
            "Error WFT0004 Gateway/edge2 spec.servers[1].port.number",
            "Error WFT0004 Gateway/edge2 spec.servers[2].port.number",
            "Error WFT0004 VirtualService/tls-b spec.tls[0].match[0].sniHosts",
            "Error WFT0004 VirtualService/tcp-b spec.tcp[0]",
        ],
        "TCP on Bookinfo's HTTP port; a second TCP server on 9000; a repeated passthrough host; by port: an SNI host routed twice (8443), a second TCP route (9000)"
    );
}

#[test]
fn tcp_routes_to_a_source_ip_hash_are_warned_about() {
    let f = findings(&format!(
        "{GW}  - {{ port: {{ number: 9000, name: tcp, protocol: TCP }}, hosts: [\"*\"] }}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: db }}\nspec:\n  hosts: [db.example.com]\n  resolution: STATIC\n  ports: [ {{ number: 5432, name: tcp, protocol: TCP }} ]\n  endpoints: [ {{ address: 10.0.0.1, labels: {{ v: a }} }} ]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{ name: db }}\nspec:\n  host: db.example.com\n  trafficPolicy: {{ loadBalancer: {{ consistentHash: {{ useSourceIp: true }} }} }}\n  subsets: [ {{ name: a, labels: {{ v: a }}, trafficPolicy: {{ loadBalancer: {{ simple: RANDOM }} }} }}, {{ name: b, labels: {{ v: a }} }} ]\n---\n\
         {VS}  hosts: [\"*\"]\n  gateways: [edge]\n  tcp:\n  - route:\n    - {{ destination: {{ host: db.example.com, subset: a }}, weight: 50 }}\n    - {{ destination: {{ host: db.example.com, subset: b }}, weight: 50 }}\n"
    ));
    assert_eq!(f, ["Warning WFT0001 VirtualService/t spec.tcp[0].route[1].destination"], "subset a balances on its own; b hashes as the rule does");
}

/// The messages of the findings for Bookinfo plus `extra`.
fn validate_extra(extra: &str) -> Vec<String> {
    let mut resources = crate::bookinfo();
    resources.extend(weft_crds::from_yaml(extra).expect("test YAML reads"));
    validate(&resources).findings.iter().map(|f| f.message.message.clone().unwrap_or_default()).collect()
}

const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: e }\nspec:\n";

#[test]
fn dns_service_entries_are_checked_as_istioctl_checks_them() {
    let ok = format!(
        "{SE}  hosts: [api.example.com]\n  resolution: DNS\n  ports: [ {{ number: 443, name: https, protocol: HTTPS }} ]\n  endpoints: [ {{ address: api-1.example.com, ports: {{ https: 8443 }} }}, {{ address: 10.0.0.1 }} ]\n"
    );
    assert_eq!(findings(&ok), Vec::<String>::new());
    // Without endpoints, the hosts are resolved: no wildcards.
    let wildcard = format!("{SE}  hosts: [\"*.example.com\"]\n  resolution: DNS\n  ports: [ {{ number: 443, name: https, protocol: HTTPS }} ]\n");
    assert_eq!(findings(&wildcard), ["Error WFT0002 ServiceEntry/e spec.hosts[0]"]);
    // Endpoints: IPs or FQDNs (not CIDRs, not sockets), ports named after
    // the entry's; DNS_ROUND_ROBIN takes one; several hosts need HTTP/TLS ports.
    let bad = format!(
        "{SE}  hosts: [a.example.com, b.example.com]\n  resolution: DNS_ROUND_ROBIN\n  ports: [ {{ number: 5432, name: tcp, protocol: TCP }} ]\n  endpoints:\n  - {{ address: 10.0.0.0/24 }}\n  - {{ address: \"unix:///var/run/db.sock\" }}\n  - {{ address: db.example.com, ports: {{ grpc: 9000, tcp: 70000 }} }}\n"
    );
    assert_eq!(
        findings(&bad),
        [
            "Error WFT0002 ServiceEntry/e spec.endpoints",
            "Error WFT0002 ServiceEntry/e spec.endpoints[0].address",
            "Error WFT0002 ServiceEntry/e spec.endpoints[1].address",
            "Error WFT0003 ServiceEntry/e spec.endpoints[2].ports.grpc",
            "Error WFT0002 ServiceEntry/e spec.endpoints[2].ports.tcp",
            "Error WFT0002 ServiceEntry/e spec.hosts",
        ]
    );
    let dynamic = format!("{SE}  hosts: [\"*.example.com\"]\n  resolution: DYNAMIC_DNS\n  ports: [ {{ number: 80, name: http, protocol: HTTP }} ]\n");
    assert_eq!(findings(&dynamic), ["Error WFT0001 ServiceEntry/e spec.resolution"]);
}

#[test]
fn dns_service_entries_selecting_workload_entries() {
    let entries = |resolution: &str| {
        format!(
            "{SE}  hosts: [vms.example.com]\n  resolution: {resolution}\n  ports: [ {{ number: 80, name: http, protocol: HTTP }} ]\n  workloadSelector: {{ labels: {{ app: vm }} }}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: vm-1 }}\nspec: {{ address: vm-1.example.com, labels: {{ app: vm }} }}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: vm-2 }}\nspec: {{ address: 10.0.0.2, labels: {{ app: vm }} }}\n"
        )
    };
    // istioctl warns about a selector on a DNS entry; istiod uses the entries.
    assert_eq!(findings(&entries("DNS")), ["Warning WFT0002 ServiceEntry/e spec.workloadSelector"]);
    // Two endpoints for one LOGICAL_DNS cluster: every proxy would reject it.
    assert_eq!(findings(&entries("DNS_ROUND_ROBIN")), ["Warning WFT0002 ServiceEntry/e spec.workloadSelector", "Error WFT0002 ServiceEntry/e spec.workloadSelector"]);
    // A STATIC entry cannot use the name (istiod leaves it out of EDS).
    assert_eq!(findings(&entries("STATIC")), ["Warning WFT0002 ServiceEntry/e spec.workloadSelector"]);
    let we = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: { name: w }\nspec:\n";
    assert_eq!(findings(&format!("{we}  address: not_a_name\n")), ["Error WFT0002 WorkloadEntry/w spec.address"]);
    assert_eq!(findings(&format!("{we}  address: \"unix:///var/run/app.sock\"\n")), ["Error WFT0001 WorkloadEntry/w spec.address"]);
    let static_named = format!("{SE}  hosts: [s.example.com]\n  resolution: STATIC\n  ports: [ {{ number: 80, name: http, protocol: HTTP }} ]\n  endpoints: [ {{ address: s.example.com }} ]\n");
    assert_eq!(findings(&static_named), ["Error WFT0002 ServiceEntry/e spec.endpoints[0].address"]);
}
