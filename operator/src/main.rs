//! `weft-operator`: the control plane's command line.


/// jemalloc: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use weft_operator::bootstrap::{self, Identity};
use weft_operator::xds::{Hub, Role};
use weft_operator::{standalone, validate};

#[derive(Parser)]
#[command(
    name = "weft-operator",
    about = "Istio-compatible resources in, Envoy v3 xDS out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve xDS for the resources in a directory of YAML files, following
    /// its changes (no Kubernetes).
    Standalone {
        #[arg(long)]
        config_dir: std::path::PathBuf,
        /// Where proxies connect (Istio's plaintext xDS port by default).
        #[arg(long, default_value = "127.0.0.1:15010")]
        xds_address: SocketAddr,
        /// `/debug/status`: each resource's condition and validation
        /// messages, and the proxies' NACKs (istiod's debug port).
        #[arg(long, default_value = "127.0.0.1:15014")]
        status_address: SocketAddr,
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Check resources like `istioctl validate`: every problem with its
    /// resource and field path; exit 1 when any is an error.
    Validate {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
    },
    /// Print the Envoy v3 bootstrap that connects one proxy (weft-proxy or
    /// Envoy) to the operator.
    Bootstrap {
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long)]
        workload: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// The proxy's IP, as in Istio's node id.
        #[arg(long, default_value = "127.0.0.1")]
        ip: String,
        /// Workload labels, `key=value`, repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// The operator's xDS address.
        #[arg(long, default_value = "127.0.0.1:15010")]
        xds_address: SocketAddr,
        #[arg(long, default_value_t = 15000)]
        admin_port: u16,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Sidecar,
    Gateway,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Standalone { config_dir, xds_address, status_address, log_level } => {
            init_logging(&log_level);
            if !config_dir.is_dir() {
                bail!("--config-dir {}: not a directory", config_dir.display());
            }
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            runtime.block_on(async move {
                let hub = Hub::new(std::sync::Arc::new(|_: &weft_operator::xds::Proxy| weft_operator::xds::Snapshot::default()));
                let listener = tokio::net::TcpListener::bind(xds_address)
                    .await
                    .map_err(|e| anyhow::anyhow!("--xds-address {xds_address}: {e}"))?;
                let shutdown = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                let status_listener = tokio::net::TcpListener::bind(status_address)
                    .await
                    .map_err(|e| anyhow::anyhow!("--status-address {status_address}: {e}"))?;
                let statuses = weft_operator::status::Statuses::default();
                tokio::spawn(weft_operator::status::serve(status_listener, statuses.clone(), hub.clone()));
                tokio::spawn(statuses.clone().follow(hub.clone()));
                tokio::spawn(standalone::watch(config_dir, hub.clone(), statuses));
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    r = weft_operator::xds::server::serve(hub, listener, shutdown) => r?,
                    _ = term.recv() => {}
                }
                Ok::<_, anyhow::Error>(())
            })?;
        }
        Command::Validate { paths } => {
            let mut resources = Vec::new();
            let mut unreadable = 0;
            for path in &paths {
                let files = if path.is_dir() { standalone::files(path) } else { vec![path.clone()] };
                for file in files {
                    match standalone::read(&file) {
                        Ok(r) => resources.extend(r),
                        Err(e) => {
                            println!("Error {e}");
                            unreadable += 1;
                        }
                    }
                }
            }
            let validated = validate::validate(&resources);
            for f in &validated.findings {
                println!("{f}");
            }
            let errors = validated.errors().count() + unreadable;
            if errors > 0 {
                bail!("{errors} error(s) in {} resource(s)", resources.len());
            }
            println!("{} resource(s) valid", resources.len());
        }
        Command::Bootstrap {
            role,
            workload,
            namespace,
            ip,
            labels,
            xds_address,
            admin_port,
        } => {
            let labels = parse_labels(&labels)?;
            let role = match role {
                RoleArg::Sidecar => Role::Sidecar,
                RoleArg::Gateway => Role::Gateway,
            };
            let id = Identity {
                role,
                workload,
                namespace,
                ip,
                labels,
                xds: xds_address,
                admin_port,
            };
            println!("{}", serde_json::to_string_pretty(&bootstrap::render(&id))?);
        }
    }
    Ok(())
}

fn parse_labels(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for arg in args {
        let Some((k, v)) = arg.split_once('=') else {
            bail!("--label {arg:?}: expected KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--label {arg:?}: empty key");
        }
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            bail!("--label {k}: given twice");
        }
    }
    Ok(labels)
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
