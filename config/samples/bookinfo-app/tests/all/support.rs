//! Test fixtures: Bookinfo services in-process on free loopback ports,
//! fake upstreams that record what reached them, a tiny HTTP proxy, and
//! the built `bookinfo` binary as a child process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use weft_bookinfo::server::{self, App, Request, Response};
use weft_bookinfo::{Config, ProxyMode, Service, Version};

/// A server running in this process; stops when dropped.
pub struct Running {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// A config that calls nothing real until the test says where, and never
/// follows the environment's proxy.
pub fn config(service: Service, version: Version) -> Config {
    Config {
        version,
        workload: format!("{}-{}", service.name(), version.name()),
        details_url: "http://127.0.0.1:1".into(),
        reviews_url: "http://127.0.0.1:1".into(),
        ratings_url: "http://127.0.0.1:1".into(),
        proxy: ProxyMode::Direct,
        ..Config::new(service)
    }
}

/// Runs one Bookinfo service in-process.
pub async fn spawn(config: Config) -> Running {
    let (listener, addr) = listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = weft_bookinfo::serve(listener, config, shutdown).await {
            eprintln!("service failed: {e}");
        }
    });
    Running { addr, _stop: stop }
}

/// Runs any test [`App`] in-process.
pub async fn spawn_app<A: App>(app: Arc<A>) -> Running {
    let (listener, addr) = listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        let _ = server::serve(listener, app, shutdown).await;
    });
    Running { addr, _stop: stop }
}

/// A URL where nothing listens (the port was just freed).
pub async fn dead_url() -> String {
    let (_listener, addr) = listener().await;
    format!("http://{addr}")
}

/// A client for the tests themselves: direct, no redirects followed.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub async fn get_text(url: &str) -> (StatusCode, String) {
    get_text_with(url, &[]).await
}

/// GET with extra request headers; the status and the body as text.
pub async fn get_text_with(url: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut req = client().get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

/// Signs `user` in at productpage `base`, as the page's form does.
pub async fn login(base: &str, user: &str) -> reqwest::Response {
    client()
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username={user}&passwd=x"))
        .send()
        .await
        .expect("login")
}

/// Fails with the whole page unless every one of `expected` is in it.
pub fn assert_contains(html: &str, expected: &[&str]) {
    for e in expected {
        assert!(html.contains(e), "missing {e:?} in\n{html}");
    }
}

pub async fn get_json(url: &str) -> (StatusCode, serde_json::Value) {
    let resp = client().get(url).send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.expect("JSON body"))
}

/// What a fake upstream saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    /// As received: origin-form `/path`, or absolute-form through a proxy.
    pub uri: String,
    pub headers: HeaderMap,
}

/// A fake upstream: records every request, answers `body` with `status`
/// after `delay`.
pub struct Recorder {
    pub seen: Mutex<Vec<Seen>>,
    status: StatusCode,
    body: serde_json::Value,
    delay: Duration,
}

impl Recorder {
    pub fn new(status: StatusCode, body: serde_json::Value) -> Arc<Self> {
        Self::delayed(status, body, Duration::ZERO)
    }

    pub fn delayed(status: StatusCode, body: serde_json::Value, delay: Duration) -> Arc<Self> {
        Arc::new(Recorder {
            seen: Mutex::new(Vec::new()),
            status,
            body,
            delay,
        })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl App for Recorder {
    async fn handle(&self, req: Request) -> Response {
        self.seen.lock().expect("lock").push(Seen {
            uri: req.uri().to_string(),
            headers: req.headers().clone(),
        });
        tokio::time::sleep(self.delay).await;
        server::json(self.status, &self.body)
    }
}

/// A forward HTTP proxy as a sidecar is one: records each request line
/// (absolute-form) and sends the request to the address its host maps to.
pub struct TestProxy {
    pub seen: Mutex<Vec<String>>,
    routes: HashMap<String, SocketAddr>,
}

impl TestProxy {
    /// `routes`: `host:port` of the absolute URI → where it really is.
    pub fn new(routes: &[(&str, SocketAddr)]) -> Arc<Self> {
        Arc::new(TestProxy {
            seen: Mutex::new(Vec::new()),
            routes: routes.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
        })
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

impl App for TestProxy {
    async fn handle(&self, req: Request) -> Response {
        let line = format!("{} {}", req.method(), req.uri());
        self.seen.lock().expect("lock").push(line);
        let target = req
            .uri()
            .authority()
            .and_then(|a| self.routes.get(a.as_str()));
        let (Some(target), Some(path)) = (target, req.uri().path_and_query()) else {
            return server::text(StatusCode::BAD_GATEWAY, "no route\n");
        };
        let url = format!("http://{target}{path}");
        let mut headers = req.headers().clone();
        headers.remove(http::header::HOST);
        let upstream = match client().get(url).headers(headers).send().await {
            Ok(resp) => resp,
            Err(_) => return server::text(StatusCode::BAD_GATEWAY, "upstream failed\n"),
        };
        let mut resp = http::Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = upstream.status();
        *resp.headers_mut() = upstream.headers().clone();
        let body = upstream.bytes().await.unwrap_or_default();
        *resp.body_mut() = Full::new(body);
        resp
    }
}

/// The `bookinfo` binary running as a child process; killed when dropped.
pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every stderr line so far (the log).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    /// Starts `bookinfo ARGS --listen 127.0.0.1:0` with no proxy settings
    /// but `env`, and waits for its `listening` log line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Binary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bookinfo"));
        cmd.args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
            "REQUEST_METHOD",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("start bookinfo");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("addr=").nth(1) {
                    let addr = addr.split_whitespace().next().unwrap_or_default();
                    let _ = addr_tx.send(addr.parse::<SocketAddr>());
                }
                lines.lock().expect("lock").push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(addr)) => addr,
            other => {
                let _ = child.kill();
                panic!(
                    "bookinfo did not report its address ({other:?}): {:?}",
                    log.lock()
                );
            }
        };
        Binary { child, addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
