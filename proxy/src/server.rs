//! Process wiring: worker runtime, listener accept loops, admin, signals,
//! graceful drain and whole-config swaps.
//!
//! Each listener is a tokio accept loop handing connections to Pingora's
//! HTTP machinery (`ServerApp::process_new`), so listeners can be added and
//! removed at run time (LDS) rather than fixed at start-up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::stream::Stream;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::http::HttpProxy;
use crate::model::Config;

pub struct Options {
    pub concurrency: usize,
    pub drain_time: Duration,
}

/// Runs the proxy until SIGTERM/SIGINT or `/quitquitquit`.
pub fn run(config: Config, bootstrap_json: serde_json::Value, opts: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.concurrency.max(1))
        .thread_name("weft-worker")
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, bootstrap_json, opts))
}

async fn serve(
    config: Config,
    bootstrap_json: serde_json::Value,
    opts: Options,
) -> anyhow::Result<()> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let active = Arc::new(AtomicUsize::new(0));
    let mut apps: HashMap<String, Arc<HttpProxy>> = HashMap::new();
    for l in &config.listeners {
        let listener = TcpListener::bind(l.address)
            .await
            .map_err(|e| anyhow::anyhow!("listener {} cannot bind {}: {e}", l.name, l.address))?;
        let app = Arc::new(HttpProxy::new(l.http.clone()));
        apps.insert(l.name.clone(), app.clone());
        tokio::spawn(accept_loop(
            listener,
            app,
            shutdown_rx.clone(),
            active.clone(),
        ));
        tracing::info!(listener = %l.name, address = %l.address, "listening");
    }
    let config = Arc::new(ArcSwap::from_pointee(config));
    let (quit_tx, mut quit_rx) = tokio::sync::mpsc::unbounded_channel();
    if let Some(addr) = config.load().admin {
        let admin = Arc::new(Admin {
            config: config.clone(),
            bootstrap_json: Arc::new(ArcSwap::from_pointee(bootstrap_json)),
            quit: quit_tx.clone(),
        });
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("admin cannot bind {addr}: {e}"))?;
        tokio::spawn(accept_loop(
            listener,
            admin,
            shutdown_rx.clone(),
            Arc::new(AtomicUsize::new(0)),
        ));
        tracing::info!(address = %addr, "admin listening");
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
        _ = quit_rx.recv() => tracing::info!("quitquitquit: exiting"),
    }
    // Stop accepting, let in-flight requests finish (connections close after
    // their current request), bounded by the drain time.
    let _ = shutdown_tx.send(true);
    let deadline = tokio::time::Instant::now() + opts.drain_time;
    while active.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Counts a connection as active for as long as it lives.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop<A>(
    listener: TcpListener,
    app: Arc<A>,
    mut shutdown: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
) where
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
            let stream: pingora_core::protocols::Stream = Box::new(Stream::from(tcp));
            let _ = app.process_new(stream, &shutdown).await;
        });
    }
}
