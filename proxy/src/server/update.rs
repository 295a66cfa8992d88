//! Applying a new config to running listeners, as Envoy's listener manager
//! does: a listener whose definition is unchanged keeps its sockets and
//! connections and takes the recompiled routes and clusters in place; a
//! changed listener gets a new application (open connections drain: they
//! close after their current request); a removed one stops accepting; a new
//! one is bound on every worker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::mpsc::UnboundedSender;
use weft_envoy_api::pb::envoy::config::listener::v3 as xds_listener;

use super::listener::ListenerApp;
use super::{bind, Command};
use crate::model::{Config, Listener};

/// The listeners the workers run, by name.
pub struct Listeners {
    workers: Vec<UnboundedSender<Command>>,
    running: HashMap<String, Running>,
}

struct Running {
    address: SocketAddr,
    definition: xds_listener::Listener,
    app: Arc<ArcSwap<ListenerApp>>,
}

impl Listeners {
    pub fn new(workers: Vec<UnboundedSender<Command>>) -> Self {
        Listeners { workers, running: HashMap::new() }
    }

    /// Makes the running listeners those of `config`. A listener that
    /// cannot bind is reported (and skipped); the others are applied.
    pub fn apply(&mut self, config: &Config) -> Result<(), String> {
        let wanted: HashMap<&str, &Listener> = config.listeners.iter().map(|l| (l.name.as_str(), l)).collect();
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(name, r)| wanted.get(name.as_str()).is_none_or(|l| l.address != r.address))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.stop(&name);
        }
        let mut errors = Vec::new();
        for l in &config.listeners {
            match self.running.get_mut(&l.name) {
                Some(r) if r.definition == l.definition => r.app.load().refresh(l),
                Some(r) => {
                    let old = r.app.swap(Arc::new(ListenerApp::new(l)));
                    old.drain();
                    r.definition = l.definition.clone();
                    tracing::info!(listener = %l.name, "listener updated");
                }
                None => {
                    if let Err(e) = self.start(l) {
                        errors.push(e);
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    fn start(&mut self, l: &Listener) -> Result<(), String> {
        // One socket per worker; all bound before any is used.
        let sockets = (0..self.workers.len())
            .map(|_| bind(l.address))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| format!("listener {} cannot bind {}: {e}", l.name, l.address))?;
        let app = Arc::new(ArcSwap::from_pointee(ListenerApp::new(l)));
        for (worker, socket) in self.workers.iter().zip(sockets) {
            let _ = worker.send(Command::Start { name: l.name.clone(), socket, app: app.clone() });
        }
        tracing::info!(listener = %l.name, address = %l.address, workers = self.workers.len(), "listening");
        self.running.insert(l.name.clone(), Running { address: l.address, definition: l.definition.clone(), app });
        Ok(())
    }

    fn stop(&mut self, name: &str) {
        let Some(r) = self.running.remove(name) else { return };
        for worker in &self.workers {
            let _ = worker.send(Command::Stop { name: name.to_string() });
        }
        r.app.load().drain();
        tracing::info!(listener = %name, "listener removed");
    }
}
