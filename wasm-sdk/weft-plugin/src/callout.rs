//! HTTP calls to a cluster the host knows (`proxy_http_call`), answered
//! through a callback:
//!
//! ```text
//! HttpCall::new("authz").path("/check").send(|r| ..)   returns at once
//!        │ host sends the request; the stream usually returns Pause
//!        ▼
//! proxy_on_http_call_response(root, id, ..)            later, on the VM
//!        │ dispatch: effective context := the caller's, read the response
//!        ▼
//! callback(Ok(Response) | Err(CallFailed))             resume or answer
//! ```
//!
//! The callback runs in the context that made the call, so
//! [`resume_request`](crate::http::resume_request),
//! [`send_response`](crate::http::send_response) and the header maps act on
//! that stream. It is dropped uncalled if that context ends first.

use std::fmt;
use std::time::Duration;

use crate::abi::{self, BufferType, MapType};
use crate::host::{check, Status};
use crate::http::HeaderMap;
use crate::{dispatch, http, map};

/// A request to send through [`HttpCall::send`]. `:method` defaults to
/// `GET`, `:path` to `/` and `:authority` to the cluster name.
#[derive(Debug, Clone)]
pub struct HttpCall {
    cluster: String,
    method: String,
    path: String,
    authority: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

/// What came back: the `:status`, the other headers, the body and trailers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Every header, `:status` included.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

/// No response: the call timed out, was reset or never connected (on
/// Envoy a failed connection usually arrives as a local 503 instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallFailed;

impl fmt::Display for CallFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HTTP call failed without a response")
    }
}

impl std::error::Error for CallFailed {}

/// The callback of one call.
pub(crate) type OnResponse = Box<dyn FnOnce(Result<Response, CallFailed>)>;

impl HttpCall {
    pub fn new(cluster: &str) -> HttpCall {
        HttpCall {
            cluster: cluster.to_string(),
            method: "GET".into(),
            path: "/".into(),
            authority: None,
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }

    pub fn path(mut self, path: &str) -> Self {
        self.path = path.into();
        self
    }

    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = Some(authority.into());
        self
    }

    /// Adds a header (repeat for several values).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends the call; `on_response` runs when it completes. Returns the
    /// host's call id. Fails at once (`BadArgument` on Envoy) when the
    /// cluster is unknown.
    pub fn send(self, on_response: impl FnOnce(Result<Response, CallFailed>) + 'static) -> Result<u32, Status> {
        let authority = self.authority.as_deref().unwrap_or(&self.cluster);
        let mut headers: Vec<(&str, &str)> = vec![(":method", &self.method), (":path", &self.path), (":authority", authority)];
        headers.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let headers = map::serialize(&headers);
        let no_trailers = map::serialize::<&str, &str>(&[]);
        let timeout = u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX);
        let mut id = 0u32;
        // SAFETY: every slice outlives the call; the host writes one u32.
        check(unsafe {
            abi::proxy_http_call(
                self.cluster.as_ptr(),
                self.cluster.len(),
                headers.as_ptr(),
                headers.len(),
                self.body.as_ptr(),
                self.body.len(),
                no_trailers.as_ptr(),
                no_trailers.len(),
                timeout,
                &mut id,
            )
        })?;
        dispatch::register_callout(id, Box::new(on_response));
        Ok(id)
    }
}

impl Response {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of a header (lower-case name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Reads the response the host holds for `proxy_on_http_call_response`.
    pub(crate) fn read(num_headers: usize, body_size: usize, num_trailers: usize) -> Result<Response, CallFailed> {
        if num_headers == 0 {
            return Err(CallFailed);
        }
        let headers = HeaderMap(MapType::HttpCallResponseHeaders).all().unwrap_or_default();
        let status = headers.iter().find(|(k, _)| k == ":status").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let body = http::read_buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default();
        let trailers = if num_trailers == 0 {
            Vec::new()
        } else {
            HeaderMap(MapType::HttpCallResponseTrailers).all().unwrap_or_default()
        };
        Ok(Response {
            status,
            headers,
            body,
            trailers,
        })
    }
}
