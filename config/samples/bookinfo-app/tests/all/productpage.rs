//! The product page and the products API, in front of the real services
//! or of dead and slow ones.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;
use weft_bookinfo::{Config, Service, Version};

use crate::support::{
    assert_contains, client, config, dead_url, get_json, get_text, get_text_with, login, spawn,
    spawn_app, Recorder, Running,
};

const DETAILS_SORRY: &str = "Sorry, product details are currently unavailable for this book.";
const REVIEWS_SORRY: &str = "Sorry, product reviews are currently unavailable for this book.";

/// The whole of Bookinfo in-process, reviews at `version`.
pub struct Stack {
    pub productpage: Running,
    _services: Vec<Running>,
}

pub async fn bookinfo(version: Version, tune: impl FnOnce(&mut Config)) -> Stack {
    let ratings = spawn(config(Service::Ratings, Version::V1)).await;
    let details = spawn(config(Service::Details, Version::V1)).await;
    let mut reviews_cfg = config(Service::Reviews, version);
    reviews_cfg.ratings_url = ratings.url();
    let reviews = spawn(reviews_cfg).await;
    let mut cfg = config(Service::Productpage, Version::V1);
    cfg.details_url = details.url();
    cfg.reviews_url = reviews.url();
    cfg.ratings_url = ratings.url();
    tune(&mut cfg);
    Stack {
        productpage: spawn(cfg).await,
        _services: vec![ratings, details, reviews],
    }
}

/// The product page of a whole Bookinfo with reviews at `version`.
async fn page(version: Version) -> String {
    let stack = bookinfo(version, |_| {}).await;
    let (status, html) = get_text(&format!("{}/productpage", stack.productpage.url())).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_contains(
        &html,
        &[
            "<title>Simple Bookstore App</title>",
            "The Comedy of Errors",
            "Book Details",
            "paperback",
            "PublisherA",
            "123-1234567890",
            "Book Reviews",
            "An extremely entertaining play by Shakespeare.",
            "Reviewer2",
        ],
    );
    html
}

#[tokio::test]
async fn v1_page_has_the_book_and_reviews_without_stars() {
    let html = page(Version::V1).await;
    assert_contains(&html, &["Reviews served by: reviews-v1"]);
    assert!(!html.contains('★'), "{html}");
}

#[tokio::test]
async fn v2_page_has_black_stars() {
    let html = page(Version::V2).await;
    assert_contains(
        &html,
        &[
            "Reviews served by: reviews-v2",
            "color: black\" title=\"5 of 5\">★★★★★</p>",
            "color: black\" title=\"4 of 5\">★★★★☆</p>",
        ],
    );
}

#[tokio::test]
async fn v3_page_has_red_stars() {
    let html = page(Version::V3).await;
    assert_contains(
        &html,
        &[
            "Reviews served by: reviews-v3",
            "color: red\" title=\"5 of 5\">★★★★★</p>",
        ],
    );
    assert!(!html.contains("color: black"), "{html}");
}

#[tokio::test]
async fn page_renders_apologies_when_details_and_reviews_are_down() {
    let mut cfg = config(Service::Productpage, Version::V1);
    cfg.details_url = dead_url().await;
    cfg.reviews_url = dead_url().await;
    let productpage = spawn(cfg).await;
    let (status, html) = get_text(&format!("{}/productpage", productpage.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_contains(
        &html,
        &[
            "The Comedy of Errors",
            "Error fetching product details!",
            DETAILS_SORRY,
            "Error fetching product reviews!",
            REVIEWS_SORRY,
        ],
    );
    assert!(!html.contains("Reviews served by"), "{html}");
}

#[tokio::test]
async fn slow_reviews_time_out_into_the_error_section_after_two_tries() {
    let slow = Recorder::delayed(
        StatusCode::OK,
        json!({ "reviews": [] }),
        Duration::from_secs(5),
    );
    let slow_server = spawn_app(slow.clone()).await;
    let stack = bookinfo(Version::V1, |cfg| {
        cfg.reviews_url = slow_server.url();
        cfg.timeout = Some(Duration::from_millis(300));
    })
    .await;
    let start = Instant::now();
    let (status, html) = get_text(&format!("{}/productpage", stack.productpage.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert_contains(&html, &["Book Details", REVIEWS_SORRY]);
    assert_eq!(
        slow.seen().len(),
        2,
        "Istio's productpage tries reviews twice"
    );
}

#[tokio::test]
async fn products_api_relays_the_services() {
    let stack = bookinfo(Version::V2, |_| {}).await;
    let base = format!("{}/api/v1/products", stack.productpage.url());
    let (status, list) = get_json(&base).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["id"], 0);
    assert_eq!(list[0]["title"], "The Comedy of Errors");
    let (status, details) = get_json(&format!("{base}/0")).await;
    assert_eq!(
        (status, &details["publisher"]),
        (StatusCode::OK, &json!("PublisherA"))
    );
    let (status, reviews) = get_json(&format!("{base}/0/reviews")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        reviews["reviews"][1]["rating"],
        json!({ "stars": 4, "color": "black" })
    );
    let (status, ratings) = get_json(&format!("{base}/0/ratings")).await;
    assert_eq!(
        (status, &ratings["ratings"]["Reviewer1"]),
        (StatusCode::OK, &json!(5))
    );
}

#[tokio::test]
async fn products_api_passes_on_the_upstream_status() {
    let unavailable = Recorder::new(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "no" }));
    let unavailable_server = spawn_app(unavailable).await;
    let mut cfg = config(Service::Productpage, Version::V1);
    cfg.details_url = unavailable_server.url();
    cfg.ratings_url = dead_url().await;
    let productpage = spawn(cfg).await;
    let base = format!("{}/api/v1/products", productpage.url());
    let (status, body) = get_json(&format!("{base}/0")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], DETAILS_SORRY);
    let (status, body) = get_json(&format!("{base}/0/ratings")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body["error"],
        "Sorry, product ratings are currently unavailable for this book."
    );
}

#[tokio::test]
async fn login_sets_the_user_cookie_and_logout_clears_it() {
    let stack = bookinfo(Version::V1, |_| {}).await;
    let base = stack.productpage.url();
    let resp = login(&base, "jason").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["location"], "/productpage");
    let cookie = resp.headers()["set-cookie"].to_str().expect("ascii");
    assert!(cookie.starts_with("user=jason;"), "{cookie}");

    let url = format!("{base}/productpage");
    let (_, html) = get_text_with(&url, &[("cookie", "user=jason")]).await;
    assert_contains(&html, &["jason ( <a href=\"/logout\">sign out</a> )"]);
    assert!(!html.contains("name=\"login_form\""), "{html}");

    let resp = client()
        .get(format!("{base}/logout"))
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), StatusCode::FOUND);
    let cleared = resp.headers()["set-cookie"].to_str().expect("ascii");
    assert!(
        cleared.starts_with("user=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test]
async fn health_static_and_unknown_paths() {
    let productpage = spawn(config(Service::Productpage, Version::V1)).await;
    let base = productpage.url();
    let health = get_text(&format!("{base}/health")).await;
    assert_eq!(health, (StatusCode::OK, "Product page is healthy".into()));
    let resp = client()
        .get(format!("{base}/static/bookinfo.css"))
        .send()
        .await
        .expect("css");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().expect("ascii");
    assert!(content_type.starts_with("text/css"), "{content_type}");
    assert_eq!(
        get_text(&format!("{base}/static/nope.js")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get_text(&format!("{base}/nope")).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, index) = get_text(&format!("{base}/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_contains(&index, &["href=\"/productpage\""]);
}
