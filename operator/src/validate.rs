//! Validation, like `istioctl validate` and `analyze`: each problem names
//! the resource and the field path. A resource with an error is not put in
//! effect (the rest of the mesh is); warnings do not block.
//!
//! ```text
//!  resources ─► unsupported fields (supported.rs) ─► references, regexes, weights, conflicts ─► accepted + findings
//!                                                      (gateway.rs: servers, tcp/tls routes, ports and SNI claimed twice)
//! ```

mod gateway;
mod registry;
mod supported;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use weft_crds::status::{Level, Problem, ValidationMessage};
use weft_crds::Resource;

use crate::index::{namespace_of, qualify, Index, Key};

/// One problem of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub key: Key,
    pub message: ValidationMessage,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.message;
        let level = match m.level {
            Level::Error => "Error",
            Level::Warning => "Warning",
            _ => "Info",
        };
        write!(
            f,
            "{level} [{}] ({}) {}: {}",
            m.type_.code,
            self.key,
            m.path.as_deref().unwrap_or("spec"),
            m.message.as_deref().unwrap_or_default()
        )
    }
}

#[derive(Debug, Default)]
pub struct Validated {
    /// The resources in effect.
    pub accepted: Vec<Arc<Resource>>,
    pub findings: Vec<Finding>,
    /// `accepted`, indexed (validation needs the index anyway).
    pub index: Index,
}

impl Validated {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.message.level == Level::Error)
    }
}

pub fn key_of(r: &Resource) -> Key {
    let (kind, meta) = match r {
        Resource::DestinationRule(x) => ("DestinationRule", &x.metadata),
        Resource::Gateway(x) => ("Gateway", &x.metadata),
        Resource::ServiceEntry(x) => ("ServiceEntry", &x.metadata),
        Resource::VirtualService(x) => ("VirtualService", &x.metadata),
        Resource::WorkloadEntry(x) => ("WorkloadEntry", &x.metadata),
        Resource::WasmPlugin(x) => ("WasmPlugin", &x.metadata),
        Resource::Mesh(x) => ("Mesh", &x.metadata),
    };
    Key { kind, namespace: namespace_of(meta), name: meta.name.clone().unwrap_or_default() }
}

/// The spec as JSON, and for Mesh the defaults it is compared against (a
/// Mesh field only counts as set when it differs from its default).
fn spec_json(r: &Resource) -> (Value, Option<Value>) {
    let json = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);
    match r {
        Resource::DestinationRule(x) => (json(serde_json::to_value(&x.spec)), None),
        Resource::Gateway(x) => (json(serde_json::to_value(&x.spec)), None),
        Resource::ServiceEntry(x) => (json(serde_json::to_value(&x.spec)), None),
        Resource::VirtualService(x) => (json(serde_json::to_value(&x.spec)), None),
        Resource::WorkloadEntry(x) => (json(serde_json::to_value(&x.spec)), None),
        Resource::WasmPlugin(x) => (json(serde_json::to_value(&x.spec)), None),
        Resource::Mesh(x) => (json(serde_json::to_value(&x.spec)), Some(json(serde_json::to_value(weft_crds::mesh::MeshSpec::default())))),
    }
}

/// Validation that remembers each resource's field check, so a change
/// re-checks only what changed (standalone mode re-validates on every
/// edit).
#[derive(Default)]
pub struct Validator {
    /// Each resource's field findings, the resource they are of, and the
    /// pass that last saw it.
    fields: std::collections::HashMap<Key, (Arc<Resource>, Vec<Finding>, u64)>,
    pass: u64,
    /// The last index built, whose unchanged sections the next reuses.
    index: Index,
}

impl Validator {
    pub fn validate(&mut self, resources: &[Arc<Resource>]) -> Validated {
        self.pass += 1;
        let (fields, pass) = (&mut self.fields, self.pass);
        let result = validate_with(resources, &self.index, |key, r| match fields.get_mut(key) {
            // Unchanged files keep their resources' allocations.
            Some((old, findings, seen)) if Arc::ptr_eq(old, r) || **old == **r => {
                *seen = pass;
                findings.clone()
            }
            _ => {
                let findings = field_findings(key, r);
                fields.insert(key.clone(), (r.clone(), findings.clone(), pass));
                findings
            }
        });
        self.fields.retain(|_, (_, _, seen)| *seen == pass);
        self.index = result.index.clone();
        result
    }
}

pub fn validate(resources: &[Resource]) -> Validated {
    let resources: Vec<Arc<Resource>> = resources.iter().cloned().map(Arc::new).collect();
    validate_with(&resources, &Index::default(), |k, r| field_findings(k, r))
}

/// Fields set outside what translation implements.
fn field_findings(key: &Key, r: &Resource) -> Vec<Finding> {
    let (spec, defaults) = spec_json(r);
    let mut leaves = Vec::new();
    walk(&spec, defaults.as_ref(), String::new(), String::new(), &mut leaves);
    leaves
        .into_iter()
        .filter(|(_, pattern)| !supported::supported(key.kind, pattern))
        .map(|(path, pattern)| {
            let why = supported::reason(key.kind, &pattern).unwrap_or("not supported by weft yet");
            finding(key, Level::Error, Problem::UnsupportedField, &format!("spec.{path}"), why)
        })
        .collect()
}

fn validate_with(resources: &[Arc<Resource>], previous: &Index, mut fields: impl FnMut(&Key, &Arc<Resource>) -> Vec<Finding>) -> Validated {
    use std::collections::HashSet;
    let mut findings = Vec::new();
    // One resource per kind, namespace and name, as in Kubernetes: the
    // first read wins (files are read in name order).
    let mut seen = HashSet::with_capacity(resources.len());
    let mut keyed: Vec<(Key, &Arc<Resource>)> = Vec::with_capacity(resources.len());
    for r in resources {
        let key = key_of(r);
        if seen.insert(key.clone()) {
            keyed.push((key, r));
        } else {
            findings.push(finding(&key, Level::Warning, Problem::Conflict, "metadata.name", "defined more than once; the first definition is in effect"));
        }
    }
    let mut rejected = HashSet::new();
    for (key, r) in &keyed {
        let found = fields(key, r);
        if found.iter().any(|f| f.message.level == Level::Error) {
            rejected.insert(key.clone());
        }
        findings.extend(found);
    }
    let first_pass: Vec<Arc<Resource>> = keyed.iter().filter(|(k, _)| !rejected.contains(k)).map(|(_, r)| Arc::clone(r)).collect();
    let index = Index::rebuild(&first_pass, previous);
    semantic(&index, &first_pass, &mut findings);
    let errors: HashSet<&Key> = findings.iter().filter(|f| f.message.level == Level::Error).map(|f| &f.key).collect();
    let accepted: Vec<Arc<Resource>> = keyed.iter().filter(|(k, _)| !errors.contains(k)).map(|(_, r)| Arc::clone(r)).collect();
    // Usually nothing fails the semantic checks and the index stands.
    let index = if accepted.len() == first_pass.len() { index } else { Index::rebuild(&accepted, &index) };
    Validated { accepted, findings, index }
}

fn finding(key: &Key, level: Level, problem: Problem, path: &str, message: &str) -> Finding {
    Finding { key: key.clone(), message: ValidationMessage::new(level, problem, path, message) }
}

/// Collects the set leaves of a spec: (concrete path, path with `[]`).
fn walk(v: &Value, default: Option<&Value>, path: String, pattern: String, out: &mut Vec<(String, String)>) {
    if default == Some(v) {
        return;
    }
    let join = |base: &str, key: &str| if base.is_empty() { key.to_string() } else { format!("{base}.{key}") };
    match v {
        Value::Null => {}
        Value::Object(map) => {
            for (k, child) in map {
                let d = default.and_then(|d| d.get(k));
                walk(child, d, join(&path, k), join(&pattern, k), out);
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, None, format!("{path}[{i}]"), format!("{pattern}[]"), out);
            }
        }
        Value::Array(items) if items.is_empty() => {}
        _ => out.push((path, pattern)),
    }
}

/// References, values and conflicts.
fn semantic(index: &Index, resources: &[Arc<Resource>], findings: &mut Vec<Finding>) {
    // host → the VirtualService that routes it for the sidecars.
    let mut mesh_hosts: BTreeMap<String, Key> = BTreeMap::new();
    for r in resources {
        let key = key_of(r);
        match &**r {
            Resource::VirtualService(vs) => {
                let spec = &vs.spec;
                for (i, http) in spec.http.iter().enumerate() {
                    let path = format!("spec.http[{i}]");
                    let actions = [!http.route.is_empty(), http.redirect.is_some(), http.direct_response.is_some(), http.delegate.is_some()];
                    if actions.iter().filter(|a| **a).count() != 1 {
                        findings.push(finding(&key, Level::Error, Problem::InvalidValue, &path, "exactly one of route, redirect, directResponse or delegate is required"));
                    }
                    if let Some(d) = &http.delegate {
                        let namespace = d.namespace.clone().unwrap_or_else(|| key.namespace.clone());
                        let name = d.name.clone().unwrap_or_default();
                        match index.virtual_services.iter().find(|r| r.key.namespace == namespace && r.key.name == name) {
                            None => findings.push(finding(&key, Level::Error, Problem::ReferenceNotFound, &format!("{path}.delegate"), &format!("no VirtualService {namespace}/{name}"))),
                            Some(r) if !r.spec.hosts.is_empty() => findings.push(finding(&key, Level::Error, Problem::InvalidValue, &format!("{path}.delegate"), &format!("VirtualService {namespace}/{name} has hosts: a delegate must not"))),
                            Some(r) if r.spec.http.iter().any(|h| h.delegate.is_some()) => findings.push(finding(&key, Level::Error, Problem::InvalidValue, &format!("{path}.delegate"), &format!("VirtualService {namespace}/{name} delegates again: one level only"))),
                            Some(_) => {}
                        }
                    }
                    check_weights(&key, &http.route.iter().map(|d| d.weight).collect::<Vec<_>>(), &format!("{path}.route"), findings);
                    for (j, d) in http.route.iter().enumerate() {
                        check_destination(index, &key, &d.destination, &format!("{path}.route[{j}].destination"), findings);
                    }
                    for (j, m) in http.match_.iter().enumerate() {
                        let mpath = format!("{path}.match[{j}]");
                        let mut regexes: Vec<(String, &str)> = Vec::new();
                        for (field, sm) in [("uri", &m.uri), ("method", &m.method), ("authority", &m.authority), ("scheme", &m.scheme)] {
                            if let Some(r) = sm.as_ref().and_then(|s| s.regex.as_deref()) {
                                regexes.push((format!("{mpath}.{field}.regex"), r));
                            }
                        }
                        for (field, map) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers), ("queryParams", &m.query_params)] {
                            for (name, sm) in map {
                                if let Some(r) = sm.regex.as_deref() {
                                    regexes.push((format!("{mpath}.{field}.{name}.regex"), r));
                                }
                            }
                        }
                        for (p, r) in regexes {
                            if let Err(e) = regex::Regex::new(r) {
                                findings.push(finding(&key, Level::Error, Problem::InvalidValue, &p, &format!("invalid regex {r:?}: {e}")));
                            }
                        }
                    }
                }
                gateway::routes(index, &key, spec, findings);
                if crate::index::binds_mesh(&spec.gateways) {
                    for (i, host) in spec.hosts.iter().enumerate() {
                        let fqdn = qualify(host, &key.namespace);
                        match mesh_hosts.get(&fqdn) {
                            Some(owner) => findings.push(finding(&key, Level::Error, Problem::Conflict, &format!("spec.hosts[{i}]"), &format!("host {fqdn} is already routed by {owner}"))),
                            None => {
                                mesh_hosts.insert(fqdn, key.clone());
                            }
                        }
                    }
                }
            }
            Resource::Gateway(g) => gateway::servers(&key, &g.spec, findings),
            Resource::ServiceEntry(se) => registry::service_entry(index, &key, &se.spec, findings),
            Resource::DestinationRule(dr) => {
                if index.service(&dr.spec.host, &key.namespace).is_none() {
                    findings.push(finding(&key, Level::Warning, Problem::ReferenceNotFound, "spec.host", &format!("host {} is not a service of the mesh", dr.spec.host)));
                }
            }
            Resource::WorkloadEntry(we) => registry::workload_entry(&key, &we.spec, findings),
            Resource::WasmPlugin(w) => {
                use weft_crds::extensions::wasm_plugin::PluginType;
                use crate::index::wasm_plugin::Module;
                match Module::parse(&w.spec.url, w.spec.sha256.as_deref()) {
                    Err(e) => {
                        let problem = if e.unsupported() { Problem::UnsupportedField } else { Problem::InvalidValue };
                        findings.push(finding(&key, Level::Error, problem, e.path(), &e.to_string()));
                    }
                    Ok(Module::File(_)) if w.spec.sha256.is_some() => {
                        findings.push(finding(&key, Level::Warning, Problem::UnsupportedField, "spec.sha256", "not checked for file:// modules (proxies read the file as it is)"));
                    }
                    Ok(_) => {}
                }
                if w.spec.type_ == Some(PluginType::Network) {
                    findings.push(finding(&key, Level::Error, Problem::UnsupportedField, "spec.type", "NETWORK plugins are not supported by weft yet (HTTP is)"));
                }
            }
            Resource::Mesh(_) => {}
        }
    }
    gateway::conflicts(index, findings);
}

/// Weights of several destinations must add up to 100 (one alone takes all).
fn check_weights(key: &Key, weights: &[Option<i32>], path: &str, findings: &mut Vec<Finding>) {
    let sum: i32 = weights.iter().map(|w| w.unwrap_or(0)).sum();
    if weights.len() > 1 && sum != 100 {
        findings.push(finding(key, Level::Error, Problem::InvalidValue, path, &format!("weights must add up to 100, they add up to {sum}")));
    }
}

fn check_destination(index: &Index, key: &Key, d: &weft_crds::networking::virtual_service::Destination, path: &str, findings: &mut Vec<Finding>) {
    let Some(service) = index.service(&d.host, &key.namespace) else {
        findings.push(finding(key, Level::Error, Problem::ReferenceNotFound, &format!("{path}.host"), &format!("host {} is not a service of the mesh", d.host)));
        return;
    };
    match d.port.as_ref().and_then(|p| p.number) {
        Some(n) if service.port(n).is_none() => {
            findings.push(finding(key, Level::Error, Problem::ReferenceNotFound, &format!("{path}.port.number"), &format!("service {} has no port {n}", service.host)));
        }
        None if service.ports.len() > 1 => {
            findings.push(finding(key, Level::Error, Problem::InvalidValue, &format!("{path}.port"), &format!("service {} has several ports: set port.number", service.host)));
        }
        _ => {}
    }
    if let Some(subset) = &d.subset {
        let defined = index
            .destination_rule(service)
            .is_some_and(|r| r.spec.subsets.iter().any(|s| s.name == *subset));
        if !defined {
            findings.push(finding(key, Level::Error, Problem::ReferenceNotFound, &format!("{path}.subset"), &format!("no DestinationRule defines subset {subset} of {}", service.host)));
        }
    }
}
