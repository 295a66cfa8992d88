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
