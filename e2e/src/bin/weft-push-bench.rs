//! `make bench`, control plane: how long from a file change in the
//! operator's directory until every connected proxy has ACKed the new
//! configuration, for 100 proxies and 1 000 services.
//!
//! ```text
//!  DIR (1 000 ServiceEntry + 2 000 WorkloadEntry + DestinationRules + VirtualServices)
//!    │ edit one VirtualService (mv)                      t0
//!    ▼
//!  weft-operator standalone (release) ─ADS─► 100 simulated sidecars (SotW, ACK on receipt)
//!                                              last ACK of the new route config: t1
//! ```
//! The proxies are in-process gRPC clients that ACK each response on
//! receipt (the envelope decoded, the resources not even copied: real
//! proxies decode in parallel on their own CPUs, these would queue on the
//! bench's), so the number is the control plane's: detect, validate,
//! translate, diff, send. Each proxy is a different workload (its own labels), the worst
//! case for sharing translations.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use weft_envoy_api::pb::envoy::config::core::v3::Node;
use weft_envoy_api::pb::envoy::service::discovery::v3::DiscoveryRequest;
use weft_envoy_api::pb::google::protobuf::{value::Kind as ValueKind, Struct, Value};

const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> Result<()> {
    let services = env_usize("PUSH_SERVICES", 1000);
    let proxies = env_usize("PUSH_PROXIES", 100);
    let rounds = env_usize("PUSH_ROUNDS", 20);
    // What each round edits: a VirtualService (routes change, the default)
    // or, with PUSH_EDIT=dr, a DestinationRule (clusters change).
    // PUSH_DELTA=1: the proxies speak incremental (delta) xDS.
    let delta = std::env::var("PUSH_DELTA").is_ok_and(|v| !v.is_empty() && v != "0");
    let edit = match std::env::var("PUSH_EDIT").as_deref() {
        Ok("dr") => Edit::DestinationRule,
        _ => Edit::VirtualService,
    };
    let dir = std::env::temp_dir().join(format!("weft-push-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    write_mesh(&dir, services)?;
    let xds_port = weft_e2e::free_port();
    let binary = weft_e2e::proxy::repo_root().join("target/release/weft-operator");
    let operator = Guard(
        Command::new(&binary)
            .args(["standalone", "--config-dir"])
            .arg(&dir)
            .args(["--xds-address", &format!("127.0.0.1:{xds_port}"), "--status-address", &format!("127.0.0.1:{}", weft_e2e::free_port()), "--log-level"])
            .arg(std::env::var("PUSH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?,
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let result = rt.block_on(run(&dir, xds_port, services, proxies, rounds, edit, delta, operator.0.id()));
    // The simulated proxies go first, then the operator, then its files.
    rt.shutdown_background();
    drop(operator);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Route configuration versions as proxies ACK them: (proxy, version, when).
type Acks = mpsc::UnboundedSender<(usize, String, Instant)>;

/// A process's CPU time (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After the command: state is field 0, utime 11, stime 12 (clock ticks of 10 ms).
    (ticks(11) + ticks(12)) / 100.0
}

#[derive(Debug, Clone, Copy)]
enum Edit {
    VirtualService,
    DestinationRule,
}

impl Edit {
    /// The type whose ACK shows a proxy has the change.
    fn type_url(self) -> &'static str {
        match self {
            Edit::VirtualService => ROUTE,
            Edit::DestinationRule => CLUSTER,
        }
    }

    /// The edit of round `round`: a file and its new content.
    fn file(self, round: usize) -> (&'static str, String) {
        match self {
            Edit::VirtualService => ("vs-0.yaml", virtual_service(0, 10 + (round % 80) as u32)),
            Edit::DestinationRule => ("dr-0.yaml", destination_rule(0, Some(1 + round))),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(dir: &Path, xds_port: u16, services: usize, proxies: usize, rounds: usize, edit: Edit, delta: bool, operator: u32) -> Result<()> {
    wait_port(xds_port).await?;
    let (tx, mut acks) = mpsc::unbounded_channel();
    let started = Instant::now();
    for p in 0..proxies {
        let tx = tx.clone();
        tokio::spawn(async move {
            let run = if delta { proxy_delta(p, xds_port, edit.type_url(), tx).await } else { proxy(p, xds_port, edit.type_url(), tx).await };
            if let Err(e) = run {
                eprintln!("proxy {p}: {e:#}");
            }
        });
    }
    // Initial sync: every proxy has routes. `held`: the version each
    // proxy ACKed last; a round counts a proxy once it ACKs another.
    let mut synced = BTreeSet::new();
    let mut held = std::collections::HashMap::new();
    while synced.len() < proxies {
        let next = tokio::time::timeout(Duration::from_secs(60), acks.recv()).await;
        let Ok(Some((p, version, _))) = next else {
            anyhow::bail!("initial sync: only {} of {proxies} proxies got routes within 60 s", synced.len());
        };
        synced.insert(p);
        held.insert(p, version);
    }
    let initial = started.elapsed();
    // Then until the proxies are quiet (the first responses of the other
    // types can still change what they hold), for at most 10 s.
    let quiet_by = Instant::now() + Duration::from_secs(10);
    while Instant::now() < quiet_by {
        match tokio::time::timeout(Duration::from_millis(500), acks.recv()).await {
            Ok(Some((p, version, _))) => {
                held.insert(p, version);
            }
            _ => break,
        }
    }
    let mut latencies = Vec::new();
    // When the first proxy had the change: the part of the latency before
    // any proxy could have it (detect, validate, translate).
    let mut firsts = Vec::new();
    let cpu_before = cpu_seconds(operator);
    let own_before = cpu_seconds(std::process::id());
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Ok((p, version, _)) = acks.try_recv() {
            held.insert(p, version);
        }
        let (file, text) = edit.file(round);
        let t0 = Instant::now();
        replace(dir, file, &text)?;
        let mut done = BTreeSet::new();
        let mut last = t0;
        let mut first: Option<Instant> = None;
        while done.len() < proxies {
            let next = tokio::time::timeout(Duration::from_secs(30), acks.recv()).await;
            let Ok(Some((p, version, at))) = next else {
                let missing: Vec<usize> = (0..proxies).filter(|p| !done.contains(p)).collect();
                anyhow::bail!("round {round}: only {} of {proxies} proxies ACKed the change within 30 s (missing {missing:?})", done.len());
            };
            // A late ACK of the version before the edit is not the change.
            if held.get(&p) == Some(&version) {
                continue;
            }
            held.insert(p, version);
            if done.insert(p) {
                last = last.max(at);
                first = Some(first.map_or(at, |f| f.min(at)));
            }
        }
        latencies.push(last.duration_since(t0));
        firsts.push(first.map(|f| f.duration_since(t0)).unwrap_or_default());
    }
    // Includes the operator's idle polling between rounds (a stat of each
    // file once a second), a small part.
    let cpu_per_push = (cpu_seconds(operator) - cpu_before) / rounds.max(1) as f64;
    let own_per_push = (cpu_seconds(std::process::id()) - own_before) / rounds.max(1) as f64;
    latencies.sort();
    let q = |f: f64| latencies[((latencies.len() as f64 * f).ceil() as usize).clamp(1, latencies.len()) - 1];
    println!();
    let what = match edit {
        Edit::VirtualService => "VirtualService",
        Edit::DestinationRule => "DestinationRule",
    };
    let protocol = if delta { "delta" } else { "state of the world" };
    println!("weft-push-bench: {services} services, {proxies} proxies (each its own workload, {protocol} xDS), {rounds} edits of one {what}");
    // Until each proxy first ACKed the watched type (routes come last,
    // clusters first): compare it between runs of one edit kind only.
    let watched = if matches!(edit, Edit::VirtualService) { "routes" } else { "clusters" };
    println!("  all proxies first had {watched:<8} {:>8.1} ms", initial.as_secs_f64() * 1e3);
    println!("  file change -> all ACKed p50  {:>8.1} ms", q(0.50).as_secs_f64() * 1e3);
    println!("  file change -> all ACKed p99  {:>8.1} ms  [< 100]", q(0.99).as_secs_f64() * 1e3);
    println!("  max                           {:>8.1} ms", latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3);
    println!("  operator CPU per push         {:>8.1} ms  (translation and every proxy's responses)", cpu_per_push * 1e3);
    println!("  simulated proxies' CPU        {:>8.1} ms  (all 100 on one thread, sharing the 2 cores)", own_per_push * 1e3);
    if std::env::var_os("PUSH_VERBOSE").is_some() {
        println!("  all (ms): {:?}", latencies.iter().map(|l| l.as_millis()).collect::<Vec<_>>());
        println!("  first proxy (ms): {:?}", firsts.iter().map(|l| l.as_millis()).collect::<Vec<_>>());
    }
    Ok(())
}

/// Simulated proxy `p`'s identity: its own workload, as Istio names it.
fn node(p: usize) -> Node {
    Node {
        id: format!("sidecar~10.9.{}.{}~app-{p}.bench~bench.svc.cluster.local", p / 250, p % 250 + 1),
        metadata: Some(Struct {
            fields: [
                ("NAMESPACE".to_string(), string("bench")),
                (
                    "LABELS".to_string(),
                    Value { kind: Some(ValueKind::StructValue(Struct { fields: [("app".to_string(), string(&format!("app-{p}")))].into() })) },
                ),
            ]
            .into(),
        }),
        ..Default::default()
    }
}

/// One simulated sidecar: subscribes like Envoy (CDS, LDS wildcard; EDS and
/// RDS by the names they use), ACKs every response, reports the ACKs of
/// `watch` (a type URL).
async fn proxy(p: usize, xds_port: u16, watch: &'static str, acks: Acks) -> Result<()> {
    let (tx, rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
    let node = node(p);
    let request = |type_url: &str, names: Vec<String>, r: Option<&Envelope>| DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names,
        version_info: r.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: r.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    };
    tx.send(DiscoveryRequest { node: Some(node), ..request(CLUSTER, vec![], None) })?;
    tx.send(request(LISTENER, vec![], None))?;
    let mut inbound = ads_stream::<_, Envelope>(xds_port, "StreamAggregatedResources", rx).await?;
    let mut eds_names = Vec::new();
    // The last endpoints response: a re-subscription carries its version
    // and nonce, as Envoy's does (so the server need not resend them all).
    let mut last_eds: Option<Envelope> = None;
    let routes = vec!["http_proxy".to_string()];
    while let Some(r) = inbound.message().await? {
        match r.type_url.as_str() {
            CLUSTER => {
                eds_names = decode::<ClusterName>(&r).into_iter().map(|c| c.name).collect();
                tx.send(request(ENDPOINT, eds_names.clone(), last_eds.as_ref()))?;
                tx.send(request(CLUSTER, vec![], Some(&r)))?;
            }
            LISTENER => {
                tx.send(request(ROUTE, routes.clone(), None))?;
                tx.send(request(LISTENER, vec![], Some(&r)))?;
            }
            ENDPOINT => {
                tx.send(request(ENDPOINT, eds_names.clone(), Some(&r)))?;
                last_eds = Some(Envelope { resources: Vec::new(), ..r.clone() });
            }
            ROUTE => {
                tx.send(request(ROUTE, routes.clone(), Some(&r)))?;
            }
            _ => {}
        }
        if r.type_url == watch {
            let _ = acks.send((p, r.version_info.clone(), Instant::now()));
        }
    }
    Ok(())
}

/// Opens the ADS `method` (`StreamAggregatedResources` or
/// `DeltaAggregatedResources`) as a sidecar would, sending what `requests`
/// yields; responses decode as `Resp`.
async fn ads_stream<Req, Resp>(xds_port: u16, method: &'static str, requests: mpsc::UnboundedReceiver<Req>) -> Result<tonic::Streaming<Resp>>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    // Envoy's HTTP/2 windows (256 MiB), as a real sidecar advertises them.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{xds_port}"))?
        .initial_stream_window_size(256 << 20)
        .initial_connection_window_size(256 << 20)
        .connect()
        .await?;
    let mut client = tonic::client::Grpc::new(channel).max_decoding_message_size(256 << 20);
    client.ready().await?;
    let path = format!("/envoy.service.discovery.v3.AggregatedDiscoveryService/{method}");
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path)?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    Ok(client.streaming(tonic::Request::new(UnboundedReceiverStream::new(requests)), path, codec).await?.into_inner())
}

/// A `DiscoveryResponse` as a proxy that only ACKs reads it: the
/// resources are views into the received bytes (no copy), decoded only
/// where the proxy needs their names.
#[derive(Clone, PartialEq, prost::Message)]
struct Envelope {
    #[prost(string, tag = "1")]
    version_info: String,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    resources: Vec<bytes::Bytes>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

/// [`proxy`] over incremental xDS: wildcard CDS and LDS, EDS and RDS
/// subscribed to by name as clusters and listeners arrive; each response
/// ACKed, those of `watch` reported (by nonce: each is a change).
async fn proxy_delta(p: usize, xds_port: u16, watch: &'static str, acks: Acks) -> Result<()> {
    use weft_envoy_api::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
    let request = |type_url: &str, subscribe: Vec<String>, nonce: &str| DeltaDiscoveryRequest {
        type_url: type_url.into(),
        resource_names_subscribe: subscribe,
        response_nonce: nonce.into(),
        ..Default::default()
    };
    tx.send(DeltaDiscoveryRequest { node: Some(node(p)), ..request(CLUSTER, vec![], "") })?;
    tx.send(request(LISTENER, vec![], ""))?;
    let mut inbound = ads_stream::<_, DeltaEnvelope>(xds_port, "DeltaAggregatedResources", rx).await?;
    let mut endpoints = BTreeSet::new();
    let mut routes = false;
    while let Some(r) = inbound.message().await? {
        match r.type_url.as_str() {
            CLUSTER => {
                let new: Vec<String> = r.resources.iter().map(|c| c.name.clone()).filter(|n| !endpoints.contains(n)).collect();
                endpoints.extend(new.iter().cloned());
                if !new.is_empty() {
                    tx.send(request(ENDPOINT, new, ""))?;
                }
            }
            LISTENER if !routes => {
                routes = true;
                tx.send(request(ROUTE, vec!["http_proxy".into()], ""))?;
            }
            _ => {}
        }
        tx.send(request(&r.type_url, vec![], &r.nonce))?;
        if r.type_url == watch {
            let _ = acks.send((p, r.nonce.clone(), Instant::now()));
        }
    }
    Ok(())
}

/// A `DeltaDiscoveryResponse` as [`Envelope`] reads a state-of-the-world
/// one: the resources' names, not their bodies.
#[derive(Clone, PartialEq, prost::Message)]
struct DeltaEnvelope {
    #[prost(message, repeated, tag = "2")]
    resources: Vec<ResourceName>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

/// A delta `Resource`'s name.
#[derive(Clone, PartialEq, prost::Message)]
struct ResourceName {
    #[prost(string, tag = "3")]
    name: String,
}

/// A cluster's name, all the simulated proxies read of it (prost skips
/// the other fields without decoding them).
#[derive(Clone, PartialEq, prost::Message)]
struct ClusterName {
    #[prost(string, tag = "1")]
    name: String,
}

/// Decodes a response's resources.
fn decode<M: prost::Message + Default>(r: &Envelope) -> Vec<M> {
    use prost::Message as _;
    use weft_envoy_api::pb::google::protobuf::Any;
    r.resources.iter().filter_map(|a| Any::decode(a.clone()).ok()).filter_map(|a| M::decode(a.value.as_slice()).ok()).collect()
}

fn string(s: &str) -> Value {
    Value { kind: Some(ValueKind::StringValue(s.into())) }
}

async fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "operator not listening on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn replace(dir: &Path, name: &str, text: &str) -> Result<()> {
    let aside = dir.join(format!(".{name}.tmp"));
    std::fs::write(&aside, text)?;
    std::fs::rename(&aside, dir.join(name))?;
    Ok(())
}

fn virtual_service(i: usize, weight: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: svc-{i}, namespace: bench }}\nspec:\n  hosts: [svc-{i}]\n  http:\n  - route:\n    - {{ destination: {{ host: svc-{i}, subset: v1 }}, weight: {weight} }}\n    - {{ destination: {{ host: svc-{i}, subset: v2 }}, weight: {} }}\n",
        100 - weight
    )
}

/// Service `i`'s rule: subsets v1 and v2, and a connection limit if any.
fn destination_rule(i: usize, max_connections: Option<usize>) -> String {
    let policy = max_connections.map(|n| format!("  trafficPolicy: {{ connectionPool: {{ tcp: {{ maxConnections: {n} }} }} }}\n")).unwrap_or_default();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{ name: svc-{i}, namespace: bench }}\nspec:\n  host: svc-{i}\n{policy}  subsets: [ {{ name: v1, labels: {{ version: v1 }} }}, {{ name: v2, labels: {{ version: v2 }} }} ]\n"
    )
}

/// 1 000 services with two workloads each, a DestinationRule with two
/// subsets for each, and a VirtualService for one in ten.
fn write_mesh(dir: &Path, services: usize) -> Result<()> {
    let mut registry = String::new();
    for i in 0..services {
        let (a, b) = (i / 200, (i % 200) + 1);
        registry.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: svc-{i}, namespace: bench }}\nspec:\n  hosts: [svc-{i}.bench.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [ {{ number: 8080, name: http, protocol: HTTP }} ]\n  workloadSelector: {{ labels: {{ app: svc-{i} }} }}\n---\n"
        ));
        for (v, host) in [("v1", 1), ("v2", 2)] {
            registry.push_str(&format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: svc-{i}-{v}, namespace: bench }}\nspec:\n  address: 127.{}.{a}.{b}\n  labels: {{ app: svc-{i}, version: {v}, security.istio.io/tlsMode: istio }}\n---\n",
                100 + host
            ));
        }
        // The edited one has a file of its own.
        if i > 0 {
            registry.push_str(&destination_rule(i, None));
            registry.push_str("---\n");
        }
    }
    std::fs::write(dir.join("registry.yaml"), registry)?;
    std::fs::write(dir.join("dr-0.yaml"), destination_rule(0, None))?;
    for i in (0..services).step_by(10) {
        std::fs::write(dir.join(format!("vs-{i}.yaml")), virtual_service(i, 50))?;
    }
    Ok(())
}
