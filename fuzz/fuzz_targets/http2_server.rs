//! Arbitrary bytes from a client, after the HTTP/2 preface, into our
//! HTTP/2 server (`http::downstream::h2`): whatever frames they make, each
//! stream accepted is served (its body and trailers read, a response with
//! trailers sent) and nothing panics or hangs.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pingora_http::ResponseHeader;
use tokio::io::AsyncWriteExt;
use weft_proxy::http::downstream::h2::{accept, Limits, Server};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

async fn serve(mut server: Server) {
    while let Ok(Some(_)) = server.read_body().await {}
    let mut trailers = http::HeaderMap::new();
    if let Some(t) = server.take_trailers() {
        trailers.insert("x-trailers", http::HeaderValue::from(t.len()));
    }
    let Ok(resp) = ResponseHeader::build_no_case(200, None) else { return };
    let _ = server.respond(Some(Box::new(resp)), Some(Bytes::from_static(b"x")), true, Some(trailers)).await;
    server.finish();
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let _ = theirs.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let _ = theirs.write_all(data).await;
        let _ = theirs.shutdown().await;
        let (_closing, watch) = tokio::sync::watch::channel(false);
        let limits = Limits { max_header_bytes: 60 * 1024, options: Default::default() };
        let served = accept(Box::new(ours), limits, watch, |server| {
            tokio::spawn(serve(server));
        });
        // The client's bytes end: the connection ends soon after (a
        // stream waiting on a window it will never get is dropped here).
        let _ = tokio::time::timeout(Duration::from_secs(2), served).await;
        drop(theirs);
    });
});
