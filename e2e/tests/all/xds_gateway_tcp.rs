//! A gateway's TCP and TLS passthrough servers, from Istio resources:
//! `weft-operator standalone` on a directory, the gateway bootstrapped
//! with `weft-operator bootstrap`, backends behind ServiceEntries and
//! WorkloadEntries on their own loopback addresses. The same scenario on
//! Envoy and on weft-proxy must look the same to clients and backends:
//! - opaque TCP: 200 connections split 80/20 over two subsets, the bytes
//!   reaching the backend as the client sent them;
//! - TLS passthrough: two SNI names reach two backends, which terminate
//!   TLS themselves (the client verifies the backend's certificate); an
//!   unknown name and a plaintext connection get nowhere.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use weft_e2e::client::send_raw;
use weft_e2e::mesh::{Identity, Operator};
use weft_e2e::{free_port, replace_file, Kind, Proxy, Request, TlsClient, Upstream};

/// The scenario, shared with the operator's golden translation test.
fn config() -> String {
    let path = weft_e2e::proxy::repo_root().join("operator/tests/fixtures/gateway-tcp-tls.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const RAW: &[u8] = b"GET /raw HTTP/1.1\r\nhost: tcp.test\r\nconnection: close\r\n\r\n";
const CONNECTIONS: usize = 200;

/// Headers a proxy adds to HTTP it parses; none may reach a backend here.
fn proxy_headers(seen: &weft_e2e::Seen) -> Vec<&str> {
    let added = |k: &str| k.starts_with("x-envoy") || k.starts_with("x-forwarded") || k == "x-request-id";
    seen.headers.iter().map(|(k, _)| k.as_str()).filter(|k| added(k)).collect()
}

/// The body a TCP connection through the gateway got back, retrying
/// briefly while the listener from LDS comes up.
async fn first_raw(port: u16, gateway: &Proxy, operator: &Operator) -> String {
    let start = Instant::now();
    loop {
        if let Ok(raw) = send_raw(port, RAW, false).await {
            if !raw.is_empty() {
                return String::from_utf8_lossy(&raw).into_owned();
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            let status = operator.status().await;
            panic!("{:?}: no TCP answer within 10 s\n{}\n{status}\n{}", gateway.kind, gateway.log_text(), operator.log_text());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a TLS client with `sni` saw through the gateway: the backend that
/// answered, or why not.
async fn tls_through(port: u16, sni: Option<&str>) -> String {
    let client = TlsClient { sni: sni.map(str::to_string), ..TlsClient::default() }.verify();
    match client.send(port, &Request::get("/tls").header("host", sni.unwrap_or("none"))).await {
        Ok((response, negotiated)) => format!("{} {} over {}", response.status, response.body_str(), negotiated.version),
        Err(_) => "refused".into(),
    }
}

async fn scenario(kind: Kind, net: u8) -> Vec<String> {
    let what = format!("{kind:?}");
    let prefix = format!("127.201.{net}");
    let (tcp_port, tls_port) = (free_port(), free_port());
    let dir: PathBuf = std::env::temp_dir().join(format!("weft-e2e-gateway-tcp-{}-{kind:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = config().replace("${NET}", &prefix).replace("${TCP}", &tcp_port.to_string()).replace("${TLS}", &tls_port.to_string());
    replace_file(&dir, "config.yaml", &config);
    let operator = Operator::start(&dir).await.unwrap_or_else(|e| panic!("{e}"));

    let at = |last: u8, port: u16| -> SocketAddr { format!("{prefix}.{last}:{port}").parse().expect("addr") };
    let v1 = Upstream::start_on("v1", at(1, 9000)).await.expect("bind v1");
    let v2 = Upstream::start_on("v2", at(2, 9000)).await.expect("bind v2");
    let shop_a = Upstream::start_tls_on("shop-a", at(3, 8443)).await.expect("bind shop-a");
    let shop_b = Upstream::start_tls_on("shop-b", at(4, 8443)).await.expect("bind shop-b");
    let gateway = operator.proxy(kind, &Identity::INGRESS_GATEWAY).await;

    let mut steps = Vec::new();
    // Opaque TCP: the backend's own response, untouched.
    let first = first_raw(tcp_port, &gateway, &operator).await;
    assert!(first.starts_with("HTTP/1.1 200 OK") && first.contains("server: test-upstream"), "{what}: {first}");
    v1.take();
    v2.take();
    for _ in 0..CONNECTIONS {
        let raw = send_raw(tcp_port, RAW, false).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(raw.starts_with(b"HTTP/1.1 200 OK"), "{what}: {}", String::from_utf8_lossy(&raw));
    }
    let (to_v1, to_v2) = (v1.take(), v2.take());
    assert_eq!(to_v1.len() + to_v2.len(), CONNECTIONS, "{what}: every connection reached a backend");
    // 80/20 over 200 connections: 5 standard deviations is ±28.
    let share = to_v1.len();
    assert!((132..=188).contains(&share), "{what}: {share} of {CONNECTIONS} to v1, expected ~160");
    steps.push("tcp: 80/20 split within tolerance".to_string());
    let seen = &to_v1[0];
    steps.push(format!("tcp: backend saw {} {} host {:?}, proxy headers {:?}", seen.method, seen.path, seen.header("host"), proxy_headers(seen)));

    // TLS passthrough, by SNI, to backends that terminate TLS themselves.
    for sni in [Some("a.example.com"), Some("b.example.com"), Some("c.example.com"), None] {
        steps.push(format!("tls {sni:?}: {}", tls_through(tls_port, sni).await));
    }
    for shop in [&shop_a, &shop_b] {
        let seen = shop.take();
        let s = seen.first().unwrap_or_else(|| panic!("{what}: {} saw nothing", shop.name));
        steps.push(format!("{} saw sni {:?} host {:?}, proxy headers {:?}", shop.name, s.header(":sni"), s.header("host"), proxy_headers(s)));
    }
    let plain = send_raw(tls_port, RAW, false).await.unwrap_or_default();
    steps.push(format!("plaintext on the TLS port: {} bytes back", plain.len()));

    let status = operator.status().await;
    assert!(status["nacks"].as_object().is_some_and(|n| n.is_empty()), "{what}: the gateway rejected nothing: {status}");
    for r in ["VirtualService default/tcp-echo", "VirtualService default/shops", "Gateway default/edge"] {
        assert_eq!(status["resources"][r]["conditions"][0]["status"], "True", "{what}: {r}: {status}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    steps
}

#[tokio::test]
async fn gateway_tcp_and_tls_passthrough_route_the_same_on_envoy_and_weft() {
    let envoy = scenario(Kind::Envoy, 1).await;
    let weft = scenario(Kind::Weft, 2).await;
    assert_eq!(envoy, weft, "left Envoy, right weft-proxy");
    assert_eq!(
        envoy,
        [
            "tcp: 80/20 split within tolerance",
            r#"tcp: backend saw GET /raw host Some("tcp.test"), proxy headers []"#,
            "tls Some(\"a.example.com\"): 200 shop-a over TLSv1.3",
            "tls Some(\"b.example.com\"): 200 shop-b over TLSv1.3",
            "tls Some(\"c.example.com\"): refused",
            "tls None: refused",
            r#"shop-a saw sni Some("a.example.com") host Some("a.example.com"), proxy headers []"#,
            r#"shop-b saw sni Some("b.example.com") host Some("b.example.com"), proxy headers []"#,
            "plaintext on the TLS port: 0 bytes back",
        ]
    );
}
