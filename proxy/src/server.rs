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
use pingora_core::protocols::tls::server::handshake_with_callback;
use pingora_core::protocols::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::admin::Admin;
use crate::http::HttpProxy;
use crate::io::Buffered;
use crate::model::filter_chain::{FilterChains, NetworkFilter};
use crate::model::{Config, Listener};
use crate::tcp::TcpProxy;
use crate::tls::inspector;
use crate::tls::RecordPeer;

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
    let mut per_worker: Vec<Vec<(std::net::TcpListener, Arc<ListenerApp>)>> = (0..workers).map(|_| Vec::new()).collect();
    for l in &config.listeners {
        let app = Arc::new(ListenerApp::new(l));
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
                    let serve = {
                        let shutdown = shutdown.clone();
                        move |tcp| app.clone().serve(tcp, shutdown.clone())
                    };
                    loops.push(tokio::spawn(accept_loop(listener, shutdown.clone(), active.clone(), serve)));
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

/// A listener as the workers run it: its filter chains, each with the
/// application serving the connections it matches.
struct ListenerApp {
    name: String,
    inspect_tls: bool,
    chains: FilterChains,
    /// Parallel to `chains.all()`.
    apps: Vec<App>,
}

/// What a filter chain runs on its connections.
enum App {
    Http(Arc<HttpProxy>),
    Tcp(Arc<TcpProxy>),
}

impl ListenerApp {
    fn new(l: &Listener) -> Self {
        let apps = l
            .chains
            .all()
            .map(|c| match &c.filter {
                NetworkFilter::Http(manager) => App::Http(Arc::new(HttpProxy::new(manager.clone()))),
                NetworkFilter::Tcp(tcp) => App::Tcp(tcp.clone()),
            })
            .collect();
        ListenerApp { name: l.name.clone(), inspect_tls: l.inspect_tls, chains: l.chains.clone(), apps }
    }

    /// One downstream connection: inspect, pick a chain, terminate TLS,
    /// hand over to the chain's HTTP or TCP proxy.
    async fn serve(self: Arc<Self>, mut tcp: TcpStream, shutdown: watch::Receiver<bool>) {
        let (prefix, hello) = if self.inspect_tls {
            match inspector::inspect(&mut tcp).await {
                Some((bytes, hello)) => (bytes, Some(hello)),
                None => return,
            }
        } else {
            (Vec::new(), None)
        };
        let Some(index) = self.chains.select(hello.as_ref()) else {
            tracing::debug!(listener = %self.name, ?hello, "no filter chain matches: closing");
            return;
        };
        let chain = self.chains.get(index);
        let mut stream = Buffered::new(tcp);
        stream.rewind(&prefix);
        let stream: Stream = match &chain.tls {
            Some(tls) => match handshake_with_callback(&tls.acceptor, stream, &RecordPeer).await {
                Ok(s) => Box::new(s),
                Err(e) => {
                    tracing::debug!(listener = %self.name, chain = %chain.name, error = %e, "TLS handshake failed");
                    return;
                }
            },
            None => Box::new(stream),
        };
        match &self.apps[index] {
            App::Http(http) => {
                let _ = http.process_new(stream, &shutdown).await;
            }
            App::Tcp(tcp) => tcp.serve(stream).await,
        }
    }
}

/// Counts a connection as active for as long as it lives.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until shutdown, serving each on its own task.
async fn accept_loop<F, Fut>(listener: TcpListener, mut shutdown: watch::Receiver<bool>, active: Arc<AtomicUsize>, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
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
        active.fetch_add(1, Ordering::Relaxed);
        let guard = ActiveGuard(active.clone());
        let connection = serve(tcp);
        tokio::spawn(async move {
            let _guard = guard;
            connection.await;
        });
    }
}
