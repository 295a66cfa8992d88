//! Process wiring: workers, listener sockets, admin, signals, graceful drain.
//!
//! ```text
//!  main thread: signals ─► shutdown watch ─► drain wait
//!  worker 0..N: own single-threaded runtime, own SO_REUSEPORT socket per
//!               listener (the kernel spreads connections), own upstream pool
//!  admin thread: the admin listener
//! ```
//! This is Envoy's threading model: a request never crosses threads, so
//! the data path needs no locks and no cross-thread wake-ups. Each listener
//! is an accept loop handing connections to Pingora's HTTP machinery
//! (`ServerApp::process_new`), so listeners can come and go at run time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora_core::apps::ServerApp;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::http::HttpProxy;
use crate::io::Buffered;
use crate::model::listener::ListenerKind;
use crate::model::Config;
use crate::tcp::TcpProxy;

pub struct Options {
    pub concurrency: usize,
    pub drain_time: Duration,
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

/// Runs the proxy until SIGTERM/SIGINT or `/quitquitquit`.
pub fn run(config: Config, bootstrap_json: serde_json::Value, opts: Options) -> anyhow::Result<()> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let active = Arc::new(AtomicUsize::new(0));

    crate::dns::resolve_all_blocking(&config);
    // Bind everything first so that a bad address fails start-up, not a worker.
    let workers = opts.concurrency.max(1);
    let mut per_worker: Vec<Vec<(std::net::TcpListener, App)>> = (0..workers).map(|_| Vec::new()).collect();
    for l in &config.listeners {
        let app = match &l.kind {
            ListenerKind::Http(manager) => App::Http(Arc::new(HttpProxy::new(manager.clone()))),
            ListenerKind::Tcp(tcp) => App::Tcp(tcp.clone()),
        };
        for sockets in per_worker.iter_mut() {
            let socket = bind(l.address).map_err(|e| anyhow::anyhow!("listener {} cannot bind {}: {e}", l.name, l.address))?;
            sockets.push((socket, app.clone()));
        }
        tracing::info!(listener = %l.name, address = %l.address, workers, "listening");
    }
    let config = Arc::new(ArcSwap::from_pointee(config));
    let (quit_tx, mut quit_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut threads = Vec::new();
    if let Some(addr) = config.load().admin {
        let admin = Arc::new(Admin {
            config: config.clone(),
            bootstrap_json: Arc::new(ArcSwap::from_pointee(bootstrap_json)),
            quit: quit_tx.clone(),
        });
        let socket = bind(addr).map_err(|e| anyhow::anyhow!("admin cannot bind {addr}: {e}"))?;
        let shutdown = shutdown_rx.clone();
        threads.push(std::thread::Builder::new().name("weft-admin".into()).spawn(move || -> std::io::Result<()> {
            runtime()?.block_on(async move {
                let listener = TcpListener::from_std(socket)?;
                accept_loop(listener, admin, shutdown, Arc::new(AtomicUsize::new(0))).await;
                Ok(())
            })
        })?);
        tracing::info!(address = %addr, "admin listening");
    }
    for (i, sockets) in per_worker.into_iter().enumerate() {
        let (shutdown, active) = (shutdown_rx.clone(), active.clone());
        threads.push(std::thread::Builder::new().name(format!("weft-worker-{i}")).spawn(move || -> std::io::Result<()> {
            runtime()?.block_on(async move {
                let mut loops = Vec::new();
                for (socket, app) in sockets {
                    let listener = TcpListener::from_std(socket)?;
                    let (shutdown, active) = (shutdown.clone(), active.clone());
                    loops.push(match app {
                        App::Http(app) => tokio::spawn(accept_loop(listener, app, shutdown, active)),
                        App::Tcp(tcp) => tokio::spawn(tcp_accept_loop(listener, tcp, shutdown, active)),
                    });
                }
                for l in loops {
                    let _ = l.await;
                }
                // Let this worker's connections finish their current request.
                let mut waiting = shutdown.clone();
                let _ = waiting.wait_for(|closed| *closed).await;
                while active.load(Ordering::Relaxed) > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(())
            })
        })?);
    }

    let dns_config = config.load_full();
    runtime()?.block_on(async {
        crate::dns::spawn_refresh(&dns_config);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
            _ = quit_rx.recv() => tracing::info!("quitquitquit: exiting"),
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

/// What a listener runs on its connections.
#[derive(Clone)]
enum App {
    Http(Arc<HttpProxy>),
    Tcp(Arc<TcpProxy>),
}

/// Accepts connections for a `tcp_proxy` listener.
async fn tcp_accept_loop(listener: TcpListener, tcp: Arc<TcpProxy>, mut shutdown: watch::Receiver<bool>, active: Arc<AtomicUsize>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        active.fetch_add(1, Ordering::Relaxed);
        let (guard, tcp) = (ActiveGuard(active.clone()), tcp.clone());
        tokio::spawn(async move {
            let _guard = guard;
            tcp.serve(stream).await;
        });
    }
}

/// Counts a connection as active for as long as it lives.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop<A>(listener: TcpListener, app: Arc<A>, mut shutdown: watch::Receiver<bool>, active: Arc<AtomicUsize>)
where
    A: ServerApp + Send + Sync + 'static,
{
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (tcp, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        active.fetch_add(1, Ordering::Relaxed);
        let guard = ActiveGuard(active.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let stream: pingora_core::protocols::Stream = Box::new(Buffered::new(tcp));
            let _ = app.process_new(stream, &shutdown).await;
        });
    }
}
