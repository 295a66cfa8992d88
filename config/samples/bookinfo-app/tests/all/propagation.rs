//! A request's tracing headers and signed-in user travel
//! productpage → reviews → ratings unchanged, as Istio asks of apps.

use http::StatusCode;
use serde_json::json;
use weft_bookinfo::{Service, Version};

use crate::support::{client, config, get_text_with, login, spawn, spawn_app, Recorder};

const REQUEST_ID: &str = "6f1c1f3a-5d2e-4b8e-9d43-0f6d2b1c9a77";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const B3_TRACE_ID: &str = "80f198ee56343ba864fe8b2a57d3eff7";

#[tokio::test]
async fn trace_headers_and_end_user_reach_ratings_through_reviews() {
    let ratings = Recorder::new(
        StatusCode::OK,
        json!({ "id": 0, "ratings": { "Reviewer1": 3, "Reviewer2": 2 } }),
    );
    let ratings_server = spawn_app(ratings.clone()).await;
    let details = Recorder::new(StatusCode::OK, json!({ "type": "paperback" }));
    let details_server = spawn_app(details.clone()).await;
    let mut reviews_cfg = config(Service::Reviews, Version::V2);
    reviews_cfg.ratings_url = ratings_server.url();
    let reviews = spawn(reviews_cfg).await;
    let mut cfg = config(Service::Productpage, Version::V1);
    cfg.details_url = details_server.url();
    cfg.reviews_url = reviews.url();
    let productpage = spawn(cfg).await;

    // Sign in the way a browser does: the login answer's cookie.
    let login = login(&productpage.url(), "jason").await;
    let set_cookie = login.headers()["set-cookie"].to_str().expect("ascii");
    let cookie = set_cookie
        .split(';')
        .next()
        .expect("cookie pair")
        .to_owned();

    let url = format!("{}/productpage", productpage.url());
    let (_, html) = get_text_with(
        &url,
        &[
            ("x-request-id", REQUEST_ID),
            ("traceparent", TRACEPARENT),
            ("x-b3-traceid", B3_TRACE_ID),
            ("x-b3-sampled", "1"),
            ("x-datadog-trace-id", "1234"),
            ("cookie", &cookie),
        ],
    )
    .await;
    // The fake ratings' stars made it back onto the page.
    assert!(html.contains("★★★☆☆"), "{html}");

    let seen = ratings.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let headers = &seen[0].headers;
    assert_eq!(seen[0].uri, "/ratings/0");
    assert_eq!(headers["x-request-id"], REQUEST_ID);
    assert_eq!(headers["traceparent"], TRACEPARENT);
    assert_eq!(headers["x-b3-traceid"], B3_TRACE_ID);
    assert_eq!(headers["x-b3-sampled"], "1");
    assert_eq!(headers["x-datadog-trace-id"], "1234");
    assert_eq!(headers["end-user"], "jason");
    assert_eq!(headers["cookie"], cookie.as_str());

    // productpage's other call carries them too.
    let seen = details.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].headers["x-request-id"], REQUEST_ID);
    assert_eq!(seen[0].headers["end-user"], "jason");
}

#[tokio::test]
async fn nothing_is_invented_when_the_request_carries_nothing() {
    let ratings = Recorder::new(StatusCode::OK, json!({ "ratings": {} }));
    let ratings_server = spawn_app(ratings.clone()).await;
    let mut cfg = config(Service::Reviews, Version::V3);
    cfg.ratings_url = ratings_server.url();
    let reviews = spawn(cfg).await;
    let resp = client()
        .get(format!("{}/reviews/0", reviews.url()))
        .header("accept", "application/json")
        .send()
        .await
        .expect("reviews");
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = ratings.seen();
    assert_eq!(seen.len(), 1);
    for name in [
        "x-request-id",
        "traceparent",
        "x-b3-traceid",
        "end-user",
        "cookie",
    ] {
        assert!(
            !seen[0].headers.contains_key(name),
            "{name} in {:?}",
            seen[0].headers
        );
    }
}
