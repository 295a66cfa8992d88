//! The proxy-wasm ABI 0.2.1 as numbers and bytes: the enums both sides
//! agree on, and the layout of a serialized header map.

/// `WasmResult`: what every host function returns to the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    ParseFailure = 4,
    InternalFailure = 10,
    Unimplemented = 12,
}

/// Which header map a host call is about (`proxy_*_header_map_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcInitialMetadata,
    GrpcTrailingMetadata,
    CallResponseHeaders,
    CallResponseTrailers,
}

impl MapType {
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            4 => MapType::GrpcInitialMetadata,
            5 => MapType::GrpcTrailingMetadata,
            6 => MapType::CallResponseHeaders,
            7 => MapType::CallResponseTrailers,
            _ => return None,
        })
    }
}

/// Which buffer a host call is about (`proxy_get_buffer_bytes`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    RequestBody,
    ResponseBody,
    CallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
}

impl BufferType {
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            // 2, 3: TCP stream data; 8: foreign call data.
            4 => BufferType::CallResponseBody,
            5 => BufferType::GrpcReceiveBuffer,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            _ => return None,
        })
    }
}

/// What a stream callback asks of the host: go on, or hold the stream
/// (`StopIteration` for headers, `StopIterationAndBuffer` for bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

impl Action {
    pub fn from_i32(v: i32) -> Self {
        if v == 0 {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

/// Log levels, as the plugin names them (`proxy_log`, `proxy_get_log_level`).
pub fn log_level(v: i32) -> Option<tracing::Level> {
    Some(match v {
        0 => tracing::Level::TRACE,
        1 => tracing::Level::DEBUG,
        2 => tracing::Level::INFO,
        3 => tracing::Level::WARN,
        4 | 5 => tracing::Level::ERROR,
        _ => return None,
    })
}

/// The level the host logs at, as the ABI numbers it.
pub fn level_number(l: tracing::level_filters::LevelFilter) -> i32 {
    use tracing::level_filters::LevelFilter as F;
    match l {
        F::TRACE => 0,
        F::DEBUG => 1,
        F::INFO => 2,
        F::WARN => 3,
        F::ERROR => 4,
        _ => 5, // OFF: only critical
    }
}

/// Metric kinds of `proxy_define_metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => MetricType::Counter,
            1 => MetricType::Gauge,
            2 => MetricType::Histogram,
            _ => return None,
        })
    }
}

/// Serializes header pairs as the ABI lays them out:
/// `count: u32`, then `(key_len: u32, value_len: u32)` per pair, then each
/// key and value followed by a NUL byte. All integers little-endian.
pub fn serialize_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let (count, bytes) = pairs.clone().fold((0usize, 0usize), |(n, b), (k, v)| (n + 1, b + k.len() + v.len() + 2));
    let mut out = Vec::with_capacity(4 + count * 8 + bytes);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Reads a serialized header map; `None` when the bytes do not hold what
/// their counts claim.
pub fn deserialize_pairs(data: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let word = |at: usize| -> Option<usize> {
        let b = data.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if data.is_empty() {
        return Some(Vec::new());
    }
    let count = word(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        sizes.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut pairs = Vec::with_capacity(sizes.len());
    for (k, v) in sizes {
        let key = data.get(at..at + k)?;
        at += k + 1;
        let value = data.get(at..at + v)?;
        at += v + 1;
        pairs.push((key, value));
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b":path", b"/a"), (b"x-b", b"")];
        let bytes = serialize_pairs(pairs.iter().copied());
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(deserialize_pairs(&bytes), Some(pairs));
    }

    #[test]
    fn truncated_pairs_are_refused() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"key", b"value")];
        let bytes = serialize_pairs(pairs.iter().copied());
        assert_eq!(deserialize_pairs(&bytes[..bytes.len() - 3]), None);
        assert_eq!(deserialize_pairs(&[9, 0, 0, 0]), None);
    }
}
