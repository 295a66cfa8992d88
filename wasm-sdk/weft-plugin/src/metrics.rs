//! Plugin-defined metrics, exported by the host with its own (e.g. on
//! `/stats/prometheus`). Define them once, in `on_configure`, and keep the
//! handle: defining the same name again returns the same metric.
//!
//! Names are the host's business: Envoy files them under `wasmcustom.`
//! and exports them without its `envoy_` prefix.

use crate::abi::{self, MetricType};
use crate::host::{check, Status};

fn define(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: `name` outlives the call; the host writes one u32.
    check(unsafe { abi::proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

fn value(id: u32) -> Result<u64, Status> {
    let mut value = 0u64;
    // SAFETY: the host writes one u64.
    check(unsafe { abi::proxy_get_metric(id, &mut value) })?;
    Ok(value)
}

fn increment(id: u32, delta: i64) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { abi::proxy_increment_metric(id, delta) })
}

fn record(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { abi::proxy_record_metric(id, value) })
}

/// A monotonic count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter(u32);

impl Counter {
    pub fn define(name: &str) -> Result<Counter, Status> {
        define(MetricType::Counter, name).map(Counter)
    }

    pub fn increment(self) -> Result<(), Status> {
        self.increment_by(1)
    }

    pub fn increment_by(self, n: u64) -> Result<(), Status> {
        increment(self.0, i64::try_from(n).unwrap_or(i64::MAX))
    }

    pub fn value(self) -> Result<u64, Status> {
        value(self.0)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge(u32);

impl Gauge {
    pub fn define(name: &str) -> Result<Gauge, Status> {
        define(MetricType::Gauge, name).map(Gauge)
    }

    pub fn set(self, value: u64) -> Result<(), Status> {
        record(self.0, value)
    }

    /// Adds `delta` (negative: subtracts).
    pub fn adjust(self, delta: i64) -> Result<(), Status> {
        increment(self.0, delta)
    }

    pub fn value(self) -> Result<u64, Status> {
        value(self.0)
    }
}

/// A distribution of recorded values (the host picks the buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram(u32);

impl Histogram {
    pub fn define(name: &str) -> Result<Histogram, Status> {
        define(MetricType::Histogram, name).map(Histogram)
    }

    pub fn record(self, value: u64) -> Result<(), Status> {
        record(self.0, value)
    }
}
