//! Header edits that go straight to the `http` map of Pingora's request
//! and response headers.
//!
//! Pingora's `insert_header`/`append_header` keep its header-case map: each
//! name is turned back into bytes and parsed again, a copy for every name
//! that is not a standard one, on every edit. The router's requests and
//! responses carry no case map (see `routable_copy`; Envoy lowercases header
//! names on HTTP/1 anyway), so their edits can use the map underneath: a
//! name made once (a constant, or the config's) is shared, not copied. The
//! map is reached by unwrapping the header into its `http` parts and
//! wrapping it again, which moves it but copies nothing and allocates
//! nothing; where that would lose state (a case map, a raw request target
//! other than the URI's, a reason phrase other than the status's) Pingora's
//! own method is used.

use http::{HeaderMap, HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};

/// A Pingora header whose `http` parts can be borrowed without loss.
pub trait Unwrap: Sized {
    type Parts;
    /// True when unwrapping keeps everything the header holds.
    fn lossless(&self) -> bool;
    /// An empty header to stand in while the parts are out.
    fn placeholder() -> Self;
    fn into_parts(self) -> Self::Parts;
    fn from_parts(parts: Self::Parts) -> Self;
    fn map(parts: &mut Self::Parts) -> &mut HeaderMap;
    /// Pingora's own edit, for headers that cannot be unwrapped.
    fn slow_insert(&mut self, name: HeaderName, value: HeaderValue, append: bool);
}

/// The two impls differ only in what unwrapping would lose.
macro_rules! unwrap_via_parts {
    ($header:ty, $parts:ty, $empty:expr, |$h:ident| $lossless:expr) => {
        impl Unwrap for $header {
            type Parts = $parts;
            fn lossless(&self) -> bool {
                let $h = self;
                $lossless
            }
            fn placeholder() -> Self {
                <$header>::from($empty)
            }
            fn into_parts(self) -> Self::Parts {
                self.into()
            }
            fn from_parts(parts: Self::Parts) -> Self {
                parts.into()
            }
            fn map(parts: &mut Self::Parts) -> &mut HeaderMap {
                &mut parts.headers
            }
            fn slow_insert(&mut self, name: HeaderName, value: HeaderValue, append: bool) {
                if append {
                    let _ = self.append_header(name, value);
                } else {
                    let _ = self.insert_header(name, value);
                }
            }
        }
    };
}

// The raw target must come from the URI, and an HTTP/2 request's
// end-of-stream flag be at its default.
unwrap_via_parts!(RequestHeader, http::request::Parts, http::Request::new(()).into_parts().0, |req| {
    !req.has_case() && target_from_uri(req) && req.send_end_stream() != Some(false)
});

/// The request's raw target is the URI's own bytes (the same allocation),
/// so the `http` parts carry it whole: not so for an absolute-form target or
/// one that is not UTF-8, which Pingora keeps beside the URI.
pub fn target_from_uri(req: &RequestHeader) -> bool {
    req.uri.path_and_query().is_some_and(|p| std::ptr::eq(p.as_str().as_bytes(), req.raw_path()))
}
// A reason phrase of the upstream's own would be lost.
unwrap_via_parts!(ResponseHeader, http::response::Parts, http::Response::new(()).into_parts().0, |resp| {
    !resp.has_case() && resp.get_reason_phrase() == resp.status.canonical_reason()
});

/// Sets `name` to `value`, replacing any values it had.
pub fn insert<H: Unwrap>(h: &mut H, name: HeaderName, value: HeaderValue) {
    edit(h, name, value, false);
}

/// Adds a value to `name`, after any it has.
pub fn append<H: Unwrap>(h: &mut H, name: HeaderName, value: HeaderValue) {
    edit(h, name, value, true);
}

fn edit<H: Unwrap>(h: &mut H, name: HeaderName, value: HeaderValue, append: bool) {
    if !h.lossless() {
        return h.slow_insert(name, value, append);
    }
    let mut parts = std::mem::replace(h, H::placeholder()).into_parts();
    let map = H::map(&mut parts);
    if append {
        map.append(name, value);
    } else {
        map.insert(name, value);
    }
    *h = H::from_parts(parts);
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUSTOM: HeaderName = HeaderName::from_static("x-custom");

    #[test]
    fn edits_a_request_without_case_map_in_place() {
        let parsed = RequestHeader::build("GET", b"/a?b=1", None).expect("request");
        let mut req = RequestHeader::from(parsed.as_owned_parts());
        req.set_version(http::Version::HTTP_11);
        assert!(req.lossless());
        insert(&mut req, CUSTOM, HeaderValue::from_static("1"));
        append(&mut req, CUSTOM, HeaderValue::from_static("2"));
        insert(&mut req, http::header::HOST, HeaderValue::from_static("h"));
        let values: Vec<_> = req.headers.get_all("x-custom").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(req.headers["host"], "h");
        assert_eq!(req.raw_path(), b"/a?b=1");
        assert_eq!(req.method, http::Method::GET);
        assert_eq!(req.version, http::Version::HTTP_11);
    }

    #[test]
    fn keeps_what_unwrapping_would_lose() {
        // A case map: Pingora's own insert keeps the name's case.
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        assert!(!req.lossless());
        insert(&mut req, CUSTOM, HeaderValue::from_static("1"));
        assert_eq!(req.headers["x-custom"], "1");
        assert!(req.has_case());
        // An absolute-form target is kept verbatim.
        let mut abs = RequestHeader::build_no_case("GET", b"http://h/p", None).expect("request");
        assert!(!abs.lossless());
        insert(&mut abs, CUSTOM, HeaderValue::from_static("1"));
        assert_eq!(abs.raw_path(), b"http://h/p");
        // A reason phrase of the upstream's own.
        let mut resp = ResponseHeader::build_no_case(200, None).expect("response");
        resp.set_reason_phrase(Some("Fine")).expect("reason");
        assert!(!resp.lossless());
        insert(&mut resp, CUSTOM, HeaderValue::from_static("1"));
        assert_eq!(resp.get_reason_phrase(), Some("Fine"));
        let mut plain = ResponseHeader::build_no_case(404, None).expect("response");
        assert!(plain.lossless());
        insert(&mut plain, CUSTOM, HeaderValue::from_static("1"));
        assert_eq!((plain.status.as_u16(), &plain.headers["x-custom"]), (404, &HeaderValue::from_static("1")));
    }
}
