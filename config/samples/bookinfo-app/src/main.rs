//! `bookinfo`: one of Istio's Bookinfo services, chosen on the command line.
//!
//! ```text
//! bookinfo productpage [--details URL] [--reviews URL]
//! bookinfo reviews --version v2 [--ratings URL]
//! bookinfo details | ratings
//!   common: [--listen 0.0.0.0:9080] [--workload NAME]
//! ```
//! Outbound calls honour `HTTP_PROXY` / `NO_PROXY`: under the mesh the
//! sidecar is the app's proxy. Stops cleanly on SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Parser;
use weft_bookinfo::{Config, Service, Version};

#[derive(Parser)]
#[command(
    name = "bookinfo",
    about = "Istio's Bookinfo services, for the Weft mesh demo"
)]
struct Cli {
    /// The service to run.
    #[arg(value_enum)]
    service: Service,
    /// The service version; reviews v1 shows no stars, v2 black, v3 red.
    #[arg(long, value_enum, default_value = "v1")]
    version: Version,
    #[arg(long, default_value = "0.0.0.0:9080")]
    listen: SocketAddr,
    /// The name reviews reports as its `podname` [default: $HOSTNAME, else
    /// SERVICE-VERSION].
    #[arg(long)]
    workload: Option<String>,
    /// Base URL of details (productpage calls it).
    #[arg(long, default_value = "http://details:9080")]
    details: String,
    /// Base URL of reviews (productpage calls it).
    #[arg(long, default_value = "http://reviews:9080")]
    reviews: String,
    /// Base URL of ratings (reviews v2/v3 and productpage's API call it).
    #[arg(long, default_value = "http://ratings:9080")]
    ratings: String,
    /// A tracing filter, e.g. `info` or `weft_bookinfo=debug`.
    #[arg(long, default_value = "info")]
    log_level: String,
}

impl Cli {
    fn config(self) -> Config {
        let defaults = Config::new(self.service);
        let workload = self
            .workload
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("{}-{}", self.service.name(), self.version.name()));
        Config {
            version: self.version,
            workload,
            cluster: std::env::var("CLUSTER_NAME").ok(),
            details_url: self.details.trim_end_matches('/').to_owned(),
            reviews_url: self.reviews.trim_end_matches('/').to_owned(),
            ratings_url: self.ratings.trim_end_matches('/').to_owned(),
            ..defaults
        }
    }
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bookinfo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(cli: Cli) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log_level)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let listen = cli.listen;
    let config = cli.config();
    tracing::info!(
        service = config.service.name(),
        version = config.version.name(),
        workload = %config.workload,
        "starting"
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        }
    };
    weft_bookinfo::serve(listener, config, shutdown).await?;
    Ok(())
}
