//! details: the book's publishing facts, as Istio's Ruby `details` service
//! answers them (without its optional call to an external book API).
//!
//! `GET /details/{id}` → `{"id", "author", "year", "type", "pages",
//! "publisher", "language", "ISBN-10", "ISBN-13"}`; a non-numeric id is a
//! 400 with `{"error": …}`. `GET /health` → `{"status": "Details is healthy"}`.

use serde_json::json;

use crate::server::{self, App, Request, Response};

/// The details service; it holds nothing and calls nothing.
pub struct Details;

impl App for Details {
    async fn handle(&self, req: Request) -> Response {
        server::json_by_id(
            &req,
            "details",
            "Details is healthy",
            "please provide numeric product id",
            book,
        )
    }
}

/// The one book Bookinfo knows, whatever the id.
pub fn book(id: i64) -> serde_json::Value {
    json!({
        "id": id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    })
}
