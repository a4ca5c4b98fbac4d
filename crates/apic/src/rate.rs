//! Client-side request rate limit: a token bucket shared by all requests of one client.

use crate::config::RateLimit;
use std::time::{Duration, Instant};

/// Token bucket that hands out reservations: each request takes a token now or waits for one.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(limit: &RateLimit, now: Instant) -> Self {
        let burst = f64::from(limit.burst.max(1));
        Self {
            rate: limit.per_second.max(0.001),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Reserves one request; returns how long the caller must wait before sending.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_paced() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            &RateLimit {
                per_second: 2.0,
                burst: 2,
            },
            t0,
        );
        assert_eq!(b.reserve(t0), Duration::ZERO);
        assert_eq!(b.reserve(t0), Duration::ZERO);
        assert_eq!(b.reserve(t0), Duration::from_millis(500));
        assert_eq!(
            b.reserve(t0),
            Duration::from_millis(1000),
            "reservations queue up"
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.reserve(later), Duration::ZERO, "refills up to the burst");
        assert_eq!(b.reserve(later), Duration::ZERO);
        assert_eq!(b.reserve(later), Duration::from_millis(500));
    }
}
