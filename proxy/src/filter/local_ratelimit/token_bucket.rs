//! A token bucket that every worker shares without a lock: its whole state
//! is one atomic word.
//!
//! The word is the instant the bucket's credit started to accrue ("empty
//! at"): at time `t` the bucket holds `min(max, (t - empty_at) / per_token)`
//! tokens. Taking a token moves `empty_at` one token's time forward with a
//! compare-and-swap; refilling needs no timer. This is Envoy 1.40's
//! continuous refill: `tokens_per_fill / fill_interval` tokens a second,
//! full at creation.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    max_tokens: u64,
    /// Nanoseconds to earn one token (`fill_interval / tokens_per_fill`,
    /// at least 1).
    per_token: i64,
    /// `max_tokens * per_token`: the most credit the bucket holds.
    capacity: i64,
    /// `x-ratelimit-reset` when the bucket is empty.
    reset_when_empty: u64,
    epoch: Instant,
    /// Nanoseconds since `epoch`; negative while the initial fill lasts.
    empty_at: AtomicI64,
}

/// The outcome of taking a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub allowed: bool,
    /// Whole tokens left afterwards.
    pub remaining: u64,
}

impl TokenBucket {
    pub fn new(max_tokens: u32, tokens_per_fill: u32, fill_interval: Duration) -> Self {
        let tokens_per_fill = tokens_per_fill.max(1);
        let interval_ns = i64::try_from(fill_interval.as_nanos()).unwrap_or(i64::MAX);
        let per_token = (interval_ns / i64::from(tokens_per_fill)).max(1);
        let capacity = per_token.saturating_mul(i64::from(max_tokens));
        // Envoy reports the time to earn one token, in milliseconds rounded
        // up, then truncated to whole seconds.
        let ms = (fill_interval.as_secs_f64() * 1000.0 / f64::from(tokens_per_fill)).ceil() as u64;
        TokenBucket {
            max_tokens: u64::from(max_tokens),
            per_token,
            capacity,
            reset_when_empty: ms / 1000,
            epoch: Instant::now(),
            empty_at: AtomicI64::new(-capacity),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&self) -> Taken {
        let now = i64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(i64::MAX);
        self.take_at(now)
    }

    fn take_at(&self, now: i64) -> Taken {
        let mut empty_at = self.empty_at.load(Ordering::Relaxed);
        loop {
            let credit = now.saturating_sub(empty_at).min(self.capacity);
            // Negative when another worker took a token at a later `now`.
            if credit < self.per_token {
                return Taken { allowed: false, remaining: 0 };
            }
            let next = now - credit + self.per_token;
            match self.empty_at.compare_exchange_weak(empty_at, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    let remaining = ((credit - self.per_token) / self.per_token) as u64;
                    return Taken { allowed: true, remaining };
                }
                Err(current) => empty_at = current,
            }
        }
    }

    pub fn max_tokens(&self) -> u64 {
        self.max_tokens
    }

    /// Seconds until the next token, as Envoy's `x-ratelimit-reset` says
    /// it: 0 while tokens remain.
    pub fn reset_seconds(&self, remaining: u64) -> u64 {
        if remaining >= 1 {
            0
        } else {
            self.reset_when_empty
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    #[test]
    fn starts_full_and_refills_continuously() {
        let b = TokenBucket::new(2, 1, Duration::from_secs(1));
        assert_eq!(b.take_at(0), Taken { allowed: true, remaining: 1 });
        assert_eq!(b.take_at(0), Taken { allowed: true, remaining: 0 });
        assert!(!b.take_at(SEC / 2).allowed);
        assert_eq!(b.take_at(SEC), Taken { allowed: true, remaining: 0 });
        // Never more than max_tokens, however long it rests.
        assert_eq!(b.take_at(100 * SEC), Taken { allowed: true, remaining: 1 });
    }

    #[test]
    fn zero_tokens_always_refuses() {
        let b = TokenBucket::new(0, 1, Duration::from_millis(50));
        assert!(!b.take_at(0).allowed);
        assert!(!b.take_at(1000 * SEC).allowed);
    }

    #[test]
    fn tokens_per_fill_split_the_interval() {
        let b = TokenBucket::new(1, 4, Duration::from_secs(60));
        assert!(b.take_at(0).allowed);
        assert!(!b.take_at(14 * SEC).allowed);
        assert!(b.take_at(15 * SEC).allowed);
        assert_eq!(b.reset_seconds(0), 15);
        assert_eq!(b.reset_seconds(1), 0);
    }

    #[test]
    fn reset_is_truncated_to_seconds_as_envoy_reports_it() {
        assert_eq!(TokenBucket::new(1, 2, Duration::from_secs(1)).reset_seconds(0), 0);
        assert_eq!(TokenBucket::new(1, 1, Duration::from_millis(1500)).reset_seconds(0), 1);
    }

    #[test]
    fn concurrent_takers_never_exceed_the_bucket() {
        let b = std::sync::Arc::new(TokenBucket::new(1000, 1, Duration::from_secs(3600)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..500).filter(|_| b.take_at(0).allowed).count())
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(allowed, 1000);
    }
}
