//! Host health as Envoy judges it: passive outlier detection (consecutive
//! 5xx and gateway failures eject a host for base_ejection_time × the
//! number of ejections in a row, capped, and at most max_ejection_percent
//! of the hosts) and active HTTP health checks (unhealthy after
//! `unhealthy_threshold` failures, healthy again after `healthy_threshold`
//! successes). Counting happens on the data path with atomics; decisions
//! flip a host flag and rebuild the cluster's host set.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use weft_envoy_api::pb::envoy::config::cluster::v3 as xds_cluster;
use weft_envoy_api::pb::envoy::config::core::v3 as xds_core;

use super::hosts::{Host, EJECTED, FAILED_HEALTH_CHECK};
use crate::model::{duration, ConfigError, Result};

/// `outlier_detection`, with Envoy's defaults.
#[derive(Debug, Clone)]
pub struct OutlierDetection {
    consecutive_5xx: u32,
    enforcing_5xx: u32,
    consecutive_gateway: u32,
    enforcing_gateway: u32,
    pub interval: Duration,
    base_ejection: Duration,
    max_ejection: Duration,
    max_ejection_percent: u32,
}

impl OutlierDetection {
    pub fn compile(o: &xds_cluster::OutlierDetection, path: &str) -> Result<Self> {
        let n = |v: &Option<weft_envoy_api::pb::google::protobuf::UInt32Value>, d: u32| v.as_ref().map_or(d, |v| v.value);
        let percent = |v: &Option<weft_envoy_api::pb::google::protobuf::UInt32Value>, d: u32, field: &str| {
            let p = n(v, d);
            if p > 100 {
                return Err(ConfigError::new(format!("{path}.{field}"), "must be at most 100"));
            }
            Ok(p)
        };
        let d = |v: &Option<weft_envoy_api::pb::google::protobuf::Duration>, d: Duration| v.as_ref().map_or(d, duration);
        let interval = d(&o.interval, Duration::from_secs(10));
        if interval.is_zero() {
            return Err(ConfigError::new(format!("{path}.interval"), "must be greater than 0"));
        }
        let base_ejection = d(&o.base_ejection_time, Duration::from_secs(30));
        Ok(OutlierDetection {
            consecutive_5xx: n(&o.consecutive_5xx, 5),
            enforcing_5xx: percent(&o.enforcing_consecutive_5xx, 100, "enforcing_consecutive_5xx")?,
            consecutive_gateway: n(&o.consecutive_gateway_failure, 5),
            enforcing_gateway: percent(&o.enforcing_consecutive_gateway_failure, 0, "enforcing_consecutive_gateway_failure")?,
            interval,
            base_ejection,
            max_ejection: d(&o.max_ejection_time, Duration::from_secs(300)).max(base_ejection),
            max_ejection_percent: percent(&o.max_ejection_percent, 10, "max_ejection_percent")?,
        })
    }

    /// Counts one attempt's result on a host: an upstream status, or the
    /// status Envoy maps a local failure to (connect failure 503, timeout
    /// 504). Returns the ejection reason when the host must be ejected
    /// now; `ejected_share` tells what share (percent) of hosts already is.
    pub fn record(&self, host: &Host, status: u16) -> Option<Reason> {
        if !(500..600).contains(&status) {
            host.consecutive_5xx.store(0, Ordering::Relaxed);
            host.consecutive_gateway.store(0, Ordering::Relaxed);
            return None;
        }
        let fives = host.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let gateway = if matches!(status, 502..=504) {
            host.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            host.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        if fives == self.consecutive_5xx {
            return Some(Reason::Consecutive5xx);
        }
        if gateway == self.consecutive_gateway {
            return Some(Reason::ConsecutiveGatewayFailure);
        }
        None
    }

    /// Ejects the host if the reason is enforced and the cluster may lose
    /// another host. Returns whether it was ejected.
    pub fn eject(&self, host: &Host, reason: Reason, ejected_share_percent: u32) -> bool {
        host.consecutive_5xx.store(0, Ordering::Relaxed);
        host.consecutive_gateway.store(0, Ordering::Relaxed);
        let enforcing = match reason {
            Reason::Consecutive5xx => self.enforcing_5xx,
            Reason::ConsecutiveGatewayFailure => self.enforcing_gateway,
        };
        if host.flag(EJECTED) || ejected_share_percent >= self.max_ejection_percent && ejected_share_percent > 0 {
            return false;
        }
        if enforcing < 100 && rand::random::<u32>() % 100 >= enforcing {
            return false;
        }
        host.flags.fetch_or(EJECTED, Ordering::Relaxed);
        host.ejections.fetch_add(1, Ordering::Relaxed);
        host.ejected_at_ms.store(now_ms(), Ordering::Relaxed);
        true
    }

    /// The interval sweep: brings back hosts whose ejection time is over
    /// (base × ejections in a row, capped); a host that stayed in through
    /// a whole interval works off one past ejection. Returns whether any
    /// host came back.
    pub fn sweep(&self, host: &Host) -> bool {
        let ejections = host.ejections.load(Ordering::Relaxed);
        if !host.flag(EJECTED) {
            if ejections > 0 {
                host.ejections.fetch_sub(1, Ordering::Relaxed);
            }
            return false;
        }
        let ejected_for = Duration::from_millis(now_ms().saturating_sub(host.ejected_at_ms.load(Ordering::Relaxed)));
        let period = (self.base_ejection * ejections.max(1)).min(self.max_ejection);
        if ejected_for < period {
            return false;
        }
        host.flags.fetch_and(!EJECTED, Ordering::Relaxed);
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
}

/// Milliseconds on a process-wide monotonic clock.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// An active HTTP health check.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub interval: Duration,
    /// The interval while the cluster has had no traffic (Envoy: 60 s).
    pub no_traffic_interval: Duration,
    pub timeout: Duration,
    unhealthy_threshold: u32,
    healthy_threshold: u32,
    pub path: String,
    /// The Host header; Envoy sends the cluster name when not set.
    pub host: Option<String>,
    /// Accepted statuses as [start, end) ranges; Envoy accepts 200 only by default.
    expected: Vec<(u16, u16)>,
}

impl HealthCheck {
    pub fn compile(checks: &[xds_core::HealthCheck], path: &str) -> Result<Option<Self>> {
        let Some(hc) = checks.first() else { return Ok(None) };
        if checks.len() > 1 {
            return Err(ConfigError::new(format!("{path}[1]"), "more than one health check is not supported by weft-proxy"));
        }
        let path = format!("{path}[0]");
        let required = |v: &Option<weft_envoy_api::pb::google::protobuf::Duration>, field: &str| {
            v.as_ref().map(duration).filter(|d| !d.is_zero()).ok_or_else(|| ConfigError::new(format!("{path}.{field}"), "is required and must be greater than 0"))
        };
        let count = |v: &Option<weft_envoy_api::pb::google::protobuf::UInt32Value>, field: &str| {
            v.as_ref().map(|v| v.value).ok_or_else(|| ConfigError::new(format!("{path}.{field}"), "is required"))
        };
        use xds_core::health_check::HealthChecker;
        let Some(HealthChecker::HttpHealthCheck(http)) = &hc.health_checker else {
            return Err(ConfigError::new(path, "only http_health_check is supported by weft-proxy"));
        };
        if http.path.is_empty() {
            return Err(ConfigError::new(format!("{path}.http_health_check.path"), "path is required"));
        }
        let mut expected = Vec::new();
        for (i, r) in http.expected_statuses.iter().enumerate() {
            if r.start < 100 || r.end > 600 || r.start >= r.end {
                return Err(ConfigError::new(format!("{path}.http_health_check.expected_statuses[{i}]"), "must be a range within [100, 600)"));
            }
            expected.push((r.start as u16, r.end as u16));
        }
        if expected.is_empty() {
            expected.push((200, 201));
        }
        Ok(Some(HealthCheck {
            interval: required(&hc.interval, "interval")?,
            no_traffic_interval: hc.no_traffic_interval.as_ref().map(duration).filter(|d| !d.is_zero()).unwrap_or(Duration::from_secs(60)),
            timeout: required(&hc.timeout, "timeout")?,
            unhealthy_threshold: count(&hc.unhealthy_threshold, "unhealthy_threshold")?.max(1),
            healthy_threshold: count(&hc.healthy_threshold, "healthy_threshold")?.max(1),
            path: http.path.clone(),
            host: (!http.host.is_empty()).then(|| http.host.clone()),
            expected,
        }))
    }

    pub fn passes(&self, status: u16) -> bool {
        self.expected.iter().any(|(start, end)| (*start..*end).contains(&status))
    }

    /// Records a check result; returns whether the host's health changed.
    /// A host's first check decides at once (Envoy does not make a new
    /// host wait for `healthy_threshold` successes).
    pub fn record(&self, host: &Host, ok: bool, first: bool) -> bool {
        let failed = host.flag(FAILED_HEALTH_CHECK);
        if ok != failed && !first {
            host.hc_streak.store(0, Ordering::Relaxed);
            return false;
        }
        let streak = host.hc_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = if ok { self.healthy_threshold } else { self.unhealthy_threshold };
        if !first && streak < threshold {
            return false;
        }
        host.hc_streak.store(0, Ordering::Relaxed);
        if ok {
            host.flags.fetch_and(!FAILED_HEALTH_CHECK, Ordering::Relaxed);
        } else {
            host.flags.fetch_or(FAILED_HEALTH_CHECK, Ordering::Relaxed);
        }
        failed == ok
    }
}
