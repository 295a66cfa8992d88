//! The product page's HTML: the book, its details, its reviews with their
//! stars, and Istio's apologies where a service failed. Everything that
//! comes from another service is escaped; only the catalogue's own
//! description is trusted HTML.

use http::StatusCode;
use serde_json::Value;

use super::{Answer, Product};

pub const DETAILS_UNAVAILABLE: &str =
    "Sorry, product details are currently unavailable for this book.";
pub const REVIEWS_UNAVAILABLE: &str =
    "Sorry, product reviews are currently unavailable for this book.";

/// The whole stylesheet (`/static/bookinfo.css`).
pub const STYLESHEET: &str = "\
body { font-family: sans-serif; margin: 0; color: #222; }
nav { background: #222; color: #eee; padding: .6em 1.5em; display: flex; justify-content: space-between; align-items: center; }
nav a { color: #9cf; }
main { padding: 0 1.5em; }
.title { text-align: center; color: #337ab7; }
.columns { display: flex; gap: 2em; }
.columns > section { flex: 1; }
h4 { text-align: center; color: #337ab7; }
dt { font-weight: bold; }
blockquote { border-left: 4px solid #ddd; margin: 1em 0; padding: .2em 1em; }
.stars { font-size: 1.3em; letter-spacing: .1em; }
";

/// The document around a page's `body`.
fn document(body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Simple Bookstore App</title>\n\
         <link rel=\"stylesheet\" href=\"/static/bookinfo.css\">\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
}

/// `GET /`: what Bookinfo is, and the way in.
pub fn index() -> String {
    document(
        "<nav><span>BookInfo Sample</span></nav>\n<main>\n\
         <h3 class=\"title\">Hello! This is a simple bookstore application consisting of three services.</h3>\n\
         <p>productpage calls details and reviews; reviews v2 and v3 call ratings.</p>\n\
         <p><a href=\"/productpage\">Normal user</a> · \
         <a href=\"/productpage?u=test\">Test user</a></p>\n</main>\n",
    )
}

/// `GET /productpage`.
pub fn product_page(
    product: &Product,
    user: Option<&str>,
    details: &Answer,
    reviews: &Answer,
) -> String {
    let mut body = nav(user);
    body.push_str("<main>\n");
    body.push_str(&format!(
        "<h3 class=\"title\">{}</h3>\n<p>Summary: {}</p>\n",
        escape(product.title),
        product.description_html
    ));
    body.push_str("<div class=\"columns\">\n<section class=\"details\">\n");
    body.push_str(&details_section(details));
    body.push_str("</section>\n<section class=\"reviews\">\n");
    body.push_str(&reviews_section(reviews));
    body.push_str("</section>\n</div>\n</main>\n");
    document(&body)
}

/// The bar at the top: who is signed in, or the sign-in form.
fn nav(user: Option<&str>) -> String {
    let right = match user {
        Some(user) => format!(
            "<span class=\"user\">{} ( <a href=\"/logout\">sign out</a> )</span>",
            escape(user)
        ),
        None => "<form method=\"post\" action=\"/login\" name=\"login_form\">\
                 <input type=\"text\" name=\"username\" placeholder=\"User Name\"> \
                 <input type=\"password\" name=\"passwd\" placeholder=\"Password\"> \
                 <button type=\"submit\">Sign in</button></form>"
            .to_owned(),
    };
    format!("<nav><span>BookInfo Sample</span>{right}</nav>\n")
}

/// The error section: heading and the service's apology.
fn failed(what: &str, answer: &Answer) -> String {
    format!(
        "<h4>Error fetching product {what}!</h4>\n<p>{}</p>\n",
        escape(&text(&answer.body["error"]))
    )
}

fn details_section(details: &Answer) -> String {
    if details.status != StatusCode::OK {
        return failed("details", details);
    }
    let mut out = String::from("<h4>Book Details</h4>\n<dl>\n");
    for (label, key) in [
        ("Type", "type"),
        ("Pages", "pages"),
        ("Publisher", "publisher"),
        ("Language", "language"),
        ("ISBN-10", "ISBN-10"),
        ("ISBN-13", "ISBN-13"),
    ] {
        out.push_str(&format!(
            "<dt>{label}:</dt><dd>{}</dd>\n",
            escape(&text(&details.body[key]))
        ));
    }
    out.push_str("</dl>\n");
    out
}

fn reviews_section(reviews: &Answer) -> String {
    if reviews.status != StatusCode::OK {
        return failed("reviews", reviews);
    }
    let mut out = String::from("<h4>Book Reviews</h4>\n");
    let list = reviews.body["reviews"].as_array().map(Vec::as_slice);
    for review in list.unwrap_or_default() {
        out.push_str(&format!(
            "<blockquote>\n<p>{}</p>\n<small>{}</small>\n{}</blockquote>\n",
            escape(&text(&review["text"])),
            escape(&text(&review["reviewer"])),
            rating(&review["rating"]),
        ));
    }
    out.push_str(&format!(
        "<p class=\"served-by\">Reviews served by: {}</p>\n",
        escape(&text(&reviews.body["podname"]))
    ));
    out
}

/// A review's stars (★ given, ☆ not, out of five) in their colour, its
/// rating error, or nothing when the review has no rating.
fn rating(rating: &Value) -> String {
    if let Some(stars) = rating["stars"].as_u64() {
        let full = stars.min(5) as usize;
        return format!(
            "<p class=\"stars\" style=\"color: {}\" title=\"{full} of 5\">{}{}</p>\n",
            color(&rating["color"]),
            "★".repeat(full),
            "☆".repeat(5 - full)
        );
    }
    match rating["error"].as_str() {
        Some(error) => format!("<p><i>{}</i></p>\n", escape(error)),
        None => String::new(),
    }
}

/// A colour name or `#hex` from reviews; anything else is black.
fn color(value: &Value) -> &str {
    match value.as_str() {
        Some(c) if !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '#') => {
            c
        }
        _ => "black",
    }
}

/// A JSON value as page text: strings bare, numbers as written, nothing
/// for null.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Text made safe for HTML content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stars_show_count_and_colour() {
        let html = rating(&json!({ "stars": 4, "color": "red" }));
        assert!(html.contains("color: red"), "{html}");
        assert!(html.contains("★★★★☆"), "{html}");
        assert_eq!(rating(&Value::Null), "");
    }

    #[test]
    fn text_from_services_is_escaped() {
        let reviews = Answer {
            status: StatusCode::OK,
            body: json!({
                "podname": "<script>",
                "reviews": [{ "reviewer": "a\"b", "text": "x & y",
                              "rating": { "stars": 9, "color": "red;background:url(x)" } }],
            }),
        };
        let html = reviews_section(&reviews);
        assert!(html.contains("Reviews served by: &lt;script&gt;"), "{html}");
        assert!(
            html.contains("x &amp; y") && html.contains("a&quot;b"),
            "{html}"
        );
        assert!(
            html.contains("color: black") && html.contains("★★★★★<"),
            "{html}"
        );
    }

    #[test]
    fn failed_sections_show_the_apology() {
        let down = Answer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: json!({ "error": DETAILS_UNAVAILABLE }),
        };
        let html = details_section(&down);
        assert!(html.contains("Error fetching product details!"), "{html}");
        assert!(html.contains(DETAILS_UNAVAILABLE), "{html}");
    }
}
