//! Prometheus statistics under Envoy's names and labels, so dashboards built
//! for Envoy read weft-proxy unchanged (`envoy_cluster_upstream_rq_total
//! {envoy_cluster_name="..."}`, `envoy_http_downstream_rq_xx{...}`).
//!
//! Handles are resolved once per cluster / connection manager at config
//! compile time; the data path only increments atomics.

use std::sync::OnceLock;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Envoy's default histogram buckets (milliseconds).
pub(crate) const BUCKETS_MS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

struct Families {
    registry: Registry,
    upstream_rq_total: IntCounterVec,
    upstream_rq_xx: IntCounterVec,
    upstream_rq: IntCounterVec,
    upstream_rq_retry: IntCounterVec,
    upstream_rq_timeout: IntCounterVec,
    upstream_cx_connect_fail: IntCounterVec,
    upstream_rq_pending_overflow: IntCounterVec,
    upstream_rq_retry_overflow: IntCounterVec,
    upstream_rq_time: HistogramVec,
    downstream_rq_total: IntCounterVec,
    downstream_rq_xx: IntCounterVec,
    ejections_enforced_total: IntCounterVec,
    ejections_enforced_5xx: IntCounterVec,
    ejections_enforced_gateway: IntCounterVec,
    ejections_active: IntGaugeVec,
    health_check_success: IntCounterVec,
    health_check_failure: IntCounterVec,
    downstream_rq_failed_path_normalization: IntCounterVec,
    downstream_rq_redirected_with_normalized_path: IntCounterVec,
    cors_origin_valid: IntCounterVec,
    cors_origin_invalid: IntCounterVec,
    local_rate_limit: [IntCounterVec; 5],
}

/// The metric families `/stats/prometheus` shows.
fn families() -> &'static Families {
    static F: OnceLock<Families> = OnceLock::new();
    F.get_or_init(new_families)
}

/// Families never exported: counters of things Envoy keeps no stats for
/// (the placeholder a route gets for a cluster that does not exist).
fn detached_families() -> &'static Families {
    static D: OnceLock<Families> = OnceLock::new();
    D.get_or_init(new_families)
}

fn new_families() -> Families {
    let registry = Registry::new();
    let counter = |name: &str, help: &str, labels: &[&str]| {
        let c =
            IntCounterVec::new(Opts::new(name, help), labels).expect("invariant: valid metric");
        registry
            .register(Box::new(c.clone()))
            .expect("invariant: metric registered once");
        c
    };
    let cl = &["envoy_cluster_name"];
    let code_cl = &["envoy_response_code_class", "envoy_cluster_name"];
    let hcm = &["envoy_http_conn_manager_prefix"];
    let code_hcm = &[
        "envoy_response_code_class",
        "envoy_http_conn_manager_prefix",
    ];
    let upstream_rq_time = HistogramVec::new(
        HistogramOpts::new(
            "envoy_cluster_upstream_rq_time",
            "upstream request time (ms)",
        )
        .buckets(BUCKETS_MS.to_vec()),
        cl,
    )
    .expect("invariant: valid metric");
    registry
        .register(Box::new(upstream_rq_time.clone()))
        .expect("invariant: metric registered once");
    Families {
        upstream_rq_total: counter("envoy_cluster_upstream_rq_total", "upstream requests", cl),
        upstream_rq_xx: counter(
            "envoy_cluster_upstream_rq_xx",
            "upstream responses by class",
            code_cl,
        ),
        upstream_rq: counter(
            "envoy_cluster_upstream_rq",
            "upstream responses by code",
            &["envoy_response_code", "envoy_cluster_name"],
        ),
        upstream_rq_retry: counter("envoy_cluster_upstream_rq_retry", "upstream retries", cl),
        upstream_rq_timeout: counter(
            "envoy_cluster_upstream_rq_timeout",
            "upstream request timeouts",
            cl,
        ),
        upstream_cx_connect_fail: counter(
            "envoy_cluster_upstream_cx_connect_fail",
            "upstream connect failures",
            cl,
        ),
        upstream_rq_pending_overflow: counter(
            "envoy_cluster_upstream_rq_pending_overflow",
            "requests refused by the max_requests circuit breaker",
            cl,
        ),
        upstream_rq_retry_overflow: counter(
            "envoy_cluster_upstream_rq_retry_overflow",
            "retries not attempted because of the max_retries circuit breaker",
            cl,
        ),
        downstream_rq_total: counter(
            "envoy_http_downstream_rq_total",
            "downstream requests",
            hcm,
        ),
        downstream_rq_xx: counter(
            "envoy_http_downstream_rq_xx",
            "downstream responses by class",
            code_hcm,
        ),
        ejections_enforced_total: counter(
            "envoy_cluster_outlier_detection_ejections_enforced_total",
            "hosts ejected by outlier detection",
            cl,
        ),
        ejections_enforced_5xx: counter(
            "envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx",
            "ejections for consecutive 5xx",
            cl,
        ),
        ejections_enforced_gateway: counter(
            "envoy_cluster_outlier_detection_ejections_enforced_consecutive_gateway_failure",
            "ejections for consecutive gateway failures",
            cl,
        ),
        ejections_active: {
            let g = IntGaugeVec::new(
                Opts::new("envoy_cluster_outlier_detection_ejections_active", "hosts ejected now"),
                cl,
            )
            .expect("invariant: valid metric");
            registry.register(Box::new(g.clone())).expect("invariant: metric registered once");
            g
        },
        health_check_success: counter("envoy_cluster_health_check_success", "passed health checks", cl),
        health_check_failure: counter("envoy_cluster_health_check_failure", "failed health checks", cl),
        downstream_rq_failed_path_normalization: counter(
            "envoy_http_downstream_rq_failed_path_normalization",
            "requests refused by path normalization",
            hcm,
        ),
        downstream_rq_redirected_with_normalized_path: counter(
            "envoy_http_downstream_rq_redirected_with_normalized_path",
            "requests redirected to their path with escaped slashes decoded",
            hcm,
        ),
        cors_origin_valid: counter("envoy_http_cors_origin_valid", "requests with an allowed Origin", hcm),
        cors_origin_invalid: counter("envoy_http_cors_origin_invalid", "requests with an Origin not allowed", hcm),
        local_rate_limit: LOCAL_RATE_LIMIT.map(|(name, help)| counter(name, help, &["envoy_local_http_ratelimit_prefix"])),
        upstream_rq_time,
        registry,
    }
}

fn class_counters(vec: &IntCounterVec, name: &str) -> [IntCounter; 5] {
    ["1", "2", "3", "4", "5"].map(|class| vec.with_label_values(&[class, name]))
}

fn class_index(status: u16) -> usize {
    (status / 100).clamp(1, 5) as usize - 1
}

/// A cluster's counters (`cluster.<name>.*` in Envoy).
#[derive(Debug, Clone)]
pub struct ClusterStats {
    name: String,
    /// Where the counters live (exported or detached).
    families: fn() -> &'static Families,
    pub rq_total: IntCounter,
    rq_xx: [IntCounter; 5],
    pub rq_retry: IntCounter,
    pub rq_timeout: IntCounter,
    pub cx_connect_fail: IntCounter,
    pub rq_pending_overflow: IntCounter,
    pub rq_retry_overflow: IntCounter,
    rq_time: prometheus::Histogram,
    /// `upstream_rq{envoy_response_code}` handles, resolved on first use so
    /// the data path does no label lookup (index: status - 100).
    rq_code: std::sync::Arc<[OnceLock<IntCounter>]>,
    pub ejections_enforced_total: IntCounter,
    pub ejections_enforced_5xx: IntCounter,
    pub ejections_enforced_gateway: IntCounter,
    pub ejections_active: IntGauge,
    pub health_check_success: IntCounter,
    pub health_check_failure: IntCounter,
}

impl ClusterStats {
    pub fn new(cluster: &str) -> Self {
        Self::in_families(families, cluster)
    }

    /// Counters that `/stats/prometheus` does not show.
    pub fn detached(cluster: &str) -> Self {
        Self::in_families(detached_families, cluster)
    }

    fn in_families(families: fn() -> &'static Families, cluster: &str) -> Self {
        let f = families();
        ClusterStats {
            name: cluster.to_string(),
            families,
            rq_total: f.upstream_rq_total.with_label_values(&[cluster]),
            rq_xx: class_counters(&f.upstream_rq_xx, cluster),
            rq_retry: f.upstream_rq_retry.with_label_values(&[cluster]),
            rq_timeout: f.upstream_rq_timeout.with_label_values(&[cluster]),
            cx_connect_fail: f.upstream_cx_connect_fail.with_label_values(&[cluster]),
            rq_pending_overflow: f.upstream_rq_pending_overflow.with_label_values(&[cluster]),
            rq_retry_overflow: f.upstream_rq_retry_overflow.with_label_values(&[cluster]),
            rq_time: f.upstream_rq_time.with_label_values(&[cluster]),
            rq_code: (100..600).map(|_| OnceLock::new()).collect(),
            ejections_enforced_total: f.ejections_enforced_total.with_label_values(&[cluster]),
            ejections_enforced_5xx: f.ejections_enforced_5xx.with_label_values(&[cluster]),
            ejections_enforced_gateway: f.ejections_enforced_gateway.with_label_values(&[cluster]),
            ejections_active: f.ejections_active.with_label_values(&[cluster]),
            health_check_success: f.health_check_success.with_label_values(&[cluster]),
            health_check_failure: f.health_check_failure.with_label_values(&[cluster]),
        }
    }

    /// An upstream response arrived with `status` after `ms` milliseconds.
    pub fn response(&self, status: u16, ms: f64) {
        self.rq_xx[class_index(status)].inc();
        if let Some(slot) = status.checked_sub(100).and_then(|i| self.rq_code.get(i as usize)) {
            slot.get_or_init(|| (self.families)().upstream_rq.with_label_values(&[&status.to_string(), &self.name]))
                .inc();
        }
        self.rq_time.observe(ms);
    }
}

/// A connection manager's counters (`http.<stat_prefix>.*` in Envoy).
#[derive(Debug, Clone)]
pub struct HttpStats {
    pub rq_total: IntCounter,
    rq_xx: [IntCounter; 5],
    pub failed_path_normalization: IntCounter,
    pub redirected_with_normalized_path: IntCounter,
}

impl HttpStats {
    pub fn new(prefix: &str) -> Self {
        let f = families();
        HttpStats {
            rq_total: f.downstream_rq_total.with_label_values(&[prefix]),
            rq_xx: class_counters(&f.downstream_rq_xx, prefix),
            failed_path_normalization: f.downstream_rq_failed_path_normalization.with_label_values(&[prefix]),
            redirected_with_normalized_path: f.downstream_rq_redirected_with_normalized_path.with_label_values(&[prefix]),
        }
    }

    pub fn response(&self, status: u16) {
        self.rq_xx[class_index(status)].inc();
    }
}

/// A CORS filter's counters (`http.<stat_prefix>.cors.*` in Envoy).
#[derive(Debug, Clone)]
pub struct CorsStats {
    pub origin_valid: IntCounter,
    pub origin_invalid: IntCounter,
}

impl CorsStats {
    pub fn new(hcm_prefix: &str) -> Self {
        let f = families();
        CorsStats {
            origin_valid: f.cors_origin_valid.with_label_values(&[hcm_prefix]),
            origin_invalid: f.cors_origin_invalid.with_label_values(&[hcm_prefix]),
        }
    }
}

/// `<stat_prefix>.http_local_rate_limit.*`, in [`LocalRateLimitStats`] order.
const LOCAL_RATE_LIMIT: [(&str, &str); 5] = [
    ("envoy_http_local_rate_limit_enabled", "requests the local rate limit was enabled for"),
    ("envoy_http_local_rate_limit_enforced", "rate limited requests answered with the limit status"),
    ("envoy_http_local_rate_limit_ok", "requests under the local rate limit"),
    ("envoy_http_local_rate_limit_rate_limited", "requests over the local rate limit"),
    // Always 0: shadow mode is not supported (the field is refused).
    ("envoy_http_local_rate_limit_shadow_mode", "requests rate limited in shadow mode"),
];

/// A local rate limit config's counters (Envoy's tag extraction puts the
/// config's `stat_prefix` in a label).
#[derive(Debug, Clone)]
pub struct LocalRateLimitStats {
    pub enabled: IntCounter,
    pub enforced: IntCounter,
    pub ok: IntCounter,
    pub rate_limited: IntCounter,
}

impl LocalRateLimitStats {
    pub fn new(prefix: &str) -> Self {
        let [enabled, enforced, ok, rate_limited, shadow_mode] =
            families().local_rate_limit.each_ref().map(|v| v.with_label_values(&[prefix]));
        drop(shadow_mode); // resolved so that it is exported, as 0
        LocalRateLimitStats { enabled, enforced, ok, rate_limited }
    }
}

/// The Prometheus text exposition of every statistic.
pub fn prometheus_text() -> Vec<u8> {
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for well-formed families.
    let _ = prometheus::TextEncoder::new().encode(&families().registry.gather(), &mut out);
    out
}
