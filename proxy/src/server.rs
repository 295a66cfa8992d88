//! Process wiring: workers, listener sockets, admin, signals, config
//! updates, graceful drain.
//!
//! ```text
//!  main thread: signals ─► shutdown watch ─► drain wait
//!               config updates ─► Listeners::apply ─► Start/Stop commands to workers
//!  worker 0..N: own single-threaded runtime, own SO_REUSEPORT socket per
//!               listener (the kernel spreads connections), own upstream pool
//!  admin thread: the admin listener
//! ```
//! This is Envoy's threading model: a request never crosses threads, so
//! the data path needs no locks and no cross-thread wake-ups. Each listener
//! is an accept loop handing connections to Pingora's HTTP machinery
//! (`ServerApp::process_new`), so listeners can come and go at run time.

mod listener;
mod update;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora_core::apps::ServerApp;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::admin::Admin;
use crate::io::Buffered;
use crate::model::Config;
use listener::{accept_loop, ListenerApp};
use update::Listeners;

pub struct Options {
    pub concurrency: usize,
    pub drain_time: Duration,
    /// The first dynamic config comes from a control plane: `/ready`
    /// answers 503 until it is applied (or the initial fetch timeout
    /// passes), as Envoy's does while initializing.
    pub await_xds: bool,
}

/// What the main thread tells a worker.
enum Command {
    /// Accept on this worker's socket for the listener, serving whatever
    /// application the shared slot holds at each accept.
    Start { name: String, socket: std::net::TcpListener, app: Arc<ArcSwap<ListenerApp>> },
    /// Stop accepting (open connections finish on their own).
    Stop { name: String },
}

/// Binds a listening socket that other workers can bind too.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// Runs the proxy until SIGTERM/SIGINT or `/quitquitquit`, applying each
/// config that arrives on `updates` (compiled and DNS-resolved already).
pub fn run(
    config: Config,
    bootstrap_json: serde_json::Value,
    opts: Options,
    mut updates: mpsc::UnboundedReceiver<Config>,
) -> anyhow::Result<()> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let active = Arc::new(AtomicUsize::new(0));
    crate::dns::resolve_all_blocking(&config);
    crate::health::first_round_blocking(&config);

    let mut threads = Vec::new();
    let mut commands = Vec::new();
    for i in 0..opts.concurrency.max(1) {
        let (tx, rx) = mpsc::unbounded_channel();
        commands.push(tx);
        let (shutdown, active) = (shutdown_rx.clone(), active.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("weft-worker-{i}"))
                .spawn(move || runtime().map(|rt| rt.block_on(worker(rx, shutdown, active))))?,
        );
    }
    // Bind everything before serving so that a bad address fails start-up.
    let mut listeners = Listeners::new(commands);
    listeners.apply(&config).map_err(|e| anyhow::anyhow!(e))?;

    let config = Arc::new(ArcSwap::from_pointee(config));
    let live = Arc::new(AtomicBool::new(!opts.await_xds));
    let (quit_tx, mut quit_rx) = mpsc::unbounded_channel();
    if let Some(addr) = config.load().admin {
        let admin = Arc::new(Admin {
            live: live.clone(),
            config: config.clone(),
            bootstrap_json: Arc::new(ArcSwap::from_pointee(bootstrap_json)),
            quit: quit_tx.clone(),
            started: std::time::SystemTime::now(),
        });
        let socket = bind(addr).map_err(|e| anyhow::anyhow!("admin cannot bind {addr}: {e}"))?;
        let shutdown = shutdown_rx.clone();
        threads.push(std::thread::Builder::new().name("weft-admin".into()).spawn(move || {
            runtime().map(|rt| {
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(socket) else { return };
                    let serve = {
                        let shutdown = shutdown.clone();
                        move |tcp| {
                            let (admin, shutdown) = (admin.clone(), shutdown.clone());
                            async move {
                                let _ = admin.process_new(Box::new(Buffered::new(tcp)), &shutdown).await;
                            }
                        }
                    };
                    accept_loop(listener, shutdown, Arc::new(AtomicUsize::new(0)), serve).await;
                })
            })
        })?);
        tracing::info!(address = %addr, "admin listening");
    }

    runtime()?.block_on(async {
        // DNS refreshes, outlier sweeps and health checks of the current config.
        let timers = |c: &Config| {
            let mut tasks = crate::dns::spawn_refresh(c);
            tasks.extend(crate::health::spawn(c));
            tasks
        };
        let mut tasks = timers(&config.load());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let initial_fetch = tokio::time::sleep(crate::xds::INITIAL_FETCH_TIMEOUT);
        tokio::pin!(initial_fetch);
        loop {
            tokio::select! {
                _ = &mut initial_fetch, if !live.load(Ordering::Relaxed) => {
                    tracing::warn!("no config from the control plane within the initial fetch timeout; live with what there is");
                    live.store(true, Ordering::Relaxed);
                }
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); break }
                _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: draining"); break }
                _ = quit_rx.recv() => { tracing::info!("quitquitquit: exiting"); break }
                Some(next) = updates.recv() => {
                    if let Err(e) = listeners.apply(&next) {
                        // Envoy keeps serving what it has when a listener
                        // cannot bind; so do we, with the rest applied.
                        tracing::warn!(error = %e, "config update partly applied");
                    }
                    for task in tasks.drain(..) {
                        task.abort();
                    }
                    tasks = timers(&next);
                    config.store(Arc::new(next));
                    live.store(true, Ordering::Relaxed);
                    tracing::info!("config updated");
                }
            }
        }
        // Stop accepting; in-flight requests finish (connections close after
        // their current request), bounded by the drain time.
        let _ = shutdown_tx.send(true);
        let deadline = tokio::time::Instant::now() + opts.drain_time;
        while active.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    // Workers still busy after the drain time are abandoned with the process.
    Ok(())
}

/// A worker: runs the accept loops it is told to, until shutdown; then
/// lets its connections finish their current request.
async fn worker(mut commands: mpsc::UnboundedReceiver<Command>, shutdown: watch::Receiver<bool>, active: Arc<AtomicUsize>) {
    let heartbeat = tokio::spawn(timer_heartbeat());
    let mut loops = HashMap::new();
    let mut closed = shutdown.clone();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Start { name, socket, app }) => {
                    let listener = match TcpListener::from_std(socket) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(listener = %name, error = %e, "cannot register listener socket");
                            continue;
                        }
                    };
                    let serve = {
                        let shutdown = shutdown.clone();
                        move |tcp| app.load_full().serve(tcp, shutdown.clone())
                    };
                    let task = tokio::spawn(accept_loop(listener, shutdown.clone(), active.clone(), serve));
                    if let Some(old) = loops.insert(name, task) {
                        old.abort();
                    }
                }
                Some(Command::Stop { name }) => {
                    if let Some(task) = loops.remove(&name) {
                        task.abort(); // closes the socket; connections live on
                    }
                }
                None => break,
            },
            _ = closed.wait_for(|closed| *closed) => break,
        }
    }
    for (_, task) in loops {
        let _ = task.await;
    }
    let _ = closed.wait_for(|closed| *closed).await;
    while active.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    heartbeat.abort();
}

/// How often a worker's timer heartbeat fires (see `timer_heartbeat`).
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Keeps a timer due within `HEARTBEAT` on the worker's runtime. Tokio
/// wakes its runtime (an eventfd write, then one more epoll round) whenever
/// a timer is set to fire before the runtime's next planned wake-up, and
/// with no timer pending that is every request's first deadline (the route
/// timeout, the stream idle timeout): on a worker serving one request at a
/// time, two syscalls per request for nothing. With this timer pending,
/// deadlines further out than `HEARTBEAT` are set without a wake-up; the
/// price is two wake-ups a second on an idle worker.
async fn timer_heartbeat() {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}
