//! `weft-operator`: the control plane's command line.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use weft_operator::bootstrap::{self, Identity};
use weft_operator::xds::Role;

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
