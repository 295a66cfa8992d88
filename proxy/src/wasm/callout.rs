//! Callouts: `proxy_http_call` and unary `proxy_grpc_call`, a request to a
//! named cluster sent by the router's own machinery (load balancing,
//! circuit breakers), its whole response handed back to the plugin.
//!
//! ```text
//!  HTTP: response (or the router's local reply) ─► proxy_on_http_call_response
//!  gRPC: status 0 and one message ─► proxy_on_grpc_receive
//!        anything else ─► proxy_on_grpc_close(code), proxy_get_status
//! ```
//! gRPC streams are `grpc_stream.rs`.

use bytes::Bytes;
use pingora_http::RequestHeader;

use super::grpc::{self, code};
use super::host::{pairs, response_pairs, Answer, CallResponse, Callout, GrpcAnswer};

/// Sends the callout and says how it ended, in the terms of its kind.
pub async fn send(call: Callout) -> Answer {
    let grpc = call.grpc;
    let sent = exchange(call).await;
    if grpc {
        Answer::Grpc(grpc_answer(sent))
    } else {
        Answer::Http(sent.map(|c| CallResponse { headers: response_pairs(&c.resp), body: c.body, trailers: c.trailers.as_ref().map(pairs).unwrap_or_default() }))
    }
}

/// The request header of a callout or stream, from the plugin's pairs
/// (`:method`, `:path`, `:authority` and the rest). `None` when the
/// pseudo-headers do not make a request.
pub fn request_header(headers: &[(String, Bytes)]) -> Option<RequestHeader> {
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let method = String::from_utf8_lossy(&get(":method")).into_owned();
    let mut req = RequestHeader::build(method.as_str(), &get(":path"), None).ok()?;
    let _ = req.insert_header(http::header::HOST, http::HeaderValue::from_bytes(&get(":authority")).ok()?);
    for (k, v) in headers.iter().filter(|(k, _)| !k.starts_with(':')) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_bytes(v)) {
            let _ = req.append_header(name, value);
        }
    }
    Some(req)
}

/// `Err` when it got no response at all (the upstream reset mid-body).
async fn exchange(call: Callout) -> Result<crate::http::Called, ()> {
    let mut req = request_header(&call.headers).ok_or(())?;
    // Envoy states the length of an HTTP callout's body; a gRPC message
    // goes without (a stream).
    if !call.body.is_empty() && !call.grpc {
        let _ = req.insert_header(http::header::CONTENT_LENGTH, call.body.len().to_string());
    }
    crate::http::call(&call.cluster, req, call.body.clone(), call.timeout)
        .await
        .map_err(|e| tracing::debug!(cluster = %call.cluster.name, "wasm callout failed: {e}"))
}

/// A unary call's outcome as Envoy's async gRPC client reports it.
fn grpc_answer(sent: Result<crate::http::Called, ()>) -> GrpcAnswer {
    let closed = |(code, message): grpc::Status| GrpcAnswer::Closed { code, message };
    let Ok(called) = sent else { return closed((code::INTERNAL, Bytes::new())) };
    let status = called.resp.status.as_u16();
    // The router's own reply to a gRPC request is a trailers-only
    // response with the status gRPC maps its HTTP status to.
    if called.local {
        return closed(grpc::local_status(status, &called.body));
    }
    if status != 200 {
        return closed(grpc::non_ok_status(status, &called.resp.headers));
    }
    // Trailers, or the headers of a trailers-only response.
    match called.trailers.as_ref().and_then(grpc::status_of).or_else(|| grpc::status_of(&called.resp.headers)) {
        Some((0, _)) => match grpc::unframe(&called.body) {
            Some(message) => GrpcAnswer::Message(message),
            None => closed((code::INTERNAL, Bytes::new())),
        },
        Some(status) => closed(status),
        None => closed((code::UNKNOWN, Bytes::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn called(status: u16, headers: &[(&str, &str)], body: &'static [u8], trailers: Option<&[(&'static str, &'static str)]>, local: bool) -> Result<crate::http::Called, ()> {
        let mut resp = pingora_http::ResponseHeader::build(status, None).map_err(drop)?;
        for (k, v) in headers {
            let _ = resp.insert_header(k.to_string(), *v);
        }
        let trailers = trailers.map(|t| t.iter().map(|(k, v)| (http::HeaderName::from_static(k), http::HeaderValue::from_static(v))).collect());
        Ok(crate::http::Called { resp, body: Bytes::from_static(body), trailers, local })
    }

    fn closed(answer: GrpcAnswer) -> (u32, String) {
        match answer {
            GrpcAnswer::Closed { code, message } => (code, String::from_utf8_lossy(&message).into_owned()),
            GrpcAnswer::Message(m) => panic!("a message: {m:?}"),
        }
    }

    #[test]
    fn answers_are_read_as_envoys_async_client_reads_them() {
        let ok = called(200, &[], b"\0\0\0\0\x02hi", Some(&[("grpc-status", "0")]), false);
        assert!(matches!(grpc_answer(ok), GrpcAnswer::Message(m) if &m[..] == b"hi"));
        let denied = called(200, &[("grpc-status", "7"), ("grpc-message", "no")], b"", None, false);
        assert_eq!(closed(grpc_answer(denied)), (7, "no{via_upstream}".into()), "trailers-only");
        let unavailable = called(503, &[], b"busy", None, false);
        assert_eq!(closed(grpc_answer(unavailable)), (14, "via_upstream".into()));
        let no_status = called(200, &[], b"\0\0\0\0\x02hi", None, false);
        assert_eq!(closed(grpc_answer(no_status)), (2, String::new()), "UNKNOWN");
        let no_message = called(200, &[], b"", Some(&[("grpc-status", "0")]), false);
        assert_eq!(closed(grpc_answer(no_message)), (13, String::new()), "INTERNAL");
        let no_host = called(503, &[], b"no healthy upstream", None, true);
        assert_eq!(closed(grpc_answer(no_host)), (14, "no healthy upstream".into()), "the router's own reply");
        assert_eq!(closed(grpc_answer(Err(()))).0, 13);
    }
}
