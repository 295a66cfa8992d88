//! The admin listener: `/ready`, `/stats/prometheus`, `/config_dump`,
//! `/clusters`, `/quitquitquit`, answering as Envoy's admin does.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::apps::{HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;

use crate::model::Config;

pub struct Admin {
    pub config: Arc<ArcSwap<Config>>,
    /// The loaded bootstrap as JSON, for `/config_dump`.
    pub bootstrap_json: Arc<ArcSwap<serde_json::Value>>,
    pub quit: tokio::sync::mpsc::UnboundedSender<()>,
    /// Initialized: `/ready` answers 200 LIVE.
    pub live: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl HttpServerApp for Admin {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !session.read_request().await.ok()? {
            return None;
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let (status, content_type, body) = match path.as_str() {
            "/ready" if self.live.load(std::sync::atomic::Ordering::Relaxed) => (
                200,
                "text/plain; charset=UTF-8",
                Bytes::from_static(b"LIVE\n"),
            ),
            "/ready" => (
                503,
                "text/plain; charset=UTF-8",
                Bytes::from_static(b"PRE_INITIALIZING\n"),
            ),
            "/stats/prometheus" => (
                200,
                "text/plain; charset=UTF-8",
                Bytes::from([crate::stats::prometheus_text(), crate::wasm::prometheus().into_bytes()].concat()),
            ),
            "/config_dump" => {
                let dump = serde_json::json!({
                    "configs": [{
                        "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
                        "bootstrap": **self.bootstrap_json.load(),
                    }]
                });
                (
                    200,
                    "application/json",
                    Bytes::from(serde_json::to_vec_pretty(&dump).unwrap_or_default()),
                )
            }
            "/clusters" => (
                200,
                "text/plain; charset=UTF-8",
                Bytes::from(self.clusters_text()),
            ),
            "/quitquitquit" if method == http::Method::POST => {
                let _ = self.quit.send(());
                (
                    200,
                    "text/plain; charset=UTF-8",
                    Bytes::from_static(b"OK\n"),
                )
            }
            "/quitquitquit" => (
                405,
                "text/plain; charset=UTF-8",
                Bytes::from_static(b"This endpoint requires POST\n"),
            ),
            _ => (
                404,
                "text/plain; charset=UTF-8",
                Bytes::from_static(b"invalid path\n"),
            ),
        };
        let mut resp = ResponseHeader::build(status, Some(3)).ok()?;
        resp.insert_header("content-type", content_type).ok()?;
        resp.insert_header("content-length", body.len().to_string())
            .ok()?;
        session.write_response_header(Box::new(resp)).await.ok()?;
        session.write_response_body(body, true).await.ok()?;
        let settings = pingora_core::apps::HttpPersistentSettings::for_session(&session);
        let reusable = session.finish().await.ok()??;
        Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
    }
}

impl Admin {
    /// Envoy's text format: `cluster::host:port::stat::value`.
    fn clusters_text(&self) -> String {
        let config = self.config.load();
        let mut names: Vec<_> = config.clusters.keys().collect();
        names.sort();
        let mut out = String::new();
        for name in names {
            let c = &config.clusters[name];
            for host in c.hosts.load().hosts.iter() {
                let ep = host.addr;
                out.push_str(&format!("{name}::{ep}::health_flags::healthy\n"));
                out.push_str(&format!("{name}::{ep}::weight::1\n"));
            }
        }
        out
    }
}
