//! A field our types do not know is an error naming it and its path, in
//! specs at any depth, so standalone mode never ignores a typo.

use weft_crds::DocumentError;

fn read_error(yaml: &str) -> DocumentError {
    weft_crds::from_yaml(yaml).expect_err("the typo is refused")
}

#[test]
fn a_misspelt_route_is_named_with_its_path() {
    let error = read_error(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - rout:
    - destination:
        host: reviews
"#,
    );
    let DocumentError::Invalid {
        path,
        message,
        kind,
        name,
        ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!(
        (kind.as_str(), name.as_str()),
        ("VirtualService", "reviews")
    );
    assert_eq!(path, "spec.http[0].rout");
    assert!(message.contains("unknown field `rout`"), "{message}");
    assert!(
        error
            .to_string()
            .contains("spec.http[0].rout: unknown field `rout`"),
        "{error}"
    );
}

#[test]
fn typos_deep_in_each_kind_are_refused() {
    let cases = [
        (
            "kind: DestinationRule\nspec:\n  host: r\n  trafficPolicy:\n    loadBalancer:\n      simpel: ROUND_ROBIN\n",
            "spec.trafficPolicy.loadBalancer.simpel",
        ),
        (
            "kind: Gateway\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n    tls: {httpRedirect: true}\n",
            "spec.servers[0].tls.httpRedirect",
        ),
        (
            "kind: ServiceEntry\nspec:\n  hosts: [a.example]\n  endpoints:\n  - adress: 10.0.0.1\n",
            "spec.endpoints[0].adress",
        ),
        (
            "kind: VirtualService\nspec:\n  http:\n  - match:\n    - uri: {exact: /a, prefixx: /b}\n",
            "spec.http[0].match[0].uri.prefixx",
        ),
        ("kind: WorkloadEntry\nspec:\n  adress: 10.0.0.1\n", "spec.adress"),
    ];
    for (body, expected) in cases {
        let yaml = format!("apiVersion: networking.istio.io/v1\nmetadata: {{name: x}}\n{body}");
        match read_error(&yaml) {
            DocumentError::Invalid { path, .. } => assert_eq!(path, expected),
            other => panic!("{expected}: {other}"),
        }
    }
    let wasm = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: x}\nspec:\n  url: oci://x\n  vmConfig: {env: [{name: A, valu: b}]}\n";
    assert!(
        matches!(read_error(wasm), DocumentError::Invalid { path, .. } if path == "spec.vmConfig.env[0].valu")
    );
    let mesh = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec:\n  trustDomian: example.org\n";
    assert!(
        matches!(read_error(mesh), DocumentError::Invalid { path, .. } if path == "spec.trustDomian")
    );
}

#[test]
fn a_wrong_enum_value_names_the_allowed_ones() {
    let error = read_error(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x}\nspec:\n  hosts: [a.example]\n  resolution: dns\n",
    );
    let message = error.to_string();
    assert!(message.contains("spec.resolution"), "{message}");
    assert!(message.contains("DNS_ROUND_ROBIN"), "{message}");
}

#[test]
fn a_bad_duration_is_refused_with_its_path() {
    let error = read_error(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  http:\n  - timeout: 10 seconds\n",
    );
    let DocumentError::Invalid { path, message, .. } = error else {
        panic!("{error}");
    };
    assert_eq!(path, "spec.http[0].timeout");
    assert!(message.contains("invalid duration"), "{message}");
}

#[test]
fn typos_outside_the_spec_are_refused_too() {
    let top = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\nlabels: {app: x}\n";
    let DocumentError::Invalid { path, message, .. } = read_error(top) else {
        panic!("top-level typo accepted");
    };
    assert_eq!(path, "labels");
    assert!(message.contains("unknown field `labels`"), "{message}");

    let metadata = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namepsace: prod}\nspec: {}\n";
    let DocumentError::Invalid { path, .. } = read_error(metadata) else {
        panic!("metadata typo accepted");
    };
    assert_eq!(path, "metadata.namepsace");
}
