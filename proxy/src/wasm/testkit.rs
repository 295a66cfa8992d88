//! A plugin on weft-proxy's wasm host, in-process, for plugin authors'
//! tests: no proxy, no upstream, no sockets besides the mocked callout
//! services. The plugin runs exactly as it does in the proxy (same host
//! functions, same request and response phases, same failure handling).
//!
//! ```no_run
//! use weft_proxy::wasm::testkit::{Plugin, Reply};
//!
//! let wasm = std::fs::read("target/wasm/auth.wasm").unwrap();
//! let plugin = Plugin::builder(&wasm, r#"{"cluster": "auth"}"#)
//!     .callout("auth", |req| if req.header("authorization") == Some("Bearer ok") { Reply::new(200) } else { Reply::new(401) })
//!     .start()
//!     .unwrap();
//! let exchange = plugin.request("GET", "/", &[], b"");
//! assert_eq!(exchange.reply().map(|r| r.status), Some(403));
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_envoy_api::pb::envoy::config::cluster::v3 as xds_cluster;
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;
use weft_envoy_api::pb::envoy::config::endpoint::v3 as xds_endpoint;
use weft_envoy_api::pb::envoy::extensions::wasm::v3 as xds_wasm;
use weft_envoy_api::pb::google::protobuf::Any;

use super::properties::StreamInfo;
use super::{Encoder, Filter, Stream};
use crate::model::Cluster;

/// A response: what a mocked service answers, or what the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: Vec::new() }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }
}

/// A request as a mocked callout service or the upstream sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub struct Builder<'a> {
    wasm: &'a [u8],
    configuration: String,
    callouts: Vec<(String, Handler)>,
}

impl Builder<'_> {
    /// Serves the plugin's HTTP callouts to `cluster` with `handler`.
    pub fn callout(mut self, cluster: &str, handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        self.callouts.push((cluster.to_string(), Arc::new(handler)));
        self
    }

    /// Starts the plugin (`proxy_on_vm_start`, `proxy_on_configure`);
    /// the error is the one the proxy would reject the config with.
    pub fn start(self) -> Result<Plugin, String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let mut clusters = HashMap::new();
        for (name, handler) in self.callouts {
            let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).map_err(|e| e.to_string())?;
            let port = listener.local_addr().map_err(|e| e.to_string())?.port();
            rt.spawn(serve(listener, handler));
            let cluster = Cluster::compile(&static_cluster(&name, port), &format!("callout cluster {name}")).map_err(|e| e.to_string())?;
            clusters.insert(name, Arc::new(cluster));
        }
        let config = xds_wasm::PluginConfig {
            name: "test".into(),
            configuration: Some(Any {
                type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
                value: weft_envoy_api::prost::Message::encode_to_vec(&self.configuration),
            }),
            vm: Some(xds_wasm::plugin_config::Vm::VmConfig(xds_wasm::VmConfig {
                code: Some(xds_core::AsyncDataSource {
                    specifier: Some(xds_core::async_data_source::Specifier::Local(xds_core::DataSource {
                        specifier: Some(xds_core::data_source::Specifier::InlineBytes(self.wasm.to_vec())),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let plugin = super::plugin::Plugin::compile(&config, "plugin", &clusters).map_err(|e| e.to_string())?;
        Ok(Plugin { filter: Filter { plugin }, rt })
    }
}

/// A started plugin.
pub struct Plugin {
    filter: Filter,
    rt: tokio::runtime::Runtime,
}

impl Plugin {
    pub fn builder<'a>(wasm: &'a [u8], configuration: &str) -> Builder<'a> {
        Builder { wasm, configuration: configuration.to_string(), callouts: Vec::new() }
    }

    /// Runs a request through the plugin's request phase.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Exchange<'_> {
        let outcome = self.rt.block_on(async {
            let mut req = RequestHeader::build(method, path.as_bytes(), None).map_err(|e| e.to_string())?;
            for (k, v) in headers {
                req.append_header(k.to_ascii_lowercase(), *v).map_err(|e| e.to_string())?;
            }
            let info = Arc::new(StreamInfo { protocol: "HTTP/1.1", ..Default::default() });
            let mut streams = Vec::new();
            let mut verdict = self.filter.on_request(&mut req, !body.is_empty(), &info, &mut streams).await;
            // The body in one piece, through the body callbacks as the
            // router sends it (the headers as they went, readable).
            let mut sent = Bytes::new();
            if verdict.is_ok() && !body.is_empty() {
                super::stream::share_request(&streams, req.clone());
                match super::stream::Decoder::new(&streams).body(Some(Bytes::copy_from_slice(body)), true).await {
                    Ok(out) => sent = out.unwrap_or_default(),
                    Err(stop) => verdict = Err(stop),
                }
            }
            // What went upstream, or what a reply ended: later callbacks read it.
            let upstream = verdict.is_ok().then(|| seen(&req, sent.to_vec()));
            super::stream::share_request(&streams, req);
            Ok::<_, String>((upstream, streams, verdict))
        });
        match outcome {
            Ok((upstream, streams, Ok(()))) => Exchange { plugin: self, upstream, reply: None, streams },
            // A reset stream: nothing went upstream and nothing came back.
            Ok((_, streams, Err(super::stream::Stop::Reset))) => Exchange { plugin: self, upstream: None, reply: None, streams },
            Ok((_, streams, Err(super::stream::Stop::Reply(local)))) => {
                let reply = Reply {
                    status: local.status,
                    headers: local.extra_headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect(),
                    body: local.body.to_vec(),
                };
                Exchange { plugin: self, upstream: None, reply: Some(reply), streams }
            }
            Err(e) => Exchange { plugin: self, upstream: None, reply: Some(Reply::new(400).with_body(e)), streams: Vec::new() },
        }
    }
}

/// What the client gets when a plugin ends the response: its reply, or
/// for a reset stream no response, which status 0 stands for.
fn stopped(stop: super::stream::Stop) -> Reply {
    match stop {
        super::stream::Stop::Reply(r) => Reply { status: r.status, headers: Vec::new(), body: r.body.to_vec() },
        super::stream::Stop::Reset => Reply::new(0),
    }
}

/// One request through the plugin: what went upstream (or the reply the
/// plugin made), then the response phase.
pub struct Exchange<'a> {
    plugin: &'a Plugin,
    upstream: Option<Seen>,
    reply: Option<Reply>,
    streams: Vec<Stream>,
}

impl Exchange<'_> {
    /// The request as the upstream would get it; `None` when the plugin
    /// answered itself.
    pub fn upstream(&self) -> Option<&Seen> {
        self.upstream.as_ref()
    }

    /// The plugin's own reply (`proxy_send_local_response`), if it made one.
    pub fn reply(&self) -> Option<&Reply> {
        self.reply.as_ref()
    }

    /// Runs the upstream's response through the plugin's response phase
    /// and returns what the client gets.
    pub fn respond(self, upstream: Reply) -> Reply {
        self.plugin.rt.block_on(async {
            let Ok(mut resp) = ResponseHeader::build(upstream.status, None) else { return Reply::new(502) };
            for (k, v) in &upstream.headers {
                let _ = resp.append_header(k.to_ascii_lowercase(), v.as_str());
            }
            let mut encoder = Encoder::new(&self.streams);
            let end = upstream.body.is_empty();
            if let Err(stop) = encoder.headers(&mut resp, end).await {
                return stopped(stop);
            }
            let mut body = Vec::new();
            if !end {
                match encoder.body(Some(&mut resp), Some(Bytes::from(upstream.body)), true).await {
                    Ok(Some(b)) => body = b.to_vec(),
                    Ok(None) => {}
                    Err(stop) => return stopped(stop),
                }
            }
            encoder.response_sent(&resp);
            Reply {
                status: resp.status.as_u16(),
                headers: resp.headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect(),
                body,
            }
        })
    }
}

fn seen(req: &RequestHeader, body: Vec<u8>) -> Seen {
    Seen {
        method: req.method.to_string(),
        path: String::from_utf8_lossy(req.raw_path()).into_owned(),
        headers: req.headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect(),
        body,
    }
}

fn static_cluster(name: &str, port: u16) -> xds_cluster::Cluster {
    use xds_cluster::cluster::{ClusterDiscoveryType, DiscoveryType};
    let address = xds_core::Address {
        address: Some(xds_core::address::Address::SocketAddress(xds_core::SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(xds_core::socket_address::PortSpecifier::PortValue(port.into())),
            ..Default::default()
        })),
    };
    xds_cluster::Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(xds_endpoint::ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![xds_endpoint::LocalityLbEndpoints {
                lb_endpoints: vec![xds_endpoint::LbEndpoint {
                    host_identifier: Some(xds_endpoint::lb_endpoint::HostIdentifier::Endpoint(xds_endpoint::Endpoint {
                        address: Some(address),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A mocked callout service: HTTP/1.1, one request per connection.
async fn serve(listener: tokio::net::TcpListener, handler: Handler) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        let handler = handler.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body_start) = loop {
                let Ok(n) = tcp.read(&mut chunk).await else { return };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (String::from_utf8_lossy(&buf[..at]).into_owned(), at + 4);
                }
            };
            let mut lines = head.split("\r\n");
            let mut first = lines.next().unwrap_or_default().split(' ');
            let (method, path) = (first.next().unwrap_or_default().to_string(), first.next().unwrap_or_default().to_string());
            let headers: Vec<(String, String)> =
                lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
            let length = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok()).unwrap_or(0);
            let mut body = buf[body_start..].to_vec();
            while body.len() < length {
                let Ok(n) = tcp.read(&mut chunk).await else { return };
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            let reply = handler(&Seen { method, path, headers, body });
            let mut out = format!("HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n", reply.status, reply.body.len());
            for (k, v) in &reply.headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(&reply.body);
            let _ = tcp.write_all(&bytes).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: &str = include_str!("../../../e2e/tests/all/wasm/probe.wat");

    #[test]
    fn runs_a_plugin_without_a_proxy() {
        let wasm = wat::parse_str(PROBE).expect("probe compiles");
        let plugin = Plugin::builder(&wasm, "tagged").start().expect("starts");
        let ex = plugin.request("GET", "/", &[("x-other", "1")], b"");
        assert_eq!(ex.upstream().and_then(|u| u.header("x-wasm")), Some("tagged"));
        let reply = ex.respond(Reply::new(200).with_body("ok"));
        assert_eq!((reply.status, reply.header("x-wasm")), (200, Some("tagged")));
        let denied = plugin.request("GET", "/", &[("x-deny", "1")], b"");
        assert_eq!(denied.reply().map(|r| (r.status, r.body.as_slice())), Some((403, &b"denied by probe"[..])));
        assert!(Plugin::builder(&wasm, "").start().is_err_and(|e| e.contains("proxy_on_configure returned false")));
    }
}
