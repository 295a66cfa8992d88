//! Request/response header mutations (`*_headers_to_add` / `*_to_remove`)
//! with Envoy's `append_action` semantics.

use http::{HeaderMap, HeaderName, HeaderValue};
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;

use super::{ConfigError, Result};

/// A header collection mutations can be applied to (Pingora's request and
/// response headers keep their own case map, so they are not a `HeaderMap`).
pub trait Headers {
    fn contains(&self, name: &HeaderName) -> bool;
    fn insert(&mut self, name: &HeaderName, value: &HeaderValue);
    fn append(&mut self, name: &HeaderName, value: &HeaderValue);
    fn remove(&mut self, name: &HeaderName);
    fn names(&self) -> impl Iterator<Item = &HeaderName>;

    /// Removes the headers whose name `drop` selects. One pass over the
    /// names present (usually none match) instead of a removal per
    /// candidate, which Pingora's headers make costly: this runs on every
    /// request and response.
    fn remove_matching(&mut self, drop: impl Fn(&str) -> bool) {
        let doomed: Vec<HeaderName> = self.names().filter(|n| drop(n.as_str())).cloned().collect();
        for name in &doomed {
            self.remove(name);
        }
    }
}

impl Headers for HeaderMap {
    fn contains(&self, name: &HeaderName) -> bool {
        self.contains_key(name)
    }
    fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.keys()
    }
    fn insert(&mut self, name: &HeaderName, value: &HeaderValue) {
        HeaderMap::insert(self, name.clone(), value.clone());
    }
    fn append(&mut self, name: &HeaderName, value: &HeaderValue) {
        HeaderMap::append(self, name.clone(), value.clone());
    }
    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// `HeaderValueOption.append_action`, named as Envoy names them.
enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

#[derive(Debug, Clone)]
struct Add {
    name: HeaderName,
    value: HeaderValue,
    action: AppendAction,
}

/// One level's mutations (route config, virtual host, route or weighted cluster).
#[derive(Debug, Clone, Default)]
pub struct HeaderMutations {
    remove: Vec<HeaderName>,
    add: Vec<Add>,
}

impl HeaderMutations {
    #[allow(deprecated)] // `append` is deprecated but still honoured by Envoy
    pub fn compile(
        add: &[xds_core::HeaderValueOption],
        remove: &[String],
        path: &str,
        side: &str,
    ) -> Result<Self> {
        let mut out = HeaderMutations::default();
        for (i, name) in remove.iter().enumerate() {
            let p = format!("{path}.{side}_headers_to_remove[{i}]");
            out.remove.push(header_name(name, &p)?);
        }
        for (i, opt) in add.iter().enumerate() {
            let p = format!("{path}.{side}_headers_to_add[{i}]");
            let Some(h) = &opt.header else {
                return Err(ConfigError::new(
                    format!("{p}.header"),
                    "header is required",
                ));
            };
            let name = header_name(&h.key, &format!("{p}.header.key"))?;
            if name.as_str().starts_with(':') || name == http::header::HOST {
                return Err(ConfigError::new(
                    format!("{p}.header.key"),
                    format!("\"{}\" cannot be modified", h.key),
                ));
            }
            if h.value.contains('%') {
                // Envoy treats `%...%` as a substitution formatter; we do not implement them yet.
                return Err(ConfigError::new(
                    format!("{p}.header.value"),
                    format!(
                        "substitution formatters (\"{}\") are not supported by weft-proxy",
                        h.value
                    ),
                ));
            }
            if h.value.is_empty() && !opt.keep_empty_value {
                continue; // Envoy drops empty values unless keep_empty_value is set.
            }
            let value = HeaderValue::from_str(&h.value).map_err(|_| {
                ConfigError::new(format!("{p}.header.value"), "invalid header value")
            })?;
            let action = match (&opt.append, opt.append_action) {
                (Some(b), _) if b.value => AppendAction::AppendIfExistsOrAdd,
                (Some(_), _) => AppendAction::OverwriteIfExistsOrAdd,
                (None, 0) => AppendAction::AppendIfExistsOrAdd,
                (None, 1) => AppendAction::AddIfAbsent,
                (None, 2) => AppendAction::OverwriteIfExistsOrAdd,
                (None, 3) => AppendAction::OverwriteIfExists,
                (None, n) => {
                    return Err(ConfigError::new(
                        format!("{p}.append_action"),
                        format!("unknown append_action {n}"),
                    ))
                }
            };
            out.add.push(Add {
                name,
                value,
                action,
            });
        }
        Ok(out)
    }

    /// Removes first, then adds, as Envoy's header parser evaluates them.
    pub fn apply(&self, headers: &mut impl Headers) {
        for name in &self.remove {
            headers.remove(name);
        }
        for add in &self.add {
            let present = headers.contains(&add.name);
            match add.action {
                AppendAction::AppendIfExistsOrAdd => headers.append(&add.name, &add.value),
                AppendAction::AddIfAbsent if !present => headers.insert(&add.name, &add.value),
                AppendAction::OverwriteIfExistsOrAdd => headers.insert(&add.name, &add.value),
                AppendAction::OverwriteIfExists if present => headers.insert(&add.name, &add.value),
                AppendAction::AddIfAbsent | AppendAction::OverwriteIfExists => {}
            }
        }
    }
}

fn header_name(name: &str, path: &str) -> Result<HeaderName> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| ConfigError::new(path, format!("invalid header name \"{name}\"")))
}
