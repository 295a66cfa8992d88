//! reviews: two reviews of the book, as Istio's Java `reviews` service
//! answers them; the version decides whether they carry stars.
//!
//! ```text
//!  GET /reviews/{id} ─► v1: text only
//!                    └► v2 / v3: GET ratings/ratings/{id} (forwarded headers)
//!                         ─► "rating": {"stars", "color": black | red}
//!                         ─► or {"error": "Ratings service is currently unavailable"}
//! ```
//! The answer names the workload that served it (`podname`), which the
//! product page shows as `Reviews served by: …`. `GET /health` →
//! `{"status": "Reviews is healthy"}`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::outbound::Outbound;
use crate::server::{self, App, Request, Response};
use crate::{propagate, Config, Version};

/// What a review says when its rating could not be had.
pub const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

/// The reviewers, and what each wrote.
const REVIEWS: [(&str, &str); 2] = [
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
];

/// The reviews service of one version.
pub struct Reviews {
    config: Arc<Config>,
    outbound: Outbound,
}

impl Reviews {
    pub fn new(config: Arc<Config>) -> Result<Self, reqwest::Error> {
        let outbound = Outbound::new(config.proxy)?;
        Ok(Reviews { config, outbound })
    }

    /// The stars' colour, or `None` when this version shows no ratings.
    fn star_color(&self) -> Option<&'static str> {
        match self.config.version {
            Version::V1 => None,
            Version::V2 => Some("black"),
            Version::V3 => Some("red"),
        }
    }

    /// How long ratings may take: Istio's reviews waits 10 s with black
    /// stars and 2.5 s with red ones (the fault-injection task relies on it).
    fn ratings_timeout(&self) -> Duration {
        self.config.timeout.unwrap_or(match self.config.version {
            Version::V3 => Duration::from_millis(2500),
            _ => Duration::from_secs(10),
        })
    }

    async fn reviews(&self, id: i64, incoming: &HeaderMap) -> Value {
        let rating = match self.star_color() {
            None => None,
            Some(color) => {
                let url = format!("{}/ratings/{id}", self.config.ratings_url);
                let headers = propagate::forward(incoming);
                let stars = self
                    .outbound
                    .get_json(&url, headers, self.ratings_timeout())
                    .await
                    .ok();
                Some((color, stars))
            }
        };
        let reviews: Vec<Value> = REVIEWS
            .iter()
            .map(|(reviewer, text)| {
                let mut review = json!({ "reviewer": reviewer, "text": text });
                if let Some((color, ratings)) = &rating {
                    review["rating"] = stars_of(ratings.as_ref(), reviewer, color);
                }
                review
            })
            .collect();
        json!({
            "id": id.to_string(),
            "podname": self.config.workload,
            "clustername": self.config.cluster,
            "reviews": reviews,
        })
    }
}

/// A reviewer's `rating` object from ratings' answer (`None` when ratings
/// failed).
fn stars_of(ratings: Option<&Value>, reviewer: &str, color: &str) -> Value {
    match ratings.and_then(|r| r["ratings"][reviewer].as_i64()) {
        Some(stars) => json!({ "stars": stars, "color": color }),
        None => json!({ "error": RATINGS_UNAVAILABLE }),
    }
}

impl App for Reviews {
    async fn handle(&self, req: Request) -> Response {
        if !server::is_get(&req) {
            return server::not_found();
        }
        match server::segments(&req)[..] {
            ["health"] => server::health("Reviews is healthy"),
            ["reviews", id] => match server::product_id(id) {
                Some(id) => server::json(StatusCode::OK, &self.reviews(id, req.headers()).await),
                None => {
                    server::json_error(StatusCode::BAD_REQUEST, "please provide numeric product id")
                }
            },
            _ => server::not_found(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_come_from_the_reviewer_entry() {
        let ratings = json!({ "id": 0, "ratings": { "Reviewer1": 5, "Reviewer2": 4 } });
        assert_eq!(
            stars_of(Some(&ratings), "Reviewer2", "red"),
            json!({ "stars": 4, "color": "red" })
        );
    }

    #[test]
    fn missing_reviewer_or_failed_call_is_the_unavailable_error() {
        let partial = json!({ "id": 0, "ratings": { "Reviewer1": 5 } });
        let unavailable = json!({ "error": RATINGS_UNAVAILABLE });
        assert_eq!(stars_of(Some(&partial), "Reviewer2", "black"), unavailable);
        assert_eq!(stars_of(None, "Reviewer1", "black"), unavailable);
    }
}
