//! ratings: the stars each reviewer gave, as Istio's Node `ratings` v1
//! answers them (in memory, no database).
//!
//! `GET /ratings/{id}` → `{"id": id, "ratings": {"Reviewer1": 5,
//! "Reviewer2": 4}}`; a non-numeric id is a 400 with `{"error": …}`.
//! `GET /health` → `{"status": "Ratings is healthy"}`.

use serde_json::json;

use crate::server::{self, App, Request, Response};

/// The ratings service; it holds nothing and calls nothing.
pub struct Ratings;

impl App for Ratings {
    async fn handle(&self, req: Request) -> Response {
        server::json_by_id(
            &req,
            "ratings",
            "Ratings is healthy",
            "please provide numeric product ID",
            ratings,
        )
    }
}

/// The stars of Bookinfo's two reviewers, whatever the id.
pub fn ratings(id: i64) -> serde_json::Value {
    json!({ "id": id, "ratings": { "Reviewer1": 5, "Reviewer2": 4 } })
}
