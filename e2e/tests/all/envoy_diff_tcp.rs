//! The tcp_proxy network filter: bytes pass through untouched to a
//! (weighted) cluster; a refused upstream closes the downstream.

use weft_e2e::client::send_raw;
use weft_e2e::{Kind, Proxy, Upstream};

const TCP: &str = r#"
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: ${ADMIN} } }
static_resources:
  listeners:
  - name: tcp
    address: { socket_address: { address: 127.0.0.1, port_value: ${LISTEN} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          weighted_clusters:
            clusters:
            - { name: a, weight: 3 }
            - { name: b, weight: 1 }
  clusters:
  - name: a
    load_assignment:
      cluster_name: a
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${UP_a} } } }
  - name: b
    load_assignment:
      cluster_name: b
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${UP_b} } } }
"#;

const REQUEST: &[u8] = b"GET /raw HTTP/1.1\r\nhost: tcp.test\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn tcp_proxy_matches_envoy() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, TCP, &[&a, &b]).await.expect("start");
        a.take();
        b.take();
        const N: usize = 200;
        for _ in 0..N {
            let raw = send_raw(proxy.port, REQUEST, false).await.expect("response");
            let text = String::from_utf8_lossy(&raw);
            // The upstream's own response, untouched: no proxy headers.
            assert!(text.starts_with("HTTP/1.1 200 OK"), "{kind:?}: {text}");
            assert!(text.contains("server: test-upstream") && !text.contains("x-envoy"), "{kind:?}: {text}");
        }
        let seen = a.take();
        let to_a = seen.len();
        assert_eq!(to_a + b.take().len(), N);
        // 3:1 over 200 connections: 5 standard deviations is ±31.
        assert!((119..=181).contains(&to_a), "{kind:?}: {to_a} of {N} to a, expected ~150");
        // The upstream sees exactly what the client sent.
        assert_eq!(seen[0].header("host"), Some("tcp.test"), "{kind:?}");
        assert!(seen[0].header("x-request-id").is_none(), "{kind:?}");
    }
}

#[tokio::test]
async fn refused_upstream_closes_the_connection_like_envoy() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let dead = TCP.replace("${UP_a}", "1").replace("${UP_b}", "1");
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &dead, &[&a, &b]).await.expect("start");
        let raw = send_raw(proxy.port, REQUEST, false).await.unwrap_or_default();
        assert!(raw.is_empty(), "{kind:?}: {}", String::from_utf8_lossy(&raw));
    }
}

/// Whether the proxy still carries a request on an open connection.
async fn still_open(tcp: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if tcp.write_all(b"GET /again HTTP/1.1\r\nhost: tcp.test\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    matches!(tokio::time::timeout(std::time::Duration::from_secs(2), tcp.read(&mut buf)).await, Ok(Ok(n)) if n > 0)
}

#[tokio::test]
async fn idle_connections_close_after_idle_timeout_like_envoy() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let template = TCP.replace("stat_prefix: tcp", "stat_prefix: tcp\n          idle_timeout: 0.6s");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&a, &b]).await.expect("start");
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port)).await.expect("connect");
        // Busy every 0.3 s: stays open past the timeout.
        let mut busy = Vec::new();
        for _ in 0..4 {
            busy.push(still_open(&mut tcp).await);
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        // Then quiet for twice the timeout: closed.
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        seen.push((busy, still_open(&mut tcp).await));
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert_eq!(seen[1], (vec![true; 4], false));
}
