//! Consistent hashing load balancers, built to pick the same host as
//! Envoy for the same request hash: a ketama ring (`RING_HASH`) and a
//! Maglev lookup table (`MAGLEV`), both over xxHash64 of each host's
//! `ip:port`. Matching Envoy matters in a mesh that mixes proxies: session
//! affinity holds whichever proxy a request passes through.

use std::net::SocketAddr;

use xxhash_rust::xxh64::xxh64;

/// Envoy's defaults.
pub const DEFAULT_MIN_RING: u64 = 1024;
pub const DEFAULT_MAX_RING: u64 = 8 * 1024 * 1024;
pub const DEFAULT_MAGLEV_TABLE: u64 = 65537;

/// A lookup from a request hash to an index into the host list.
#[derive(Debug)]
pub enum Table {
    /// Ring points (hash, host index), sorted by hash.
    Ring(Vec<(u64, u32)>),
    /// Host index per slot; the slot is `hash % len`.
    Maglev(Vec<u32>),
}

/// What to build for a cluster's hosts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Ring { min: u64, max: u64 },
    Maglev { size: u64 },
}

/// Envoy's host key: the address as it prints it (`127.0.0.1:80`, `[::1]:80`).
fn key(addr: &SocketAddr) -> String {
    addr.to_string()
}

impl Table {
    /// Builds the table for (host, weight), in host-list order.
    pub fn build(kind: Kind, hosts: &[(SocketAddr, u32)]) -> Option<Table> {
        if hosts.is_empty() {
            return None;
        }
        Some(match kind {
            Kind::Ring { min, max } => Table::Ring(ring(hosts, min, max)),
            Kind::Maglev { size } => Table::Maglev(maglev(hosts, size)),
        })
    }

    /// The host index for a request hash.
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        match self {
            Table::Ring(points) => {
                // The first point at or after the hash, wrapping to the start.
                let i = points.partition_point(|(h, _)| *h < hash);
                points.get(i).or_else(|| points.first()).map(|(_, host)| *host as usize)
            }
            Table::Maglev(slots) => slots.get((hash % slots.len() as u64) as usize).map(|h| *h as usize),
        }
    }
}

/// Hosts get points in proportion to their weight, scaled so the ring has
/// at least `min` points (the lightest host a whole number), at most `max`.
/// A host's points are the hashes of `"<ip:port>_<n>"`.
fn ring(hosts: &[(SocketAddr, u32)], min: u64, max: u64) -> Vec<(u64, u32)> {
    let total: f64 = hosts.iter().map(|(_, w)| *w as f64).sum();
    let normalized: Vec<f64> = hosts.iter().map(|(_, w)| *w as f64 / total).collect();
    let lightest = normalized.iter().copied().fold(f64::INFINITY, f64::min);
    // Envoy scales so that the lightest host gets a whole number of points.
    let scale = ((lightest * min as f64).ceil() / lightest).min(max as f64);
    let mut points = Vec::with_capacity(scale.ceil() as usize);
    let (mut current, mut target) = (0.0f64, 0.0f64);
    for (index, ((addr, _), weight)) in hosts.iter().zip(&normalized).enumerate() {
        let prefix = format!("{}_", key(addr));
        target += scale * weight;
        let mut i = 0u64;
        while current < target {
            points.push((xxh64(format!("{prefix}{i}").as_bytes(), 0), index as u32));
            i += 1;
            current += 1.0;
        }
    }
    points.sort_by_key(|(hash, _)| *hash);
    points
}

/// Maglev's table: hosts in key order take turns claiming their next
/// preferred free slot (offset + n·skip) until every slot is taken; a host
/// of a fraction of the heaviest weight takes a turn that often.
fn maglev(hosts: &[(SocketAddr, u32)], size: u64) -> Vec<u32> {
    struct Entry {
        host: u32,
        offset: u64,
        skip: u64,
        next: u64,
        weight: f64,
        target: f64,
    }
    let total: f64 = hosts.iter().map(|(_, w)| *w as f64).sum();
    let mut keyed: Vec<(String, u32, f64)> =
        hosts.iter().enumerate().map(|(i, (a, w))| (key(a), i as u32, *w as f64 / total)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let heaviest = keyed.iter().map(|e| e.2).fold(0.0f64, f64::max);
    let mut entries: Vec<Entry> = keyed
        .iter()
        .map(|(k, host, weight)| Entry {
            host: *host,
            offset: xxh64(k.as_bytes(), 0) % size,
            skip: xxh64(k.as_bytes(), 1) % (size - 1) + 1,
            next: 0,
            weight: *weight,
            target: 0.0,
        })
        .collect();
    let mut slots = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    let mut iteration = 0u64;
    while filled < size {
        iteration += 1;
        for e in entries.iter_mut() {
            if filled == size {
                break;
            }
            if (iteration as f64) * e.weight < e.target {
                continue;
            }
            e.target += heaviest;
            let mut slot = (e.offset + e.skip * e.next) % size;
            while slots[slot as usize] != u32::MAX {
                e.next += 1;
                slot = (e.offset + e.skip * e.next) % size;
            }
            slots[slot as usize] = e.host;
            e.next += 1;
            filled += 1;
        }
    }
    slots
}

/// Whether `n` is prime (Maglev's table size must be).
pub fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: u16) -> Vec<(SocketAddr, u32)> {
        (0..n).map(|i| (SocketAddr::from(([127, 0, 0, 1], 8000 + i)), 1)).collect()
    }

    #[test]
    fn ring_has_equal_points_per_host_and_wraps() {
        let Some(Table::Ring(points)) = Table::build(Kind::Ring { min: 1024, max: DEFAULT_MAX_RING }, &hosts(3)) else {
            panic!("ring")
        };
        assert_eq!(points.len(), 3 * 342);
        let table = Table::Ring(points.clone());
        assert_eq!(table.lookup(u64::MAX), Some(points[0].1 as usize));
        assert_eq!(table.lookup(points[5].0), Some(points[5].1 as usize));
    }

    #[test]
    fn maglev_fills_every_slot_evenly() {
        let Some(Table::Maglev(slots)) = Table::build(Kind::Maglev { size: 65537 }, &hosts(4)) else { panic!("maglev") };
        let mut counts = [0usize; 4];
        for s in &slots {
            counts[*s as usize] += 1;
        }
        assert!(counts.iter().all(|c| (16380..=16390).contains(c)), "{counts:?}");
        assert!(is_prime(65537) && !is_prime(65536));
    }
}
