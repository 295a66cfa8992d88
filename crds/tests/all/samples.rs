//! Istio's Bookinfo traffic rules in `config/samples/bookinfo/` (the demo's
//! live configuration) and `config/samples/bookinfo-rules/` (rules to apply
//! beside it) read into our types and write back as the same JSON.

use weft_crds::networking::VirtualService;
use weft_crds::Resource;

use crate::{json_difference, repo_path, yaml_documents};

fn bookinfo_files() -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for dir in ["config/samples/bookinfo", "config/samples/bookinfo-rules"] {
        let dir = repo_path(dir);
        files.extend(
            std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "yaml")),
        );
    }
    files.sort();
    files
}

#[test]
fn bookinfo_rules_read_and_write_back_unchanged() {
    let files = bookinfo_files();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "bookinfo-gateway.yaml",
        "destination-rule-all.yaml",
        "reviews-80-10-10.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    let mut kinds = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let resources =
            weft_crds::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let documents = yaml_documents(&text);
        assert_eq!(resources.len(), documents.len(), "{}", file.display());
        for (resource, document) in resources.iter().zip(&documents) {
            let written = serde_json::to_value(resource).unwrap();
            if let Some(difference) = json_difference("", document, &written) {
                panic!(
                    "{}: {} does not round-trip: {difference}",
                    file.display(),
                    resource.kind()
                );
            }
            kinds.push(resource.kind());
        }
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "DestinationRule",
            "Gateway",
            "ServiceEntry",
            "VirtualService",
            "WorkloadEntry"
        ]
    );
}

/// The one VirtualService in a Bookinfo sample file (`dir/file` under
/// `config/samples`).
fn virtual_service(file: &str) -> VirtualService {
    let text = std::fs::read_to_string(repo_path(&format!("config/samples/{file}"))).unwrap();
    match weft_crds::from_yaml(&text).unwrap().as_slice() {
        [Resource::VirtualService(vs)] => vs.clone(),
        other => panic!("{file}: one VirtualService expected, got {other:?}"),
    }
}

#[test]
fn the_80_10_10_split_reads_as_weights() {
    let reviews = virtual_service("bookinfo/reviews-80-10-10.yaml");
    let split: Vec<_> = reviews.spec.http[0]
        .route
        .iter()
        .map(|r| (r.destination.subset.as_deref().unwrap(), r.weight.unwrap()))
        .collect();
    assert_eq!(split, [("v1", 80), ("v2", 10), ("v3", 10)]);
}

#[test]
fn the_ratings_delay_is_two_seconds_for_jason() {
    let ratings = virtual_service("bookinfo-rules/ratings-test-delay.yaml");
    let rule = &ratings.spec.http[0];
    assert_eq!(
        rule.match_[0].headers["end-user"],
        weft_crds::common::StringMatch::exact("jason")
    );
    let delay = rule.fault.as_ref().unwrap().delay.as_ref().unwrap();
    assert_eq!(
        delay.fixed_delay.unwrap().0,
        std::time::Duration::from_secs(2)
    );
    assert_eq!(delay.percentage.unwrap().value, 100.0);
}

#[test]
fn every_served_version_reads_and_others_do_not() {
    let gateway = |api_version: &str| {
        format!("apiVersion: {api_version}\nkind: Gateway\nmetadata:\n  name: g\nspec:\n  selector:\n    istio: ingressgateway\n")
    };
    for version in ["v1", "v1beta1", "v1alpha3"] {
        let resources =
            weft_crds::from_yaml(&gateway(&format!("networking.istio.io/{version}"))).unwrap();
        assert!(matches!(resources[..], [Resource::Gateway(_)]), "{version}");
    }
    for api_version in ["networking.istio.io/v2", "gateway.networking.k8s.io/v1"] {
        let error = weft_crds::from_yaml(&gateway(api_version)).unwrap_err();
        assert!(
            error.to_string().contains("is not a kind Weft reads"),
            "{error}"
        );
    }
}
