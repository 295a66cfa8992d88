//! Plugin configuration as JSON: the filter's `configuration` (Envoy: a
//! `google.protobuf.StringValue`) handed to
//! [`RootContext::on_configure`](crate::RootContext::on_configure).

use serde::de::DeserializeOwned;

/// Parses a JSON configuration. No configuration at all (empty or blank)
/// parses as `{}`, so a struct with `#[serde(default)]` needs none.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"{}");
    }
    serde_json::from_slice(bytes)
}

/// [`from_json`] for `on_configure`: a configuration that does not parse
/// is logged (at error level, with serde's reason) and gives `None`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    from_json(bytes).map_err(|e| crate::error!("invalid plugin configuration: {e}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq, Default)]
    #[serde(default)]
    struct Config {
        name: String,
        limit: u32,
    }

    #[test]
    fn empty_is_default_and_json_parses() {
        assert_eq!(from_json::<Config>(b"").expect("empty"), Config::default());
        assert_eq!(from_json::<Config>(b" \n").expect("blank"), Config::default());
        let c: Config = from_json(br#"{"name":"a","limit":3}"#).expect("json");
        assert_eq!(c, Config { name: "a".into(), limit: 3 });
        assert!(from_json::<Config>(b"{").is_err());
    }
}
