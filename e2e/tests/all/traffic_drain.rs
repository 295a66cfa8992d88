//! weft-proxy's own lifecycle: SIGTERM lets in-flight requests finish.
//! (Envoy has no equivalent to compare: on SIGTERM it exits at once and
//! drains only through /drain_listeners or hot restart, so this tests
//! weft-proxy alone.)

use std::time::{Duration, Instant};

use weft_e2e::{Kind, Proxy, Request, Upstream};

const SIMPLE: &str = include_str!("bootstraps/simple.yaml");

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let up = Upstream::start("up").await;
    let mut proxy = Proxy::start(Kind::Weft, SIMPLE, &[&up]).await.expect("start");
    let port = proxy.port;
    let slow = tokio::spawn(async move {
        weft_e2e::client::send(port, &Request::get("/").header("x-test-delay-ms", "600")).await
    });
    // Let the request reach the upstream, then ask the proxy to stop.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = tokio::task::spawn_blocking(move || {
        let status = proxy.terminate();
        (status, proxy)
    });
    // New connections are refused while draining (within a bounded wait
    // for the signal to be handled).
    let deadline = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(Instant::now() < deadline, "listener still accepting 2 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = slow.await.expect("join").expect("in-flight request completed");
    assert_eq!(response.status, 200);
    assert_eq!(response.body_str(), "up");
    let (status, proxy) = stopped.await.expect("join");
    assert!(status.is_some_and(|s| s.success()), "exit status {status:?}: {}", proxy.log_text());
}
