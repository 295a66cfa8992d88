//! A cluster's hosts as the load balancer sees them: grouped by priority,
//! split into healthy and unhealthy (outlier ejection, failed active health
//! check), with Envoy's priority loads and panic mode. A `HostSet` is an
//! immutable snapshot; any change (DNS answer, ejection, health check)
//! builds a new one, so picking a host reads one pointer and no locks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use super::consistent_hash::{Kind, Table};

/// Health flags of a host.
pub const EJECTED: u8 = 1;
pub const FAILED_HEALTH_CHECK: u8 = 2;

/// Envoy's defaults: a priority level's hosts count 1.4 times toward its
/// health, and a level with fewer than half its hosts healthy panics
/// (balances over all of them).
const OVERPROVISIONING: u64 = 140;
const PANIC_THRESHOLD_PERCENT: u64 = 50;

/// Where a host is and how it counts: what the load assignment (or a DNS
/// answer for it) says.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub priority: u32,
    /// `load_balancing_weight` (1 when unset).
    pub weight: u32,
    /// The name `auto_host_rewrite` puts in Host: the DNS name of a DNS
    /// cluster's endpoint, or the endpoint's `hostname`.
    pub hostname: Option<String>,
}

/// An upstream host: its endpoint, requests in flight (for LEAST_REQUEST)
/// and health.
#[derive(Debug)]
pub struct Host {
    pub addr: SocketAddr,
    pub priority: u32,
    pub weight: u32,
    pub hostname: Option<String>,
    active: AtomicUsize,
    pub(super) flags: AtomicU8,
    /// Outlier detection: consecutive 5xx / gateway failures.
    pub(super) consecutive_5xx: AtomicU32,
    pub(super) consecutive_gateway: AtomicU32,
    /// When ejected (ms on the process clock) and how many times in a row.
    pub(super) ejected_at_ms: AtomicU64,
    pub(super) ejections: AtomicU32,
    /// Active health checking: consecutive results of the current kind.
    pub(super) hc_streak: AtomicU32,
}

impl Host {
    pub fn new(endpoint: Endpoint) -> Arc<Host> {
        let Endpoint { addr, priority, weight, hostname } = endpoint;
        Arc::new(Host {
            addr,
            priority,
            weight,
            hostname,
            active: AtomicUsize::new(0),
            flags: AtomicU8::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            ejected_at_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            hc_streak: AtomicU32::new(0),
        })
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint { addr: self.addr, priority: self.priority, weight: self.weight, hostname: self.hostname.clone() }
    }

    pub fn healthy(&self) -> bool {
        self.flags.load(Ordering::Relaxed) == 0
    }

    pub fn flag(&self, flag: u8) -> bool {
        self.flags.load(Ordering::Relaxed) & flag != 0
    }
}

/// A request in flight on a host; ends when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Host>);

impl InFlight {
    pub(super) fn start(host: Arc<Host>) -> Self {
        host.active.fetch_add(1, Ordering::Relaxed);
        InFlight(host)
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    pub fn host(&self) -> &Arc<Host> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The hosts of one priority, and which of them the balancer uses.
#[derive(Debug)]
pub(super) struct Level {
    /// The hosts the balancer picks from: the healthy ones, or all of them
    /// in panic mode.
    pub candidates: Vec<Arc<Host>>,
    /// With unequal weights: candidate indexes, each as often as its
    /// weight, interleaved (round robin and random walk it).
    pub schedule: Option<Vec<u32>>,
    /// The hash table over `candidates`, for RING_HASH / MAGLEV.
    pub table: Option<Table>,
    /// Share of requests (percent) this level takes.
    pub load: u64,
}

#[derive(Debug, Default)]
pub struct HostSet {
    /// Every host, in configuration order (admin, DNS updates).
    pub hosts: Vec<Arc<Host>>,
    pub(super) levels: Vec<Level>,
}

impl HostSet {
    /// Groups hosts by priority and computes Envoy's priority loads: each
    /// level's health is min(100, 1.4 × healthy share); levels take load in
    /// priority order up to their health, normalized when the total health
    /// is below 100. With no healthy host anywhere, priority 0 takes all.
    pub fn new(hosts: Vec<Arc<Host>>, hashing: Option<Kind>) -> Self {
        let mut priorities: Vec<u32> = hosts.iter().map(|h| h.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let groups: Vec<Vec<Arc<Host>>> =
            priorities.iter().map(|p| hosts.iter().filter(|h| h.priority == *p).cloned().collect()).collect();
        let health: Vec<u64> = groups
            .iter()
            .map(|g| {
                let healthy = g.iter().filter(|h| h.healthy()).count() as u64;
                (OVERPROVISIONING * healthy / g.len().max(1) as u64).min(100)
            })
            .collect();
        let total: u64 = health.iter().sum::<u64>().min(100);
        let mut remaining = 100u64;
        let mut levels = Vec::with_capacity(groups.len());
        for (i, group) in groups.into_iter().enumerate() {
            let load = match (health[i] * 100).checked_div(total) {
                Some(share) => share.min(remaining),
                None if i == 0 => 100,
                None => 0,
            };
            remaining -= load;
            let healthy: Vec<Arc<Host>> = group.iter().filter(|h| h.healthy()).cloned().collect();
            let panic = (healthy.len() as u64) * 100 < PANIC_THRESHOLD_PERCENT * group.len() as u64;
            let candidates = if panic { group } else { healthy };
            let weighted: Vec<(SocketAddr, u32)> = candidates.iter().map(|h| (h.addr, h.weight)).collect();
            let table = hashing.and_then(|kind| Table::build(kind, &weighted));
            let schedule = schedule(&weighted);
            levels.push(Level { candidates, schedule, table, load });
        }
        // Truncation may leave points over: the first level with load takes them.
        if remaining > 0 && remaining < 100 {
            if let Some(l) = levels.iter_mut().find(|l| l.load > 0) {
                l.load += remaining;
            }
        }
        HostSet { hosts, levels }
    }

    /// The level a request goes to: the only one, or one drawn by load.
    pub(super) fn level(&self) -> Option<&Level> {
        if self.levels.len() == 1 {
            return self.levels.first();
        }
        let mut point = rand::random::<u64>() % 100;
        for l in &self.levels {
            if point < l.load {
                return Some(l);
            }
            point -= l.load;
        }
        self.levels.first()
    }
}

/// Longest weighted round-robin cycle kept; larger weights are scaled down.
const MAX_SCHEDULE: u64 = 4096;

/// A weighted round-robin cycle (smooth: each step picks the host furthest
/// behind its share), or `None` when all weights are equal.
fn schedule(hosts: &[(SocketAddr, u32)]) -> Option<Vec<u32>> {
    let first = hosts.first()?.1;
    if hosts.iter().all(|(_, w)| *w == first) {
        return None;
    }
    // Smallest whole ratio first; then, if the cycle is still too long,
    // scaled down (approximately proportional).
    let divisor = hosts.iter().fold(0u64, |g, (_, w)| gcd(g, *w as u64)).max(1);
    let reduced: Vec<u64> = hosts.iter().map(|(_, w)| *w as u64 / divisor).collect();
    let scale = reduced.iter().sum::<u64>().div_ceil(MAX_SCHEDULE).max(1);
    let weights: Vec<i64> = reduced.iter().map(|w| (w / scale).max(1) as i64).collect();
    let sum: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(sum as usize);
    for _ in 0..sum {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let (best, _) = current.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))?;
        current[best] -= sum;
        cycle.push(best as u32);
    }
    Some(cycle)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(priorities: &[u32]) -> Vec<Arc<Host>> {
        priorities
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let addr = SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16));
                Host::new(Endpoint { addr, priority: *p, weight: 1, hostname: None })
            })
            .collect()
    }

    fn loads(set: &HostSet) -> Vec<u64> {
        set.levels.iter().map(|l| l.load).collect()
    }

    #[test]
    fn weighted_schedule_is_proportional_and_interleaved() {
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        let b = SocketAddr::from(([127, 0, 0, 1], 2));
        assert_eq!(schedule(&[(a, 1), (b, 1)]), None);
        assert_eq!(schedule(&[(a, 1), (b, 3)]), Some(vec![1, 0, 1, 1]));
        assert_eq!(schedule(&[(a, 1_000_000), (b, 3_000_000)]), Some(vec![1, 0, 1, 1]));
        let big = schedule(&[(a, 999_983), (b, 3_000_017)]).expect("weighted");
        let share = big.iter().filter(|i| **i == 1).count() as f64 / big.len() as f64;
        assert!(big.len() <= 4096 && (share - 0.75).abs() < 0.01, "{} {share}", big.len());
    }

    #[test]
    fn priority_loads_follow_health_with_overprovisioning() {
        let hs = hosts(&[0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(loads(&HostSet::new(hs.clone(), None)), [100, 0]);
        // 3 of 5 healthy: 60% × 1.4 = 84% stays on P0.
        hs[0].flags.store(EJECTED, Ordering::Relaxed);
        hs[1].flags.store(EJECTED, Ordering::Relaxed);
        assert_eq!(loads(&HostSet::new(hs.clone(), None)), [84, 16]);
        // P0 fully down: everything fails over.
        for h in &hs[..5] {
            h.flags.store(EJECTED, Ordering::Relaxed);
        }
        let set = HostSet::new(hs.clone(), None);
        assert_eq!(loads(&set), [0, 100]);
        // And P0, in panic, would balance over all of its hosts.
        assert_eq!(set.levels[0].candidates.len(), 5);
    }
}
