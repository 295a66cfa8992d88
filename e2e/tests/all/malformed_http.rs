//! Malformed requests get the same class of response as from Envoy, and the
//! proxy keeps serving afterwards.

use weft_e2e::client::send_raw;
use weft_e2e::{Kind, Proxy, Request, Upstream};

const SIMPLE: &str = include_str!("bootstraps/simple.yaml");

/// The status class of the first response line, or 0 when the proxy just closed.
fn class(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .map(|s| s / 100)
        .unwrap_or(0)
}

#[tokio::test]
async fn malformed_requests_are_refused_like_envoy() {
    let up = Upstream::start("up").await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad header byte", b"GET / HTTP/1.1\r\nhost: a\r\nx-bad: a\x01b\r\n\r\n".to_vec()),
        ("space in header name", b"GET / HTTP/1.1\r\nhost: a\r\nbad name: x\r\n\r\n".to_vec()),
        (
            "content-length and transfer-encoding",
            b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        ("two content-lengths", b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".to_vec()),
        ("garbage request line", b"\x16\x03\x01 garbage\r\n\r\n".to_vec()),
        ("oversized headers", {
            let mut r = b"GET / HTTP/1.1\r\nhost: a\r\n".to_vec();
            r.extend_from_slice(format!("x-big: {}\r\n\r\n", "a".repeat(100 * 1024)).as_bytes());
            r
        }),
    ];
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, SIMPLE, &[&up]).await.expect("start");
        for (name, bytes) in &cases {
            up.take();
            let raw = send_raw(proxy.port, bytes, false).await.unwrap_or_default();
            let got = class(&raw);
            // Envoy answers 4xx or closes; either way nothing reaches the upstream.
            assert!(
                got == 4 || got == 0,
                "{kind:?} {name}: {}",
                String::from_utf8_lossy(&raw)
            );
            assert_eq!(
                up.count(),
                0,
                "{kind:?} {name}: a malformed request reached the upstream"
            );
        }
        // Still serving.
        let ok = proxy.send(&Request::get("/")).await;
        assert_eq!(ok.status, 200, "{kind:?} after malformed input");
    }
}

/// Malformed HTTP/2 requests, written frame by frame: each stream is
/// reset with PROTOCOL_ERROR, nothing reaches the upstream, and the proxy
/// goes on serving.
///
/// Both run with `override_stream_error_on_invalid_http_message: true`:
/// Envoy's default closes the whole connection at a malformed request,
/// which weft-proxy does not do (it refuses `false`; unset, it resets the
/// stream, a deliberate difference). An uppercase header name or an unknown
/// pseudo-header is a connection error in our codec (`h2`): GOAWAY with
/// PROTOCOL_ERROR where Envoy resets the stream. The `http` crate's URI
/// shapes two more: `<` or `` ` `` in `:path` resets the stream (Envoy
/// takes them, as over HTTP/1.1 where we answer 400), and a `#fragment`
/// is dropped and the rest served (Envoy answers 400; it cannot be seen
/// once the codec has parsed the path).
#[tokio::test]
async fn malformed_http2_requests_are_refused_like_envoy() {
    let up = Upstream::start("up").await;
    let base = [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/")];
    let with = |edits: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        let mut fields: Vec<_> = base.iter().filter(|(k, _)| !edits.iter().any(|(e, _)| e == k)).copied().collect();
        fields.extend(edits.iter().filter(|(_, v)| !v.is_empty()));
        fields
    };
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("space in :path", with(&[(":path", "/a b")])),
        ("CR in :path", with(&[(":path", "/a\rb")])),
        ("absolute-form :path", with(&[(":path", "http://a/x")])),
        ("empty :path", with(&[(":path", "")])),
        ("* for GET", with(&[(":path", "*")])),
        ("no authority", vec![(":method", "GET"), (":scheme", "http"), (":path", "/")]),
        ("user info", with(&[(":authority", "u@a")])),
        ("two hosts", vec![(":method", "GET"), (":scheme", "http"), (":path", "/"), ("host", "a"), ("host", "b")]),
        ("connection header", with(&[("connection", "close")])),
        ("te other than trailers", with(&[("te", "gzip")])),
        ("pseudo-header after a field", vec![(":method", "GET"), (":scheme", "http"), ("x-a", "1"), (":path", "/"), (":authority", "a")]),
        ("no :method", vec![(":scheme", "http"), (":authority", "a"), (":path", "/")]),
        ("content-length without a body", with(&[("content-length", "3")])),
        ("two content-lengths", with(&[("content-length", "0"), ("content-length", "1")])),
    ];
    // (case, Envoy, weft-proxy)
    let codec_differs = [
        ("uppercase name", with(&[("X-Up", "1")]), "reset 1", "goaway 1"),
        ("unknown pseudo-header", with(&[(":foo", "1")]), "reset 1", "goaway 1"),
        // Envoy forwards it; the test upstream's HTTP/1.1 parser answers 400.
        ("< in :path", with(&[(":path", "/a<b")]), "status 400", "reset 1"),
        ("fragment in :path", with(&[(":path", "/a#f")]), "status 400", "status 200"),
    ];
    let stream_errors = SIMPLE.replacen(
        "stat_prefix: ",
        "http2_protocol_options: { override_stream_error_on_invalid_http_message: true }\n          stat_prefix: ",
        1,
    );
    assert_ne!(stream_errors, SIMPLE);
    let mut answers = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &stream_errors, &[&up]).await.expect("start");
        up.take();
        let mut seen = Vec::new();
        for (name, fields) in &cases {
            seen.push((*name, weft_e2e::h2_raw::send(proxy.port, fields).await));
        }
        assert_eq!(up.count(), 0, "{kind:?}: a malformed request reached the upstream");
        for (name, fields, ..) in &codec_differs {
            seen.push((*name, weft_e2e::h2_raw::send(proxy.port, fields).await));
        }
        up.take();
        // `host` beside `:authority` need not match it.
        assert_eq!(weft_e2e::h2_raw::send(proxy.port, &with(&[("host", "b")])).await, "status 200", "{kind:?}");
        let upstream = up.take();
        answers.push((seen, upstream.iter().map(crate::describe).collect::<Vec<_>>()));
    }
    let (envoy, weft) = (&answers[0], &answers[1]);
    // Unset, weft-proxy does the same (Envoy would close the connection).
    let proxy = Proxy::start(Kind::Weft, SIMPLE, &[&up]).await.expect("start");
    for (name, fields) in &cases {
        let answer = weft_e2e::h2_raw::send(proxy.port, fields).await;
        assert_eq!(answer, "reset 1", "{name}: weft-proxy without the option");
    }
    assert_eq!(envoy.1, weft.1, "what the upstream saw: left Envoy, right weft-proxy");
    for (i, ((name, e), (_, w))) in envoy.0.iter().zip(&weft.0).enumerate() {
        let expected = match i.checked_sub(cases.len()) {
            None => ("reset 1", "reset 1"),
            Some(d) => (codec_differs[d].2, codec_differs[d].3),
        };
        assert_eq!((e.as_str(), w.as_str()), expected, "{name}: left Envoy, right weft-proxy");
    }
}
