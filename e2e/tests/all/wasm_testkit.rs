//! The SDK's plugins unit-tested the way a plugin author would: on the
//! in-process testkit (weft-proxy's host, no proxy), with the auth
//! service mocked. The same plugins are compared with Envoy in
//! wasm_plugins.rs; this checks the testkit drives them faithfully.

use weft_proxy::wasm::testkit::{Plugin, Reply};

fn module(name: &str) -> Vec<u8> {
    let path = weft_e2e::proxy::repo_root().join("target/wasm").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{} is missing ({e}): run `make wasm`", path.display()))
}

#[test]
fn auth_plugin_on_the_testkit() {
    let wasm = module("auth");
    let plugin = Plugin::builder(&wasm, r#"{"cluster": "authz", "path": "/check", "timeout_ms": 1000}"#)
        .callout("authz", |req| if req.header("authorization") == Some("Bearer good") { Reply::new(200) } else { Reply::new(401) })
        .start()
        .expect("the plugin starts");

    let allowed = plugin.request("GET", "/data", &[("authorization", "Bearer good")], b"");
    assert!(allowed.reply().is_none(), "allowed requests go upstream: {:?}", allowed.reply());
    assert_eq!(allowed.upstream().map(|u| u.path.as_str()), Some("/data"));
    let client = allowed.respond(Reply::new(200).with_body("data"));
    assert_eq!((client.status, client.body.as_slice()), (200, &b"data"[..]));

    let denied = plugin.request("GET", "/data", &[("authorization", "Bearer bad")], b"");
    let reply = denied.reply().expect("denied requests are answered by the plugin");
    assert_eq!((reply.status, String::from_utf8_lossy(&reply.body).trim()), (403, "denied by auth plugin"));
    assert!(denied.upstream().is_none());
}

#[test]
fn headers_plugin_on_the_testkit() {
    let wasm = module("headers");
    let config = r#"{"request": {"add": {"x-plugin": "weft"}, "remove": ["x-secret"]}, "response": {"set": {"x-served-by": "plugin"}}}"#;
    let plugin = Plugin::builder(&wasm, config).start().expect("the plugin starts");
    let ex = plugin.request("GET", "/", &[("x-secret", "s")], b"");
    let up = ex.upstream().expect("forwarded");
    assert_eq!(up.header("x-plugin"), Some("weft"));
    assert_eq!(up.header("x-secret"), None);
    let client = ex.respond(Reply::new(200));
    assert_eq!(client.header("x-served-by"), Some("plugin"));
    // A configuration the plugin refuses fails the start, with the reason.
    assert!(Plugin::builder(&wasm, r#"{"nonsense": 1}"#).start().is_err());
}
