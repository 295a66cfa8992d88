//! Host health against Envoy: outlier detection ejects a failing host and
//! brings it back, priorities fail over when a level is unhealthy, and
//! active health checks keep traffic off a host until it passes.

use std::time::Duration;

use weft_e2e::bootstrap::{self as kit, cluster, single_route, upstream};
use weft_e2e::{Kind, Proxy, Request, Upstream};

/// One route to cluster `up` with `cluster_extra` fields and localities.
fn bootstrap(cluster_extra: &str, localities: &[String]) -> String {
    let fields = format!("connect_timeout: 1s\n{cluster_extra}");
    single_route("cluster: up", &[cluster("up", &fields, localities)])
}

/// A locality at `priority` with the named upstreams.
fn locality(priority: u32, names: &[&str]) -> String {
    kit::locality(priority, &names.iter().map(|n| upstream(n)).collect::<Vec<_>>())
}

/// Sends `n` requests one after another; returns "status body" per request.
async fn sequence(proxy: &Proxy, n: usize, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let r = proxy.send(&Request::get(&format!("{path}{i}"))).await;
        out.push(format!("{} {}", r.status, r.body_str()));
    }
    out
}

#[tokio::test]
async fn outlier_detection_ejects_and_returns_a_host_like_envoy() {
    let (bad, good1, good2) = (Upstream::start("bad").await, Upstream::start("good1").await, Upstream::start("good2").await);
    bad.force_status(500);
    let outlier = "outlier_detection: { consecutive_5xx: 3, interval: 1s, base_ejection_time: 3s, max_ejection_percent: 100 }";
    let template = bootstrap(outlier, &[locality(0, &["bad", "good1", "good2"])]);
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&bad, &good1, &good2]).await.unwrap_or_else(|e| panic!("{e}"));
        let first = sequence(&proxy, 30, "/a").await;
        // Every 5xx counts toward consecutive_5xx, whatever produced it
        // (a 500 from the host, or a reset/connect failure under load).
        let failures = first.iter().filter(|r| r.starts_with('5')).count();
        let ejected = proxy.stat("envoy_cluster_outlier_detection_ejections_enforced_total{").await;
        // Back after base_ejection_time, at the next interval tick.
        bad.force_status(0);
        tokio::time::sleep(Duration::from_millis(4500)).await;
        let later = sequence(&proxy, 12, "/b").await;
        let bad_again = later.iter().filter(|r| r.ends_with(" bad")).count();
        seen.push((failures, ejected, bad_again > 0));
        bad.force_status(500);
    }
    assert_eq!(seen[0], seen[1], "(5xx seen, ejections, host back): left Envoy, right weft-proxy");
    assert_eq!(seen[1], (3, Some(1.0), true));
}

#[tokio::test]
async fn priorities_fail_over_when_the_first_level_is_ejected_like_envoy() {
    let (bad, backup) = (Upstream::start("bad").await, Upstream::start("backup").await);
    bad.force_status(503);
    let outlier = "outlier_detection: { consecutive_5xx: 2, max_ejection_percent: 100 }";
    let template = bootstrap(outlier, &[locality(0, &["bad"]), locality(1, &["backup"])]);
    let mut runs = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &template, &[&bad, &backup]).await.unwrap_or_else(|e| panic!("{e}"));
        // Paced: Envoy ejects on its main thread and tells the workers
        // after, so a request sent at once may still reach the bad host
        // (seen once in a loaded CI run: three 503s instead of two).
        let mut run = Vec::new();
        for i in 0..8 {
            run.extend(sequence(&proxy, 1, &format!("/p{i}-")).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        runs.push(run);
    }
    assert_eq!(runs[0], runs[1], "left Envoy, right weft-proxy");
    assert_eq!(runs[1][..2], ["503 bad", "503 bad"]);
    assert!(runs[1][2..].iter().all(|r| r == "200 backup"), "{:?}", runs[1]);
}

#[tokio::test]
async fn active_health_checks_keep_traffic_off_a_failing_host_like_envoy() {
    let (sick, well) = (Upstream::start("sick").await, Upstream::start("well").await);
    let hc = "health_checks: [ { timeout: 1s, interval: 1s, no_traffic_interval: 1s, unhealthy_threshold: 2, healthy_threshold: 2, http_health_check: { path: /healthz } } ]";
    let template = bootstrap(hc, &[locality(0, &["sick", "well"])]);
    let mut runs = Vec::new();
    for kind in Kind::BOTH {
        sick.force_status(503);
        sick.take();
        let proxy = Proxy::start(kind, &template, &[&sick, &well]).await.unwrap_or_else(|e| panic!("{e}"));
        let before = sequence(&proxy, 6, "/h").await;
        // What a health check looks like to the host.
        let check = sick.take().into_iter().next().map(|s| {
            let mut h: Vec<String> = s
                .headers
                .iter()
                .filter(|(k, _)| k != "x-request-id")
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            h.sort();
            format!("{} {} {h:?}", s.method, s.path)
        });
        // Two passing checks bring it back.
        sick.force_status(0);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let after = sequence(&proxy, 6, "/h").await;
        runs.push((before, check, after.iter().any(|r| r.ends_with(" sick"))));
    }
    assert_eq!(runs[0], runs[1], "left Envoy, right weft-proxy");
    assert!(runs[1].0.iter().all(|r| r.ends_with(" well")), "{:?}", runs[1].0);
    assert!(runs[1].2, "the host came back");
}

#[tokio::test]
async fn a_cluster_without_traffic_is_checked_at_no_traffic_interval_like_envoy() {
    // Envoy's default no_traffic_interval (60 s) applies until the cluster
    // carries traffic; the check scheduled at start-up waits that long, so
    // a recovered host stays out for a while. Same on both.
    let (sick, well) = (Upstream::start("sick").await, Upstream::start("well").await);
    let hc = "health_checks: [ { timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: { path: /healthz } } ]";
    let template = bootstrap(hc, &[locality(0, &["sick", "well"])]);
    let mut runs = Vec::new();
    for kind in Kind::BOTH {
        sick.force_status(503);
        let proxy = Proxy::start(kind, &template, &[&sick, &well]).await.unwrap_or_else(|e| panic!("{e}"));
        sick.force_status(0);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        runs.push(sequence(&proxy, 6, "/n").await);
    }
    assert_eq!(runs[0], runs[1], "left Envoy, right weft-proxy");
    assert!(runs[1].iter().all(|r| r.ends_with(" well")), "{:?}", runs[1]);
}
