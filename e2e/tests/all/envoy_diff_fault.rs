//! The fault filter: aborts and delays, fixed or header-controlled, by
//! percentage, restricted by headers, overridden per route.

use std::time::{Duration, Instant};

use weft_e2e::{Kind, Proxy, Request, Upstream};

use crate::{assert_same_on_both, run};

const FAULT: &str = include_str!("bootstraps/fault.yaml");

#[tokio::test]
async fn aborts_match_envoy() {
    let up = Upstream::start("up").await;
    let requests = vec![
        Request::get("/abort"),
        Request::get("/abort-body"),
        Request::get("/matched"),
        Request::get("/matched").header("x-fault", "yes"),
        Request::get("/"),
        Request::get("/").header("x-envoy-fault-abort-request", "429"),
        Request::get("/").header("x-envoy-fault-abort-request", "429").header("x-envoy-fault-abort-request-percentage", "0"),
        Request::get("/").header("x-envoy-fault-abort-request", "999"),
        Request::get("/").header("x-envoy-fault-abort-request", "nonsense"),
        Request::get("/none").header("x-envoy-fault-abort-request", "429"),
        // gRPC statuses: a 200 a gRPC client reads as the status.
        grpc("/abort-grpc"),
        Request::get("/abort-grpc"),
        grpc("/").header("x-envoy-fault-abort-grpc-request", "14"),
        grpc("/").header("x-envoy-fault-abort-grpc-request", "14").header("x-envoy-fault-abort-request", "429"),
        Request::get("/").header("x-envoy-fault-abort-grpc-request", "14"),
        grpc("/").header("x-envoy-fault-abort-grpc-request", "x"),
        grpc("/").header("x-envoy-fault-abort-grpc-request", "3").header("x-envoy-fault-abort-request", "999"),
    ];
    let outcomes = assert_same_on_both(FAULT, &[&up], &requests).await;
    assert_eq!(outcomes[0].response.status, 503);
    assert!(outcomes[0].upstream.is_empty(), "an aborted request must not reach the upstream");
    assert_eq!(outcomes[5].response.status, 429);
    assert_eq!(outcomes[9].response.status, 200);
    let grpc_abort = &outcomes[10].response;
    assert_eq!((grpc_abort.status, grpc_abort.header("grpc-status")), (200, Some("8")), "{grpc_abort:?}");
    assert_eq!(outcomes[12].response.header("grpc-status"), Some("14"));
    assert_eq!(outcomes[13].response.header("grpc-status"), Some("14"), "429 maps to UNAVAILABLE");
}

fn grpc(path: &str) -> Request {
    Request::get(path).method("POST").header("content-type", "application/grpc").body("\0\0\0\0\0")
}

#[tokio::test]
async fn delays_match_envoy() {
    let up = Upstream::start("up").await;
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, FAULT, &[&up]).await.expect("start");
        let timed = |req: Request| {
            let proxy = &proxy;
            async move {
                let start = Instant::now();
                let r = proxy.send(&req).await;
                (r.status, start.elapsed())
            }
        };
        let (status, took) = timed(Request::get("/delay")).await;
        assert_eq!(status, 200, "{kind:?}");
        // Envoy's timers may fire a millisecond early.
        assert!(took >= Duration::from_millis(190) && took < Duration::from_millis(800), "{kind:?} fixed delay took {took:?}");
        let (status, took) = timed(Request::get("/").header("x-envoy-fault-delay-request", "150")).await;
        assert_eq!(status, 200, "{kind:?}");
        assert!(took >= Duration::from_millis(140) && took < Duration::from_millis(750), "{kind:?} header delay took {took:?}");
        let (_, took) = timed(Request::get("/")).await;
        assert!(took < Duration::from_millis(100), "{kind:?} undelayed request took {took:?}");
    }
}

#[tokio::test]
async fn percentage_matches_envoy_statistically() {
    let up = Upstream::start("up").await;
    const N: usize = 400;
    let requests: Vec<Request> = (0..N).map(|_| Request::get("/half")).collect();
    for kind in Kind::BOTH {
        let outcomes = run(kind, FAULT, &[&up], &requests).await;
        let aborted = outcomes.iter().filter(|o| o.response.status == 500).count();
        // 50% of 400: 5 standard deviations is ±50.
        assert!((150..=250).contains(&aborted), "{kind:?}: {aborted} of {N} aborted, expected ~200");
    }
}
