//! The ABI's serialised header map, used for all pairs at once, local
//! responses and HTTP calls (all integers little-endian u32):
//!
//! ```text
//! count | key_len value_len (× count) | key \0 value \0 (× count)
//! ```
//!
//! An empty map may arrive as zero bytes or as a single count of 0.

/// Serialises `(name, value)` pairs.
pub fn serialize<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let payload: usize = pairs.iter().map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2).sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + payload);
    out.extend_from_slice(&len32(pairs.len()));
    for (k, v) in pairs {
        out.extend_from_slice(&len32(k.as_ref().len()));
        out.extend_from_slice(&len32(v.as_ref().len()));
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

fn len32(n: usize) -> [u8; 4] {
    // Lengths come from wasm32 memory: they fit.
    (n as u32).to_le_bytes()
}

/// Parses a serialised map. Malformed input (truncated, lengths past the
/// end) yields the pairs read before the damage, never a panic: the bytes
/// come from the host.
pub fn deserialize(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(count) = u32_at(0) else {
        return Vec::new();
    };
    // Each pair takes at least 10 bytes: a bogus count cannot allocate much.
    let mut out = Vec::with_capacity(count.min(bytes.len() / 10));
    let mut data = 4usize.saturating_add(count.saturating_mul(8));
    for i in 0..count {
        let (Some(klen), Some(vlen)) = (u32_at(4 + i * 8), u32_at(8 + i * 8)) else {
            break;
        };
        let key_end = data.saturating_add(klen);
        let value_start = key_end.saturating_add(1);
        let value_end = value_start.saturating_add(vlen);
        let (Some(key), Some(value)) = (bytes.get(data..key_end), bytes.get(value_start..value_end)) else {
            break;
        };
        out.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
        data = value_end.saturating_add(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let pairs = [(":method", "GET"), (":path", "/a?b=c"), ("x-empty", "")];
        let bytes = serialize(&pairs);
        let back = deserialize(&bytes);
        let back: Vec<(&str, &[u8])> = back.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        assert_eq!(back, [(":method", &b"GET"[..]), (":path", b"/a?b=c"), ("x-empty", b"")]);
    }

    #[test]
    fn matches_the_spec_example() {
        // {"a": "1"}, {"b": "22"}
        let bytes = serialize(&[("a", "1"), ("b", "22")]);
        assert_eq!(bytes, [2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'1', 0, b'b', 0, b'2', b'2', 0]);
    }

    #[test]
    fn empty_maps_in_both_spellings() {
        assert!(deserialize(&[]).is_empty());
        assert!(deserialize(&[0]).is_empty());
        assert!(deserialize(&[0, 0, 0, 0]).is_empty());
        assert_eq!(serialize::<&str, &str>(&[]), [0, 0, 0, 0]);
    }

    #[test]
    fn malformed_input_keeps_what_parsed() {
        let mut bytes = serialize(&[("a", "1"), ("b", "22")]);
        bytes.truncate(bytes.len() - 2);
        assert_eq!(deserialize(&bytes), [("a".to_string(), b"1".to_vec())]);
        assert!(deserialize(&[255, 255, 255, 255, 1]).is_empty());
    }
}
