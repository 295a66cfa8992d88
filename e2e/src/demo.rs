//! The Bookinfo demo: weft-operator in standalone mode on a copy of
//! `config/samples/bookinfo`, every workload's app (`bookinfo`) with a
//! weft-proxy sidecar beside it on the workload's own loopback address,
//! and the ingress gateway on 127.0.0.1:8080. `make demo` runs it; the
//! demo test drives it.
//!
//! ```text
//!  curl 127.0.0.1:8080/productpage
//!    └► gateway ─► 127.0.1.1:15006 sidecar ─► productpage app 127.0.1.1:9080
//!                    app ─HTTP_PROXY 127.0.1.1:15001─► sidecar ─► details / reviews sidecars ─► apps
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proxy::repo_root;

/// The workloads, as `config/samples/bookinfo/workloads.yaml` places them.
pub const WORKLOADS: &[(&str, &str, &str)] = &[
    ("productpage", "v1", "127.0.1.1"),
    ("details", "v1", "127.0.1.2"),
    ("reviews", "v1", "127.0.1.3"),
    ("reviews", "v2", "127.0.1.4"),
    ("reviews", "v3", "127.0.1.5"),
    ("ratings", "v1", "127.0.1.6"),
];

/// Where the gateway listens (the Gateway resource's port).
pub const GATEWAY_PORT: u16 = 8080;
pub const XDS_PORT: u16 = 15010;
/// The operator's `/debug/status`.
pub const STATUS_PORT: u16 = 15014;
pub const GATEWAY_ADMIN_PORT: u16 = 15000;

/// The running demo; every process stops when it is dropped.
pub struct Demo {
    /// The directory the operator watches: edit it to change the mesh.
    pub config_dir: PathBuf,
    pub log_dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Proxies first (they drain), then apps, then the operator.
        for (_, child) in self.children.iter_mut().rev() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in self.children.iter_mut().rev() {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn binary(name: &str) -> PathBuf {
    let profile = if std::env::var("WEFT_PROFILE").as_deref() == Ok("release") { "release" } else { "debug" };
    repo_root().join("target").join(profile).join(name)
}

impl Demo {
    /// Starts everything in `work` (config copy and logs) and waits until
    /// the product page is served through the gateway.
    pub fn start(work: &Path) -> anyhow::Result<Demo> {
        for port in [GATEWAY_PORT, XDS_PORT, STATUS_PORT, GATEWAY_ADMIN_PORT] {
            anyhow::ensure!(
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
                "127.0.0.1:{port} is taken: is a demo already running?"
            );
        }
        let config_dir = work.join("config");
        let log_dir = work.join("logs");
        let _ = std::fs::remove_dir_all(&config_dir);
        std::fs::create_dir_all(&config_dir)?;
        std::fs::create_dir_all(&log_dir)?;
        let samples = repo_root().join("config/samples/bookinfo");
        for entry in std::fs::read_dir(&samples)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                std::fs::copy(&path, config_dir.join(path.file_name().unwrap_or_default()))?;
            }
        }
        let mut demo = Demo { config_dir: config_dir.clone(), log_dir: log_dir.clone(), children: Vec::new() };
        demo.spawn(
            "operator",
            Command::new(binary("weft-operator")).args(["standalone", "--config-dir"]).arg(&config_dir).args([
                "--xds-address",
                &format!("127.0.0.1:{XDS_PORT}"),
                "--status-address",
                &format!("127.0.0.1:{STATUS_PORT}"),
            ]),
        )?;
        wait_port("127.0.0.1", XDS_PORT)?;
        for (i, (app, version, ip)) in WORKLOADS.iter().enumerate() {
            let workload = format!("{app}-{version}");
            let admin = 15100 + i as u16;
            let labels = [format!("app={app}"), format!("version={version}")];
            let bootstrap = write_bootstrap(work, &workload, &["--role", "sidecar", "--workload", &workload, "--ip", ip], &labels, admin)?;
            demo.spawn(&format!("{workload}-sidecar"), Command::new(binary("weft-proxy")).arg("-c").arg(&bootstrap).args(["--concurrency", "1"]))?;
            demo.spawn(
                &workload,
                Command::new(binary("bookinfo"))
                    .args([*app, "--version", version, "--workload", &workload, "--listen", &format!("{ip}:9080")])
                    // The app's only way into the mesh: its sidecar, as an HTTP proxy.
                    .env("HTTP_PROXY", format!("http://{ip}:15001"))
                    .env_remove("NO_PROXY")
                    .env_remove("no_proxy"),
            )?;
        }
        let bootstrap = write_bootstrap(
            work,
            "ingressgateway",
            &["--role", "gateway", "--workload", "istio-ingressgateway", "--namespace", "istio-system"],
            &["istio=ingressgateway".to_string()],
            GATEWAY_ADMIN_PORT,
        )?;
        demo.spawn("ingressgateway", Command::new(binary("weft-proxy")).arg("-c").arg(&bootstrap).args(["--concurrency", "1"]))?;
        demo.wait_ready()?;
        Ok(demo)
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.log_dir.join(format!("{name}.log")))?;
        let child = cmd
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("start {name} ({:?}): {e} (run `make build` first)", cmd.get_program()))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Every process is up and the product page renders with its details
    /// and reviews.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for (name, child) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    anyhow::bail!("{name} exited with {status}; see {}", self.log_dir.join(format!("{name}.log")).display());
                }
            }
            if let Ok(page) = get(GATEWAY_PORT, "/productpage") {
                if page.contains("Reviews served by") && page.contains("ISBN") {
                    return Ok(());
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "the product page did not render within 30 s; logs in {}", self.log_dir.display());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `weft-operator bootstrap` for one proxy, written next to the logs.
fn write_bootstrap(work: &Path, name: &str, args: &[&str], labels: &[String], admin: u16) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new(binary("weft-operator"));
    cmd.arg("bootstrap").args(args).args(["--xds-address", &format!("127.0.0.1:{XDS_PORT}"), "--admin-port", &admin.to_string()]);
    for l in labels {
        cmd.args(["--label", l]);
    }
    let out = cmd.stderr(Stdio::inherit()).output()?;
    anyhow::ensure!(out.status.success(), "weft-operator bootstrap for {name} failed");
    let path = work.join(format!("{name}.bootstrap.json"));
    std::fs::write(&path, out.stdout)?;
    Ok(path)
}

fn wait_port(host: &str, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect((host, port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nothing listens on {host}:{port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A blocking GET on 127.0.0.1 (the demo's checks and its test): the body.
pub fn get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(tcp, "GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(head.lines().next().unwrap_or_default().to_string()));
    }
    Ok(body.to_string())
}
