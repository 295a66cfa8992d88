//! `upstream NAME=ADDR...`: runs the test kit's recording upstreams as a
//! process, for the demo and benchmarks.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut servers = Vec::new();
    for arg in std::env::args().skip(1) {
        let (name, addr) = arg
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("expected NAME=ADDR, got {arg}"))?;
        servers.push(weft_e2e::Upstream::start_on(name, addr.parse()?).await?);
        println!("upstream {name} on {addr}");
    }
    if servers.is_empty() {
        anyhow::bail!("usage: upstream NAME=ADDR [NAME=ADDR...]");
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
