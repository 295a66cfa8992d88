//! The HTTP server every service shares: accept loop, HTTP/1.1 and h2c on
//! one port, one log line per request, graceful shutdown, and the small
//! response builders the handlers use.
//!
//! ```text
//!  TcpListener ─► accept ─► hyper conn (auto) ─► App::handle ─► log line
//!       ▲ shutdown: stop accepting, let connections finish (≤ 5 s)
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub type Request = http::Request<Incoming>;
pub type Response = http::Response<Full<Bytes>>;

/// How long connections may take to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);
/// The largest request body a handler reads (the login form).
const MAX_BODY: usize = 64 * 1024;

/// One Bookinfo service: turns a request into a response. Runs once per
/// request, concurrently; a failure becomes an error response, never a
/// panic or a dropped connection.
pub trait App: Send + Sync + 'static {
    fn handle(&self, req: Request) -> impl Future<Output = Response> + Send;
}

/// Serves `app` on `listener` until `shutdown` completes, then drains.
pub async fn serve<A: App>(
    listener: TcpListener,
    app: Arc<A>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tracing::info!(addr = %listener.local_addr()?, "listening");
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(logged(&*app, req).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down");
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}; closing them");
    }
    Ok(())
}

/// Runs the handler and logs the request's one line.
async fn logged<A: App>(app: &A, req: Request) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = app.handle(req).await;
    tracing::info!(
        %method,
        %path,
        status = resp.status().as_u16(),
        ms = start.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

/// The path's segments after the leading `/`, e.g. `["details", "0"]`.
pub fn segments(req: &Request) -> Vec<&str> {
    req.uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect()
}

/// A GET (or HEAD) route, matched as (method, segments).
pub fn is_get(req: &Request) -> bool {
    req.method() == Method::GET || req.method() == Method::HEAD
}

/// Reads a request body of at most [`MAX_BODY`] bytes.
pub async fn body(req: Request) -> Result<Bytes, Response> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(text(StatusCode::BAD_REQUEST, "unreadable request body")),
    }
}

/// A product id as Istio's services take it: a whole number.
pub fn product_id(segment: &str) -> Option<i64> {
    segment.parse().ok()
}

/// The routes of a service that computes its answer locally:
/// `GET /health` → `{"status": healthy}`, `GET /{resource}/{id}` → the
/// JSON `answer(id)`, a non-numeric id → 400 `{"error": bad_id}`.
pub fn json_by_id(
    req: &Request,
    resource: &str,
    healthy: &str,
    bad_id: &str,
    answer: impl FnOnce(i64) -> serde_json::Value,
) -> Response {
    if !is_get(req) {
        return not_found();
    }
    match segments(req)[..] {
        ["health"] => health(healthy),
        [r, id] if r == resource => match product_id(id) {
            Some(id) => json(StatusCode::OK, &answer(id)),
            None => json_error(StatusCode::BAD_REQUEST, bad_id),
        },
        _ => not_found(),
    }
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut resp = http::Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    with_type(status, "application/json", Bytes::from(value.to_string()))
}

pub fn html(body: String) -> Response {
    with_type(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from(body),
    )
}

pub fn text(status: StatusCode, body: &'static str) -> Response {
    with_type(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

pub fn css(body: &'static str) -> Response {
    with_type(
        StatusCode::OK,
        "text/css; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

pub fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

/// `{"status": message}`, the health answer of the JSON services.
pub fn health(message: &str) -> Response {
    json(StatusCode::OK, &serde_json::json!({ "status": message }))
}

/// `{"error": message}` with `status`, as Istio's services answer a bad id.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

/// A 302 to `location`, setting `cookie` (a whole `Set-Cookie` value) when
/// given and valid.
pub fn redirect(location: &'static str, cookie: Option<String>) -> Response {
    let mut resp = text(StatusCode::FOUND, "");
    resp.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(location));
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(SET_COOKIE, value);
    }
    resp
}
