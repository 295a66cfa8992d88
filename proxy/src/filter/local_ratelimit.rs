//! `envoy.filters.http.local_ratelimit`: a token bucket per filter config,
//! shared by every worker (or one per downstream connection), as Envoy 1.40
//! does it.
//!
//! ```text
//!  enabled? ─ no ─► continue
//!     └ yes ─► take a token ─ ok ─► continue
//!                 └ none ─► enforced? ─ yes ─► 429 "local_rate_limited" (+ response_headers_to_add)
//!                              └ no ─► continue with request_headers_to_add_when_not_enforced
//! ```
//! A per-route config (route or virtual host, the most specific wins)
//! replaces the filter's config entirely and brings its own bucket.
//! `filter_enabled` and `filter_enforced` default to 0%: a config without
//! them counts nothing and limits nothing.

mod token_bucket;

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use pingora_http::{RequestHeader, ResponseHeader};
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;
use weft_envoy_api::pb::envoy::extensions::common::ratelimit::v3 as xds_common_ratelimit;
use weft_envoy_api::pb::envoy::extensions::filters::http::local_ratelimit::v3 as xds_local_ratelimit;
use weft_envoy_api::pb::envoy::r#type::v3 as xds_type;

use super::{Context, Edit, Verdict};
use crate::http::LocalReply;
use crate::model::header::HeaderMutations;
use crate::model::{duration, ConfigError, Fraction, Result};
use crate::stats::LocalRateLimitStats;
pub use token_bucket::TokenBucket;

pub const TYPE: &str = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

/// Envoy refuses faster refills.
const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);

/// What limits requests: a bucket, or nothing when the config has no
/// `token_bucket` (allowed for the filter's own config, as in Envoy).
#[derive(Debug)]
pub enum Limiter {
    Unlimited,
    Bucket(TokenBucket),
}

/// `token_bucket`, kept to make per-connection buckets.
#[derive(Debug, Clone, Copy)]
struct BucketConfig {
    max_tokens: u32,
    tokens_per_fill: u32,
    fill_interval: Duration,
}

impl BucketConfig {
    fn limiter(config: Option<BucketConfig>) -> Limiter {
        match config {
            Some(b) => Limiter::Bucket(TokenBucket::new(b.max_tokens, b.tokens_per_fill, b.fill_interval)),
            None => Limiter::Unlimited,
        }
    }
}

#[derive(Debug)]
pub struct LocalRateLimit {
    stats: LocalRateLimitStats,
    status: u16,
    bucket: Option<BucketConfig>,
    /// The bucket every worker shares (unused per connection).
    shared: Limiter,
    per_connection: bool,
    filter_enabled: Option<Fraction>,
    filter_enforced: Option<Fraction>,
    response_headers: Arc<HeaderMutations>,
    request_headers_when_not_enforced: HeaderMutations,
    x_ratelimit_headers: bool,
    /// `rate_limited_as_resource_exhausted`: gRPC clients get
    /// RESOURCE_EXHAUSTED rather than the 429's UNAVAILABLE.
    resource_exhausted: bool,
}

/// The draft-03 `x-ratelimit-*` headers for a response.
#[derive(Debug)]
pub struct XRateLimit {
    limit: u64,
    remaining: u64,
    reset: u64,
}

impl XRateLimit {
    /// Added, not replaced, as Envoy does.
    pub fn apply(&self, resp: &mut ResponseHeader) {
        for (name, value) in [
            ("x-ratelimit-limit", self.limit),
            ("x-ratelimit-remaining", self.remaining),
            ("x-ratelimit-reset", self.reset),
        ] {
            let _ = resp.append_header(name, HeaderValue::from(value));
        }
    }
}

fn runtime_fraction(f: Option<&xds_core::RuntimeFractionalPercent>, path: &str) -> Result<Option<Fraction>> {
    let Some(f) = f else { return Ok(None) };
    let Some(default) = f.default_value.as_ref() else {
        return Err(ConfigError::new(format!("{path}.default_value"), "default_value is required"));
    };
    // No runtime layer: a runtime_key always falls back to the default.
    Fraction::compile(Some(default), &format!("{path}.default_value"), Fraction::NEVER).map(Some)
}

fn bucket_config(b: &xds_type::TokenBucket, path: &str) -> Result<BucketConfig> {
    let tokens_per_fill = match &b.tokens_per_fill {
        Some(t) if t.value == 0 => {
            return Err(ConfigError::new(format!("{path}.tokens_per_fill"), "tokens_per_fill must be greater than 0"))
        }
        Some(t) => t.value,
        None => 1,
    };
    let Some(interval) = b.fill_interval.as_ref() else {
        return Err(ConfigError::new(format!("{path}.fill_interval"), "fill_interval is required"));
    };
    let fill_interval = duration(interval);
    if fill_interval < MIN_FILL_INTERVAL {
        return Err(ConfigError::new(
            format!("{path}.fill_interval"),
            "local rate limit token bucket fill timer must be >= 50ms",
        ));
    }
    Ok(BucketConfig { max_tokens: b.max_tokens, tokens_per_fill, fill_interval })
}

impl LocalRateLimit {
    /// `per_route`: a `typed_per_filter_config` value, which must have a
    /// token bucket.
    pub fn compile(c: &xds_local_ratelimit::LocalRateLimit, path: &str, per_route: bool) -> Result<Self> {
        if c.stat_prefix.is_empty() {
            return Err(ConfigError::new(format!("{path}.stat_prefix"), "stat_prefix is required"));
        }
        let status = match &c.status {
            None => 429,
            Some(s) => match xds_type::StatusCode::try_from(s.code) {
                Ok(xds_type::StatusCode::Empty) | Err(_) => {
                    return Err(ConfigError::new(format!("{path}.status.code"), format!("{} is not an HTTP status", s.code)))
                }
                // Envoy answers 429 rather than a status below 400.
                Ok(_) if s.code < 400 => 429,
                Ok(_) => s.code as u16,
            },
        };
        let bucket = match &c.token_bucket {
            Some(b) => Some(bucket_config(b, &format!("{path}.token_bucket"))?),
            None if per_route => {
                return Err(ConfigError::new(
                    format!("{path}.token_bucket"),
                    "local rate limit token bucket must be set for per filter configs",
                ))
            }
            None => None,
        };
        use xds_common_ratelimit::XRateLimitHeadersRfcVersion as V;
        let x_ratelimit_headers = match V::try_from(c.enable_x_ratelimit_headers) {
            Ok(V::Off) => false,
            Ok(V::DraftVersion03) => true,
            Err(_) => {
                return Err(ConfigError::new(
                    format!("{path}.enable_x_ratelimit_headers"),
                    format!("unknown version {}", c.enable_x_ratelimit_headers),
                ))
            }
        };
        let per_connection = c.local_rate_limit_per_downstream_connection;
        Ok(LocalRateLimit {
            stats: LocalRateLimitStats::new(&c.stat_prefix),
            status,
            bucket,
            // Per connection, buckets are made as connections need them.
            shared: if per_connection { Limiter::Unlimited } else { BucketConfig::limiter(bucket) },
            per_connection,
            filter_enabled: runtime_fraction(c.filter_enabled.as_ref(), &format!("{path}.filter_enabled"))?,
            filter_enforced: runtime_fraction(c.filter_enforced.as_ref(), &format!("{path}.filter_enforced"))?,
            response_headers: Arc::new(HeaderMutations::compile(&c.response_headers_to_add, &[], path, "response")?),
            request_headers_when_not_enforced: compile_request_headers(c, path)?,
            x_ratelimit_headers,
            resource_exhausted: c.rate_limited_as_resource_exhausted,
        })
    }

    pub fn on_request(&self, req: &mut RequestHeader, cx: &mut Context<'_>) -> Verdict {
        if !self.filter_enabled.is_some_and(Fraction::roll) {
            return Verdict::Continue;
        }
        self.stats.enabled.inc();
        let connection_limiter;
        let limiter = if self.per_connection {
            connection_limiter = self.connection_limiter(cx);
            &*connection_limiter
        } else {
            &self.shared
        };
        let allowed = match limiter {
            Limiter::Unlimited => true,
            Limiter::Bucket(bucket) => {
                let taken = bucket.take();
                if self.x_ratelimit_headers {
                    cx.response.push(Edit::RateLimit(XRateLimit {
                        limit: bucket.max_tokens(),
                        remaining: taken.remaining,
                        reset: bucket.reset_seconds(taken.remaining),
                    }));
                }
                taken.allowed
            }
        };
        if allowed {
            self.stats.ok.inc();
            return Verdict::Continue;
        }
        self.stats.rate_limited.inc();
        if !self.filter_enforced.is_some_and(Fraction::roll) {
            self.request_headers_when_not_enforced.apply(req, cx.conn);
            return Verdict::Continue;
        }
        self.stats.enforced.inc();
        cx.log.flag("RL");
        let mut reply = LocalReply::new(self.status, "local_rate_limited");
        reply.mutations = Some(self.response_headers.clone());
        reply.grpc_status = self.resource_exhausted.then_some(8);
        Verdict::Respond(reply)
    }

    /// The connection's bucket. Like Envoy, a connection has one, made from
    /// the first config that asks (later configs with other limits share it).
    fn connection_limiter(&self, cx: &Context<'_>) -> Arc<Limiter> {
        let slot = &cx.connection.rate_limiter;
        if let Some(limiter) = slot.load_full() {
            return limiter;
        }
        let mine = Arc::new(BucketConfig::limiter(self.bucket));
        // Lock-free: if another stream of the connection won the race, use its bucket.
        let previous = slot.compare_and_swap(&None::<Arc<Limiter>>, Some(mine.clone()));
        match &*previous {
            Some(theirs) => theirs.clone(),
            None => mine,
        }
    }
}

fn compile_request_headers(c: &xds_local_ratelimit::LocalRateLimit, path: &str) -> Result<HeaderMutations> {
    // Named like the field so that errors point at it.
    let mutations = HeaderMutations::compile(&c.request_headers_to_add_when_not_enforced, &[], path, "request");
    mutations.map_err(|e| {
        ConfigError::new(
            e.path.replace("request_headers_to_add[", "request_headers_to_add_when_not_enforced["),
            e.message,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_envoy_api::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

    fn config(bucket: Option<xds_type::TokenBucket>) -> xds_local_ratelimit::LocalRateLimit {
        xds_local_ratelimit::LocalRateLimit { stat_prefix: "t".into(), token_bucket: bucket, ..Default::default() }
    }

    fn bucket(ms: i32) -> xds_type::TokenBucket {
        xds_type::TokenBucket {
            max_tokens: 1,
            tokens_per_fill: Some(UInt32Value { value: 1 }),
            fill_interval: Some(PbDuration { seconds: 0, nanos: ms * 1_000_000 }),
        }
    }

    #[test]
    fn per_route_config_needs_a_bucket() {
        assert!(LocalRateLimit::compile(&config(None), "p", false).is_ok());
        let e = LocalRateLimit::compile(&config(None), "p", true).expect_err("refused");
        assert_eq!(e.path, "p.token_bucket");
    }

    #[test]
    fn fill_interval_below_50ms_is_refused() {
        let e = LocalRateLimit::compile(&config(Some(bucket(40))), "p", false).expect_err("refused");
        assert_eq!(e.path, "p.token_bucket.fill_interval");
        assert!(LocalRateLimit::compile(&config(Some(bucket(50))), "p", false).is_ok());
    }

    #[test]
    fn status_below_400_becomes_429() {
        let mut c = config(None);
        c.status = Some(xds_type::HttpStatus { code: 302 });
        assert_eq!(LocalRateLimit::compile(&c, "p", false).expect("compiles").status, 429);
        c.status = Some(xds_type::HttpStatus { code: 503 });
        assert_eq!(LocalRateLimit::compile(&c, "p", false).expect("compiles").status, 503);
        c.status = Some(xds_type::HttpStatus { code: 0 });
        assert!(LocalRateLimit::compile(&c, "p", false).is_err());
    }
}
