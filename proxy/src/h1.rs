//! HTTP/1.1 wire pieces shared by our two HTTP/1.1 codecs, the upstream
//! client (`upstream::h1`) and the downstream server (`http::downstream`):
//! body framing (content-length, chunked, until close) decoded in place
//! from a read buffer, header lines written the way Envoy writes them.
//!
//! Both codecs keep their read buffer with the connection: body pieces are
//! split off it (no copy), and once they have been dropped the buffer's
//! space is reclaimed by the next read, so a kept-alive connection does not
//! allocate for its bytes.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};

/// How much room each read asks for.
pub const READ_SIZE: usize = 8 * 1024;
/// A body up to this size is copied into its header's write; a larger one
/// is written on its own.
pub const COALESCE_BODY: usize = 16 * 1024;
/// Header slots the parsers try first: most messages carry a few headers,
/// and clearing room for `MAX_HEADERS` on every message showed in profiles.
pub const FEW_HEADERS: usize = 32;
/// Headers per message beyond which it is refused (Pingora's limit, which
/// we had before).
pub const MAX_HEADERS: usize = 256;

/// A chunk-size line or a trailer line longer than this is an attack.
const MAX_LINE: usize = 4 * 1024;

/// Why an exchange failed: the connection is not reused after any of them.
#[derive(Debug)]
pub enum Error {
    Io(std::io::Error),
    /// The peer closed the connection before the message was complete.
    Closed,
    /// Bytes that are not HTTP/1.1, or framing we must not guess at.
    Protocol(&'static str),
    /// A request target the wire cannot carry (a control byte).
    BadTarget,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Closed => f.write_str("connection closed before the message ended"),
            Error::Protocol(what) => write!(f, "protocol error: {what}"),
            Error::BadTarget => f.write_str("request target not representable in HTTP/1.1"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The peer sent something that is not HTTP/1.1 (Envoy's `protocol
    /// error` reset reason), as opposed to closing or failing.
    pub fn is_protocol(&self) -> bool {
        matches!(self, Error::Protocol(_))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// Where a message body stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// `content-length`: bytes still to come.
    Length(u64),
    /// Chunked: expecting a chunk-size line.
    ChunkSize,
    /// Chunked: data bytes of the current chunk still to come.
    ChunkData(u64),
    /// Chunked: the CRLF after a chunk's data.
    ChunkEnd,
    /// Chunked: trailer lines after the last chunk, up to an empty line.
    Trailers,
    /// Read until the peer closes (the connection is not reused).
    UntilClose,
    Done,
}

/// Decodes one message body out of a connection's read buffer.
#[derive(Debug, Clone, Copy)]
pub struct BodyDecoder {
    state: State,
}

impl BodyDecoder {
    pub fn length(n: u64) -> Self {
        BodyDecoder { state: if n == 0 { State::Done } else { State::Length(n) } }
    }

    pub fn chunked() -> Self {
        BodyDecoder { state: State::ChunkSize }
    }

    pub fn until_close() -> Self {
        BodyDecoder { state: State::UntilClose }
    }

    pub fn empty() -> Self {
        BodyDecoder { state: State::Done }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn is_until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// The next piece of body in `buf`, consuming framing on the way;
    /// `None` when more bytes are needed or the body has ended (`is_done`).
    /// After a piece, the framing already buffered behind it is consumed
    /// too, so that `is_done` is true as soon as the last bytes are here.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        self.settle(buf)?;
        let want = match self.state {
            State::Length(n) | State::ChunkData(n) => n,
            State::UntilClose => u64::MAX,
            _ => return Ok(None),
        };
        if buf.is_empty() {
            return Ok(None);
        }
        let take = want.min(buf.len() as u64);
        let data = buf.split_to(take as usize).freeze();
        self.state = match self.state {
            State::Length(n) if n == take => State::Done,
            State::Length(n) => State::Length(n - take),
            State::ChunkData(n) if n == take => State::ChunkEnd,
            State::ChunkData(n) => State::ChunkData(n - take),
            other => other,
        };
        // Bad framing behind good data is reported by the next call.
        let _ = self.settle(buf);
        Ok(Some(data))
    }

    /// The peer closed its side: the end of a close-delimited body, an
    /// error for any other.
    pub fn eof(&mut self) -> Result<(), Error> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(Error::Closed),
        }
    }

    /// Consumes the chunked framing that is buffered, up to the next data
    /// bytes or the end.
    pub fn settle(&mut self, buf: &mut BytesMut) -> Result<(), Error> {
        loop {
            match self.state {
                State::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = if size == 0 { State::Trailers } else { State::ChunkData(size) };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_LINE => {
                        return Err(Error::Protocol("chunk size line too long"));
                    }
                    Ok(httparse::Status::Partial) => return Ok(()),
                    Err(_) => return Err(Error::Protocol("invalid chunk size")),
                },
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(());
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::Protocol("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                // HTTP/1 trailers are dropped, as Envoy does without
                // `enable_trailers`.
                State::Trailers => {
                    let Some(end) = buf.iter().position(|b| *b == b'\n') else {
                        if buf.len() > MAX_LINE {
                            return Err(Error::Protocol("trailer line too long"));
                        }
                        return Ok(());
                    };
                    let blank = buf[..end].iter().all(|b| *b == b'\r');
                    buf.advance(end + 1);
                    if blank {
                        self.state = State::Done;
                    }
                }
                _ => return Ok(()),
            }
        }
    }
}

/// Reads more of a connection into its buffer; 0 at the peer's end of
/// stream. The `reserve` reclaims the buffer's own space once the bytes
/// handed out before (the last message's header and body) are dropped.
pub async fn fill(stream: &mut pingora_core::protocols::Stream, buf: &mut BytesMut) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    buf.reserve(READ_SIZE);
    stream.read_buf(buf).await
}

/// Writes what `out` holds (a header, the end of the last chunk) with a
/// piece of body after it, chunk-framed when `chunked` (with `end`, the
/// last chunk follows), then flushes. A small piece is copied into `out`
/// for one write; a large one is written on its own, not copied. `out` is
/// left empty (its capacity kept).
pub async fn write_body(stream: &mut pingora_core::protocols::Stream, out: &mut Vec<u8>, data: &[u8], chunked: bool, end: bool) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if chunked && !data.is_empty() {
        write_chunk_header(out, data.len());
    }
    if data.len() <= COALESCE_BODY {
        out.extend_from_slice(data);
    } else {
        stream.write_all(out).await?;
        out.clear();
        stream.write_all(data).await?;
    }
    if chunked && !data.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    if chunked && end {
        write_chunk(out, b"");
    }
    stream.write_all(out).await?;
    out.clear();
    stream.flush().await
}

/// The next piece of a message body, reading as needed; `None` at its end.
pub async fn read_body(
    stream: &mut pingora_core::protocols::Stream,
    buf: &mut BytesMut,
    body: &mut BodyDecoder,
) -> Result<Option<Bytes>, Error> {
    loop {
        if let Some(data) = body.decode(buf)? {
            return Ok(Some(data));
        }
        if body.is_done() {
            return Ok(None);
        }
        if fill(stream, buf).await? == 0 {
            body.eof()?;
            return Ok(None);
        }
    }
}

/// Where each header's name and value sit in the parsed buffer, as
/// offsets: httparse borrows the buffer until the header is split off it,
/// and the header map is built from the split-off bytes after. On the stack.
#[derive(Clone, Copy)]
pub struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

pub const NO_SPAN: Span = Span { name: (0, 0), value: (0, 0) };

/// The spans of `headers`, parsed out of `buf`, into `spans`.
pub fn header_spans(buf: &[u8], headers: &[httparse::Header<'_>], spans: &mut [Span]) {
    let base = buf.as_ptr() as usize;
    for (span, h) in spans.iter_mut().zip(headers) {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        *span = Span {
            name: (name as u32, (name + h.name.len()) as u32),
            value: (value as u32, (value + h.value.len()) as u32),
        };
    }
}

/// One header out of the split-off header bytes (`None`: not a valid
/// name or value). The value is a slice of `raw`: no copy.
pub fn header_at(raw: &Bytes, span: Span) -> Option<(HeaderName, HeaderValue)> {
    let name = HeaderName::from_bytes(raw.get(span.name.0 as usize..span.name.1 as usize)?).ok()?;
    let value = HeaderValue::from_maybe_shared(raw.slice(span.value.0 as usize..span.value.1 as usize)).ok()?;
    Some((name, value))
}

/// Header lines as Envoy's HTTP/1 codec writes them: names lowercase (its
/// default `header_key_format`), in the map's order.
pub fn write_headers<'a>(out: &mut Vec<u8>, headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends one chunk of chunked encoding (the last one when `data` is empty).
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    write_chunk_header(out, data.len());
    out.extend_from_slice(data);
    // After the last (empty) chunk: no trailers, the blank line.
    out.extend_from_slice(b"\r\n");
}

/// Appends a chunk's size line; its data and CRLF follow.
pub fn write_chunk_header(out: &mut Vec<u8>, len: usize) {
    use std::io::Write;
    let _ = write!(out, "{len:x}\r\n");
}

/// The value of `content-length` headers: all must agree and be digits.
/// `Ok(None)` when there is none.
pub fn content_length<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Result<Option<u64>, Error> {
    let mut length = None;
    for value in values {
        let n = std::str::from_utf8(value.as_bytes())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(Error::Protocol("invalid content-length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(Error::Protocol("conflicting content-length"));
        }
        length = Some(n);
    }
    Ok(length)
}

/// Whether the connection lives on after a message, given its version and
/// one of its `connection` header values: `close` ends it; `keep-alive`
/// keeps an HTTP/1.0 one (HTTP/1.1 keeps it by default).
pub fn keep_alive_after(keep_alive: bool, version: http::Version, connection: &HeaderValue) -> bool {
    if has_token(connection, "close") {
        false
    } else if version == http::Version::HTTP_10 && has_token(connection, "keep-alive") {
        true
    } else {
        keep_alive
    }
}

/// Whether a `connection` header value carries `token`.
pub fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(mut decoder: BodyDecoder, wire: &[u8], step: usize) -> Result<(Vec<u8>, bool), Error> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(data) = decoder.decode(&mut buf)? {
                out.extend_from_slice(&data);
            }
        }
        Ok((out, decoder.is_done()))
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n";
        for step in [1, 4, 100] {
            let (body, done) = decode_all(BodyDecoder::chunked(), wire, step).expect("decodes");
            assert_eq!(body, b"hello world");
            assert!(done, "step {step}");
        }
        // Done with the last data when the rest is buffered.
        let mut buf = BytesMut::from(&wire[..]);
        let mut d = BodyDecoder::chunked();
        assert_eq!(&d.decode(&mut buf).expect("ok").expect("data")[..], b"hello");
        assert_eq!(&d.decode(&mut buf).expect("ok").expect("data")[..], b" world");
        assert!(d.is_done() && buf.is_empty());
    }

    #[test]
    fn bad_chunks_and_early_close() {
        for wire in [&b"zz\r\n"[..], b"3\r\nabcX\r\n"] {
            assert!(matches!(decode_all(BodyDecoder::chunked(), wire, 100), Err(Error::Protocol(_))));
        }
        let mut d = BodyDecoder::length(10);
        let mut buf = BytesMut::from(&b"short"[..]);
        assert!(d.decode(&mut buf).expect("ok").is_some());
        assert!(matches!(d.eof(), Err(Error::Closed)));
        let mut d = BodyDecoder::until_close();
        assert!(d.eof().is_ok() && d.is_done());
    }

    #[test]
    fn lengths() {
        let (body, done) = decode_all(BodyDecoder::length(5), b"helloEXTRA", 3).expect("decodes");
        assert_eq!(body, b"hello");
        assert!(done);
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(content_length([v("3"), v("3")].iter()).expect("same"), Some(3));
        for bad in [[v("1"), v("2")], [v("-1"), v("-1")], [v("+1"), v("+1")], [v(""), v("")]] {
            assert!(content_length(bad.iter()).is_err());
        }
    }

    #[test]
    fn chunk_encoding() {
        let mut out = Vec::new();
        write_chunk(&mut out, b"hello world, 17 b");
        write_chunk(&mut out, b"");
        assert_eq!(out, b"11\r\nhello world, 17 b\r\n0\r\n\r\n");
    }
}
