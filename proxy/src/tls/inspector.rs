//! Envoy's `tls_inspector` listener filter: reads the first bytes of a
//! connection to learn whether it is TLS and, from the ClientHello, the
//! requested server name (SNI) and ALPN protocols, so a filter chain can be
//! chosen before the handshake. The bytes read are replayed to whatever
//! serves the connection.
//!
//! Only the two extensions we need are decoded; every other extension is
//! skipped by its length, so clients sending newer extensions still match.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Envoy's default `listener_filters_timeout`.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// One TLS record: a ClientHello spread over several records is treated as
/// TLS without SNI/ALPN.
const MAX_RECORD: usize = 5 + 16384;

/// What the inspector learned about a connection.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Hello {
    pub tls: bool,
    pub server_name: Option<String>,
    pub alpn: Vec<String>,
}

impl Hello {
    /// Envoy's `transport_protocol` value for filter chain matching.
    pub fn transport_protocol(&self) -> &'static str {
        if self.tls {
            "tls"
        } else {
            "raw_buffer"
        }
    }
}

/// Reads until the ClientHello record is complete (or the bytes are clearly
/// not TLS). Returns the bytes read, to be replayed, and what they say.
/// `None` when the peer closed or stayed silent past [`TIMEOUT`].
pub async fn inspect(tcp: &mut TcpStream) -> Option<(Vec<u8>, Hello)> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        loop {
            match classify(&buf) {
                Progress::Done(hello) => return Some(hello),
                Progress::NeedMore(n) => {
                    let want = n.min(MAX_RECORD).saturating_sub(buf.len()).max(1);
                    let mut chunk = vec![0; want];
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return None,
                        Ok(got) => buf.extend_from_slice(&chunk[..got]),
                    }
                }
            }
        }
    };
    let hello = tokio::time::timeout(TIMEOUT, read).await.ok()??;
    Some((buf, hello))
}

/// What the first bytes of a connection say, or `None` if more are needed
/// (the entry point for fuzzing).
pub fn hello_from(buf: &[u8]) -> Option<Hello> {
    match classify(buf) {
        Progress::Done(hello) => Some(hello),
        Progress::NeedMore(_) => None,
    }
}

enum Progress {
    Done(Hello),
    /// At least this many bytes in total are needed.
    NeedMore(usize),
}

fn classify(buf: &[u8]) -> Progress {
    // A TLS record: handshake (22), version 3.x, 16-bit length.
    if buf.is_empty() {
        return Progress::NeedMore(5);
    }
    if buf[0] != 22 {
        return Progress::Done(Hello::default());
    }
    if buf.len() < 5 {
        return Progress::NeedMore(5);
    }
    if buf[1] != 3 {
        return Progress::Done(Hello::default());
    }
    let total = 5 + u16::from_be_bytes([buf[3], buf[4]]) as usize;
    let tls_without_names = Hello { tls: true, ..Hello::default() };
    if total > MAX_RECORD {
        return Progress::Done(tls_without_names);
    }
    if buf.len() < total {
        return Progress::NeedMore(total);
    }
    Progress::Done(parse_client_hello(&buf[5..total]).unwrap_or(tls_without_names))
}

/// A bounds-checked cursor over the ClientHello.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The handshake message in the first record: type 1 is ClientHello.
fn parse_client_hello(record: &[u8]) -> Option<Hello> {
    let mut r = Reader(record);
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let mut body = Reader(r.take(len)?);
    body.take(2 + 32)?; // legacy_version, random
    body.vec8()?; // session id
    body.vec16()?; // cipher suites
    body.vec8()?; // compression methods
    let mut hello = Hello { tls: true, ..Hello::default() };
    let Some(extensions) = body.vec16() else {
        return Some(hello); // no extensions at all
    };
    let mut exts = Reader(extensions);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let mut data = Reader(exts.vec16()?);
        match kind {
            0 => {
                // server_name: a list of (type, name); type 0 is host_name.
                let mut list = Reader(data.vec16()?);
                while !list.0.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 && hello.server_name.is_none() {
                        hello.server_name = Some(String::from_utf8_lossy(name).to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let mut list = Reader(data.vec16()?);
                while !list.0.is_empty() {
                    hello.alpn.push(String::from_utf8_lossy(list.vec8()?).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record with the given extensions.
    fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut exts = Vec::new();
        for (kind, data) in extensions {
            exts.extend_from_slice(&kind.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend_from_slice(data);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0]); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut record = vec![22, 3, 1];
        record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        record.extend_from_slice(&hs);
        record
    }

    fn sni(name: &str) -> Vec<u8> {
        let mut entry = vec![0];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name.as_bytes());
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        data
    }

    fn alpn(protos: &[&str]) -> Vec<u8> {
        let mut list = Vec::new();
        for p in protos {
            list.push(p.len() as u8);
            list.extend_from_slice(p.as_bytes());
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        data
    }

    fn done(buf: &[u8]) -> Hello {
        match classify(buf) {
            Progress::Done(h) => h,
            Progress::NeedMore(n) => panic!("wants {n} bytes"),
        }
    }

    #[test]
    fn reads_sni_and_alpn_past_unknown_extensions() {
        let record = client_hello(&[(0xfe0d, vec![1, 2, 3]), (0, sni("API.Example.com")), (16, alpn(&["h2", "http/1.1"]))]);
        let hello = done(&record);
        assert!(hello.tls);
        assert_eq!(hello.server_name.as_deref(), Some("api.example.com"));
        assert_eq!(hello.alpn, vec!["h2", "http/1.1"]);
    }

    #[test]
    fn waits_for_the_whole_record_then_decides() {
        let record = client_hello(&[(0, sni("a.test"))]);
        for cut in [0, 3, 5, record.len() - 1] {
            assert!(matches!(classify(&record[..cut]), Progress::NeedMore(_)), "cut at {cut}");
        }
        assert_eq!(done(&record).server_name.as_deref(), Some("a.test"));
    }

    #[test]
    fn plaintext_and_garbage_are_not_misread() {
        assert_eq!(done(b"GET / HTTP/1.1\r\n"), Hello::default());
        assert_eq!(done(b"PRI * HTTP/2.0"), Hello::default());
        // A handshake record whose body is truncated nonsense: TLS, no names.
        let mut bad = vec![22, 3, 1, 0, 4, 1, 0, 9, 9];
        assert_eq!(done(&bad), Hello { tls: true, ..Hello::default() });
        bad[5] = 2; // not a ClientHello
        assert_eq!(done(&bad), Hello { tls: true, ..Hello::default() });
    }
}
