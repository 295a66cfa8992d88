//! weft-crds' integration tests: the checked-in CRD YAML is what the types
//! generate (`generated`), Istio's Bookinfo rules read and write back
//! unchanged (`samples`), typos are errors that name the field
//! (`unknown_fields`), and each CRD's schema admits every field the types
//! model, set all at once (`maximal`, checked by the validator in
//! `schema`).

mod generated;
mod maximal;
mod samples;
mod schema;
mod unknown_fields;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A path relative to the repository root.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Every document of a YAML stream as JSON, empty documents left out.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|document| serde_yaml::Value::deserialize(document).expect("valid YAML"))
        .filter(|document| !document.is_null())
        .map(|document| serde_json::to_value(document).expect("YAML maps to JSON"))
        .collect()
}

/// Compares two JSON values as the API server would store them: numbers
/// by value (`100` and `100.0` are equal). Returns the first difference.
pub fn json_difference(path: &str, expected: &Value, actual: &Value) -> Option<String> {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => None,
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<_> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|key| {
                let path = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => json_difference(&path, x, y),
                    (x, y) => Some(format!("{path}: {x:?} != {y:?}")),
                }
            })
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| json_difference(&format!("{path}[{i}]"), x, y)),
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path}: {a} != {b}")),
    }
}
