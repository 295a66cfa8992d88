//! WasmPlugin end to end: `weft-operator standalone` on a directory with a
//! Gateway, a VirtualService and WasmPlugins running the probe plugin
//! (tests/all/wasm/probe.wat: it adds `x-wasm: <its configuration>` to
//! requests and responses, and answers 403 to `x-deny`), and an ingress
//! gateway bootstrapped by `weft-operator bootstrap`. The same scenario on
//! Envoy and on weft-proxy must look the same to the client and the app:
//! - the plugins that select the gateway run, in their phases' order
//!   (an AUTHN plugin before an unspecified-phase one); a plugin for
//!   another workload, and one for inbound traffic only, do not;
//! - editing `pluginConfig` changes the header within two seconds;
//! - moving the module to an http:// URL (with its sha256) fetches it;
//! - an OCI url is reported with its path, and the last good plugin
//!   keeps running.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use weft_e2e::client::send_to;
use weft_e2e::mesh::{Identity, Operator};
use weft_e2e::{free_port, replace_file, Kind, Request, Upstream};

const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: web }
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 9080, name: http, protocol: HTTP } ]
  endpoints: [ { address: 127.0.0.1, ports: { http: ${WEB} } } ]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw }
spec:
  selector: { istio: ingressgateway }
  servers: [ { port: { number: ${GW}, name: http, protocol: HTTP }, hosts: ["*"] } ]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web }
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [ { route: [ { destination: { host: web } } ] } ]
"#;

/// Plugins beside the one under test: one before it in the chain (its own
/// module: Envoy shares one VM between plugins of the same code, and the
/// probe keeps its configuration VM-wide), two that must not reach the
/// gateway.
const OTHER_PLUGINS: &str = r#"
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: { name: authn, namespace: istio-system }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  url: file://${AUTHN_WASM}
  phase: AUTHN
  pluginConfig: { tag: authn }
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: { name: inbound-only, namespace: istio-system }
spec:
  url: file://${WASM}
  match: [ { mode: SERVER } ]
  pluginConfig: { tag: inbound }
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: { name: other-workload, namespace: istio-system }
spec:
  selector: { matchLabels: { app: web } }
  url: file://${WASM}
  pluginConfig: { tag: web }
"#;

/// The plugin under test: the gateway's, in the default phase.
fn probe(url: &str, extra: &str, tag: &str) -> String {
    format!(
        r#"apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{ name: probe, namespace: istio-system }}
spec:
  selector: {{ matchLabels: {{ istio: ingressgateway }} }}
  url: {url}
{extra}  pluginConfig: {{ tag: {tag} }}
"#
    )
}

/// The probe plugin, made unique to this run and `role` (a custom
/// section) so no module cache already holds it.
fn probe_module(role: &str) -> Vec<u8> {
    let mut wasm = wat::parse_file(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/all/wasm/probe.wat")).expect("probe.wat compiles");
    let nonce = format!("{role}-{}-{:?}", std::process::id(), std::time::SystemTime::now());
    let name = b"weft-test";
    let size = 1 + name.len() + nonce.len();
    assert!(size < 128 && nonce.len() < 128, "one-byte LEB128 sizes");
    wasm.extend([0, size as u8, name.len() as u8]);
    wasm.extend(name);
    wasm.extend(nonce.as_bytes());
    wasm
}

/// Serves `module` over HTTP/1.1 on a free port; counts the fetches.
async fn module_server(module: Vec<u8>) -> (u16, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fetches = Arc::new(AtomicUsize::new(0));
    let count = fetches.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (module, count) = (module.clone(), count.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, Ordering::Relaxed);
                let reply = format!("HTTP/1.1 200 OK\r\ncontent-type: application/wasm\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", module.len());
                let _ = tcp.write_all(reply.as_bytes()).await;
                let _ = tcp.write_all(&module).await;
            });
        }
    });
    (port, fetches)
}

/// The response's `x-wasm` values, in order.
async fn tags(gw: SocketAddr, req: &Request) -> String {
    let r = send_to(gw, req).await.expect("gateway answers");
    format!("{} {:?}", r.status, r.header_all("x-wasm"))
}

/// Sends until the response's `x-wasm` values are `want`; how long it took.
async fn until_tags(gw: SocketAddr, want: &str, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = tags(gw, &Request::get("/")).await;
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{what}: not {want} within 10 s (last: {got})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scenario(kind: Kind, module: &[u8]) -> Vec<String> {
    let what = format!("{kind:?}");
    let dir: PathBuf = std::env::temp_dir().join(format!("weft-e2e-wasmplugin-{}-{kind:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let wasm = dir.with_extension("probe.wasm");
    std::fs::write(&wasm, module).expect("write the module");
    let authn_wasm = dir.with_extension("authn.wasm");
    std::fs::write(&authn_wasm, probe_module("authn")).expect("write the module");
    let file_url = format!("file://{}", wasm.display());

    let web = Upstream::start("web").await;
    let gw_port = free_port();
    replace_file(&dir, "mesh.yaml", &MESH.replace("${WEB}", &web.port().to_string()).replace("${GW}", &gw_port.to_string()));
    replace_file(&dir, "plugins.yaml", &OTHER_PLUGINS.replace("${WASM}", &wasm.display().to_string()).replace("${AUTHN_WASM}", &authn_wasm.display().to_string()));
    replace_file(&dir, "probe.yaml", &probe(&file_url, "", "one"));
    let operator = Operator::start(&dir).await.unwrap_or_else(|e| panic!("{e}"));
    let _gateway = operator.proxy(kind, &Identity::INGRESS_GATEWAY).await;
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().expect("addr");
    let mut steps = Vec::new();

    // Requests run AUTHN's plugin first and the probe second; responses
    // the other way round. The other two plugins do not select the gateway.
    steps.push(format!("response: {}", tags(gw, &Request::get("/")).await));
    let seen = web.take();
    let upstream: Vec<Vec<&str>> = seen.iter().map(|s| s.headers.iter().filter(|(k, _)| k == "x-wasm").map(|(_, v)| v.as_str()).collect()).collect();
    steps.push(format!("web saw: {upstream:?}"));
    let denied = send_to(gw, &Request::get("/").header("x-deny", "1")).await.expect("gateway answers");
    steps.push(format!("x-deny: {} {:?}, web saw {}", denied.status, denied.body_str(), web.take().len()));

    // A new pluginConfig is in effect within two seconds.
    replace_file(&dir, "probe.yaml", &probe(&file_url, "", "two"));
    let took = until_tags(gw, r#"200 ["{\"tag\":\"two\"}", "{\"tag\":\"authn\"}"]"#, &what).await;
    assert!(took < Duration::from_secs(2), "{what}: the new pluginConfig took {took:?}");
    steps.push("pluginConfig edit applied".into());

    // The module over http://, checked against its sha256.
    let (port, fetches) = module_server(module.to_vec()).await;
    let sha = format!("  sha256: {:x}\n", Sha256::digest(module));
    replace_file(&dir, "probe.yaml", &probe(&format!("http://127.0.0.1:{port}/probe.wasm"), &sha, "remote"));
    until_tags(gw, r#"200 ["{\"tag\":\"remote\"}", "{\"tag\":\"authn\"}"]"#, &what).await;
    steps.push(format!("http:// module fetched: {}", fetches.load(Ordering::Relaxed) > 0));

    // By name, through a STRICT_DNS cluster the proxy has not resolved yet.
    // Both proxies keep fetched modules by sha256: another one (the same
    // code and an empty custom section) must really be fetched.
    let renamed: Vec<u8> = [module, &[0x00, 0x02, 0x01, b'x'][..]].concat();
    let (named_port, named_fetches) = module_server(renamed.clone()).await;
    let named_sha = format!("  sha256: {:x}\n", Sha256::digest(&renamed));
    replace_file(&dir, "probe.yaml", &probe(&format!("http://localhost:{named_port}/probe.wasm"), &named_sha, "named"));
    until_tags(gw, r#"200 ["{\"tag\":\"named\"}", "{\"tag\":\"authn\"}"]"#, &what).await;
    steps.push(format!("http://localhost module fetched: {}", named_fetches.load(Ordering::Relaxed) > 0));

    // An OCI image: reported with its path; the last good plugin runs on.
    replace_file(&dir, "probe.yaml", &probe("oci://ghcr.io/example/probe:1", "", "oci"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    steps.push(format!("after an oci:// edit: {}", tags(gw, &Request::get("/")).await));
    let status = operator.status().await;
    let probe_status = &status["resources"]["WasmPlugin istio-system/probe"];
    assert_eq!(probe_status["conditions"][0]["status"], "False", "{what}: {status}");
    assert_eq!(probe_status["conditions"][0]["reason"], "UnsupportedField", "{what}: {status}");
    let message = &probe_status["validationMessages"][0];
    steps.push(format!("reported: {} {}", message["path"], message["message"]));
    assert_eq!(status["resources"]["WasmPlugin istio-system/authn"]["conditions"][0]["status"], "True", "{what}: {status}");
    assert!(status["nacks"].as_object().is_some_and(|n| n.is_empty()), "{what}: no proxy rejected anything: {status}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&wasm);
    let _ = std::fs::remove_file(&authn_wasm);
    steps
}

#[tokio::test]
async fn wasm_plugins_run_the_same_on_envoy_and_weft() {
    let module = probe_module("probe");
    let envoy = scenario(Kind::Envoy, &module).await;
    let weft = scenario(Kind::Weft, &module).await;
    assert_eq!(envoy, weft, "left Envoy, right weft-proxy");
    assert_eq!(
        envoy,
        [
            r#"response: 200 ["{\"tag\":\"one\"}", "{\"tag\":\"authn\"}"]"#,
            r#"web saw: [["{\"tag\":\"authn\"}", "{\"tag\":\"one\"}"]]"#,
            r#"x-deny: 403 "denied by probe", web saw 0"#,
            "pluginConfig edit applied",
            "http:// module fetched: true",
            "http://localhost module fetched: true",
            r#"after an oci:// edit: 200 ["{\"tag\":\"named\"}", "{\"tag\":\"authn\"}"]"#,
            r#"reported: "spec.url" "OCI images are not supported by weft; use file:// or http://""#,
        ]
    );
}
