//! `crds/crds.gen.yaml` is what the types generate.

#[test]
fn checked_in_crds_match_the_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds.gen.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = weft_crds::crd::all_yaml().expect("CRDs serialise");
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "{} is out of date (first difference at line {}): run `make crds` and commit the result",
            path.display(),
            line + 1
        );
    }
}

#[test]
fn every_document_is_a_crd_with_a_structural_schema() {
    let text = weft_crds::crd::all_yaml().unwrap();
    let documents = crate::yaml_documents(&text);
    assert_eq!(documents.len(), weft_crds::crd::all().len());
    for document in &documents {
        assert_eq!(document["kind"], "CustomResourceDefinition");
        for version in document["spec"]["versions"].as_array().unwrap() {
            let schema = &version["schema"]["openAPIV3Schema"];
            crate::schema::assert_structural(
                schema,
                &format!("{} {}", document["metadata"]["name"], version["name"]),
            );
        }
    }
}
