//! Request/response header mutations (`*_headers_to_add` / `*_to_remove`)
//! with Envoy's `append_action` semantics.

use http::{HeaderMap, HeaderName, HeaderValue};
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;

use super::{ConfigError, Result};
use crate::access_log::format::{Conn, Format};

/// A header collection mutations can be applied to (Pingora's request and
/// response headers keep their own case map, so they are not a `HeaderMap`).
pub trait Headers {
    fn contains(&self, name: &HeaderName) -> bool;
    fn insert(&mut self, name: &HeaderName, value: &HeaderValue);
    fn append(&mut self, name: &HeaderName, value: &HeaderValue);
    fn remove(&mut self, name: &HeaderName);
    fn names(&self) -> impl Iterator<Item = &HeaderName>;

    /// Removes the headers whose name `drop` selects: a pass over the
    /// names present (usually none match, or one) instead of a removal per
    /// candidate, which Pingora's headers make costly: this runs on every
    /// request and response.
    fn remove_matching(&mut self, drop: impl Fn(&str) -> bool) {
        loop {
            let Some(name) = self.names().find(|n| drop(n.as_str())).cloned() else { break };
            self.remove(&name);
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
    value: Value,
    action: AppendAction,
    /// `keep_empty_value`: a formatted value that comes out empty is still added.
    keep_empty: bool,
}

#[derive(Debug, Clone)]
enum Value {
    Static(HeaderValue),
    /// `%...%` operators, evaluated per request.
    Formatted(Format),
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
            if h.value.is_empty() && !opt.keep_empty_value {
                continue; // Envoy drops empty values unless keep_empty_value is set.
            }
            let value = if h.value.contains('%') {
                // Envoy's substitution formatter.
                Value::Formatted(Format::parse_header_value(&h.value).map_err(|e| ConfigError::new(format!("{p}.header.value"), e))?)
            } else {
                Value::Static(HeaderValue::from_str(&h.value).map_err(|_| ConfigError::new(format!("{p}.header.value"), "invalid header value"))?)
            };
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
                keep_empty: opt.keep_empty_value,
            });
        }
        Ok(out)
    }

    /// Removes first, then adds, as Envoy's header parser evaluates them.
    /// Formatted values are made for the request on `conn`; one that comes
    /// out empty is skipped unless `keep_empty_value`, as in Envoy.
    pub fn apply(&self, headers: &mut impl Headers, conn: &Conn) {
        for name in &self.remove {
            headers.remove(name);
        }
        for add in &self.add {
            let formatted;
            let value = match &add.value {
                Value::Static(v) => v,
                Value::Formatted(f) => {
                    let text = f.header_value(conn);
                    if text.is_empty() && !add.keep_empty {
                        continue;
                    }
                    let Ok(v) = HeaderValue::from_str(&text) else { continue };
                    formatted = v;
                    &formatted
                }
            };
            let present = headers.contains(&add.name);
            match add.action {
                AppendAction::AppendIfExistsOrAdd => headers.append(&add.name, value),
                AppendAction::AddIfAbsent if !present => headers.insert(&add.name, value),
                AppendAction::OverwriteIfExistsOrAdd => headers.insert(&add.name, value),
                AppendAction::OverwriteIfExists if present => headers.insert(&add.name, value),
                AppendAction::AddIfAbsent | AppendAction::OverwriteIfExists => {}
            }
        }
    }
}

fn header_name(name: &str, path: &str) -> Result<HeaderName> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| ConfigError::new(path, format!("invalid header name \"{name}\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(value: &str, keep_empty: bool) -> xds_core::HeaderValueOption {
        xds_core::HeaderValueOption {
            header: Some(xds_core::HeaderValue { key: "x-f".into(), value: value.into(), ..Default::default() }),
            keep_empty_value: keep_empty,
            ..Default::default()
        }
    }

    #[test]
    fn formatted_values_follow_the_connection() {
        let m = HeaderMutations::compile(&[option("%DOWNSTREAM_REMOTE_ADDRESS%|%PROTOCOL%|%REQUESTED_SERVER_NAME%", false)], &[], "r", "request").expect("compiles");
        let conn = Conn {
            remote: Some("10.0.0.1:5000".parse().expect("addr")),
            local: None,
            protocol: "HTTP/2",
            requested_server_name: Some("api.test".into()),
        };
        let mut h = HeaderMap::new();
        m.apply(&mut h, &conn);
        assert_eq!(h.get("x-f").map(|v| v.as_bytes()), Some(&b"10.0.0.1:5000|HTTP/2|api.test"[..]));
    }

    #[test]
    fn an_empty_formatted_value_is_skipped_unless_kept() {
        let conn = Conn::default();
        for (keep, expected) in [(false, None), (true, Some(&b""[..]))] {
            let m = HeaderMutations::compile(&[option("%DOWNSTREAM_LOCAL_ADDRESS%", keep)], &[], "r", "request").expect("compiles");
            let mut h = HeaderMap::new();
            m.apply(&mut h, &conn);
            assert_eq!(h.get("x-f").map(|v| v.as_bytes()), expected, "keep_empty_value {keep}");
        }
    }

    #[test]
    fn operators_outside_header_values_are_refused_by_name() {
        let e = HeaderMutations::compile(&[option("%REQ(x-a)%", false)], &[], "r", "request").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("r.request_headers_to_add[0].header.value") && e.contains("%REQ(x-a)% is not supported in header values"), "{e}");
        let e = HeaderMutations::compile(&[option("50% off", false)], &[], "r", "request").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("unterminated operator"), "{e}");
    }
}
