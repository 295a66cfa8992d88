//! gRPC glue: the `AggregatedDiscoveryService` over tonic. Each stream is a
//! task that feeds requests and snapshot changes to its protocol's state
//! machine and sends what it returns.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Status, Streaming};
use weft_envoy_api::pb::envoy::config::core::v3::Node;
use weft_envoy_api::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest};

use super::hub::Hub;
use super::node::Proxy;
use super::snapshot::Snapshot;
use super::wire::{AdsServer, Outgoing};
use super::{delta, sotw, Event};

/// A stream protocol's state machine, as the stream task drives it.
trait Protocol: Default + Send + 'static {
    type Request: Send + std::fmt::Debug + 'static;
    type Response: Send + Summary + 'static;
    fn node(req: &Self::Request) -> Option<&Node>;
    fn on_request(
        &mut self,
        req: &Self::Request,
        snapshot: &Snapshot,
    ) -> (Vec<Self::Response>, Option<Event>);
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<Self::Response>;
}

impl Protocol for sotw::Stream {
    type Request = DiscoveryRequest;
    type Response = Outgoing;
    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snapshot: &Snapshot,
    ) -> (Vec<Outgoing>, Option<Event>) {
        sotw::Stream::on_request(self, req, snapshot)
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<Outgoing> {
        sotw::Stream::on_snapshot(self, snapshot)
    }
}

impl Protocol for delta::Stream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snapshot: &Snapshot,
    ) -> (Vec<DeltaDiscoveryResponse>, Option<Event>) {
        delta::Stream::on_request(self, req, snapshot)
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        delta::Stream::on_snapshot(self, snapshot)
    }
}

/// What a debug log says about a response.
trait Summary {
    fn summary(&self) -> String;
}

impl Summary for Outgoing {
    fn summary(&self) -> String {
        format!("{} version={} nonce={} resources={}", self.type_url, self.version_info, self.nonce, self.resources.len())
    }
}

impl Summary for DeltaDiscoveryResponse {
    fn summary(&self) -> String {
        format!("{} nonce={} resources={} removed={}", self.type_url, self.nonce, self.resources.len(), self.removed_resources.len())
    }
}

/// The ADS service.
pub struct Ads {
    hub: Arc<Hub>,
}

impl Ads {
    pub fn new(hub: Arc<Hub>) -> Self {
        Ads { hub }
    }

    fn start<P: Protocol>(
        &self,
        inbound: Streaming<P::Request>,
    ) -> ReceiverStream<Result<P::Response, Status>> {
        // A few responses of headroom: a push is at most one per type.
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(run::<P>(self.hub.clone(), inbound, tx));
        ReceiverStream::new(rx)
    }
}

pub type SotwStream = ReceiverStream<Result<Outgoing, Status>>;
pub type DeltaStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

impl Ads {
    pub fn sotw(&self, inbound: Streaming<DiscoveryRequest>) -> SotwStream {
        self.start::<sotw::Stream>(inbound)
    }

    pub fn delta(&self, inbound: Streaming<DeltaDiscoveryRequest>) -> DeltaStream {
        self.start::<delta::Stream>(inbound)
    }
}

/// One stream until the proxy goes away or breaks the protocol.
async fn run<P: Protocol>(
    hub: Arc<Hub>,
    mut inbound: Streaming<P::Request>,
    tx: mpsc::Sender<Result<P::Response, Status>>,
) {
    let first = match inbound.message().await {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(status) => {
            tracing::debug!(%status, "stream ended before its first request");
            return;
        }
    };
    let proxy = match Proxy::from_node(P::node(&first)) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "refused an xDS stream");
            let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
            return;
        }
    };
    let mut subscription = hub.connect(proxy);
    let mut state = P::default();
    let mut next = Some(first);
    loop {
        let responses = if let Some(req) = next.take() {
            tracing::trace!(proxy = %subscription.proxy.id, request = ?req, "request");
            // Not marked seen: if the snapshot changed meanwhile, the change
            // branch below still runs and pushes the other types.
            let snapshot = subscription.snapshot.borrow().clone();
            let (responses, event) = state.on_request(&req, &snapshot);
            if let Some(event) = event {
                hub.report(&subscription.proxy, event);
            }
            responses
        } else {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => { next = Some(req); continue; }
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!(proxy = %subscription.proxy.id, %status, "xDS stream closed");
                        return;
                    }
                },
                changed = subscription.snapshot.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let snapshot = subscription.snapshot.borrow_and_update().clone();
                    state.on_snapshot(&snapshot)
                }
            }
        };
        for response in responses {
            tracing::debug!(proxy = %subscription.proxy.id, response = %response.summary(), "push");
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
        }
    }
}

/// Serves ADS on `listener` until `shutdown` resolves.
pub async fn serve(
    hub: Arc<Hub>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "xDS (ADS) server listening");
    tonic::transport::Server::builder()
        .add_service(AdsServer::new(Ads::new(hub)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
