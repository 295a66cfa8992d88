//! HTTP/1.1 upgrades (WebSocket), against Envoy: with `upgrade_configs`
//! the 101 passes and the connection becomes a tunnel both ways; without
//! it, or for a type not listed, the upgrade is refused as Envoy refuses it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_e2e::bootstrap::{cluster, locality, single_route_with, upstream};
use weft_e2e::client::read_head;
use weft_e2e::{Kind, Proxy, Upstream};

const PATIENCE: Duration = Duration::from_secs(3);

/// One listener routing `/` to `up` with `route` fields; `hcm` adds
/// connection manager fields (such as `upgrade_configs`).
fn bootstrap(hcm: &str, route: &str) -> String {
    single_route_with(hcm, &format!("cluster: up, {route}"), &[cluster("up", "", &[locality(0, &[upstream("up")])])])
}

const WEBSOCKET: &str = "upgrade_configs: [ { upgrade_type: websocket } ]";

/// The status line and the headers a client can compare (sorted; `date`
/// and the service time left out).
fn comparable(head: &str) -> String {
    let mut lines = head.lines().filter(|l| !l.is_empty());
    let status = lines.next().unwrap_or_default().to_string();
    let mut headers: Vec<String> = lines
        .map(|l| l.to_ascii_lowercase())
        .filter(|l| !l.starts_with("date:"))
        .collect();
    headers.sort();
    format!("{status} | {}", headers.join(" | "))
}

/// What the tunnel gives back for `sent` within [`PATIENCE`], after
/// `early` (bytes that came with the header).
async fn echo(tcp: &mut TcpStream, sent: &[u8], expect: usize, early: &mut Vec<u8>) -> String {
    if tcp.write_all(sent).await.is_err() {
        return "write failed".into();
    }
    let mut got = std::mem::take(early);
    let mut chunk = [0u8; 4096];
    while got.len() < expect {
        match tokio::time::timeout(PATIENCE, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) => return format!("closed after {:?}", String::from_utf8_lossy(&got)),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return format!("error {e}"),
            Err(_) => return format!("nothing more within 3s after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

const UPGRADE_REQUEST: &str = "GET /ws HTTP/1.1\r\nhost: example.com\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n";

/// A proxy of `kind` and a connection to it on which `request` was sent.
async fn connect(kind: Kind, template: &str, up: &Upstream, request: &str) -> (Proxy, TcpStream) {
    let proxy = Proxy::start(kind, template, &[up]).await.unwrap_or_else(|e| panic!("{e}"));
    let mut tcp = TcpStream::connect(("127.0.0.1", proxy.port)).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    (proxy, tcp)
}

/// An upgrade through a proxy of `kind`: the response header, what the
/// upstream saw, two echoes (`pause` between them), and whether the
/// tunnel closes when the client ends its side.
async fn upgrade_through(kind: Kind, template: &str, up: &Upstream, extra: &str, pause: Duration) -> Vec<String> {
    up.take();
    let (_proxy, mut tcp) = connect(kind, template, up, &format!("{UPGRADE_REQUEST}{extra}\r\n")).await;
    let (head, mut early) = read_head(&mut tcp).await;
    let mut out = vec![comparable(&head)];
    let seen = up.take();
    out.push(seen.first().map_or("upstream saw nothing".into(), crate::describe));
    if !head.starts_with("HTTP/1.1 101") {
        return out;
    }
    out.push(echo(&mut tcp, b"hello", "up:hello".len(), &mut early).await);
    tokio::time::sleep(pause).await;
    out.push(echo(&mut tcp, b"again", "up:again".len(), &mut early).await);
    let _ = tcp.shutdown().await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut rest)).await;
    out.push(format!("after the client's FIN: {:?}", closed.map(|r| r.map(|_| String::from_utf8_lossy(&rest).into_owned()).map_err(|e| e.kind()))));
    out
}

async fn same_on_both(template: &str, extra: &str, pause: Duration) -> Vec<String> {
    let up = Upstream::start("up").await;
    let envoy = upgrade_through(Kind::Envoy, template, &up, extra, pause).await;
    let weft = upgrade_through(Kind::Weft, template, &up, extra, pause).await;
    assert_eq!(envoy, weft, "left Envoy, right weft-proxy");
    weft
}

#[tokio::test]
async fn websocket_upgrades_tunnel_like_envoy() {
    let out = same_on_both(&bootstrap(WEBSOCKET, ""), "", Duration::ZERO).await;
    assert!(out[0].starts_with("HTTP/1.1 101"), "{out:?}");
    assert_eq!(out[2..4], ["up:hello", "up:again"]);
}

#[tokio::test]
async fn upgrades_without_upgrade_configs_are_refused_like_envoy() {
    let out = same_on_both(&bootstrap("", ""), "", Duration::ZERO).await;
    assert!(!out[0].starts_with("HTTP/1.1 101"), "{out:?}");
}

#[tokio::test]
async fn an_upstream_that_refuses_the_upgrade_answers_like_envoy() {
    let out = same_on_both(&bootstrap(WEBSOCKET, ""), "x-test-status: 403\r\n", Duration::ZERO).await;
    assert!(out[0].starts_with("HTTP/1.1 403"), "{out:?}");
}

/// The route timeout covers the upgrade's answer, not the tunnel after it.
#[tokio::test]
async fn tunnels_outlive_the_route_timeout_like_envoy() {
    let out = same_on_both(&bootstrap(WEBSOCKET, "timeout: 1s"), "", Duration::from_millis(1500)).await;
    assert_eq!(out[2..4], ["up:hello", "up:again"]);
}

/// A route's `upgrade_configs` overrides the connection manager's, both
/// ways; an upgrade type nobody lists is refused.
#[tokio::test]
async fn route_upgrade_configs_override_the_managers_like_envoy() {
    let off = "upgrade_configs: [ { upgrade_type: websocket, enabled: false } ]";
    let on_route = "upgrade_configs: [ { upgrade_type: WebSocket, enabled: true } ]";
    let out = same_on_both(&bootstrap(off, on_route), "", Duration::ZERO).await;
    assert!(out[0].starts_with("HTTP/1.1 101"), "{out:?}");
    let out = same_on_both(&bootstrap(WEBSOCKET, "upgrade_configs: [ { upgrade_type: websocket, enabled: false } ]"), "", Duration::ZERO).await;
    assert!(out[0].starts_with("HTTP/1.1 403"), "{out:?}");
    let up = Upstream::start("up").await;
    let template = bootstrap(WEBSOCKET, "");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let request = UPGRADE_REQUEST.replace("upgrade: websocket", "upgrade: spdy/3");
        let (_proxy, mut tcp) = connect(kind, &template, &up, &format!("{request}\r\n")).await;
        seen.push(comparable(&read_head(&mut tcp).await.0));
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert!(seen[1].starts_with("HTTP/1.1 403"), "{seen:?}");
}

/// Bytes the client sends right behind its request, before the 101, reach
/// the upstream through the tunnel.
#[tokio::test]
async fn bytes_sent_before_the_switch_pass_like_envoy() {
    let up = Upstream::start("up").await;
    let template = bootstrap(WEBSOCKET, "");
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let (_proxy, mut tcp) = connect(kind, &template, &up, &format!("{UPGRADE_REQUEST}\r\nearly")).await;
        let (head, mut early) = read_head(&mut tcp).await;
        let echoed = echo(&mut tcp, b"", "up:early".len(), &mut early).await;
        seen.push(format!("{} then {echoed:?}", comparable(&head)));
    }
    assert_eq!(seen[0], seen[1], "left Envoy, right weft-proxy");
    assert!(seen[1].ends_with("then \"up:early\""), "{seen:?}");
}
