//! HTTP callouts (`proxy_http_call`): a request to a named cluster, sent
//! by the router's own machinery (load balancing, circuit breakers), its
//! whole response handed back to the plugin.

use bytes::Bytes;
use pingora_http::RequestHeader;

use super::host::{CallResponse, Callout};

/// Sends the callout; `Err` when it got no response (connect failure,
/// reset, timeout), which the plugin sees as an empty answer.
pub async fn send(call: Callout) -> Result<CallResponse, ()> {
    let get = |name: &str| call.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let method = String::from_utf8_lossy(&get(":method")).into_owned();
    let mut req = RequestHeader::build(method.as_str(), &get(":path"), None).map_err(drop)?;
    let _ = req.insert_header(http::header::HOST, http::HeaderValue::from_bytes(&get(":authority")).map_err(drop)?);
    for (k, v) in call.headers.iter().filter(|(k, _)| !k.starts_with(':')) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_bytes(v)) {
            let _ = req.append_header(name, value);
        }
    }
    let sent = crate::http::call(&call.cluster, req, call.body.clone(), call.timeout).await;
    let (resp, body) = sent.map_err(|e| tracing::debug!(cluster = %call.cluster.name, "wasm callout failed: {e}"))?;
    let mut headers = vec![(":status".to_string(), Bytes::from(resp.status.as_u16().to_string()))];
    headers.extend(resp.headers.iter().map(|(k, v)| (k.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes()))));
    Ok(CallResponse { headers, body })
}
