//! The router's timeouts, started as Envoy starts them: the route timeout
//! and the per-try timeout when the client's request has ended (a slow
//! upload, or a gRPC stream the client keeps open, is not cut by them);
//! the stream idle timeout whenever nothing has moved for that long.
//!
//! The request body records its progress ([`Progress`]); an attempt waits
//! on the upstream and on [`Timeouts::attempt_expiry`], which follows it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Not yet (for [`Progress`]'s offsets).
const NOT_YET: u64 = u64::MAX;

/// When the request body last moved and when it ended, written by the body
/// as it is read, read by the clocks. Offsets from `start` in microseconds
/// (atomics: the router's future must stay `Send`).
pub struct Progress {
    start: Instant,
    moved: AtomicU64,
    ended: AtomicU64,
    /// Wakes a clock waiting on an older deadline.
    changed: Notify,
}

impl Progress {
    /// A request that reached the router at `start`; `ended`: its body has
    /// been read already (or it has none).
    pub fn new(start: Instant, ended: bool) -> Self {
        Progress { start, moved: AtomicU64::new(0), ended: AtomicU64::new(if ended { 0 } else { NOT_YET }), changed: Notify::new() }
    }

    fn at(&self, offset: u64) -> Option<Instant> {
        (offset != NOT_YET).then(|| self.start + Duration::from_micros(offset))
    }

    pub fn ended_at(&self) -> Option<Instant> {
        self.at(self.ended.load(Ordering::Relaxed))
    }

    pub fn moved_at(&self) -> Instant {
        self.at(self.moved.load(Ordering::Relaxed)).unwrap_or(self.start)
    }

    /// A piece of the body came (`ended`: its end).
    pub fn record(&self, ended: bool) {
        let now = self.start.elapsed().as_micros() as u64;
        self.moved.store(now, Ordering::Relaxed);
        if ended {
            self.ended.store(now, Ordering::Relaxed);
        }
        self.changed.notify_waiters();
    }
}

/// One request's timeouts (route, per try, stream idle), unset when `None`.
#[derive(Clone, Copy)]
pub struct Timeouts {
    pub route: Option<Duration>,
    pub per_try: Option<Duration>,
    pub idle: Option<Duration>,
}

impl Timeouts {
    /// The route timeout's deadline: none until the request has ended.
    pub fn route_deadline(&self, p: &Progress) -> Option<Instant> {
        Some(p.ended_at()? + self.route?)
    }

    /// When the stream idle timeout fires if nothing moves meanwhile. It
    /// counts only if it comes before the route deadline (which then
    /// decides the answer).
    pub fn idle_deadline(&self, p: &Progress) -> Option<Instant> {
        let idle = p.moved_at() + self.idle?;
        self.route_deadline(p).is_none_or(|d| idle < d).then_some(idle)
    }

    /// An attempt's deadline: its per-try timeout (from when it started or
    /// the request ended, whichever is later), the route deadline or the
    /// idle deadline, whichever comes first.
    pub fn attempt_deadline(&self, p: &Progress, attempt_start: Instant) -> Option<Instant> {
        let per_try = p.ended_at().zip(self.per_try).map(|(ended, t)| ended.max(attempt_start) + t);
        [per_try, self.route_deadline(p), self.idle_deadline(p)].into_iter().flatten().min()
    }

    /// Either deadline that ends the whole request has passed.
    pub fn request_expired(&self, p: &Progress) -> bool {
        let now = Instant::now();
        [self.route_deadline(p), self.idle_deadline(p)].into_iter().flatten().any(|d| now >= d)
    }

    /// Returns when the attempt's deadline has passed, following the body:
    /// each piece moves the idle deadline, its end starts the others.
    pub async fn attempt_expiry(&self, p: &Progress, attempt_start: Instant) {
        loop {
            let changed = p.changed.notified();
            tokio::pin!(changed);
            // Registered before the deadline is read: a change in between
            // still wakes it.
            changed.as_mut().enable();
            match self.attempt_deadline(p, attempt_start) {
                Some(d) if Instant::now() >= d => return,
                Some(d) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(d.into()) => {}
                        () = &mut changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts { route: Some(Duration::from_secs(10)), per_try: Some(Duration::from_secs(2)), idle: Some(Duration::from_secs(5)) };

    #[test]
    fn a_request_that_has_ended_runs_every_clock_from_its_start() {
        let p = Progress::new(Instant::now(), true);
        let start = p.start;
        assert_eq!(T.route_deadline(&p), Some(start + Duration::from_secs(10)));
        assert_eq!(T.idle_deadline(&p), Some(start + Duration::from_secs(5)));
        assert_eq!(T.attempt_deadline(&p, start), Some(start + Duration::from_secs(2)));
        // A retry's per-try timeout counts from the retry.
        let retry = start + Duration::from_secs(4);
        assert_eq!(T.attempt_deadline(&p, retry), Some(start + Duration::from_secs(5)));
    }

    #[test]
    fn a_body_still_coming_holds_the_route_and_per_try_clocks() {
        let p = Progress::new(Instant::now() - Duration::from_secs(60), false);
        assert_eq!(T.route_deadline(&p), None);
        // Only the idle clock runs: from the start, as nothing moved.
        assert_eq!(T.attempt_deadline(&p, p.start), Some(p.start + Duration::from_secs(5)));
        assert!(T.request_expired(&p));
        p.record(false);
        assert!(!T.request_expired(&p));
        p.record(true);
        let ended = p.ended_at().expect("ended");
        assert_eq!(T.attempt_deadline(&p, p.start), Some(ended + Duration::from_secs(2)));
        assert_eq!(T.route_deadline(&p), Some(ended + Duration::from_secs(10)));
    }

    #[test]
    fn the_idle_clock_yields_to_a_route_deadline_before_it() {
        let p = Progress::new(Instant::now(), true);
        let t = Timeouts { route: Some(Duration::from_secs(1)), ..T };
        assert_eq!(t.idle_deadline(&p), None);
    }

    #[tokio::test]
    async fn an_attempt_expires_a_per_try_timeout_after_the_body_ends() {
        let p = Progress::new(Instant::now(), false);
        let t = Timeouts { route: None, per_try: Some(Duration::from_millis(200)), idle: None };
        let start = Instant::now();
        let expiry = t.attempt_expiry(&p, start);
        tokio::pin!(expiry);
        // The body takes 300 ms: no clock runs meanwhile.
        assert!(tokio::time::timeout(Duration::from_millis(300), &mut expiry).await.is_err());
        p.record(true);
        expiry.await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(900), "{took:?}");
    }
}
