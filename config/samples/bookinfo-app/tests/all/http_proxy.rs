//! The built binary reaches other services through `HTTP_PROXY`, as it
//! does through its sidecar; and it stops cleanly on SIGTERM.

use std::time::Duration;

use http::StatusCode;
use weft_bookinfo::{Service, Version};

use crate::support::{config, get_text, spawn, spawn_app, Binary, TestProxy};

#[tokio::test]
async fn productpage_calls_reviews_through_http_proxy() {
    let details = spawn(config(Service::Details, Version::V1)).await;
    let reviews = spawn(config(Service::Reviews, Version::V1)).await;
    let proxy = TestProxy::new(&[
        ("details:9080", details.addr),
        ("reviews:9080", reviews.addr),
    ]);
    let proxy_server = spawn_app(proxy.clone()).await;
    let proxy_url = proxy_server.url();

    // Default service URLs: the names only the "mesh" (the proxy) knows.
    let productpage = Binary::start(&["productpage"], &[("HTTP_PROXY", proxy_url.as_str())]);
    let (status, html) = get_text(&format!("{}/productpage", productpage.url())).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Reviews served by: reviews-v1"), "{html}");
    assert!(html.contains("PublisherA"), "{html}");

    let seen = proxy.seen();
    assert!(
        seen.contains(&"GET http://reviews:9080/reviews/0".to_owned()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"GET http://details:9080/details/0".to_owned()),
        "{seen:?}"
    );

    // One log line per request, with method, path and status. It is
    // written once the response is sent, so it may trail the response.
    let logged = |log: &[String]| {
        log.iter().any(|l| l.contains("method=GET") && l.contains("path=/productpage") && l.contains("status=200"))
    };
    let mut log = productpage.log();
    for _ in 0..100 {
        if logged(&log) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        log = productpage.log();
    }
    assert!(logged(&log), "{log:#?}");
}

#[tokio::test]
async fn no_proxy_hosts_are_called_directly() {
    let details = spawn(config(Service::Details, Version::V1)).await;
    let reviews = spawn(config(Service::Reviews, Version::V1)).await;
    let proxy = TestProxy::new(&[("reviews:9080", reviews.addr)]);
    let proxy_server = spawn_app(proxy.clone()).await;

    // details by its loopback address, exempted by NO_PROXY; reviews by
    // its mesh name, through the proxy.
    let productpage = Binary::start(
        &["productpage", "--details", &details.url()],
        &[
            ("HTTP_PROXY", proxy_server.url().as_str()),
            ("NO_PROXY", "127.0.0.1"),
        ],
    );
    let (status, html) = get_text(&format!("{}/productpage", productpage.url())).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("PublisherA") && html.contains("Reviews served by: reviews-v1"),
        "{html}"
    );
    assert_eq!(proxy.seen(), ["GET http://reviews:9080/reviews/0"]);
}

#[tokio::test]
async fn sigterm_stops_the_binary_cleanly() {
    let mut ratings = Binary::start(&["ratings", "--workload", "ratings-test"], &[]);
    let (status, _) = get_text(&format!("{}/health", ratings.url())).await;
    assert_eq!(status, StatusCode::OK);
    let pid = ratings.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exit = ratings
        .wait_exit(Duration::from_secs(10))
        .expect("still running after SIGTERM");
    assert!(exit.success(), "{exit:?}: {:#?}", ratings.log());
}
