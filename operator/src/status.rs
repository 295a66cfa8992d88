//! What the operator knows about each resource and proxy, in the shape
//! Kubernetes mode writes into `status`: an `Accepted` condition and the
//! validation messages per resource, and the proxies' NACKs. Standalone
//! mode has no API server to write it to, so it is served as JSON
//! (`/debug/status`, like istiod's debug endpoints on 15014).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use weft_crds::status::{reason, Condition, ConditionStatus, Level, Problem, Status};

use crate::index::Key;
use crate::validate::Finding;
use crate::xds::hub::ProxyEvent;
use crate::xds::{Event, Hub};

/// A proxy's rejection of its configuration, until it ACKs that type again.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Nack {
    #[serde(rename = "type")]
    pub type_url: &'static str,
    pub version: String,
    pub message: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Board {
    /// `Kind namespace/name` → status.
    pub resources: BTreeMap<String, Status>,
    /// Proxy id → its NACKs by type.
    pub nacks: BTreeMap<String, BTreeMap<&'static str, Nack>>,
    /// Connected proxies (node ids).
    pub proxies: Vec<String>,
}

/// The board, shared by the watcher, the ADS streams and the endpoint.
#[derive(Clone, Default)]
pub struct Statuses(Arc<Mutex<Board>>);

impl Statuses {
    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        crate::lock(&self.0)
    }

    /// A new validation: every resource's condition and messages.
    pub fn validated(&self, keys: impl IntoIterator<Item = Key>, findings: &[Finding]) {
        let mut resources = BTreeMap::new();
        for key in keys {
            let own: Vec<&Finding> = findings.iter().filter(|f| f.key == key).collect();
            let error = own.iter().find(|f| f.message.level == Level::Error);
            let condition = match error {
                None => Condition::new(Condition::ACCEPTED, ConditionStatus::True, reason::ACCEPTED, "in effect"),
                Some(f) => {
                    let why = if f.message.type_.code == Problem::UnsupportedField.code() { reason::UNSUPPORTED_FIELD } else { reason::INVALID };
                    Condition::new(Condition::ACCEPTED, ConditionStatus::False, why, f.to_string())
                }
            };
            let mut status = Status { validation_messages: own.iter().map(|f| f.message.clone()).collect(), ..Status::default() };
            status.set_condition(condition);
            resources.insert(key.to_string(), status);
        }
        self.lock().resources = resources;
    }

    /// Follows the hub's ACK/NACK events (forever).
    pub async fn follow(self, hub: Arc<Hub>) {
        let mut events = hub.events();
        loop {
            match events.recv().await {
                Ok(ProxyEvent { proxy, event }) => {
                    let mut board = self.lock();
                    match event {
                        Event::Nack { kind, version, message } => {
                            board.nacks.entry(proxy).or_default().insert(kind.type_url(), Nack { type_url: kind.type_url(), version, message });
                        }
                        Event::Ack { kind, .. } => {
                            if let Some(n) = board.nacks.get_mut(&proxy) {
                                n.remove(kind.type_url());
                                if n.is_empty() {
                                    board.nacks.remove(&proxy);
                                }
                            }
                        }
                    }
                    board.proxies = hub.proxies().into_iter().map(|p| p.id).collect();
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    pub fn json(&self, hub: &Hub) -> serde_json::Value {
        let mut board = self.lock();
        board.proxies = hub.proxies().into_iter().map(|p| p.id).collect();
        serde_json::to_value(&*board).unwrap_or(serde_json::Value::Null)
    }
}

/// Serves `/debug/status` (the board) and `/ready` on `listener`.
pub async fn serve(listener: tokio::net::TcpListener, statuses: Statuses, hub: Arc<Hub>) {
    use http_body_util::Full;
    use hyper::{body::Bytes, Response};
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let (statuses, hub) = (statuses.clone(), hub.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (status, body) = match req.uri().path() {
                    "/debug/status" => (200, serde_json::to_string_pretty(&statuses.json(&hub)).unwrap_or_default()),
                    "/ready" => (200, "LIVE\n".to_string()),
                    _ => (404, "not found: try /debug/status\n".to_string()),
                };
                let response = Response::builder()
                    .status(status)
                    .header("content-type", if status == 200 && body.starts_with('{') { "application/json" } else { "text/plain" })
                    .body(Full::new(Bytes::from(body)));
                async move { response }
            });
            let io = hyper_util::rt::TokioIo::new(tcp);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::{Kind, Proxy, Role, Snapshot};

    fn proxy(id: &str) -> Proxy {
        Proxy { id: id.into(), role: Role::Sidecar, ip: "10.0.0.1".into(), workload: "w".into(), namespace: "ns".into(), labels: Default::default() }
    }

    #[tokio::test]
    async fn nacks_are_on_the_board_until_the_type_is_acked() {
        let hub = Hub::new(Arc::new(|_: &Proxy| Snapshot::default()));
        let statuses = Statuses::default();
        let follower = tokio::spawn(statuses.clone().follow(hub.clone()));
        tokio::task::yield_now().await;
        let p = proxy("sidecar~10.0.0.1~w.ns~ns.svc.cluster.local");
        hub.report(&p, Event::Nack { kind: Kind::Cluster, version: "v1".into(), message: "bad cluster".into() });
        let nack = || statuses.json(&hub)["nacks"][&p.id][Kind::Cluster.type_url()]["message"].clone();
        for _ in 0..100 {
            if nack() == "bad cluster" {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(nack(), "bad cluster");
        hub.report(&p, Event::Ack { kind: Kind::Cluster, version: "v2".into() });
        for _ in 0..100 {
            if nack().is_null() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(nack().is_null(), "an ACK of the type clears it");
        follower.abort();
    }

    #[test]
    fn a_resource_with_an_error_is_not_accepted_and_says_why() {
        let key = Key { kind: "VirtualService", namespace: "default".into(), name: "web".into() };
        let other = Key { kind: "Gateway", namespace: "default".into(), name: "gw".into() };
        let finding = Finding {
            key: key.clone(),
            message: weft_crds::status::ValidationMessage::new(Level::Error, Problem::UnsupportedField, "spec.exportTo", "not supported by weft yet"),
        };
        let statuses = Statuses::default();
        statuses.validated([key.clone(), other.clone()], &[finding]);
        let board = statuses.lock();
        let web = &board.resources[&key.to_string()];
        let accepted = web.condition(Condition::ACCEPTED).expect("condition");
        assert_eq!((accepted.status, accepted.reason.as_deref()), (ConditionStatus::False, Some(reason::UNSUPPORTED_FIELD)));
        assert_eq!(web.validation_messages[0].path.as_deref(), Some("spec.exportTo"));
        let gw = board.resources[&other.to_string()].condition(Condition::ACCEPTED).expect("condition");
        assert_eq!(gw.status, ConditionStatus::True);
    }
}
