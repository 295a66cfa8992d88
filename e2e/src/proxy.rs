//! Launching weft-proxy or the Envoy oracle on the same bootstrap.
//!
//! Bootstraps are templates: `${LISTEN}` and `${ADMIN}` become fresh ports,
//! `${UP_<name>}` the port of the named upstream, `${CERTS}` the directory
//! of the test certificates (see `pki`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, Upstream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Envoy,
    Weft,
}

impl Kind {
    pub const BOTH: [Kind; 2] = [Kind::Envoy, Kind::Weft];

    pub fn binary(self) -> PathBuf {
        match self {
            Kind::Envoy => std::env::var_os("ENVOY_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join(".venv/bin/envoy")),
            Kind::Weft => std::env::var_os("WEFT_PROXY_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let release = repo_root().join("target/release/weft-proxy");
                    let debug = repo_root().join("target/debug/weft-proxy");
                    if std::env::var("WEFT_PROFILE").as_deref() == Ok("release") {
                        release
                    } else {
                        debug
                    }
                }),
        }
    }

    /// Flags both accept; Envoy's hot restart is off so several can run.
    fn args(self) -> Vec<&'static str> {
        match self {
            Kind::Envoy => vec![
                "--concurrency",
                "1",
                "--log-level",
                "error",
                "--disable-hot-restart",
            ],
            Kind::Weft => vec!["--concurrency", "1", "--log-level", "error"],
        }
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub struct Proxy {
    pub kind: Kind,
    pub port: u16,
    pub admin: u16,
    child: Child,
    log: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fills a bootstrap template's `${...}` placeholders.
pub fn render(template: &str, listen: u16, admin: u16, upstreams: &[&Upstream]) -> String {
    let mut out = template
        .replace("${LISTEN}", &listen.to_string())
        .replace("${ADMIN}", &admin.to_string());
    if out.contains("${CERTS}") {
        out = out.replace("${CERTS}", &crate::pki::dir().display().to_string());
    }
    for u in upstreams {
        out = out.replace(&format!("${{UP_{}}}", u.name), &u.port().to_string());
    }
    out
}

fn write_temp(kind: Kind, text: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("weft-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{kind:?}-{n}.yaml"));
    std::fs::write(&path, text).expect("write bootstrap");
    path
}

impl Proxy {
    /// Starts a proxy and waits until its admin `/ready` answers. Ports are
    /// picked free but can be taken by a test running in parallel before
    /// the proxy binds them: a start that fails to bind is retried on
    /// fresh ports.
    pub async fn start(
        kind: Kind,
        template: &str,
        upstreams: &[&Upstream],
    ) -> anyhow::Result<Proxy> {
        let mut attempt = 0;
        loop {
            match Self::start_once(kind, template, upstreams).await {
                Err(e) if attempt < 3 && e.to_string().contains("ddress already in use") => attempt += 1,
                result => return result,
            }
        }
    }

    async fn start_once(kind: Kind, template: &str, upstreams: &[&Upstream]) -> anyhow::Result<Proxy> {
        let (port, admin) = (free_port(), free_port());
        let config = write_temp(kind, &render(template, port, admin, upstreams));
        let log = config.with_extension("log");
        let child = Command::new(kind.binary())
            .arg("-c")
            .arg(&config)
            .args(kind.args())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| anyhow::anyhow!("start {:?} ({}): {e}", kind, kind.binary().display()))?;
        let mut proxy = Proxy {
            kind,
            port,
            admin,
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                anyhow::bail!("{kind:?} exited with {status}: {}", proxy.log_text());
            }
            let ready = crate::client::send(admin, &crate::Request::get("/ready")).await;
            // A bootstrap without `${LISTEN}` (dynamic listeners) is ready
            // when the admin says so.
            let listening = !template.contains("${LISTEN}") || tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok();
            // Envoy and weft-proxy both answer `LIVE`: anything else on that
            // port is not this proxy's admin.
            if ready.is_ok_and(|r| r.status == 200 && r.body.starts_with(b"LIVE")) && listening {
                return Ok(proxy);
            }
            if Instant::now() > deadline {
                anyhow::bail!("{kind:?} not ready after 20s: {}", proxy.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for exit (bounded).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub async fn send(&self, req: &crate::Request) -> crate::Observed {
        crate::client::send(self.port, req)
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}\n{}", self.kind, self.log_text()))
    }

    pub async fn stat(&self, line_prefix: &str) -> Option<f64> {
        let text = crate::client::send(self.admin, &crate::Request::get("/stats/prometheus"))
            .await
            .ok()?
            .body_str();
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

/// Runs `--mode validate` on a bootstrap: (exit success, stdout+stderr).
pub fn validate(kind: Kind, text: &str) -> (bool, String) {
    let path = write_temp(kind, text);
    let mut cmd = Command::new(kind.binary());
    cmd.arg("-c").arg(&path).args(["--mode", "validate"]);
    if kind == Kind::Envoy {
        cmd.arg("--disable-hot-restart");
    }
    let out = cmd.output().expect("run validate");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
