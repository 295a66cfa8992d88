//! The gRPC side of the ADS client: one stream at a time (state of the
//! world, or delta when the bootstrap says DELTA_GRPC), re-opened with
//! backoff when it fails; the config keeps serving meanwhile.

use std::time::{Duration, Instant};

/// Envoy's default `initial_stream_window_size` and connection window.
const ENVOY_WINDOW: u32 = 256 << 20;

use tokio::sync::mpsc::{self, UnboundedSender};
use tokio_stream::wrappers::UnboundedReceiverStream;
use weft_envoy_api::pb::envoy::config::bootstrap::v3::Bootstrap;
use weft_envoy_api::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use weft_envoy_api::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse};

use super::state::{State, Step};
use super::Ads;
use crate::bootstrap::Loader;
use crate::model::Config;

/// Envoy's reconnect backoff for xDS streams: 500 ms doubling to 30 s,
/// with full jitter so proxies restarted together spread out.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream: {0}")]
    Status(#[from] tonic::Status),
}

pub async fn run(bootstrap: Bootstrap, ads: Ads, updates: UnboundedSender<Config>) {
    // The descriptor pool that checks resources, kept for the stream's
    // life: building it takes longer than a push should.
    let loader = Loader::new();
    let mut state = State::new(bootstrap);
    let mut failures: u32 = 0;
    while !updates.is_closed() {
        match session(&mut state, &ads, &loader, &updates, &mut failures).await {
            Ok(()) => tracing::info!(server = %ads.server, "xDS stream closed by the server"),
            Err(e) => tracing::warn!(server = %ads.server, cluster = %ads.cluster, error = %e, "xDS stream failed; serving the last good config"),
        }
        failures = failures.saturating_add(1);
        let ceiling = BACKOFF_BASE.saturating_mul(1 << failures.min(6)).min(BACKOFF_MAX);
        tokio::time::sleep(ceiling.mul_f64(rand::random::<f64>())).await;
    }
}

async fn session(
    state: &mut State,
    ads: &Ads,
    loader: &Loader,
    updates: &UnboundedSender<Config>,
    failures: &mut u32,
) -> Result<(), StreamError> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", ads.server))?
        .connect_timeout(Duration::from_secs(5))
        // Envoy's HTTP/2 windows (256 MiB): with h2's 64 KiB default a large
        // route configuration trickles in, one WINDOW_UPDATE round trip per
        // 64 KiB.
        .initial_stream_window_size(ENVOY_WINDOW)
        .initial_connection_window_size(ENVOY_WINDOW)
        .connect()
        .await?;
    let client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    if ads.delta {
        exchange::<Delta>(client, state, ads, loader, updates, failures).await
    } else {
        exchange::<Sotw>(client, state, ads, loader, updates, failures).await
    }
}

/// The two flavours of ADS: state of the world and incremental.
trait Protocol {
    type Request: Send + 'static;
    type Response;
    fn reconnect(state: &mut State) -> Vec<Self::Request>;
    fn on_response(state: &mut State, response: &Self::Response, loader: &Loader) -> Step<Self::Request>;
    async fn open(client: &mut Client, requests: UnboundedReceiverStream<Self::Request>) -> Result<tonic::Streaming<Self::Response>, tonic::Status>;
}

type Client = AggregatedDiscoveryServiceClient<tonic::transport::Channel>;

struct Sotw;
struct Delta;

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    fn reconnect(state: &mut State) -> Vec<DiscoveryRequest> {
        state.reconnect()
    }
    fn on_response(state: &mut State, response: &DiscoveryResponse, loader: &Loader) -> Step {
        state.on_response(response, loader, Instant::now())
    }
    async fn open(client: &mut Client, requests: UnboundedReceiverStream<DiscoveryRequest>) -> Result<tonic::Streaming<DiscoveryResponse>, tonic::Status> {
        Ok(client.stream_aggregated_resources(requests).await?.into_inner())
    }
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    fn reconnect(state: &mut State) -> Vec<DeltaDiscoveryRequest> {
        state.reconnect_delta()
    }
    fn on_response(state: &mut State, response: &DeltaDiscoveryResponse, loader: &Loader) -> Step<DeltaDiscoveryRequest> {
        state.on_delta_response(response, loader, Instant::now())
    }
    async fn open(client: &mut Client, requests: UnboundedReceiverStream<DeltaDiscoveryRequest>) -> Result<tonic::Streaming<DeltaDiscoveryResponse>, tonic::Status> {
        Ok(client.delta_aggregated_resources(requests).await?.into_inner())
    }
}

/// One stream: the subscriptions, then each response checked and answered
/// (ACK/NACK) and what it changed served.
async fn exchange<P: Protocol>(
    mut client: Client,
    state: &mut State,
    ads: &Ads,
    loader: &Loader,
    updates: &UnboundedSender<Config>,
    failures: &mut u32,
) -> Result<(), StreamError> {
    let (tx, rx) = mpsc::unbounded_channel();
    for request in P::reconnect(state) {
        let _ = tx.send(request);
    }
    let mut inbound = P::open(&mut client, UnboundedReceiverStream::new(rx)).await?;
    tracing::info!(server = %ads.server, delta = ads.delta, "xDS stream open");
    loop {
        let message = match state.deadline() {
            Some(deadline) => tokio::select! {
                m = inbound.message() => m?,
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if let Some(config) = state.publish(Instant::now()) {
                        apply(config, updates).await;
                    }
                    continue;
                }
            },
            None => inbound.message().await?,
        };
        let Some(response) = message else { return Ok(()) };
        *failures = 0;
        let step = P::on_response(state, &response, loader);
        for request in step.requests {
            let _ = tx.send(request);
        }
        if let Some(config) = step.config {
            apply(config, updates).await;
        }
    }
}

/// DNS names resolved and the first health-check round done off the
/// stream's thread (they block), then the config goes to the server.
async fn apply(config: Config, updates: &UnboundedSender<Config>) {
    let ready = tokio::task::spawn_blocking(move || {
        crate::dns::resolve_all_blocking(&config);
        crate::health::first_round_blocking(&config);
        config
    })
    .await;
    match ready {
        Ok(config) => {
            tracing::info!("xDS update applied");
            let _ = updates.send(config);
        }
        Err(e) => tracing::error!(error = %e, "preparing an xDS update failed"),
    }
}
