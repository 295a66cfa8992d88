//! productpage: the page a person sees, and the products API, as Istio's
//! Python `productpage` serves them.
//!
//! ```text
//!  GET /productpage ─┬─► details  GET /details/0   (3 s)
//!                    └─► reviews  GET /reviews/0   (3 s, tried twice)
//!                          ─► page::product_page: both sections, each an
//!                             error section when its call failed
//! ```
//! The API (`/api/v1/products[/{id}[/reviews|/ratings]]`) returns the
//! called service's JSON with its status, or `{"error": …}` with the
//! upstream's status (500 when it never answered). `POST /login` keeps the
//! user in a `user` cookie; while it is set, every call carries
//! `end-user: <user>`, which traffic rules match on.

mod page;

use std::sync::Arc;
use std::time::Duration;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{json, Value};

use crate::outbound::Outbound;
use crate::server::{self, App, Request, Response};
use crate::{propagate, Config};

pub use page::{DETAILS_UNAVAILABLE, REVIEWS_UNAVAILABLE};

/// The deadline of each call, as Istio's productpage (`timeout=3.0`).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Istio's productpage tries reviews twice, on purpose: its fault-injection
/// task shows the doubled wait.
const REVIEWS_ATTEMPTS: usize = 2;
const RATINGS_UNAVAILABLE: &str = "Sorry, product ratings are currently unavailable for this book.";

/// The cookie that holds the signed-in user.
const USER_COOKIE: &str = "user";

/// The one product on sale.
pub struct Product {
    pub id: i64,
    pub title: &'static str,
    /// Trusted HTML, shown as it is.
    pub description_html: &'static str,
}

pub const PRODUCTS: [Product; 1] = [Product {
    id: 0,
    title: "The Comedy of Errors",
    description_html: "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: \
        The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one \
        of his most farcical comedies, with a major part of the humour coming from slapstick and mistaken \
        identity, in addition to puns and word play.",
}];

/// A dependency's answer: its status and JSON, or the status and
/// `{"error": apology}` when it gave none.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    fn into_response(self) -> Response {
        server::json(self.status, &self.body)
    }
}

/// The product page service.
pub struct Productpage {
    config: Arc<Config>,
    outbound: Outbound,
}

impl Productpage {
    pub fn new(config: Arc<Config>) -> Result<Self, reqwest::Error> {
        let outbound = Outbound::new(config.proxy)?;
        Ok(Productpage { config, outbound })
    }

    fn timeout(&self) -> Duration {
        self.config.timeout.unwrap_or(CALL_TIMEOUT)
    }

    /// GETs `{base}/{resource}/{id}`, up to `attempts` times.
    async fn call(
        &self,
        base: &str,
        resource: &str,
        id: i64,
        headers: &HeaderMap,
        attempts: usize,
        apology: &str,
    ) -> Answer {
        let url = format!("{base}/{resource}/{id}");
        let mut status = StatusCode::INTERNAL_SERVER_ERROR;
        for _ in 0..attempts {
            match self
                .outbound
                .get_json(&url, headers.clone(), self.timeout())
                .await
            {
                Ok(body) => {
                    return Answer {
                        status: StatusCode::OK,
                        body,
                    }
                }
                Err(e) => status = e.status(),
            }
        }
        Answer {
            status,
            body: json!({ "error": apology }),
        }
    }

    async fn details(&self, id: i64, headers: &HeaderMap) -> Answer {
        let base = &self.config.details_url;
        self.call(base, "details", id, headers, 1, DETAILS_UNAVAILABLE)
            .await
    }

    async fn reviews(&self, id: i64, headers: &HeaderMap) -> Answer {
        let base = &self.config.reviews_url;
        self.call(
            base,
            "reviews",
            id,
            headers,
            REVIEWS_ATTEMPTS,
            REVIEWS_UNAVAILABLE,
        )
        .await
    }

    async fn ratings(&self, id: i64, headers: &HeaderMap) -> Answer {
        let base = &self.config.ratings_url;
        self.call(base, "ratings", id, headers, 1, RATINGS_UNAVAILABLE)
            .await
    }

    async fn front(&self, req: &Request) -> Response {
        let product = &PRODUCTS[0];
        let headers = outgoing_headers(req.headers());
        let (details, reviews) = tokio::join!(
            self.details(product.id, &headers),
            self.reviews(product.id, &headers)
        );
        let user = signed_in_user(req.headers());
        server::html(page::product_page(
            product,
            user.as_deref(),
            &details,
            &reviews,
        ))
    }

    async fn api(&self, req: &Request, id: &str, what: Option<&str>) -> Response {
        let Some(id) = server::product_id(id) else {
            return server::json_error(
                StatusCode::BAD_REQUEST,
                "please provide numeric product id",
            );
        };
        let headers = outgoing_headers(req.headers());
        let answer = match what {
            None => self.details(id, &headers).await,
            Some("reviews") => self.reviews(id, &headers).await,
            Some("ratings") => self.ratings(id, &headers).await,
            Some(_) => return server::not_found(),
        };
        answer.into_response()
    }
}

impl App for Productpage {
    async fn handle(&self, req: Request) -> Response {
        if req.method() == Method::POST {
            return match server::segments(&req)[..] {
                ["login"] => login(req).await,
                _ => server::not_found(),
            };
        }
        if !server::is_get(&req) {
            return server::not_found();
        }
        match server::segments(&req)[..] {
            [""] | ["index.html"] => server::html(page::index()),
            ["health"] => server::text(StatusCode::OK, "Product page is healthy"),
            ["productpage"] => self.front(&req).await,
            ["logout"] => server::redirect("/productpage", Some(cookie(""))),
            ["static", "bookinfo.css"] => server::css(page::STYLESHEET),
            ["api", "v1", "products"] => server::json(StatusCode::OK, &products()),
            ["api", "v1", "products", id] => self.api(&req, id, None).await,
            ["api", "v1", "products", id, what] => self.api(&req, id, Some(what)).await,
            _ => server::not_found(),
        }
    }
}

/// `POST /login` with the form field `username`: remember the user in a
/// cookie and go back to the page.
async fn login(req: Request) -> Response {
    let body = match server::body(req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let user = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "username")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    server::redirect("/productpage", Some(cookie(&user)))
}

/// The `Set-Cookie` value for `user`; an empty user clears the cookie.
fn cookie(user: &str) -> String {
    if user.is_empty() {
        return format!("{USER_COOKIE}=; Path=/; Max-Age=0");
    }
    let value: String = form_urlencoded::byte_serialize(user.as_bytes()).collect();
    format!("{USER_COOKIE}={value}; Path=/")
}

/// The user in the request's `user` cookie, if any.
fn signed_in_user(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .flat_map(|pair| form_urlencoded::parse(pair.trim().as_bytes()))
        .find(|(name, _)| name == USER_COOKIE)
        .map(|(_, value)| value.into_owned())
        .filter(|user| !user.is_empty())
}

/// The headers for calls made on behalf of a request: the forwarded ones,
/// and `end-user` when someone is signed in.
fn outgoing_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut headers = propagate::forward(incoming);
    if let Some(user) = signed_in_user(incoming) {
        if let Ok(value) = HeaderValue::from_str(&user) {
            headers.insert("end-user", value);
        }
    }
    headers
}

/// `GET /api/v1/products`: the catalogue.
fn products() -> Value {
    PRODUCTS
        .iter()
        .map(|p| json!({ "id": p.id, "title": p.title, "descriptionHtml": p.description_html }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(value).expect("valid cookie"));
        headers
    }

    #[test]
    fn the_user_cookie_round_trips() {
        let set = cookie("jason & co");
        let pair = set.split(';').next().unwrap_or_default();
        let headers = with_cookie(&format!("theme=dark; {pair}"));
        assert_eq!(signed_in_user(&headers).as_deref(), Some("jason & co"));
        assert_eq!(cookie(""), "user=; Path=/; Max-Age=0");
    }

    #[test]
    fn end_user_follows_the_cookie() {
        let headers = outgoing_headers(&with_cookie("user=jason"));
        assert_eq!(headers["end-user"], "jason");
        assert_eq!(headers["cookie"], "user=jason");
        assert!(!outgoing_headers(&with_cookie("user=")).contains_key("end-user"));
        assert!(!outgoing_headers(&HeaderMap::new()).contains_key("end-user"));
    }
}
