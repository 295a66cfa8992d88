//! details, ratings and reviews answer what Istio's services answer.

use http::StatusCode;
use serde_json::json;
use weft_bookinfo::{Service, Version};

use crate::support::{config, dead_url, get_json, spawn, spawn_app, Recorder};

#[tokio::test]
async fn details_answers_the_book() {
    let details = spawn(config(Service::Details, Version::V1)).await;
    let (status, body) = get_json(&format!("{}/details/0", details.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "id": 0, "author": "William Shakespeare", "year": 1595, "type": "paperback",
            "pages": 200, "publisher": "PublisherA", "language": "English",
            "ISBN-10": "1234567890", "ISBN-13": "123-1234567890",
        })
    );
    let (status, body) = get_json(&format!("{}/details/zero", details.url())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string(), "{body}");
    let (status, body) = get_json(&format!("{}/health", details.url())).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "status": "Details is healthy" }))
    );
}

#[tokio::test]
async fn ratings_answers_five_and_four() {
    let ratings = spawn(config(Service::Ratings, Version::V1)).await;
    let (status, body) = get_json(&format!("{}/ratings/7", ratings.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "id": 7, "ratings": { "Reviewer1": 5, "Reviewer2": 4 } })
    );
    let (status, _) = get_json(&format!("{}/ratings/x", ratings.url())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get_json(&format!("{}/health", ratings.url())).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn reviews_v1_shows_no_ratings_and_never_calls_ratings() {
    let ratings = Recorder::new(StatusCode::OK, json!({ "ratings": { "Reviewer1": 1 } }));
    let ratings_server = spawn_app(ratings.clone()).await;
    let mut cfg = config(Service::Reviews, Version::V1);
    cfg.ratings_url = ratings_server.url();
    cfg.workload = "reviews-v1-abc".into();
    let reviews = spawn(cfg).await;

    let (status, body) = get_json(&format!("{}/reviews/0", reviews.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], "0");
    assert_eq!(body["podname"], "reviews-v1-abc");
    assert!(body.get("clustername").is_some(), "{body}");
    let list = body["reviews"].as_array().expect("reviews array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["reviewer"], "Reviewer1");
    assert!(list[0]["text"]
        .as_str()
        .is_some_and(|t| t.contains("Shakespeare")));
    assert!(list.iter().all(|r| r.get("rating").is_none()), "{body}");
    assert!(ratings.seen().is_empty(), "v1 called ratings");
}

/// reviews `version` in front of the real ratings: both reviews carry
/// ratings' stars (5 and 4) in `color`.
async fn assert_stars(version: Version, color: &str) {
    let ratings = spawn(config(Service::Ratings, Version::V1)).await;
    let mut cfg = config(Service::Reviews, version);
    cfg.ratings_url = ratings.url();
    let reviews = spawn(cfg).await;
    let (status, body) = get_json(&format!("{}/reviews/0", reviews.url())).await;
    assert_eq!(status, StatusCode::OK);
    let list = body["reviews"].as_array().expect("reviews array");
    let got: Vec<_> = list.iter().map(|r| r["rating"].clone()).collect();
    let want = [5, 4].map(|stars| json!({ "stars": stars, "color": color }));
    assert_eq!(got, want, "{body}");
}

#[tokio::test]
async fn reviews_v2_shows_black_stars() {
    assert_stars(Version::V2, "black").await;
}

#[tokio::test]
async fn reviews_v3_shows_red_stars() {
    assert_stars(Version::V3, "red").await;
}

#[tokio::test]
async fn reviews_v2_without_ratings_says_it_is_unavailable() {
    let mut cfg = config(Service::Reviews, Version::V2);
    cfg.ratings_url = dead_url().await;
    let reviews = spawn(cfg).await;
    let (status, body) = get_json(&format!("{}/reviews/0", reviews.url())).await;
    assert_eq!(status, StatusCode::OK);
    let unavailable = json!({ "error": "Ratings service is currently unavailable" });
    for review in body["reviews"].as_array().expect("reviews array") {
        assert_eq!(review["rating"], unavailable, "{body}");
    }
}
