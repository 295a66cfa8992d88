//! `Http2ProtocolOptions`: the fields weft-proxy honours, on a connection
//! manager (its downstream connections) and on a cluster (its upstream
//! ones): how many streams a connection carries at once, and the
//! flow-control windows we advertise. A malformed message resets its
//! stream, whatever the config: `override_stream_error_on_invalid_http_message`
//! is taken when it says so (true) and refused when it asks for the
//! whole connection to close (false).

use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;

use super::{ConfigError, Result};

/// Unset fields keep each side's default (see `downstream::h2` and
/// `upstream`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Http2Options {
    pub max_concurrent_streams: Option<u32>,
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
}

/// Envoy's bounds: a window is at least HTTP/2's initial 65 535 bytes and
/// at most 2^31 - 1; so is a stream count, from 1.
const MAX: u32 = (1 << 31) - 1;
const MIN_WINDOW: u32 = 65_535;

impl Http2Options {
    pub fn compile(options: Option<&xds_core::Http2ProtocolOptions>, path: &str) -> Result<Http2Options> {
        let Some(o) = options else { return Ok(Http2Options::default()) };
        if o.override_stream_error_on_invalid_http_message.as_ref().is_some_and(|v| !v.value) {
            return Err(ConfigError::new(
                format!("{path}.override_stream_error_on_invalid_http_message"),
                "weft-proxy resets only the malformed stream; closing the connection (false) is not supported",
            ));
        }
        let within = |value: Option<&u32>, field: &str, min: u32| match value.copied() {
            Some(v) if !(min..=MAX).contains(&v) => Err(ConfigError::new(format!("{path}.{field}"), format!("value must be between {min} and {MAX}"))),
            v => Ok(v),
        };
        Ok(Http2Options {
            max_concurrent_streams: within(o.max_concurrent_streams.as_ref().map(|v| &v.value), "max_concurrent_streams", 1)?,
            initial_stream_window_size: within(o.initial_stream_window_size.as_ref().map(|v| &v.value), "initial_stream_window_size", MIN_WINDOW)?,
            initial_connection_window_size: within(o.initial_connection_window_size.as_ref().map(|v| &v.value), "initial_connection_window_size", MIN_WINDOW)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_the_field() {
        use weft_envoy_api::pb::google::protobuf::UInt32Value;
        let mut o = xds_core::Http2ProtocolOptions { initial_stream_window_size: Some(UInt32Value { value: 1024 }), ..Default::default() };
        let e = Http2Options::compile(Some(&o), "c.http2_protocol_options").expect_err("too small");
        assert_eq!(e.to_string(), "c.http2_protocol_options.initial_stream_window_size: value must be between 65535 and 2147483647");
        o.initial_stream_window_size = Some(UInt32Value { value: 1 << 20 });
        o.max_concurrent_streams = Some(UInt32Value { value: 7 });
        let ok = Http2Options::compile(Some(&o), "c").expect("valid");
        assert_eq!((ok.max_concurrent_streams, ok.initial_stream_window_size, ok.initial_connection_window_size), (Some(7), Some(1 << 20), None));
        use weft_envoy_api::pb::google::protobuf::BoolValue;
        o.override_stream_error_on_invalid_http_message = Some(BoolValue { value: true });
        assert!(Http2Options::compile(Some(&o), "c").is_ok(), "what we do");
        o.override_stream_error_on_invalid_http_message = Some(BoolValue { value: false });
        let e = Http2Options::compile(Some(&o), "c").expect_err("closing the connection");
        assert!(e.to_string().starts_with("c.override_stream_error_on_invalid_http_message: "), "{e}");
    }
}
