//! gRPC on the wire as Envoy's async gRPC client reads it, for plugins'
//! unary calls (`callout.rs`) and streams (`grpc_stream.rs`): message
//! framing, and the status a response ends with.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// gRPC's status codes the host itself gives.
pub mod code {
    pub const UNKNOWN: u32 = 2;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// A status and its message, as `proxy_get_status` gives them.
pub type Status = (u32, Bytes);

/// The message of a status the upstream caused, with the response's code
/// details as Envoy's async client adds them: `message{via_upstream}`, or
/// `via_upstream` alone.
pub fn with_details(message: &[u8]) -> Bytes {
    if message.is_empty() {
        Bytes::from_static(b"via_upstream")
    } else {
        Bytes::from([message, b"{via_upstream}"].concat())
    }
}

/// The `grpc-status` (and `grpc-message`) of trailers, or of the headers
/// of a trailers-only response.
pub fn status_of(map: &http::HeaderMap) -> Option<Status> {
    let code = map.get("grpc-status")?.to_str().ok()?.trim().parse::<u32>().ok()?;
    Some((code, with_details(map.get("grpc-message").map_or(&b""[..], |v| v.as_bytes()))))
}

/// gRPC's HTTP-to-status mapping (doc/http-grpc-status-mapping.md).
pub fn http_to_grpc(status: u16) -> u32 {
    match status {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// The status of a response that is not HTTP 200: its own `grpc-status`
/// when it is trailers-only, else what gRPC maps the HTTP status to.
pub fn non_ok_status(status: u16, headers: &http::HeaderMap) -> Status {
    status_of(headers).unwrap_or_else(|| (http_to_grpc(status), with_details(b"")))
}

/// The router's own answer (no host, overflow, connect failure), as a
/// gRPC status: the HTTP status mapped, the reply's body as the message.
pub fn local_status(status: u16, body: &Bytes) -> Status {
    (http_to_grpc(status), body.clone())
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
pub fn unframe(body: &Bytes) -> Option<Bytes> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    (flag == 0 && rest.len() >= 4 + len).then(|| body.slice(5..5 + len))
}

/// The next whole message of a stream's body so far, taken out of `buf`:
/// `None` until one is complete; `Err` for a compressed or flagged frame
/// (no compression is negotiated; Envoy fails the stream with INTERNAL).
pub fn next_message(buf: &mut BytesMut) -> Option<Result<Bytes, ()>> {
    let header = buf.get(..5)?;
    let flag = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if buf.len() - 5 < len {
        return None;
    }
    buf.advance(5);
    let message = buf.split_to(len).freeze();
    Some(if flag == 0 || message.is_empty() { Ok(message) } else { Err(()) })
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

    #[test]
    fn stream_messages_come_out_whole_across_chunks() {
        let mut buf = BytesMut::new();
        let wire = [frame(b"one"), frame(b""), frame(b"three")].concat();
        let mut got = Vec::new();
        // One byte at a time: every split point of every frame.
        for &b in &wire {
            buf.put_u8(b);
            while let Some(m) = next_message(&mut buf) {
                got.push(m.expect("uncompressed"));
            }
        }
        assert_eq!(got, [&b"one"[..], b"", b"three"]);
        assert!(buf.is_empty());
        let mut compressed = BytesMut::from(&b"\x01\0\0\0\x02hi"[..]);
        assert_eq!(next_message(&mut compressed), Some(Err(())));
        let mut partial = BytesMut::from(&b"\0\0\0\0\x05hel"[..]);
        assert_eq!(next_message(&mut partial), None);
        assert_eq!(partial.len(), 8, "kept for the rest");
    }

    #[test]
    fn statuses_read_as_envoys_async_client_reads_them() {
        let mut map = http::HeaderMap::new();
        assert_eq!(status_of(&map), None);
        map.insert("grpc-status", http::HeaderValue::from_static("7"));
        assert_eq!(status_of(&map), Some((7, Bytes::from_static(b"via_upstream"))));
        map.insert("grpc-message", http::HeaderValue::from_static("no"));
        assert_eq!(status_of(&map), Some((7, Bytes::from_static(b"no{via_upstream}"))));
        assert_eq!(non_ok_status(503, &http::HeaderMap::new()), (14, Bytes::from_static(b"via_upstream")));
        assert_eq!(non_ok_status(404, &map).0, 7, "a trailers-only status wins");
        assert_eq!(local_status(503, &Bytes::from_static(b"no healthy upstream")).0, 14);
    }
}
