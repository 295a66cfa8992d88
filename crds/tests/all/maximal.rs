//! For each kind, fixtures in `maximal/` that together set every field the
//! CRD schema has: they read into our types and write back unchanged, the
//! CRD's schema admits them without pruning anything, and no schema field
//! is left unset (so a field added to the types needs a fixture too).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::schema::{check, schema_paths, Report};
use crate::{json_difference, yaml_documents};

const FIXTURES: [(&str, &str); 7] = [
    ("DestinationRule", "destination-rule.yaml"),
    ("Gateway", "gateway.yaml"),
    ("ServiceEntry", "service-entry.yaml"),
    ("VirtualService", "virtual-service.yaml"),
    ("WorkloadEntry", "workload-entry.yaml"),
    ("WasmPlugin", "wasm-plugin.yaml"),
    ("Mesh", "mesh.yaml"),
];

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/all/maximal")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The storage version's schema of the CRD for `kind`.
fn schema_of(kind: &str) -> Value {
    let crd = weft_crds::crd::all()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .expect("a CRD per kind");
    let version = crd
        .spec
        .versions
        .into_iter()
        .find(|v| v.storage)
        .expect("a storage version");
    serde_json::to_value(version.schema.and_then(|s| s.open_api_v3_schema)).unwrap()
}

#[test]
fn every_kind_has_a_fixture() {
    let kinds: BTreeSet<_> = weft_crds::crd::all()
        .into_iter()
        .map(|crd| crd.spec.names.kind)
        .collect();
    let fixtures: BTreeSet<_> = FIXTURES.iter().map(|(kind, _)| kind.to_string()).collect();
    assert_eq!(kinds, fixtures);
}

#[test]
fn maximal_resources_round_trip() {
    for (kind, file) in FIXTURES {
        let text = fixture(file);
        let resources = weft_crds::from_yaml(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let documents = yaml_documents(&text);
        assert_eq!(resources.len(), documents.len(), "{file}");
        for (resource, document) in resources.iter().zip(&documents) {
            assert_eq!(resource.kind(), kind, "{file}");
            let written = serde_json::to_value(resource).unwrap();
            if let Some(difference) = json_difference("", document, &written) {
                panic!("{file}: does not round-trip: {difference}");
            }
        }
    }
}

#[test]
fn maximal_resources_fit_the_schema_and_cover_it() {
    for (kind, file) in FIXTURES {
        let schema = schema_of(kind);
        let mut report = Report::default();
        let mut sections = BTreeSet::new();
        for document in yaml_documents(&fixture(file)) {
            for section in ["spec", "status"] {
                if let Some(value) = document.get(section) {
                    sections.insert(section);
                    check(
                        &schema["properties"][section],
                        value,
                        section,
                        section,
                        &mut report,
                    );
                }
            }
        }
        assert!(
            report.errors.is_empty(),
            "{file}:\n{}",
            report.errors.join("\n")
        );
        let mut expected = BTreeSet::new();
        for section in sections {
            schema_paths(&schema["properties"][section], section, &mut expected);
        }
        let unset: Vec<_> = expected.difference(&report.visited).collect();
        assert!(
            unset.is_empty(),
            "{file} leaves schema fields unset: {unset:#?}"
        );
    }
}

#[test]
fn the_schema_check_catches_what_the_api_server_would_refuse() {
    let schema = schema_of("VirtualService");
    let spec = serde_json::json!({
        "hosts": ["a"],
        "http": [{
            "rout": [],
            "timeout": "ten seconds",
            "match": [{"uri": {"exact": "/a", "prefix": "/b"}}],
            "route": [{"destination": {"subset": "v1"}, "weight": "heavy"}],
        }],
    });
    let mut report = Report::default();
    check(
        &schema["properties"]["spec"],
        &spec,
        "spec",
        "spec",
        &mut report,
    );
    let errors = report.errors.join("\n");
    for expected in [
        "spec.http[0].rout: not in the schema",
        "spec.http[0].timeout: \"ten seconds\" does not match",
        "spec.http[0].match[0].uri: breaks the schema's oneOf",
        "spec.http[0].route[0].destination: required field host missing",
        "spec.http[0].route[0].weight: \"heavy\" is not of type",
    ] {
        assert!(errors.contains(expected), "{expected:?} not in:\n{errors}");
    }
}
