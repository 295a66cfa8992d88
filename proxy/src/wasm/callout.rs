//! Callouts: `proxy_http_call` and unary `proxy_grpc_call`, a request to a
//! named cluster sent by the router's own machinery (load balancing,
//! circuit breakers), its whole response handed back to the plugin.
//!
//! ```text
//!  HTTP: response (or the router's local reply) ─► proxy_on_http_call_response
//!  gRPC: status 0 and one message ─► proxy_on_grpc_receive
//!        anything else ─► proxy_on_grpc_close(code), proxy_get_status
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use pingora_http::RequestHeader;

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

/// `Err` when it got no response at all (the upstream reset mid-body).
async fn exchange(call: Callout) -> Result<crate::http::Called, ()> {
    let get = |name: &str| call.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let method = String::from_utf8_lossy(&get(":method")).into_owned();
    let mut req = RequestHeader::build(method.as_str(), &get(":path"), None).map_err(drop)?;
    let _ = req.insert_header(http::header::HOST, http::HeaderValue::from_bytes(&get(":authority")).map_err(drop)?);
    for (k, v) in call.headers.iter().filter(|(k, _)| !k.starts_with(':')) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_bytes(v)) {
            let _ = req.append_header(name, value);
        }
    }
    // Envoy states the length of an HTTP callout's body; a gRPC message
    // goes without (a stream).
    if !call.body.is_empty() && !call.grpc {
        let _ = req.insert_header(http::header::CONTENT_LENGTH, call.body.len().to_string());
    }
    crate::http::call(&call.cluster, req, call.body.clone(), call.timeout)
        .await
        .map_err(|e| tracing::debug!(cluster = %call.cluster.name, "wasm callout failed: {e}"))
}

/// gRPC's status codes the host itself gives.
mod code {
    pub const UNKNOWN: u32 = 2;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// A unary call's outcome as Envoy's async gRPC client reports it.
fn grpc_answer(sent: Result<crate::http::Called, ()>) -> GrpcAnswer {
    let closed = |code: u32, message: &[u8]| GrpcAnswer::Closed { code, message: Bytes::copy_from_slice(message) };
    let Ok(called) = sent else { return closed(code::INTERNAL, b"") };
    let status = called.resp.status.as_u16();
    // The router's own reply to a gRPC request is a trailers-only
    // response with the status gRPC maps its HTTP status to.
    if called.local {
        return closed(http_to_grpc(status), &called.body);
    }
    let from = |map: &http::HeaderMap| {
        let code = map.get("grpc-status")?.to_str().ok()?.trim().parse::<u32>().ok()?;
        Some((code, with_details(map.get("grpc-message").map_or(&b""[..], |v| v.as_bytes()))))
    };
    // Trailers, or the headers of a trailers-only response.
    let grpc_status = called.trailers.as_ref().and_then(from).or_else(|| from(&called.resp.headers));
    if status != 200 {
        // Without grpc-status, the HTTP status says what happened.
        return match grpc_status {
            Some((code, message)) => closed(code, &message),
            None => closed(http_to_grpc(status), &with_details(b"")),
        };
    }
    match grpc_status {
        Some((0, _)) => match unframe(&called.body) {
            Some(message) => GrpcAnswer::Message(message),
            None => closed(code::INTERNAL, b""),
        },
        Some((code, message)) => closed(code, &message),
        None => closed(code::UNKNOWN, b""),
    }
}

/// The message of a status the upstream caused, with the response's code
/// details as Envoy's async client adds them: `message{via_upstream}`, or
/// `via_upstream` alone.
fn with_details(message: &[u8]) -> Vec<u8> {
    if message.is_empty() {
        b"via_upstream".to_vec()
    } else {
        [message, b"{via_upstream}"].concat()
    }
}

/// gRPC's HTTP-to-status mapping (doc/http-grpc-status-mapping.md).
fn http_to_grpc(status: u16) -> u32 {
    match status {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// A gRPC message on the wire: uncompressed flag, 4-byte length, bytes.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.extend_from_slice(message);
    out.freeze()
}

/// The one message of a unary response; `None` when it is missing,
/// truncated or compressed (no compression is negotiated).
fn unframe(body: &Bytes) -> Option<Bytes> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    (flag == 0 && rest.len() >= 4 + len).then(|| body.slice(5..5 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_frames_are_refused() {
        let framed = frame(b"hello");
        assert_eq!(&framed[..], b"\0\0\0\0\x05hello");
        assert_eq!(unframe(&framed).as_deref(), Some(&b"hello"[..]));
        assert_eq!(unframe(&Bytes::from_static(b"\0\0\0\0\x09hello")), None, "truncated");
        assert_eq!(unframe(&Bytes::from_static(b"\x01\0\0\0\x05hello")), None, "compressed");
        assert_eq!(unframe(&Bytes::from_static(b"\0\0")), None);
        assert_eq!(unframe(&frame(b"")).as_deref(), Some(&b""[..]));
    }

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
