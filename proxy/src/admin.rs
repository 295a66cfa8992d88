//! The admin listener: `/ready`, `/stats/prometheus`, `/config_dump`
//! (static and ADS resources, `?include_eds`), `/clusters`,
//! `/quitquitquit`, answering as Envoy's admin does.

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
    /// When the static resources were loaded (their `last_updated`).
    pub started: std::time::SystemTime,
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
                let include_eds = session.req_header().uri.query().is_some_and(|q| q.split('&').any(|p| p == "include_eds" || p.starts_with("include_eds=")));
                let dump = self.config_dump(include_eds);
                (200, "application/json", Bytes::from(serde_json::to_vec_pretty(&dump).unwrap_or_default()))
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
    /// Envoy's `/config_dump`: the bootstrap, then clusters, listeners and
    /// route configurations (and with `include_eds` endpoints), static
    /// ones from the bootstrap and dynamic ones as the ADS stream last
    /// delivered them, each with its version and when it last changed.
    fn config_dump(&self, include_eds: bool) -> serde_json::Value {
        use serde_json::{json, Value};
        let bootstrap = self.bootstrap_json.load();
        let started = timestamp(self.started);
        let statics = |kind: &str, field: &str, type_url: &str| -> Vec<Value> {
            let items = bootstrap.get("static_resources").and_then(|r| r.get(kind)).and_then(Value::as_array).cloned().unwrap_or_default();
            items
                .into_iter()
                .map(|mut item| {
                    if let Value::Object(m) = &mut item {
                        m.insert("@type".into(), type_url.into());
                    }
                    json!({ field: item, "last_updated": started })
                })
                .collect()
        };
        let config = self.config.load();
        let held = config.xds.clone().unwrap_or_default();
        let loader = dump_loader();
        let version = |kind: Kind| held.versions.get(&kind).cloned().unwrap_or_default();
        // (version, last_updated) of one dynamic resource.
        let stamp = |kind: Kind, name: &str| {
            let s = held.stamps.get(&kind).and_then(|s| s.get(name));
            (s.map(|s| s.version.clone()).unwrap_or_default(), s.map(|s| timestamp(s.updated)).unwrap_or_default())
        };
        // One kind's dynamic resources by name, each written by `entry`
        // from (name, version, last_updated, the resource as JSON).
        let dynamic = |kind: Kind, mut items: Vec<(&str, Value)>, entry: &dyn Fn(&str, String, String, Value) -> Value| -> Vec<Value> {
            items.sort_by(|a, b| a.0.cmp(b.0));
            items
                .into_iter()
                .map(|(name, resource)| {
                    let (v, at) = stamp(kind, name);
                    entry(name, v, at, resource)
                })
                .collect()
        };
        let r = &held.resources;
        let dynamic_clusters = dynamic(Kind::Cluster, r.clusters.iter().map(|c| (c.name.as_str(), loader.dump_json(c))).collect(), &|_, v, at, c| {
            json!({ "version_info": v, "cluster": c, "last_updated": at })
        });
        let dynamic_listeners = dynamic(Kind::Listener, r.listeners.iter().map(|l| (l.name.as_str(), loader.dump_json(l))).collect(), &|name, v, at, l| {
            json!({ "name": name, "active_state": { "version_info": v, "listener": l, "last_updated": at } })
        });
        let dynamic_routes = dynamic(Kind::Route, r.routes.iter().map(|(n, rc)| (n.as_str(), loader.dump_json(rc))).collect(), &|_, v, at, rc| {
            json!({ "version_info": v, "route_config": rc, "last_updated": at })
        });
        let mut configs = vec![
            json!({ "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": **bootstrap, "last_updated": started }),
            section(
                "ClustersConfigDump",
                &version(Kind::Cluster),
                [("static_clusters", statics("clusters", "cluster", CLUSTER)), ("dynamic_active_clusters", dynamic_clusters)],
            ),
            section(
                "ListenersConfigDump",
                &version(Kind::Listener),
                [("static_listeners", statics("listeners", "listener", LISTENER)), ("dynamic_listeners", dynamic_listeners)],
            ),
            section("RoutesConfigDump", "", [("dynamic_route_configs", dynamic_routes)]),
        ];
        if include_eds {
            // As Envoy: no version or time (it writes these from its host
            // set; we write the assignment as received).
            let endpoints = dynamic(Kind::Endpoint, r.endpoints.iter().map(|(n, e)| (n.as_str(), loader.dump_json(e))).collect(), &|_, _, _, e| {
                json!({ "endpoint_config": e })
            });
            configs.push(section("EndpointsConfigDump", "", [("dynamic_endpoint_configs", endpoints)]));
        }
        json!({ "configs": configs })
    }

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

use crate::xds::Kind;

const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// One `envoy.admin.v3.*ConfigDump`: empty lists and versions left out, as
/// proto3 JSON leaves them.
fn section<const N: usize>(kind: &str, version: &str, lists: [(&str, Vec<serde_json::Value>); N]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("@type".into(), format!("type.googleapis.com/envoy.admin.v3.{kind}").into());
    if !version.is_empty() {
        m.insert("version_info".into(), version.into());
    }
    for (name, items) in lists {
        if !items.is_empty() {
            m.insert(name.into(), items.into());
        }
    }
    serde_json::Value::Object(m)
}

/// RFC 3339 in UTC with milliseconds, as protobuf's JSON writes a Timestamp.
fn timestamp(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The descriptors to write resources as JSON, loaded at the first dump
/// (tens of MB: not for a proxy that is never asked).
fn dump_loader() -> &'static crate::bootstrap::Loader {
    static LOADER: std::sync::OnceLock<crate::bootstrap::Loader> = std::sync::OnceLock::new();
    LOADER.get_or_init(crate::bootstrap::Loader::new)
}
