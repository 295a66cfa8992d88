//! Arbitrary bytes from a peer into our two HTTP/1.1 codecs: as a client's
//! requests to the downstream server (`http::downstream::h1`) and as an
//! upstream's response to the client (`upstream::h1`). Neither may panic
//! or hang, whatever the framing says.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pingora_http::{RequestHeader, ResponseHeader};
use tokio::io::AsyncWriteExt;
use weft_proxy::http::downstream::h1::Server;
use weft_proxy::upstream::h1::Connection;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

fuzz_target!(|data: &[u8]| {
    let Some((side, bytes)) = data.split_first() else { return };
    runtime().block_on(async {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        // The peer's bytes, then its end of stream (what we write back
        // stays in the pipe).
        let _ = theirs.write_all(bytes).await;
        let _ = theirs.shutdown().await;
        if side & 1 == 0 {
            let mut server = Server::new(Box::new(ours));
            for _ in 0..8 {
                if !matches!(server.read_request().await, Ok(true)) {
                    break;
                }
                while let Ok(Some(_)) = server.read_body().await {}
                let Ok(mut resp) = ResponseHeader::build_no_case(200, None) else { return };
                let _ = resp.insert_header("content-length", "1");
                let _ = server.respond(Some(Box::new(resp)), Some(Bytes::from_static(b"x")), true).await;
                if !server.finish().await {
                    break;
                }
            }
        } else {
            let mut client = Connection::new(Box::new(ours), None, None);
            let method = if side & 2 == 0 { "GET" } else { "HEAD" };
            let Ok(req) = RequestHeader::build(method, b"/", None) else { return };
            if client.send(&req, &Bytes::new()).await.is_ok() && client.read_response().await.is_ok() {
                while let Ok(Some(_)) = client.read_body().await {}
                let _ = client.reusable();
            }
        }
        drop(theirs);
    });
});
