//! A listener as the workers run it: accepting, picking a filter chain,
//! terminating TLS and handing the connection to the chain's HTTP or TCP
//! proxy. The application behind a listener can be replaced at run time
//! (config updates); a connection keeps the one it was accepted with.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora_core::protocols::tls::server::handshake_with_callback;
use pingora_core::protocols::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::http::HttpProxy;
use crate::io::Buffered;
use crate::model::filter_chain::{FilterChains, NetworkFilter};
use crate::model::Listener;
use crate::tcp::TcpProxy;
use crate::tls::inspector;
use crate::tls::RecordPeer;

/// A listener as the workers run it: its filter chains, each with the
/// application serving the connections it matches.
pub struct ListenerApp {
    name: String,
    inspect_tls: bool,
    chains: FilterChains,
    /// Parallel to `chains.all()`.
    apps: Vec<App>,
}

/// What a filter chain runs on its connections. Both read their config
/// through an `ArcSwap`, so an update that keeps the listener's shape
/// reaches open connections at their next request.
enum App {
    Http(Arc<HttpProxy>),
    Tcp(Arc<ArcSwap<TcpProxy>>),
}

impl ListenerApp {
    pub fn new(l: &Listener) -> Self {
        let apps = l
            .chains
            .all()
            .map(|c| match &c.filter {
                NetworkFilter::Http(manager) => App::Http(Arc::new(HttpProxy::new(manager.clone()))),
                NetworkFilter::Tcp(tcp) => App::Tcp(Arc::new(ArcSwap::new(tcp.clone()))),
            })
            .collect();
        ListenerApp { name: l.name.clone(), inspect_tls: l.inspect_tls, chains: l.chains.clone(), apps }
    }

    /// Takes a recompiled listener of the same definition (its clusters or
    /// their hosts changed): every chain's application gets the new
    /// compiled config in place, open connections included.
    pub fn refresh(&self, l: &Listener) {
        for (app, chain) in self.apps.iter().zip(l.chains.all()) {
            match (app, &chain.filter) {
                (App::Http(proxy), NetworkFilter::Http(manager)) => proxy.manager.store(manager.clone()),
                (App::Tcp(current), NetworkFilter::Tcp(tcp)) => current.store(tcp.clone()),
                _ => tracing::warn!(listener = %self.name, "refresh of a listener whose chains changed kind"),
            }
        }
    }

    /// The listener was replaced or removed: open HTTP connections close
    /// after their current request, as Envoy drains a listener.
    pub fn drain(&self) {
        for app in &self.apps {
            if let App::Http(proxy) = app {
                proxy.drain();
            }
        }
    }

    /// One downstream connection: inspect, pick a chain, terminate TLS,
    /// hand over to the chain's HTTP or TCP proxy.
    pub async fn serve(self: Arc<Self>, mut tcp: TcpStream, shutdown: watch::Receiver<bool>) {
        let (prefix, hello) = if self.inspect_tls {
            match inspector::inspect(&mut tcp).await {
                Some((bytes, hello)) => (bytes, Some(hello)),
                None => return,
            }
        } else {
            (Vec::new(), None)
        };
        let Some((index, chain)) = self.chains.select(hello.as_ref()) else {
            tracing::debug!(listener = %self.name, ?hello, "no filter chain matches: closing");
            return;
        };
        let stream: Stream = match &chain.tls {
            Some(tls) => {
                // TLS writes records as they come: the buffer gathers a
                // handshake flight or small records into one send.
                let mut stream = Buffered::new(tcp);
                stream.rewind(&prefix);
                match handshake_with_callback(&tls.acceptor, stream, &RecordPeer).await {
                    Ok(s) => Box::new(s),
                    Err(e) => {
                        tracing::debug!(listener = %self.name, chain = %chain.name, error = %e, "TLS handshake failed");
                        return;
                    }
                }
            }
            // Plain text: our HTTP/1.1 codec builds each write whole, and
            // HTTP/2 and the TCP proxy gather their own; a buffer would
            // only copy.
            None => {
                let mut stream = crate::io::plain(tcp);
                stream.rewind(&prefix);
                Box::new(stream)
            }
        };
        // `apps` is built from `chains.all()`, so the index is always there.
        let Some(app) = self.apps.get(index) else { return };
        match app {
            App::Http(http) => http.serve(stream, &shutdown).await,
            App::Tcp(tcp) => tcp.load_full().serve(stream).await,
        }
    }
}

/// Counts a connection as active for as long as it lives.
pub struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until shutdown, serving each on its own task.
pub async fn accept_loop<F, Fut>(listener: TcpListener, mut shutdown: watch::Receiver<bool>, active: Arc<AtomicUsize>, serve: F)
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
