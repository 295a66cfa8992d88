//! Metrics plugins define (`proxy_define_metric`): counters, gauges and
//! histograms in one process-wide registry (the same name from two
//! workers or two plugins is one metric, as in Envoy's stats store),
//! shown on `/stats/prometheus` as Envoy shows its "wasmcustom" namespace:
//! the plugin's name as it is, without an `envoy_` prefix.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::abi::{MetricType, Status};
use super::engine::lock;

// Envoy's default histogram buckets, as the proxy's own histograms use.
use crate::stats::BUCKETS_MS as BUCKETS;

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum: AtomicU64,
}

#[derive(Debug, Clone)]
pub enum Metric {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicI64>),
    Histogram(Arc<Histogram>),
}

impl Metric {
    pub fn increment(&self, offset: i64) -> Status {
        match self {
            Metric::Counter(c) if offset >= 0 => {
                c.fetch_add(offset as u64, Ordering::Relaxed);
                Status::Ok
            }
            Metric::Gauge(g) => {
                g.fetch_add(offset, Ordering::Relaxed);
                Status::Ok
            }
            _ => Status::BadArgument,
        }
    }

    pub fn record(&self, value: u64) -> Status {
        match self {
            Metric::Counter(c) => {
                c.store(value, Ordering::Relaxed);
                Status::Ok
            }
            Metric::Gauge(g) => {
                g.store(value as i64, Ordering::Relaxed);
                Status::Ok
            }
            Metric::Histogram(h) => {
                for (bound, bucket) in BUCKETS.iter().zip(&h.buckets) {
                    if value as f64 <= *bound {
                        bucket.fetch_add(1, Ordering::Relaxed);
                    }
                }
                h.count.fetch_add(1, Ordering::Relaxed);
                h.sum.fetch_add(value, Ordering::Relaxed);
                Status::Ok
            }
        }
    }

    pub fn get(&self) -> u64 {
        match self {
            Metric::Counter(c) => c.load(Ordering::Relaxed),
            Metric::Gauge(g) => g.load(Ordering::Relaxed) as u64,
            Metric::Histogram(h) => h.count.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    by_name: Mutex<BTreeMap<String, Metric>>,
}

impl Metrics {
    pub fn global() -> Arc<Metrics> {
        static M: OnceLock<Arc<Metrics>> = OnceLock::new();
        M.get_or_init(Default::default).clone()
    }

    /// The metric of that name, made on first definition; `None` when the
    /// name is taken by a metric of another kind or cannot be exported.
    pub fn define(&self, kind: MetricType, name: &str) -> Option<Metric> {
        let name = prometheus_name(name)?;
        let mut map = lock(&self.by_name);
        let metric = map.entry(name).or_insert_with(|| match kind {
            MetricType::Counter => Metric::Counter(Default::default()),
            MetricType::Gauge => Metric::Gauge(Default::default()),
            MetricType::Histogram => Metric::Histogram(Arc::new(Histogram {
                buckets: BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
                ..Default::default()
            })),
        });
        let same_kind = matches!(
            (kind, &*metric),
            (MetricType::Counter, Metric::Counter(_)) | (MetricType::Gauge, Metric::Gauge(_)) | (MetricType::Histogram, Metric::Histogram(_))
        );
        same_kind.then(|| metric.clone())
    }

    /// The Prometheus text of every metric defined so far.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, metric) in lock(&self.by_name).iter() {
            match metric {
                Metric::Counter(c) => {
                    let _ = writeln!(out, "# TYPE {name} counter\n{name}{{}} {}", c.load(Ordering::Relaxed));
                }
                Metric::Gauge(g) => {
                    let _ = writeln!(out, "# TYPE {name} gauge\n{name}{{}} {}", g.load(Ordering::Relaxed));
                }
                Metric::Histogram(h) => {
                    let _ = writeln!(out, "# TYPE {name} histogram");
                    for (bound, bucket) in BUCKETS.iter().zip(&h.buckets) {
                        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", bucket.load(Ordering::Relaxed));
                    }
                    let count = h.count.load(Ordering::Relaxed);
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
                    let _ = writeln!(out, "{name}_sum{{}} {}", h.sum.load(Ordering::Relaxed));
                    let _ = writeln!(out, "{name}_count{{}} {count}");
                }
            }
        }
        out
    }
}

/// Envoy's Prometheus name for a stat: characters outside `[a-zA-Z0-9_]`
/// become `_`.
fn prometheus_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    Some(out)
}
