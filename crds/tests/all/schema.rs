//! A small checker for the CRDs' OpenAPI schemas, doing what the API
//! server does with them that matters here: the structural-schema rules,
//! pruning (a field the schema does not list is dropped, which we report
//! as an error), types, enums, patterns, `required` and the `oneOf`/`not`
//! constraints Istio's `oneof`s become. CEL rules are not evaluated.

use std::collections::BTreeSet;

use serde_json::Value;

/// Fails when the schema breaks a rule Kubernetes has for CRD schemas.
pub fn assert_structural(schema: &Value, at: &str) {
    let mut problems = Vec::new();
    structural(schema, at, false, &mut problems);
    assert!(
        problems.is_empty(),
        "not a structural schema:\n{}",
        problems.join("\n")
    );
}

fn structural(schema: &Value, at: &str, in_constraint: bool, problems: &mut Vec<String>) {
    let Some(object) = schema.as_object() else {
        return problems.push(format!("{at}: not an object"));
    };
    for forbidden in ["$ref", "definitions", "$defs", "const"] {
        if object.contains_key(forbidden) {
            problems.push(format!("{at}: has {forbidden}"));
        }
    }
    if in_constraint {
        for forbidden in [
            "type",
            "description",
            "default",
            "nullable",
            "additionalProperties",
        ] {
            if object.contains_key(forbidden) {
                problems.push(format!("{at}: {forbidden} inside allOf/anyOf/oneOf/not"));
            }
        }
    } else if !object.contains_key("type")
        && !flag(schema, "x-kubernetes-int-or-string")
        && !flag(schema, "x-kubernetes-preserve-unknown-fields")
    {
        problems.push(format!("{at}: no type"));
    }
    if let Some(values) = object.get("enum").and_then(Value::as_array) {
        if values.iter().any(Value::is_null) {
            problems.push(format!("{at}: null among enum values"));
        }
    }
    for (key, child) in object
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        structural(child, &format!("{at}.{key}"), in_constraint, problems);
    }
    for (key, suffix) in [("items", "[]"), ("additionalProperties", ".*")] {
        if let Some(child) = object.get(key).filter(|child| child.is_object()) {
            structural(child, &format!("{at}{suffix}"), in_constraint, problems);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for (i, child) in object
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            structural(child, &format!("{at}.{key}[{i}]"), true, problems);
        }
    }
    if let Some(child) = object.get("not") {
        structural(child, &format!("{at}.not"), true, problems);
    }
}

/// What checking a value against a schema found.
#[derive(Default)]
pub struct Report {
    /// Values the API server would refuse or prune.
    pub errors: Vec<String>,
    /// Schema paths (`spec.http[].match[].headers.*.exact`) the value sets.
    pub visited: BTreeSet<String>,
}

/// Checks `value` against `schema`; `path` names the value in messages.
pub fn check(schema: &Value, value: &Value, path: &str, schema_path: &str, report: &mut Report) {
    report.visited.insert(schema_path.to_owned());
    if value.is_null() {
        if !flag(schema, "nullable") {
            report
                .errors
                .push(format!("{path}: null where the schema does not allow it"));
        }
        return;
    }
    if !constraints_hold(schema, value) {
        report.errors.push(format!(
            "{path}: breaks the schema's oneOf/allOf/not constraints"
        ));
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            report
                .errors
                .push(format!("{path}: neither integer nor string"));
        }
        return;
    }
    let type_ = schema.get("type").and_then(Value::as_str);
    let type_ok = match type_ {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        return report
            .errors
            .push(format!("{path}: {value} is not of type {type_:?}"));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !values.contains(value) {
            report
                .errors
                .push(format!("{path}: {value} is not one of {values:?}"));
        }
    }
    if let (Some(pattern), Some(text)) = (
        schema.get("pattern").and_then(Value::as_str),
        value.as_str(),
    ) {
        if !regex::Regex::new(pattern)
            .expect("pattern compiles")
            .is_match(text)
        {
            report
                .errors
                .push(format!("{path}: {text:?} does not match {pattern}"));
        }
    }
    if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64) {
        if value.as_f64().is_some_and(|n| n < minimum) {
            report
                .errors
                .push(format!("{path}: {value} is below {minimum}"));
        }
    }
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check(
                    &schema["items"],
                    item,
                    &format!("{path}[{i}]"),
                    &format!("{schema_path}[]"),
                    report,
                );
            }
        }
        Value::Object(fields) => check_object(schema, fields, path, schema_path, report),
        _ => {}
    }
}

fn check_object(
    schema: &Value,
    fields: &serde_json::Map<String, Value>,
    path: &str,
    schema_path: &str,
    report: &mut Report,
) {
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let required = required.as_str().unwrap_or_default();
        if !fields.contains_key(required) {
            report
                .errors
                .push(format!("{path}: required field {required} missing"));
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|s| s.is_object());
    for (key, field) in fields {
        let field_path = format!("{path}.{key}");
        if let Some(property) = properties.and_then(|p| p.get(key)) {
            check(
                property,
                field,
                &field_path,
                &format!("{schema_path}.{key}"),
                report,
            );
        } else if let Some(additional) = additional {
            check(
                additional,
                field,
                &field_path,
                &format!("{schema_path}.*"),
                report,
            );
        } else if !flag(schema, "x-kubernetes-preserve-unknown-fields") {
            report.errors.push(format!(
                "{field_path}: not in the schema; the API server would prune it"
            ));
        }
    }
}

/// Whether `value` satisfies the constraint-only parts of `schema`
/// (`required`, `not`, `anyOf`, `oneOf`, `allOf`), as used in branches.
fn constraints_hold(schema: &Value, value: &Value) -> bool {
    let all = |key: &str| {
        schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    };
    let branch = |branch: &Value| {
        let required = branch
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        required
            .clone()
            .all(|name| value.get(name.as_str().unwrap_or_default()).is_some())
            && constraints_hold(branch, value)
    };
    let one_of = schema.get("oneOf").and_then(Value::as_array);
    let any_of = schema.get("anyOf").and_then(Value::as_array);
    all("allOf").all(branch)
        && one_of.is_none_or(|branches| branches.iter().filter(|b| branch(b)).count() == 1)
        && (flag(schema, "x-kubernetes-int-or-string")
            || any_of.is_none_or(|branches| branches.iter().any(branch)))
        && schema.get("not").is_none_or(|not| !branch(not))
}

/// Every schema path below `schema`, in [`Report::visited`]'s notation.
pub fn schema_paths(schema: &Value, schema_path: &str, out: &mut BTreeSet<String>) {
    out.insert(schema_path.to_owned());
    for (key, child) in schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        schema_paths(child, &format!("{schema_path}.{key}"), out);
    }
    if let Some(items) = schema.get("items") {
        schema_paths(items, &format!("{schema_path}[]"), out);
    }
    if let Some(additional) = schema.get("additionalProperties").filter(|s| s.is_object()) {
        schema_paths(additional, &format!("{schema_path}.*"), out);
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}
