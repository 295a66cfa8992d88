//! String, header and query-parameter matchers with Envoy's semantics.

use regex::Regex;
use weft_envoy_api::pb::envoy::config::route::v3 as xds_route;
use weft_envoy_api::pb::envoy::r#type::matcher::v3 as xds_matcher;

use super::{ConfigError, Result};

/// Compiles a `RegexMatcher` (RE2 syntax; the `regex` crate is RE2-like and
/// linear-time). Envoy's regex matches must cover the whole input.
pub fn regex(m: &xds_matcher::RegexMatcher, path: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{})$", m.regex)).map_err(|e| {
        ConfigError::new(
            format!("{path}.regex"),
            format!("invalid regex \"{}\": {e}", m.regex),
        )
    })
}

/// `type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub struct StringMatcher {
    kind: StringMatch,
    ignore_case: bool,
}

impl StringMatcher {
    pub fn compile(m: &xds_matcher::StringMatcher, path: &str) -> Result<Self> {
        use xds_matcher::string_matcher::MatchPattern as P;
        let lower = |s: &String| {
            if m.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        };
        let kind = match &m.match_pattern {
            Some(P::Exact(s)) => StringMatch::Exact(lower(s)),
            Some(P::Prefix(s)) => StringMatch::Prefix(lower(s)),
            Some(P::Suffix(s)) => StringMatch::Suffix(lower(s)),
            Some(P::Contains(s)) => StringMatch::Contains(lower(s)),
            Some(P::SafeRegex(r)) => StringMatch::Regex(regex(r, &format!("{path}.safe_regex"))?),
            Some(_) => {
                return Err(ConfigError::new(
                    path,
                    "this match_pattern is not supported by weft-proxy",
                ))
            }
            None => return Err(ConfigError::new(path, "match_pattern is required")),
        };
        Ok(Self {
            kind,
            ignore_case: m.ignore_case,
        })
    }

    /// The value of an `exact` matcher (lower-cased when `ignore_case`).
    pub fn exact(&self) -> Option<&str> {
        match &self.kind {
            StringMatch::Exact(s) => Some(s),
            _ => None,
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        let owned;
        let v = if self.ignore_case && !matches!(self.kind, StringMatch::Regex(_)) {
            owned = value.to_ascii_lowercase();
            owned.as_str()
        } else {
            value
        };
        match &self.kind {
            StringMatch::Exact(s) => v == s,
            StringMatch::Prefix(s) => v.starts_with(s.as_str()),
            StringMatch::Suffix(s) => v.ends_with(s.as_str()),
            StringMatch::Contains(s) => v.contains(s.as_str()),
            StringMatch::Regex(r) => r.is_match(v),
        }
    }
}

/// What a `HeaderMatcher` tests the header's value against.
#[derive(Debug, Clone)]
enum HeaderTest {
    Value(StringMatcher),
    Range(i64, i64),
    Present(bool),
}

/// `config.route.v3.HeaderMatcher`.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    pub name: http::HeaderName,
    test: HeaderTest,
    invert: bool,
    missing_as_empty: bool,
}

impl HeaderMatcher {
    #[allow(deprecated)] // the legacy *_match specifiers are still valid Envoy config
    pub fn compile(m: &xds_route::HeaderMatcher, path: &str) -> Result<Self> {
        use xds_matcher::string_matcher::MatchPattern as P;
        use xds_route::header_matcher::HeaderMatchSpecifier as S;
        let name = http::HeaderName::from_bytes(m.name.as_bytes()).map_err(|_| {
            ConfigError::new(
                format!("{path}.name"),
                format!("invalid header name \"{}\"", m.name),
            )
        })?;
        let string = |p: P| {
            let sm = xds_matcher::StringMatcher {
                match_pattern: Some(p),
                ignore_case: false,
            };
            StringMatcher::compile(&sm, path)
        };
        let test = match &m.header_match_specifier {
            Some(S::ExactMatch(s)) => HeaderTest::Value(string(P::Exact(s.clone()))?),
            Some(S::PrefixMatch(s)) => HeaderTest::Value(string(P::Prefix(s.clone()))?),
            Some(S::SuffixMatch(s)) => HeaderTest::Value(string(P::Suffix(s.clone()))?),
            Some(S::ContainsMatch(s)) => HeaderTest::Value(string(P::Contains(s.clone()))?),
            Some(S::SafeRegexMatch(r)) => HeaderTest::Value(StringMatcher {
                kind: StringMatch::Regex(regex(r, &format!("{path}.safe_regex_match"))?),
                ignore_case: false,
            }),
            Some(S::StringMatch(sm)) => {
                HeaderTest::Value(StringMatcher::compile(sm, &format!("{path}.string_match"))?)
            }
            Some(S::RangeMatch(r)) => HeaderTest::Range(r.start, r.end),
            Some(S::PresentMatch(p)) => HeaderTest::Present(*p),
            // No specifier: the header must be present (Envoy's default).
            None => HeaderTest::Present(true),
        };
        Ok(Self {
            name,
            test,
            invert: m.invert_match,
            missing_as_empty: m.treat_missing_header_as_empty,
        })
    }

    pub fn matches(&self, headers: &http::HeaderMap) -> bool {
        let values: Vec<&str> = headers
            .get_all(&self.name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let joined;
        let value = match values.len() {
            0 if self.missing_as_empty => Some(""),
            0 => None,
            1 => Some(values[0]),
            // Envoy joins repeated headers with ',' before matching.
            _ => {
                joined = values.join(",");
                Some(joined.as_str())
            }
        };
        let result = match (&self.test, value) {
            (HeaderTest::Present(want), v) => {
                // present_match: false matches when the header is absent.
                return (v.is_some() == *want) != self.invert;
            }
            (_, None) => return false, // absent headers never match, even inverted
            (HeaderTest::Value(m), Some(v)) => m.matches(v),
            (HeaderTest::Range(start, end), Some(v)) => v
                .trim()
                .parse::<i64>()
                .map(|n| n >= *start && n < *end)
                .unwrap_or(false),
        };
        result != self.invert
    }
}

/// `config.route.v3.QueryParameterMatcher`.
#[derive(Debug, Clone)]
pub struct QueryMatcher {
    name: String,
    value: Option<StringMatcher>,
}

impl QueryMatcher {
    pub fn compile(m: &xds_route::QueryParameterMatcher, path: &str) -> Result<Self> {
        use xds_route::query_parameter_matcher::QueryParameterMatchSpecifier as S;
        let value = match &m.query_parameter_match_specifier {
            Some(S::StringMatch(sm)) => {
                Some(StringMatcher::compile(sm, &format!("{path}.string_match"))?)
            }
            Some(S::PresentMatch(true)) | None => None,
            Some(S::PresentMatch(false)) => {
                return Err(ConfigError::new(
                    format!("{path}.present_match"),
                    "present_match: false never matches in Envoy; remove it",
                ))
            }
        };
        Ok(Self {
            name: m.name.clone(),
            value,
        })
    }

    /// `query` is the raw query string (after '?').
    pub fn matches(&self, query: &str) -> bool {
        // Envoy uses the first occurrence of a parameter.
        let found = query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == self.name).then_some(v)
        });
        match (found, &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(v), Some(m)) => m.matches(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_matcher::string_matcher::MatchPattern as P;

    fn header(spec: xds_route::header_matcher::HeaderMatchSpecifier, invert: bool) -> HeaderMatcher {
        let m = xds_route::HeaderMatcher {
            name: "x-h".into(),
            header_match_specifier: Some(spec),
            invert_match: invert,
            ..Default::default()
        };
        HeaderMatcher::compile(&m, "h").expect("compiles")
    }

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for v in values {
            map.append("x-h", v.parse().expect("value"));
        }
        map
    }

    #[test]
    fn inverted_matchers_never_match_absent_headers() {
        use xds_route::header_matcher::HeaderMatchSpecifier as S;
        let sm = |p| S::StringMatch(xds_matcher::StringMatcher { match_pattern: Some(p), ignore_case: false });
        let m = header(sm(P::Exact("a".into())), true);
        assert!(m.matches(&headers(&["b"])));
        assert!(!m.matches(&headers(&["a"])));
        assert!(!m.matches(&headers(&[])));
        // present_match: true inverted matches exactly when absent
        let p = header(S::PresentMatch(true), true);
        assert!(p.matches(&headers(&[])));
        assert!(!p.matches(&headers(&["x"])));
    }

    #[test]
    fn repeated_headers_are_joined_with_commas() {
        use xds_route::header_matcher::HeaderMatchSpecifier as S;
        let m = header(S::StringMatch(xds_matcher::StringMatcher { match_pattern: Some(P::Exact("a,b".into())), ignore_case: false }), false);
        assert!(m.matches(&headers(&["a", "b"])));
    }

    #[test]
    fn range_is_half_open_and_numeric() {
        use weft_envoy_api::pb::envoy::r#type::v3::Int64Range;
        use xds_route::header_matcher::HeaderMatchSpecifier as S;
        let m = header(S::RangeMatch(Int64Range { start: -5, end: 10 }), false);
        assert!(m.matches(&headers(&["-5"])));
        assert!(m.matches(&headers(&["9"])));
        assert!(!m.matches(&headers(&["10"])));
        assert!(!m.matches(&headers(&["nine"])));
    }

    #[test]
    fn regexes_must_match_the_whole_value() {
        let r = xds_matcher::RegexMatcher { regex: "v[0-9]".into(), ..Default::default() };
        let re = regex(&r, "p").expect("valid");
        assert!(re.is_match("v1"));
        assert!(!re.is_match("v12"));
        let bad = xds_matcher::RegexMatcher { regex: "(".into(), ..Default::default() };
        assert_eq!(regex(&bad, "p").expect_err("invalid").path, "p.regex");
    }

    #[test]
    fn query_parameters_use_the_first_occurrence() {
        let m = QueryMatcher::compile(
            &xds_route::QueryParameterMatcher {
                name: "a".into(),
                query_parameter_match_specifier: Some(
                    xds_route::query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(xds_matcher::StringMatcher {
                        match_pattern: Some(P::Exact("1".into())),
                        ignore_case: false,
                    }),
                ),
            },
            "q",
        )
        .expect("compiles");
        assert!(m.matches("a=1&a=2"));
        assert!(!m.matches("a=2&a=1"));
        assert!(!m.matches("b=1"));
    }
}
