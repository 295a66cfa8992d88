//! Calls from one Bookinfo service to another: a GET for JSON with the
//! forwarded headers and a deadline.
//!
//! The client is reqwest's, which reads `HTTP_PROXY` / `http_proxy` /
//! `NO_PROXY`: under the mesh every call to `http://reviews:9080/…` goes to
//! the sidecar as an absolute-form request, and the sidecar resolves the
//! name. Without a proxy the URL's host is resolved as usual.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::ProxyMode;

/// Why a call gave no JSON.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("cannot reach {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} sent a body that is not JSON")]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

impl CallError {
    /// The status to pass on, as Istio's productpage does: the upstream's
    /// own when it answered, else 500.
    pub fn status(&self) -> StatusCode {
        match self {
            CallError::Status { status, .. } => *status,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One service's HTTP client (a connection pool shared by its handlers).
#[derive(Clone, Debug)]
pub struct Outbound {
    client: reqwest::Client,
}

impl Outbound {
    pub fn new(proxy: ProxyMode) -> Result<Self, reqwest::Error> {
        let builder = reqwest::Client::builder();
        let builder = match proxy {
            ProxyMode::FromEnv => builder,
            ProxyMode::Direct => builder.no_proxy(),
        };
        Ok(Outbound {
            client: builder.build()?,
        })
    }

    /// GETs `url` with `headers`; the JSON body of a 200 answer, else why
    /// not (logged at warn).
    pub async fn get_json(
        &self,
        url: &str,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallError> {
        let result = self.fetch(url, headers, timeout).await;
        if let Err(e) = &result {
            let source = std::error::Error::source(e).map(ToString::to_string);
            tracing::warn!(error = %e, source, "call failed");
        }
        result
    }

    async fn fetch(
        &self,
        url: &str,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<serde_json::Value, CallError> {
        let resp = self
            .client
            .get(url)
            .headers(headers)
            .timeout(timeout)
            .send()
            .await
            .map_err(|source| CallError::Unreachable {
                url: url.to_owned(),
                source,
            })?;
        if resp.status() != StatusCode::OK {
            return Err(CallError::Status {
                url: url.to_owned(),
                status: resp.status(),
            });
        }
        resp.json().await.map_err(|source| CallError::Body {
            url: url.to_owned(),
            source,
        })
    }
}
