//! `make demo`: Bookinfo on the mesh, on 127.0.0.1, until Ctrl-C.

use weft_e2e::demo::{Demo, GATEWAY_PORT};

fn main() -> anyhow::Result<()> {
    let root = std::fs::canonicalize(weft_e2e::proxy::repo_root())?;
    let work = root.join("target/demo");
    println!("starting weft-operator, 6 Bookinfo workloads with weft-proxy sidecars and the ingress gateway ...");
    let demo = Demo::start(&work)?;
    let config = demo.config_dir.display();
    let rules = root.join("config/samples/bookinfo-rules");
    let rules = rules.display();
    println!(
        "
Bookinfo is up. The mesh's configuration is {config} (the operator follows edits at once).

  open  http://127.0.0.1:{GATEWAY_PORT}/productpage     reload: reviews v1 (no stars) 80%, v2 (black) 10%, v3 (red) 10%
  curl -s 127.0.0.1:{GATEWAY_PORT}/productpage | grep 'Reviews served by'
  curl -s 127.0.0.1:{GATEWAY_PORT}/api/v1/products/0/reviews

Switch rules:
  cp {rules}/reviews-retries.yaml {config}/reviews-80-10-10.yaml   # all to v2, retried on gateway errors
  cp {rules}/ratings-test-delay.yaml {config}/                      # 2 s delay to ratings for user jason (log in as jason)
  cp config/samples/bookinfo/reviews-80-10-10.yaml {config}/          # back to 80/10/10
  ./target/debug/weft-operator validate {config}                      # check a change before making it

Status: curl -s 127.0.0.1:15014/debug/status   (each resource's Accepted condition and problems, proxies, NACKs)
Admin: gateway http://127.0.0.1:15000 (/stats/prometheus, /clusters, /config_dump); sidecars 15100-15105.
Logs: {logs}. Ctrl-C stops everything.",
        logs = demo.log_dir.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<_, anyhow::Error>(())
    })?;
    println!("stopping ...");
    drop(demo);
    Ok(())
}
