//! The ADS service on the wire, with state-of-the-world responses encoded
//! straight from the snapshot's shared resources.
//!
//! A push sends the same large resources (the route configuration of a
//! thousand services) to every proxy. tonic's generated service takes a
//! `DiscoveryResponse`, which owns its resources: each proxy's response
//! cloned every byte before encoding it again (perf: the biggest cost of a
//! push). Here a response holds `Arc`s to resources whose `Any` is encoded
//! once, and writes those bytes as they are; the bytes on the wire are the
//! same as prost's.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use tonic::body::Body;
use tonic::codegen::{http, Body as HttpBody, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Status, Streaming};
use tonic_prost::ProstCodec;
use weft_envoy_api::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest};

use super::server::Ads;
use super::snapshot::Resource;

/// A state-of-the-world `DiscoveryResponse` whose resources are shared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outgoing {
    pub version_info: String,
    pub resources: Vec<Arc<Resource>>,
    pub type_url: String,
    pub nonce: String,
}

// Field numbers of envoy.service.discovery.v3.DiscoveryResponse.
const VERSION_INFO: u32 = 1;
const RESOURCES: u32 = 2;
const TYPE_URL: u32 = 4;
const NONCE: u32 = 5;

impl prost::Message for Outgoing {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.version_info.is_empty() {
            prost::encoding::string::encode(VERSION_INFO, &self.version_info, buf);
        }
        for r in &self.resources {
            encode_key(RESOURCES, WireType::LengthDelimited, buf);
            encode_varint(r.any.len() as u64, buf);
            buf.put_slice(&r.any);
        }
        if !self.type_url.is_empty() {
            prost::encoding::string::encode(TYPE_URL, &self.type_url, buf);
        }
        if !self.nonce.is_empty() {
            prost::encoding::string::encode(NONCE, &self.nonce, buf);
        }
    }

    fn encoded_len(&self) -> usize {
        let string = |tag: u32, s: &str| if s.is_empty() { 0 } else { key_len(tag) + encoded_len_varint(s.len() as u64) + s.len() };
        string(VERSION_INFO, &self.version_info)
            + self.resources.iter().map(|r| key_len(RESOURCES) + encoded_len_varint(r.any.len() as u64) + r.any.len()).sum::<usize>()
            + string(TYPE_URL, &self.type_url)
            + string(NONCE, &self.nonce)
    }

    // The server only sends these.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn clear(&mut self) {
        *self = Outgoing::default();
    }
}

/// `envoy.service.discovery.v3.AggregatedDiscoveryService`, both methods.
#[derive(Clone)]
pub struct AdsServer {
    ads: Arc<Ads>,
}

impl AdsServer {
    pub fn new(ads: Ads) -> Self {
        AdsServer { ads: Arc::new(ads) }
    }
}

impl NamedService for AdsServer {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

/// Requests may be large (a proxy's full list of resource names).
const MAX_REQUEST: usize = 64 << 20;

struct Sotw(Arc<Ads>);
struct Delta(Arc<Ads>);

impl StreamingService<DiscoveryRequest> for Sotw {
    type Response = Outgoing;
    type ResponseStream = super::server::SotwStream;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, Status>;
    fn call(&mut self, request: tonic::Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let ads = self.0.clone();
        Box::pin(async move { Ok(tonic::Response::new(ads.sotw(request.into_inner()))) })
    }
}

impl StreamingService<DeltaDiscoveryRequest> for Delta {
    type Response = DeltaDiscoveryResponse;
    type ResponseStream = super::server::DeltaStream;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, Status>;
    fn call(&mut self, request: tonic::Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let ads = self.0.clone();
        Box::pin(async move { Ok(tonic::Response::new(ads.delta(request.into_inner()))) })
    }
}

impl<B> Service<http::Request<B>> for AdsServer
where
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ads = self.ads.clone();
        match req.uri().path() {
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources" => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<Outgoing, DiscoveryRequest>::default()).apply_max_message_size_config(Some(MAX_REQUEST), None);
                Ok(grpc.streaming(Sotw(ads), req).await)
            }),
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources" => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<DeltaDiscoveryResponse, DeltaDiscoveryRequest>::default())
                    .apply_max_message_size_config(Some(MAX_REQUEST), None);
                Ok(grpc.streaming(Delta(ads), req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use weft_envoy_api::pb::envoy::config::cluster::v3::Cluster;
    use weft_envoy_api::pb::envoy::service::discovery::v3::DiscoveryResponse;

    #[test]
    fn encodes_as_prost_does() {
        let resources: Vec<Arc<Resource>> = ["a", "b"]
            .iter()
            .map(|n| Arc::new(Resource::new(*n, &Cluster { name: n.to_string(), ..Default::default() })))
            .collect();
        let ours = Outgoing { version_info: "v1".into(), resources: resources.clone(), type_url: "t".into(), nonce: "7".into() };
        let theirs = DiscoveryResponse {
            version_info: "v1".into(),
            resources: resources.iter().map(|r| r.body()).collect(),
            type_url: "t".into(),
            nonce: "7".into(),
            ..Default::default()
        };
        assert_eq!(ours.encode_to_vec(), theirs.encode_to_vec());
        assert_eq!(ours.encoded_len(), theirs.encoded_len());
        assert_eq!(Outgoing::default().encode_to_vec(), DiscoveryResponse::default().encode_to_vec());
    }
}
