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
    let f = findings(&format!("{VS}  hosts: [t]\n  tcp:\n  - route: [ {{ destination: {{ host: ratings }} }} ]\n"));
    assert!(f.contains(&"Error WFT0001 VirtualService/t spec.tcp[0].route[0].destination.host".to_string()), "{f:?}");
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
