//! `make bench`: weft-proxy against Envoy (and nginx, and no proxy at all)
//! on the same bootstrap, side by side in one run, printing ratios.
//!
//! ```text
//!  core 0: the proxy under test (one worker)
//!  core 1: load generator (wrk / our fixed-rate client) + nginx upstream
//! ```
//! Measured per target, runs interleaved (E W N D, E W N D, ...):
//! - max req/s: wrk, 64 connections, keep-alive, 1-byte body;
//! - latency p50/p99/p99.9 at a fixed rate below saturation, open loop
//!   (each request sent on schedule, timed from send to full response);
//! - RSS idle and under load (VmRSS), CPU-seconds per 10k requests.
//!
//! And the cost of a wasm plugin: Envoy and weft-proxy again with the
//! SDK's `headers` example (target/wasm/headers.wasm, `make wasm`) adding
//! one request header; what the plugin adds to CPU per request and to p50
//! latency is compared between the two.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_e2e::free_port;

/// The same bootstrap the e2e tests use; `${UP_up}` is the nginx upstream.
const BOOTSTRAP: &str = include_str!("../../tests/all/bootstraps/simple.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Envoy,
    Weft,
    Nginx,
    Direct,
    /// Envoy and weft-proxy with one wasm plugin adding a request header.
    EnvoyWasm,
    WeftWasm,
}

/// The plugin the wasm targets run, and its configuration.
const PLUGIN: &str = "target/wasm/headers.wasm";
const PLUGIN_CONFIG: &str = r#"{\"request\":{\"add\":{\"x-plugin\":\"weft\"}}}"#;

/// The bootstrap with the plugin before the router.
fn with_plugin(bootstrap: &str, wasm: &Path) -> String {
    let filter = format!(
        r#"          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: bench
                configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: "{PLUGIN_CONFIG}" }}
                vm_config: {{ runtime: envoy.wasm.runtime.v8, code: {{ local: {{ filename: {} }} }} }}
"#,
        wasm.display()
    );
    bootstrap.replacen("          http_filters:\n", &filter, 1)
}

#[derive(Debug, Default, Clone)]
struct Sample {
    rps: f64,
    p50_us: f64,
    /// p50 with one request at a time on one connection: the proxy's own
    /// latency, without queueing behind the generator's timer bunching.
    p50_unloaded_us: f64,
    p99_us: f64,
    p999_us: f64,
    rss_idle_mib: f64,
    rss_load_mib: f64,
    cpu_s_per_10k: f64,
    /// CPU per request at the fixed rate (not saturated): what a feature
    /// costs, without the load generator's limits in the way.
    cpu_us_at_rate: f64,
}

struct Settings {
    duration: Duration,
    rate: u64,
    rounds: usize,
}

fn main() -> Result<()> {
    let settings = Settings {
        duration: Duration::from_secs(env_u64("BENCH_SECONDS", 8)),
        rate: env_u64("BENCH_RATE", 2000),
        rounds: env_u64("BENCH_ROUNDS", 3) as usize,
    };
    // Our own clients (fixed rate, one at a time) belong with the load, not
    // beside the proxy under test: unpinned, the scheduler may put them on
    // core 0, and the latencies then include waiting for the proxy's CPU.
    pin_self_to_core("1")?;
    let dir = std::env::temp_dir().join(format!("weft-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let up_port = free_port();
    let _upstream = Guard(nginx(&dir, "upstream", "location / { return 200 \"x\"; }", up_port, "1")?);
    wait_port(up_port)?;

    let plugin = weft_e2e::proxy::repo_root().join(PLUGIN);
    if !plugin.exists() {
        bail!("{} is missing: run `make wasm`", plugin.display());
    }
    let all = [Target::Envoy, Target::Weft, Target::Nginx, Target::Direct, Target::EnvoyWasm, Target::WeftWasm];
    // BENCH_TARGETS=Envoy,Weft,... runs a subset (the ratios need their pairs).
    let chosen = std::env::var("BENCH_TARGETS").unwrap_or_default();
    let targets: Vec<Target> = all.into_iter().filter(|t| chosen.is_empty() || chosen.split(',').any(|c| c == format!("{t:?}"))).collect();
    let mut results: Vec<(Target, Vec<Sample>)> = targets.iter().map(|t| (*t, Vec::new())).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for round in 0..settings.rounds {
        for (target, samples) in results.iter_mut() {
            eprintln!("round {}/{}: {target:?}", round + 1, settings.rounds);
            samples.push(measure(*target, &dir, up_port, &settings, &rt)?);
        }
    }
    report(&results, &settings);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Moves every thread of this process to `core` (children started later
/// inherit it; the proxies and nginx are placed explicitly anyway).
fn pin_self_to_core(core: &str) -> Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", core, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset")?;
    if !status.success() {
        bail!("taskset could not move the bench to core {core} (it needs 2 cores)");
    }
    Ok(())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Kills the child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn measure(target: Target, dir: &Path, up_port: u16, s: &Settings, rt: &tokio::runtime::Runtime) -> Result<Sample> {
    let (port, guard) = match target {
        Target::Direct => (up_port, None),
        Target::Nginx => {
            let port = free_port();
            let conf = "location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }";
            let upstream_block = format!("upstream up {{ server 127.0.0.1:{up_port}; keepalive 64; }}");
            (port, Some(Guard(nginx_with(dir, "proxy", conf, &upstream_block, port, "0")?)))
        }
        Target::Envoy | Target::Weft | Target::EnvoyWasm | Target::WeftWasm => {
            let (port, admin) = (free_port(), free_port());
            let bootstrap = match target {
                Target::EnvoyWasm | Target::WeftWasm => with_plugin(BOOTSTRAP, &weft_e2e::proxy::repo_root().join(PLUGIN)),
                _ => BOOTSTRAP.to_string(),
            };
            let yaml = bootstrap
                .replace("${LISTEN}", &port.to_string())
                .replace("${ADMIN}", &admin.to_string())
                .replace("${UP_up}", &up_port.to_string());
            let path = dir.join(format!("{target:?}.yaml"));
            std::fs::write(&path, yaml)?;
            let envoy = matches!(target, Target::Envoy | Target::EnvoyWasm);
            let kind = if envoy { weft_e2e::Kind::Envoy } else { weft_e2e::Kind::Weft };
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg("0").arg(kind.binary()).arg("-c").arg(&path).args(["--concurrency", "1", "--log-level", "error"]);
            if envoy {
                cmd.arg("--disable-hot-restart");
            }
            let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().with_context(|| format!("start {target:?}"))?;
            (port, Some(Guard(child)))
        }
    };
    wait_port(port)?;
    // Warm up connections and pools, then let the process settle.
    run_wrk(port, Duration::from_secs(1))?;
    std::thread::sleep(Duration::from_millis(500));
    let pids = guard.as_ref().map(|g| process_tree(g.0.id())).unwrap_or_default();
    let rss_idle = pids.iter().map(|p| rss_kib(*p)).sum::<u64>() as f64 / 1024.0;

    let cpu_before: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
    let sampler = RssSampler::start(pids.clone());
    let (rps, requests) = run_wrk(port, s.duration)?;
    let rss_load = sampler.stop() as f64 / 1024.0;
    let cpu_after: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
    let cpu_per_10k = if requests > 0 { (cpu_after - cpu_before) * 10_000.0 / requests as f64 } else { 0.0 };

    std::thread::sleep(Duration::from_millis(300));
    let cpu_before: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
    let hist = rt.block_on(fixed_rate(port, s.rate, s.duration))?;
    let cpu_at_rate: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - cpu_before;
    let sent = hist.len().max(1) as f64;
    let unloaded = rt.block_on(one_at_a_time(port, UNLOADED_REQUESTS))?;
    drop(guard);
    Ok(Sample {
        rps,
        p50_us: hist.value_at_quantile(0.50) as f64,
        p50_unloaded_us: unloaded.value_at_quantile(0.50) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        p999_us: hist.value_at_quantile(0.999) as f64,
        rss_idle_mib: rss_idle,
        rss_load_mib: rss_load.max(rss_idle),
        cpu_s_per_10k: cpu_per_10k,
        cpu_us_at_rate: cpu_at_rate * 1e6 / sent,
    })
}

/// wrk on core 1: (requests/s, total requests).
fn run_wrk(port: u16, duration: Duration) -> Result<(f64, u64)> {
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1", "-c64"])
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("wrk output: {text}"))?;
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if text.contains("Non-2xx") {
        bail!("non-2xx responses during the run: {text}");
    }
    Ok((rps, requests))
}

/// Load at a fixed `rate` req/s over 16 keep-alive connections, each
/// request sent on schedule; latency from send to the full response.
async fn fixed_rate(port: u16, rate: u64, duration: Duration) -> Result<hdrhistogram::Histogram<u64>> {
    const CONNECTIONS: u64 = 16;
    let interval = Duration::from_nanos(1_000_000_000 * CONNECTIONS / rate.max(1));
    let start = Instant::now() + Duration::from_millis(50);
    let per_conn = rate * duration.as_secs() / CONNECTIONS;
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let offset = interval * c as u32 / CONNECTIONS as u32;
        tasks.push(tokio::spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
            let mut conn = Connection::open(port).await?;
            for k in 0..per_conn {
                let due = start + offset + interval * k as u32;
                tokio::time::sleep_until(due.into()).await;
                // Latency from the actual send: tokio's timer wakes up to a
                // millisecond late, which is the generator's, not the
                // proxy's. The rate is far below saturation, so requests do
                // not queue behind each other on a connection.
                let _ = hist.record(conn.exchange().await?.as_micros() as u64);
            }
            Ok::<_, anyhow::Error>(hist)
        }));
    }
    let mut total = hdrhistogram::Histogram::<u64>::new(3)?;
    for t in tasks {
        total.add(t.await??)?;
    }
    Ok(total)
}

/// Requests for the unloaded latency (one at a time: ~2 s).
const UNLOADED_REQUESTS: u64 = 8_000;

/// `count` requests one after the other on one connection.
async fn one_at_a_time(port: u16, count: u64) -> Result<hdrhistogram::Histogram<u64>> {
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut conn = Connection::open(port).await?;
    for _ in 0..count {
        let _ = hist.record(conn.exchange().await?.as_micros() as u64);
    }
    Ok(hist)
}

/// A keep-alive HTTP/1.1 connection to the proxy.
struct Connection {
    tcp: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(port: u16) -> Result<Connection> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        Ok(Connection { tcp, buf: vec![0u8; 4096] })
    }

    /// One GET and its whole response; how long from the send.
    async fn exchange(&mut self) -> Result<Duration> {
        let sent = Instant::now();
        self.tcp.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n").await?;
        let mut filled = 0;
        loop {
            let n = self.tcp.read(&mut self.buf[filled..]).await?;
            if n == 0 {
                anyhow::bail!("connection closed");
            }
            filled += n;
            if weft_e2e::client::parse(&self.buf[..filled], false).is_some() {
                return Ok(sent.elapsed());
            }
        }
    }
}

fn nginx(dir: &Path, name: &str, location: &str, port: u16, core: &str) -> Result<Child> {
    nginx_with(dir, name, location, "", port, core)
}

fn nginx_with(dir: &Path, name: &str, location: &str, extra: &str, port: u16, core: &str) -> Result<Child> {
    let prefix = dir.join(name);
    std::fs::create_dir_all(prefix.join("logs"))?;
    let conf = format!(
        "user root; worker_processes 1; daemon off; master_process off; pid {p}/nginx.pid; error_log {p}/logs/error.log crit;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_requests 10000000; client_body_temp_path {p}; proxy_temp_path {p};\n\
         fastcgi_temp_path {p}; uwsgi_temp_path {p}; scgi_temp_path {p};\n\
         {extra}\n server {{ listen 127.0.0.1:{port}; {location} }} }}\n",
        p = prefix.display()
    );
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, conf)?;
    Command::new("taskset")
        .args(["-c", core, "nginx", "-p"])
        .arg(&prefix)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start nginx (apt-get install nginx-light)")
}

fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("port {port} never opened")
}

/// The process and its children (taskset execs, so usually just one).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.extend(process_tree(c));
        }
    }
    out
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let ticks = 100.0; // CLK_TCK on Linux
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = &s[s.rfind(')')? + 2..];
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0)
}

/// Samples the peak RSS of some processes in the background.
struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pids: Vec<u32>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(pids.iter().map(|p| rss_kib(*p)).sum());
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        RssSampler { stop, handle }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn report(results: &[(Target, Vec<Sample>)], s: &Settings) {
    let m = |t: Target, f: fn(&Sample) -> f64| {
        results.iter().find(|(x, _)| *x == t).map(|(_, v)| median(v.iter().map(f).collect())).unwrap_or(0.0)
    };
    println!();
    println!(
        "weft-bench: one worker each, proxy on core 0, load + upstream on core 1; {} rounds, {}s runs, latency at {} req/s",
        s.rounds,
        s.duration.as_secs(),
        s.rate
    );
    println!(
        "{:<9} {:>10} {:>9} {:>9} {:>9} {:>11} {:>9} {:>9} {:>12} {:>11}",
        "target", "max rps", "p50 µs", "p99 µs", "p99.9 µs", "p50 1-conn", "RSS idle", "RSS load", "CPU-s/10k", "CPU µs/req"
    );
    for (t, _) in results {
        println!(
            "{:<9} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>11.0} {:>8.1}M {:>8.1}M {:>12.3} {:>11.1}",
            format!("{t:?}"),
            m(*t, |x| x.rps),
            m(*t, |x| x.p50_us),
            m(*t, |x| x.p99_us),
            m(*t, |x| x.p999_us),
            m(*t, |x| x.p50_unloaded_us),
            m(*t, |x| x.rss_idle_mib),
            m(*t, |x| x.rss_load_mib),
            m(*t, |x| x.cpu_s_per_10k),
            m(*t, |x| x.cpu_us_at_rate),
        );
    }
    let ratio = |f: fn(&Sample) -> f64| m(Target::Weft, f) / m(Target::Envoy, f);
    let added = |f: fn(&Sample) -> f64| {
        let direct = m(Target::Direct, f);
        (m(Target::Weft, f) - direct) / (m(Target::Envoy, f) - direct)
    };
    println!();
    println!("ratios weft/Envoy (target in brackets):");
    println!("  throughput             {:>6.2}x  [>= 2.5]", ratio(|x| x.rps));
    println!("  CPU per request        {:>6.2}x  [<= 0.4]", ratio(|x| x.cpu_s_per_10k));
    println!("  added latency p50      {:>6.2}x  [<= 0.5]", added(|x| x.p50_us));
    println!("  added latency p99      {:>6.2}x  [<= 0.5]", added(|x| x.p99_us));
    println!("  idle RSS               {:>6.2}x  [<= 0.35]", ratio(|x| x.rss_idle_mib));
    // What the plugin adds, round by round (the targets of a round ran
    // back to back, so drift between rounds cancels), then the median.
    let samples = |t: Target| results.iter().find(|(x, _)| *x == t).map(|(_, v)| v.as_slice()).unwrap_or_default();
    let plugin_cost = |with: Target, without: Target, f: fn(&Sample) -> f64| {
        median(samples(with).iter().zip(samples(without)).map(|(a, b)| f(a) - f(b)).collect())
    };
    // Saturated (wrk), as the issue measures it: CPU-s per 10k → µs each.
    let per_request = |x: &Sample| x.cpu_s_per_10k * 100.0;
    let (cpu_weft, cpu_envoy) = (plugin_cost(Target::WeftWasm, Target::Weft, per_request), plugin_cost(Target::EnvoyWasm, Target::Envoy, per_request));
    let (rate_weft, rate_envoy) =
        (plugin_cost(Target::WeftWasm, Target::Weft, |x| x.cpu_us_at_rate), plugin_cost(Target::EnvoyWasm, Target::Envoy, |x| x.cpu_us_at_rate));
    let (p50_weft, p50_envoy) =
        (plugin_cost(Target::WeftWasm, Target::Weft, |x| x.p50_unloaded_us), plugin_cost(Target::EnvoyWasm, Target::Envoy, |x| x.p50_unloaded_us));
    let (rate_p50_weft, rate_p50_envoy) = (plugin_cost(Target::WeftWasm, Target::Weft, |x| x.p50_us), plugin_cost(Target::EnvoyWasm, Target::Envoy, |x| x.p50_us));
    println!();
    println!("wasm plugin (SDK `headers`, adds one request header), what it adds per request (median of the rounds' differences):");
    println!("  CPU, saturated      weft {cpu_weft:>6.1} µs, Envoy {cpu_envoy:>6.1} µs  {:>6.2}x  [<= 0.3]", cpu_weft / cpu_envoy);
    println!("  p50, one at a time  weft {p50_weft:>6.1} µs, Envoy {p50_envoy:>6.1} µs  {:>6.2}x  [<= 0.3]", p50_weft / p50_envoy);
    println!("  p50 at {:>5} req/s  weft {rate_p50_weft:>6.1} µs, Envoy {rate_p50_envoy:>6.1} µs  {:>6.2}x  (requests bunch on the generator's 1 ms timer)", s.rate, rate_p50_weft / rate_p50_envoy);
    println!("  CPU at {:>5} req/s  weft {rate_weft:>6.1} µs, Envoy {rate_envoy:>6.1} µs  {:>6.2}x  (idle wake-ups dominate: noisy)", s.rate, rate_weft / rate_envoy);
    println!("  max rps with the plugin: weft {:.0}, Envoy {:.0}", m(Target::WeftWasm, |x| x.rps), m(Target::EnvoyWasm, |x| x.rps));
}
