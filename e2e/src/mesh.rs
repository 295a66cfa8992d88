//! The control plane in tests: `weft-operator standalone` on a directory,
//! and the bootstraps `weft-operator bootstrap` prints for proxies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proxy::repo_root;
use crate::{Kind, Proxy, Request};

fn operator_binary() -> PathBuf {
    std::env::var_os("WEFT_OPERATOR_BIN").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target/debug/weft-operator"))
}

/// A running `weft-operator standalone`; killed when dropped.
pub struct Operator {
    child: Child,
    pub xds_port: u16,
    /// `/debug/status`.
    pub status_port: u16,
    log: PathBuf,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Operator {
    /// Starts on `dir` and waits until the xDS port accepts connections.
    pub async fn start(dir: &Path) -> anyhow::Result<Operator> {
        Self::start_with_env(dir, &[]).await
    }

    /// [`start`](Self::start) with extra environment (`RUST_LOG`, …).
    pub async fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Operator> {
        let (xds_port, status_port) = (crate::free_port(), crate::free_port());
        let log = dir.with_extension("operator.log");
        let child = Command::new(operator_binary())
            .envs(env.iter().copied())
            .args(["standalone", "--config-dir"])
            .arg(dir)
            .args(["--xds-address", &format!("127.0.0.1:{xds_port}")])
            .args(["--status-address", &format!("127.0.0.1:{status_port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| anyhow::anyhow!("start weft-operator ({}): {e}", operator_binary().display()))?;
        let mut op = Operator { child, xds_port, status_port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", xds_port)).await.is_err() {
            if let Ok(Some(status)) = op.child.try_wait() {
                anyhow::bail!("weft-operator exited with {status}: {}", op.log_text());
            }
            anyhow::ensure!(Instant::now() < deadline, "weft-operator not listening after 10 s: {}", op.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(op)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The operator's `/debug/status` board.
    pub async fn status(&self) -> serde_json::Value {
        let r = crate::client::send(self.status_port, &crate::Request::get("/debug/status")).await;
        r.ok().and_then(|o| serde_json::from_slice(&o.body).ok()).unwrap_or(serde_json::Value::Null)
    }

    /// A proxy of `kind` on the bootstrap `weft-operator bootstrap` prints
    /// for `id`, connected to this operator and ready. Panics if it does
    /// not start.
    pub async fn proxy(&self, kind: Kind, id: &Identity<'_>) -> Proxy {
        let template = bootstrap(id, self.xds_port, None).unwrap_or_else(|e| panic!("{e}"));
        Proxy::start(kind, &template, &[]).await.unwrap_or_else(|e| panic!("{} {}: {e}", id.role, id.workload))
    }
}

/// Sends `req` until the answer's body is `body` (a change to the mesh's
/// files has reached the proxy); how long that took. Panics after 10 s.
pub async fn until_body(addr: SocketAddr, req: &Request, body: &str, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let r = crate::client::send_to(addr, req).await;
        if r.as_ref().is_ok_and(|o| o.body_str() == body) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{what}: not {body:?} within 10 s (last: {r:?})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Who a proxy is, for `weft-operator bootstrap`.
pub struct Identity<'a> {
    pub role: &'a str,
    pub workload: &'a str,
    pub namespace: &'a str,
    pub ip: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
}

impl Identity<'static> {
    /// The ingress gateway on 127.0.0.1, which Gateways select by
    /// `istio: ingressgateway`.
    pub const INGRESS_GATEWAY: Identity<'static> =
        Identity { role: "gateway", workload: "ingress", namespace: "istio-system", ip: "127.0.0.1", labels: &[("istio", "ingressgateway")] };
}

/// The bootstrap `weft-operator bootstrap` prints, as a test-kit template:
/// the admin port left as `${ADMIN}` for `Proxy::start` to fill in (proto
/// JSON reads integers from strings).
pub fn bootstrap(id: &Identity<'_>, xds_port: u16, api_type: Option<&str>) -> anyhow::Result<String> {
    let mut cmd = Command::new(operator_binary());
    cmd.args(["bootstrap", "--role", id.role, "--workload", id.workload, "--namespace", id.namespace, "--ip", id.ip]);
    cmd.args(["--xds-address", &format!("127.0.0.1:{xds_port}")]);
    for (k, v) in id.labels {
        cmd.args(["--label", &format!("{k}={v}")]);
    }
    let out = cmd.output()?;
    anyhow::ensure!(out.status.success(), "weft-operator bootstrap: {}", String::from_utf8_lossy(&out.stderr));
    let mut json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    json["admin"]["address"]["socket_address"]["port_value"] = serde_json::json!("${ADMIN}");
    if let Some(api_type) = api_type {
        json["dynamic_resources"]["ads_config"]["api_type"] = serde_json::json!(api_type);
    }
    Ok(serde_json::to_string_pretty(&json)?)
}
