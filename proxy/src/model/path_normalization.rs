//! What the connection manager does to a request's path before anything
//! reads it: `normalize_path`, `merge_slashes` and
//! `path_with_escaped_slashes_action`, with Envoy's semantics.
//!
//! This is a security feature, not a nicety. An `AuthorizationPolicy`
//! that denies `/admin` becomes an RBAC path rule; without normalization
//! `/public/../admin` or `/%61dmin` match no rule on the proxy and reach an
//! application that resolves them to `/admin`. Istio therefore turns
//! `normalize_path` on for every proxy, and routes, filters, access logs
//! and the upstream all see the normalized path. It must be Envoy's
//! normalization exactly, or a policy written against Envoy's behaviour
//! has holes on ours: the e2e tests compare thousands of paths with Envoy.
//!
//! Envoy's `normalize_path` is Chromium's URL path canonicalizer (RFC 3986
//! dot-segment removal, `%2e` counted as a dot, backslash as slash,
//! percent-escapes of unreserved characters decoded, characters a path may
//! not hold escaped, `%00` refused). [`canonicalize`] is written from that
//! specification and checked against Envoy byte for byte.

use weft_envoy_api::pb::envoy::extensions::filters::network::http_connection_manager::v3 as xds_hcm;

use super::{ConfigError, Result};

/// The connection manager's path policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathNormalization {
    /// `normalize_path` (Envoy's default: off; Istio turns it on).
    pub normalize: bool,
    /// `merge_slashes`: `//` becomes `/` in the path (not the query).
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

/// `path_with_escaped_slashes_action`: what a path with `%2F` or `%5C`
/// (either case) gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Left as they are (`KEEP_UNCHANGED`, and Envoy's default).
    #[default]
    Keep,
    /// 400 (`REJECT_REQUEST`).
    Reject,
    /// Decoded, then a 307 to the result (`UNESCAPE_AND_REDIRECT`).
    Redirect,
    /// Decoded, and the request goes on (`UNESCAPE_AND_FORWARD`).
    Forward,
}

/// What a request's path gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The request goes on, with this path when it changed.
    Continue(Option<Vec<u8>>),
    /// 307 to this path (escaped slashes under `UNESCAPE_AND_REDIRECT`);
    /// a gRPC client cannot follow it, and gets the 400 instead.
    Redirect(Vec<u8>),
    /// 400: `%00`, or escaped slashes under `REJECT_REQUEST`.
    Reject,
}

impl PathNormalization {
    pub fn compile(hcm: &xds_hcm::HttpConnectionManager, path: &str) -> Result<Self> {
        use xds_hcm::http_connection_manager::PathWithEscapedSlashesAction as A;
        let escaped_slashes = match A::try_from(hcm.path_with_escaped_slashes_action) {
            // The default's "implementation specific" choice is Envoy's: keep.
            Ok(A::ImplementationSpecificDefault | A::KeepUnchanged) => EscapedSlashes::Keep,
            Ok(A::RejectRequest) => EscapedSlashes::Reject,
            Ok(A::UnescapeAndRedirect) => EscapedSlashes::Redirect,
            Ok(A::UnescapeAndForward) => EscapedSlashes::Forward,
            Err(_) => {
                return Err(ConfigError::new(
                    format!("{path}.path_with_escaped_slashes_action"),
                    format!("unknown action {}", hcm.path_with_escaped_slashes_action),
                ))
            }
        };
        Ok(PathNormalization {
            normalize: hcm.normalize_path.as_ref().is_some_and(|b| b.value),
            merge_slashes: hcm.merge_slashes,
            escaped_slashes,
        })
    }

    /// The path (with its query) after the policy, in Envoy's order:
    /// escaped slashes, then canonicalization, then slash merging (last,
    /// so that escapes cannot hide a `//` from it). A fragment never gets
    /// here: the connection manager refuses it first.
    pub fn apply(&self, target: &[u8]) -> Outcome {
        let mut changed: Option<Vec<u8>> = None;
        let mut redirect = false;
        if self.escaped_slashes != EscapedSlashes::Keep {
            if let Some(unescaped) = unescape_slashes(target) {
                match self.escaped_slashes {
                    EscapedSlashes::Reject => return Outcome::Reject,
                    EscapedSlashes::Redirect => redirect = true,
                    EscapedSlashes::Forward | EscapedSlashes::Keep => {}
                }
                changed = Some(unescaped);
            }
        }
        if self.normalize {
            let current = changed.as_deref().unwrap_or(target);
            let (path, query) = split_query(current);
            // Most paths hold nothing the canonicalizer would change.
            let canonical_already = path.first() == Some(&b'/') && path.iter().all(|&b| matches!(class(b), Class::Pass | Class::Unescape));
            if !canonical_already {
                match canonicalize(path) {
                    None => return Outcome::Reject,
                    Some(canonical) if canonical != path => {
                        let mut new = canonical;
                        new.extend_from_slice(query);
                        changed = Some(new);
                    }
                    Some(_) => {}
                }
            }
        }
        if self.merge_slashes {
            if let Some(merged) = merge_slashes(changed.as_deref().unwrap_or(target)) {
                changed = Some(merged);
            }
        }
        match changed {
            Some(path) if redirect => Outcome::Redirect(path),
            changed => Outcome::Continue(changed),
        }
    }
}

/// The path and the query (from its `?`, inclusive).
fn split_query(target: &[u8]) -> (&[u8], &[u8]) {
    let at = target.iter().position(|&b| b == b'?').unwrap_or(target.len());
    target.split_at(at)
}

/// `%2F` and `%5C` (either case) in the path decoded to `/` and `\`;
/// `None` when there are none. The query is left alone.
fn unescape_slashes(target: &[u8]) -> Option<Vec<u8>> {
    let (path, query) = split_query(target);
    let escaped = |i: usize| match path.get(i..i + 3) {
        Some([b'%', b'2', b'f' | b'F']) => Some(b'/'),
        Some([b'%', b'5', b'c' | b'C']) => Some(b'\\'),
        _ => None,
    };
    if !(0..path.len()).any(|i| escaped(i).is_some()) {
        return None;
    }
    let mut out = Vec::with_capacity(target.len());
    let mut i = 0;
    while i < path.len() {
        match escaped(i) {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(path[i]);
                i += 1;
            }
        }
    }
    out.extend_from_slice(query);
    Some(out)
}

/// Runs of `/` in the path collapsed to one; `None` when there are none.
/// Envoy's way: the non-empty segments joined by `/`, with the leading and
/// trailing slash kept (so `//` alone stays `//`, as on Envoy).
fn merge_slashes(target: &[u8]) -> Option<Vec<u8>> {
    let (path, query) = split_query(target);
    if !path.windows(2).any(|w| w == b"//") {
        return None;
    }
    let mut out = Vec::with_capacity(target.len());
    if path.first() == Some(&b'/') {
        out.push(b'/');
    }
    for (n, segment) in path.split(|&b| b == b'/').filter(|s| !s.is_empty()).enumerate() {
        if n > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(segment);
    }
    if path.last() == Some(&b'/') {
        out.push(b'/');
    }
    out.extend_from_slice(query);
    (out != target).then_some(out)
}

/// How the canonicalizer treats a byte of the path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Copied as it is, escaped or not (`/`, `:`, `@`, `!`, `$`, `&`, ...).
    Pass,
    /// Unreserved (`A-Z a-z 0-9 - _ ~`): copied, and its escape decoded.
    Unescape,
    /// Not allowed bare in a path: escaped as `%XX` (controls, space,
    /// `"` `#` `<` `>` `?` `^` `` ` `` `{` `|` `}`, DEL, non-ASCII).
    Escape,
    /// NUL: escaped, and the path is refused.
    Invalid,
    /// `.`, `%` and `\`, which have their own rules.
    Special,
}

fn class(b: u8) -> Class {
    match b {
        0 => Class::Invalid,
        b'.' | b'%' | b'\\' => Class::Special,
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => Class::Unescape,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'@' | b'[' | b']' => {
            Class::Pass
        }
        _ => Class::Escape,
    }
}

fn is_slash(b: u8) -> bool {
    b == b'/' || b == b'\\'
}

/// The length of a dot at `i`: 1 for `.`, 3 for `%2e`/`%2E`, else 0.
fn dot_at(spec: &[u8], i: usize) -> usize {
    match spec.get(i..) {
        Some([b'.', ..]) => 1,
        Some([b'%', b'2', b'e' | b'E', ..]) => 3,
        _ => 0,
    }
}

/// The byte `%XX` at `i` stands for, if it is a valid escape.
fn escape_at(spec: &[u8], i: usize) -> Option<u8> {
    match spec.get(i..i + 3) {
        Some([b'%', hi, lo]) => {
            let hex = |c: u8| (c as char).to_digit(16);
            Some((hex(*hi)? * 16 + hex(*lo)?) as u8)
        }
        _ => None,
    }
}

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// What a dot that follows a slash means.
enum Dot {
    /// Part of a name (`/.well-known`).
    Name,
    /// `.` as a whole segment: dropped, with the slash after it.
    Current,
    /// `..` as a whole segment: drops the segment before it.
    Parent,
}

/// Classifies the dot ending just before `after`, and how many more input
/// bytes the segment takes (a second dot, the slash after).
fn after_dot(spec: &[u8], after: usize) -> (Dot, usize) {
    match spec.get(after) {
        None => return (Dot::Current, 0),
        Some(&b) if is_slash(b) => return (Dot::Current, 1),
        Some(_) => {}
    }
    let second = dot_at(spec, after);
    if second > 0 {
        match spec.get(after + second) {
            None => return (Dot::Parent, second),
            Some(&b) if is_slash(b) => return (Dot::Parent, second + 1),
            Some(_) => {}
        }
    }
    (Dot::Name, 0)
}

/// `out` ends in a slash: drop the segment before it, never past the
/// root.
fn up_one(out: &mut Vec<u8>) {
    let last = out.len() - 1;
    let parent = out[..last].iter().rposition(|&b| b == b'/').unwrap_or(0);
    out.truncate(parent + 1);
}

/// The canonical form of a path (without its query), or `None` when it
/// must be refused (it holds `%00` or a NUL).
pub fn canonicalize(spec: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(spec.len() + 1);
    if spec.first().is_none_or(|&b| !is_slash(b)) {
        out.push(b'/');
    }
    let mut valid = true;
    // Where in `out` the last `%` not starting a valid escape went: decoding
    // what follows it must not make it start one (`%%30%30` would become
    // `%00` for whoever decodes the path next).
    let mut loose_percent: Option<usize> = None;
    let mut i = 0;
    while i < spec.len() {
        let b = spec[i];
        match class(b) {
            Class::Pass | Class::Unescape => {
                out.push(b);
                i += 1;
            }
            Class::Escape => {
                push_escaped(&mut out, b);
                i += 1;
            }
            Class::Invalid => {
                push_escaped(&mut out, b);
                valid = false;
                i += 1;
            }
            Class::Special => {
                let dot = dot_at(spec, i);
                if dot > 0 {
                    if out.last() != Some(&b'/') {
                        out.push(b'.');
                        i += dot;
                        continue;
                    }
                    match after_dot(spec, i + dot) {
                        (Dot::Name, _) => {
                            out.push(b'.');
                            i += dot;
                        }
                        (Dot::Current, more) => i += dot + more,
                        (Dot::Parent, more) => {
                            up_one(&mut out);
                            i += dot + more;
                        }
                    }
                } else if b == b'\\' {
                    out.push(b'/');
                    i += 1;
                } else {
                    // `%`
                    match escape_at(spec, i) {
                        Some(decoded) if class(decoded) == Class::Unescape => {
                            out.push(decoded);
                            i += 3;
                            if let Some(p) = loose_percent.filter(|&p| p + 3 >= out.len()) {
                                guard_nested_escape(spec, i, p, &mut out);
                            }
                        }
                        Some(decoded) => {
                            // Kept as written, hex case included: a server
                            // may care.
                            out.extend_from_slice(&spec[i..i + 3]);
                            valid &= class(decoded) != Class::Invalid;
                            i += 3;
                        }
                        None => {
                            loose_percent = Some(out.len());
                            out.push(b'%');
                            i += 1;
                        }
                    }
                }
            }
        }
    }
    valid.then_some(out)
}

/// A byte was just decoded within two of the loose `%` at `percent`: if
/// that made `%` start a valid escape, the `%` becomes `%25`. `next` is the
/// next unread input byte, which completes `%X` when only one byte follows
/// the `%` so far (it stays unread either way).
fn guard_nested_escape(spec: &[u8], next: usize, percent: usize, out: &mut Vec<u8>) {
    let len = out.len();
    let decoded = out[len - 1];
    let borrowed_next = percent == len - 2;
    if borrowed_next {
        match spec.get(next) {
            Some(&b) if b < 0x80 => out.push(b),
            _ => return,
        }
    }
    if escape_at(out, percent).is_some() {
        // `%XY` → `%25XY`: the two bytes after the `%` move up by two.
        let first = out[percent + 1];
        out.truncate(percent + 1);
        out.extend_from_slice(b"25");
        if borrowed_next {
            out.push(decoded);
        } else {
            out.extend_from_slice(&[first, decoded]);
        }
    } else if borrowed_next {
        out.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> Option<String> {
        canonicalize(s.as_bytes()).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    #[test]
    fn dot_segments() {
        for (input, want) in [
            ("/", "/"),
            ("", "/"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../a", "/a"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/%2e%2E/b", "/b"),
            ("/a/.%2e/b", "/b"),
            ("/a/..b/c", "/a/..b/c"),
            ("/a/b.", "/a/b."),
            ("/.well-known/x", "/.well-known/x"),
            ("a/b", "/a/b"),
            ("/a\\..\\b", "/b"),
            ("/a//../b", "/a/b"),
        ] {
            assert_eq!(canon(input).as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn escapes() {
        for (input, want) in [
            ("/%61%62%7E%2D", "/ab~-"),
            ("/%2f%2F", "/%2f%2F"),
            ("/%3a%3A", "/%3a%3A"),
            ("/a b\"<>^`{|}", "/a%20b%22%3C%3E%5E%60%7B%7C%7D"),
            ("/%zz%", "/%zz%"),
            ("/%e2%82%ac", "/%e2%82%ac"),
            // A loose `%` that decoding would complete is escaped itself.
            ("/%%30%30", "/%2500"),
            ("/%%300", "/%2500"),
            ("/%4%31", "/%2541"),
            ("/%%3%30", "/%%2530"),
        ] {
            assert_eq!(canon(input).as_deref(), Some(want), "{input}");
        }
        assert_eq!(canonicalize(b"/a\xffb").as_deref(), Some(&b"/a%FFb"[..]));
    }

    #[test]
    fn nul_is_refused() {
        assert_eq!(canon("/a%00"), None);
        assert_eq!(canonicalize(b"/a\0"), None);
    }

    fn policy(normalize: bool, merge_slashes: bool, escaped_slashes: EscapedSlashes) -> PathNormalization {
        PathNormalization { normalize, merge_slashes, escaped_slashes }
    }

    fn apply(p: PathNormalization, target: &str) -> Outcome {
        p.apply(target.as_bytes())
    }

    fn to(s: &str) -> Outcome {
        Outcome::Continue(Some(s.as_bytes().to_vec()))
    }

    #[test]
    fn policy_order_and_query() {
        let all = policy(true, true, EscapedSlashes::Forward);
        assert_eq!(apply(all, "/a/%2F../b//c?x=/../%2F//"), to("/a/b/c?x=/../%2F//"));
        assert_eq!(apply(all, "/a/b"), Outcome::Continue(None));
        assert_eq!(apply(policy(false, true, EscapedSlashes::Keep), "//"), Outcome::Continue(None));
        assert_eq!(apply(policy(false, true, EscapedSlashes::Keep), "//a//"), to("/a/"));
        assert_eq!(apply(policy(false, false, EscapedSlashes::Reject), "/a%5cb"), Outcome::Reject);
        let redirect = policy(true, false, EscapedSlashes::Redirect);
        assert_eq!(apply(redirect, "/a%2Fb?q"), Outcome::Redirect(b"/a/b?q".to_vec()));
        assert_eq!(apply(redirect, "/a/b?q=%2F"), Outcome::Continue(None));
    }
}
