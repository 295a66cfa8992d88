//! A raw HTTP/2 client for malformed requests: it writes the HEADERS frame
//! itself (HPACK literals, no Huffman, no indexing), so a test can send
//! what a real client library refuses to (control bytes in `:path`, two
//! `host` headers, connection-specific fields), and reports how the
//! server answered the stream.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Sends one request on stream 1 of a new h2c connection to `port`:
/// `fields` in order (pseudo-headers included, as given), the stream
/// ended by the header. Returns what came back for it: `status N`,
/// `reset N` (RST_STREAM's error code), `goaway N` (the connection closed
/// after a GOAWAY with that code), or `closed`.
pub async fn send(port: u16, fields: &[(&str, &str)]) -> String {
    let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)).await else { return "no connection".into() };
    let mut out = client_start();
    let mut block = Vec::new();
    for (name, value) in fields {
        literal(&mut block, name.as_bytes(), value.as_bytes());
    }
    frame(&mut out, HEADERS, END_HEADERS | END_STREAM, 1, &block);
    if tcp.write_all(&out).await.is_err() {
        return "closed".into();
    }
    match tokio::time::timeout(Duration::from_secs(5), answer(&mut tcp)).await {
        Ok(answer) => answer,
        Err(_) => "no answer".into(),
    }
}

/// Reads frames until one about stream 1 (or the connection) settles it.
async fn answer(tcp: &mut TcpStream) -> String {
    let mut goaway = None;
    let closed = |goaway: Option<u32>| goaway.map_or_else(|| "closed".to_string(), |code| format!("goaway {code}"));
    loop {
        let Some(Frame { kind, stream, payload, .. }) = read_frame(tcp).await else { return closed(goaway) };
        match (kind, stream) {
            (HEADERS, 1) => return format!("status {}", status(&payload)),
            (RST_STREAM, 1) if payload.len() >= 4 => return format!("reset {}", u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])),
            // A graceful GOAWAY (NO_ERROR) may precede the answer; the
            // connection's end tells.
            (GOAWAY, 0) if payload.len() >= 8 => goaway = Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]])),
            _ => {}
        }
    }
}

/// The `:status` of a response header block, when the server sent it as
/// an index into HPACK's static table (both proxies do for the common
/// statuses) or as a literal with an indexed name.
fn status(block: &[u8]) -> String {
    let indexed = [(8, "200"), (9, "204"), (10, "206"), (11, "304"), (12, "400"), (13, "404"), (14, "500")];
    let Some(&first) = block.first() else { return "?".into() };
    if first & 0x80 != 0 {
        let index = first & 0x7f;
        return indexed.iter().find(|(i, _)| *i == index).map_or_else(|| format!("index {index}"), |(_, s)| s.to_string());
    }
    // A literal with a name index (8..14: `:status`) and a raw value.
    match (block.get(1), block.get(2..5)) {
        (Some(&len), Some(value)) if len & 0x80 == 0 && len == 3 => String::from_utf8_lossy(value).into_owned(),
        _ => "?".into(),
    }
}

/// What a client sends first: the preface and empty SETTINGS.
fn client_start() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    out
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// The next frame; `None` when the connection ends first.
async fn read_frame<S: tokio::io::AsyncRead + Unpin>(io: &mut S) -> Option<Frame> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.ok()?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some(Frame { kind: head[3], flags: head[4], stream, payload })
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A literal header field without indexing, new name (RFC 7541 §6.2.2).
fn literal(block: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    block.push(0x00);
    string(block, name);
    string(block, value);
}

/// A raw string: its length (7-bit prefix integer) and bytes.
fn string(block: &mut Vec<u8>, s: &[u8]) {
    let mut len = s.len();
    if len < 127 {
        block.push(len as u8);
    } else {
        block.push(127);
        len -= 127;
        while len >= 128 {
            block.push((len % 128) as u8 | 0x80);
            len /= 128;
        }
        block.push(len as u8);
    }
    block.extend_from_slice(s);
}

/// What a peer's side of an HTTP/2 connection announced in its first
/// frames: SETTINGS values by identifier, and the connection window it
/// opened (65 535 plus its first WINDOW_UPDATE on stream 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub settings: Vec<(u16, u32)>,
    pub connection_window: u32,
}

impl Announced {
    pub fn setting(&self, id: u16) -> Option<u32> {
        self.settings.iter().find(|(i, _)| *i == id).map(|(_, v)| *v)
    }
}

pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const INITIAL_WINDOW_SIZE: u16 = 0x4;

/// Reads frames from `io` for up to `wait` (or until it closes): the
/// first SETTINGS that is not an ACK, and the first stream-0
/// WINDOW_UPDATE.
pub async fn announced<S: tokio::io::AsyncRead + Unpin>(io: &mut S, wait: Duration) -> Announced {
    let mut out = Announced { settings: Vec::new(), connection_window: 65_535 };
    let (mut saw_settings, mut saw_window) = (false, false);
    let deadline = tokio::time::Instant::now() + wait;
    while !(saw_settings && saw_window) {
        let Ok(Some(Frame { kind, flags, stream, payload })) = tokio::time::timeout_at(deadline, read_frame(io)).await else { break };
        match kind {
            SETTINGS if flags & 0x1 == 0 && !saw_settings => {
                saw_settings = true;
                out.settings = payload.chunks_exact(6).map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]]))).collect();
            }
            WINDOW_UPDATE if stream == 0 && !saw_window && payload.len() >= 4 => {
                saw_window = true;
                out.connection_window += u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
            }
            _ => {}
        }
    }
    out
}

/// What a server at `port` announces to a new h2c client.
pub async fn server_announces(port: u16) -> Announced {
    let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)).await else { return Announced { settings: Vec::new(), connection_window: 0 } };
    let _ = tcp.write_all(&client_start()).await;
    announced(&mut tcp, Duration::from_secs(1)).await
}
