//! Replies the proxy makes itself, to gRPC clients. Envoy answers a gRPC
//! request (`content-type: application/grpc` or `application/grpc+...`) that it
//! ends locally with a trailers-only gRPC response: 200, the HTTP status
//! mapped to `grpc-status`, the body as a percent-encoded `grpc-message`.
//! A gRPC client then reads the proxy's reason instead of "unexpected HTTP
//! status". Compared over HTTP/1.1 and h2c.

use weft_e2e::bootstrap::{cluster, locality, upstream, with_route_config};
use weft_e2e::{client, Kind, Proxy, Request, Upstream};

use crate::assert_same_on_both;

fn bootstrap() -> String {
    let routes = r#"virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - { match: { prefix: "/down" }, direct_response: { status: 503, body: { inline_string: "down for a while\n" } } }
  - { match: { prefix: "/odd" }, direct_response: { status: 418, body: { inline_string: "a%b~\u00e9\tz" } } }
  - { match: { prefix: "/own" }, direct_response: { status: 403 }, response_headers_to_add: [ { header: { key: grpc-status, value: "9" } } ] }
  - { match: { prefix: "/moved" }, redirect: { path_redirect: "/elsewhere" } }
  - { match: { prefix: "/nobody" }, route: { cluster: empty } }
  - { match: { prefix: "/svc" }, route: { cluster: up } }"#;
    let clusters = [cluster("up", "", &[locality(0, &[upstream("up")])]), cluster("empty", "", &[])];
    with_route_config("normalize_path: true\n          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT", routes, &clusters)
}

fn grpc(path: &str, content_type: &str) -> Request {
    Request::get(path).method("POST").header("content-type", content_type).header("te", "trailers").body("\0\0\0\0\0")
}

fn requests() -> Vec<Request> {
    let mut out = Vec::new();
    for ct in ["application/grpc", "application/grpc+proto"] {
        out.extend(["/down", "/odd", "/own", "/moved", "/nobody", "/unrouted", "/svc%2Fx", "/svc/ok"].map(|p| grpc(p, ct)));
    }
    // Not gRPC to Envoy: the plain local replies.
    out.extend(["application/grpc-web", "application/grpcx", "application/grpc;charset=utf-8", "text/plain"].map(|ct| grpc("/down", ct)));
    // HEAD: the status without `grpc-message`.
    out.push(Request::get("/down").method("HEAD").header("content-type", "application/grpc"));
    out
}

#[tokio::test]
async fn grpc_local_replies_match_envoy_over_http1() {
    let up = Upstream::start("up").await;
    let requests = requests();
    let outcomes = assert_same_on_both(&bootstrap(), &[&up], &requests).await;
    // Two proxies that both sent plain 503s must not pass.
    let first = &outcomes[0].response;
    assert_eq!((first.status, first.header("grpc-status"), first.header("grpc-message")), (200, Some("14"), Some("down for a while%0A")));
    assert_eq!(outcomes[1].response.header("grpc-message"), Some("a%25b%7E%C3%A9%09z"));
    assert_eq!(outcomes[2].response.header("grpc-status"), Some("9"));
    assert_eq!(outcomes[16].response.status, 503, "grpc-web is not gRPC");
    let head = &outcomes[20].response;
    assert_eq!((head.status, head.header("grpc-status"), head.header("grpc-message")), (200, Some("14"), None));
}

#[tokio::test]
async fn grpc_local_replies_match_envoy_over_h2c() {
    let up = Upstream::start("up").await;
    let requests = requests();
    let mut seen = Vec::new();
    for kind in Kind::BOTH {
        let proxy = Proxy::start(kind, &bootstrap(), &[&up]).await.unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        for req in &requests {
            let r = client::send_h2c(proxy.port, req).await.unwrap_or_else(|e| panic!("{kind:?} {}: {e}", req.path));
            out.push(r.normalized());
        }
        seen.push(out);
    }
    for (i, (e, w)) in seen[0].iter().zip(&seen[1]).enumerate() {
        assert_eq!(e, w, "{} ({:?}): left Envoy, right weft-proxy", requests[i].path, requests[i].headers);
    }
    let first = &seen[1][0];
    assert_eq!((first.status, first.header("grpc-status")), (200, Some("14")));
    assert!(first.body.is_empty() && first.header("content-length").is_none(), "{first:?}");
}
