//! The connected proxies and the snapshot each should have.
//!
//! Translation hands the hub a [`Generator`] (the current config, able to
//! produce any proxy's snapshot); the hub computes the snapshot of every
//! connected proxy — once per distinct (role, namespace, labels), since
//! proxies of one workload get the same config — and wakes the streams
//! whose snapshot changed. Streams report ACKs and NACKs back, which feed
//! status and the push-latency benchmark.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::{broadcast, watch};

use super::node::Proxy;
use super::snapshot::Snapshot;
use super::Event;

/// Produces the snapshot of one proxy from the current translation.
pub trait Generator: Send + Sync {
    fn snapshot(&self, proxy: &Proxy) -> Snapshot;
}

impl<F: Fn(&Proxy) -> Snapshot + Send + Sync> Generator for F {
    fn snapshot(&self, proxy: &Proxy) -> Snapshot {
        self(proxy)
    }
}

/// An ACK or NACK from one proxy.
#[derive(Debug, Clone)]
pub struct ProxyEvent {
    pub proxy: String,
    pub event: Event,
}

pub struct Hub {
    generator: RwLock<Arc<dyn Generator>>,
    streams: Mutex<HashMap<u64, Stream>>,
    next_stream: AtomicU64,
    events: broadcast::Sender<ProxyEvent>,
}

struct Stream {
    proxy: Proxy,
    snapshot: watch::Sender<Arc<Snapshot>>,
}

/// One stream's registration; dropping it disconnects the proxy.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    pub proxy: Proxy,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        crate::lock(&self.hub.streams).remove(&self.id);
        tracing::info!(proxy = %self.proxy.id, "proxy disconnected");
    }
}

type GroupKey = (super::node::Role, String, Vec<(String, String)>);

fn group(proxy: &Proxy) -> GroupKey {
    let labels = proxy
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (proxy.role, proxy.namespace.clone(), labels)
}

impl Hub {
    pub fn new(generator: Arc<dyn Generator>) -> Arc<Hub> {
        Arc::new(Hub {
            generator: RwLock::new(generator),
            streams: Mutex::new(HashMap::new()),
            next_stream: AtomicU64::new(0),
            events: broadcast::channel(1024).0,
        })
    }

    /// Registers a stream for `proxy`, with its current snapshot.
    pub fn connect(self: &Arc<Self>, proxy: Proxy) -> Subscription {
        let generator = self
            .generator
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (tx, rx) = watch::channel(Arc::new(generator.snapshot(&proxy)));
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        crate::lock(&self.streams).insert(
            id,
            Stream {
                proxy: proxy.clone(),
                snapshot: tx,
            },
        );
        tracing::info!(proxy = %proxy.id, "proxy connected");
        Subscription {
            hub: self.clone(),
            id,
            proxy,
            snapshot: rx,
        }
    }

    /// A new translation: recomputes every connected proxy's snapshot and
    /// wakes the streams whose snapshot changed.
    pub fn set_generator(&self, generator: Arc<dyn Generator>) {
        *self
            .generator
            .write()
            .unwrap_or_else(PoisonError::into_inner) = generator.clone();
        let streams = crate::lock(&self.streams);
        let mut by_group: HashMap<GroupKey, Arc<Snapshot>> = HashMap::new();
        for stream in streams.values() {
            let snapshot = by_group
                .entry(group(&stream.proxy))
                .or_insert_with(|| Arc::new(generator.snapshot(&stream.proxy)))
                .clone();
            stream.snapshot.send_if_modified(|current| {
                let changed = !current.same(&snapshot);
                if changed {
                    *current = snapshot;
                }
                changed
            });
        }
    }

    /// Called by streams: logs a NACK and publishes the event.
    pub fn report(&self, proxy: &Proxy, event: Event) {
        if let Event::Nack { kind, message, .. } = &event {
            tracing::warn!(proxy = %proxy.id, ?kind, %message, "proxy rejected its configuration");
        }
        // No receivers is fine: nobody is watching status.
        let _ = self.events.send(ProxyEvent {
            proxy: proxy.id.clone(),
            event,
        });
    }

    pub fn events(&self) -> broadcast::Receiver<ProxyEvent> {
        self.events.subscribe()
    }

    /// The proxies connected now, one entry per stream.
    pub fn proxies(&self) -> Vec<Proxy> {
        crate::lock(&self.streams)
            .values()
            .map(|s| s.proxy.clone())
            .collect()
    }
}
