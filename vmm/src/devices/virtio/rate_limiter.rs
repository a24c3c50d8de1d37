//! Token-bucket rate limiting for a device's queues, as Firecracker offers:
//! one bucket for bytes and one for operations, each with a size, a refill
//! time (the time to refill an empty bucket completely) and an optional
//! one-time burst on top.
//!
//! A device asks [`RateLimiter::consume`] before serving a request; when
//! refused, it stops serving and the limiter's timerfd (watched by the
//! worker) fires when enough tokens should be back.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use kiln_api::vm::{RateLimitConfig, TokenBucketConfig};
use vmm_sys_util::timerfd::TimerFd;

/// One bucket.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    size: u64,
    refill_time: Duration,
    budget: u64,
    one_time_burst: u64,
    last: Instant,
}

impl TokenBucket {
    /// None if `size` or `refill_time` is zero (no limit).
    pub fn new(size: u64, one_time_burst: u64, refill_time: Duration) -> Option<Self> {
        if size == 0 || refill_time.is_zero() {
            return None;
        }
        Some(TokenBucket {
            size,
            refill_time,
            budget: size,
            one_time_burst,
            last: Instant::now(),
        })
    }

    pub fn from_config(c: &TokenBucketConfig) -> Option<Self> {
        Self::new(
            c.size,
            c.one_time_burst,
            Duration::from_millis(c.refill_time_ms),
        )
    }

    fn replenish(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        let add = elapsed * u128::from(self.size) / self.refill_time.as_nanos().max(1);
        if add > 0 {
            self.budget = (u128::from(self.budget) + add).min(u128::from(self.size)) as u64;
            self.last = now;
        }
    }

    /// Take `tokens` (capped at the bucket size, so one huge request waits
    /// for a full bucket rather than forever). False if not enough.
    pub fn reduce_at(&mut self, tokens: u64, now: Instant) -> bool {
        let mut tokens = tokens.min(self.size);
        let from_burst = tokens.min(self.one_time_burst);
        self.one_time_burst -= from_burst;
        tokens -= from_burst;
        if tokens == 0 {
            return true;
        }
        self.replenish(now);
        if self.budget >= tokens {
            self.budget -= tokens;
            true
        } else {
            // Give back what the burst paid, so a refusal has no effect.
            self.one_time_burst += from_burst;
            false
        }
    }

    /// Return tokens taken by a request that was then not served.
    pub fn refund(&mut self, tokens: u64) {
        self.budget = (self.budget + tokens.min(self.size)).min(self.size);
    }

    /// How long until `tokens` are available.
    pub fn wait_for(&self, tokens: u64) -> Duration {
        let need = tokens.min(self.size).saturating_sub(self.budget);
        let ns = u128::from(need) * self.refill_time.as_nanos() / u128::from(self.size);
        Duration::from_nanos(ns as u64).max(Duration::from_millis(1))
    }
}

/// A bytes bucket and an operations bucket, with the timer that wakes the
/// device when a refused request may go.
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    blocked: bool,
}

impl RateLimiter {
    pub fn new(bandwidth: Option<TokenBucket>, ops: Option<TokenBucket>) -> std::io::Result<Self> {
        Ok(RateLimiter {
            bandwidth,
            ops,
            timer: TimerFd::new().map_err(std::io::Error::from)?,
            blocked: false,
        })
    }

    /// None if the configuration limits nothing.
    pub fn from_config(c: &RateLimitConfig) -> std::io::Result<Option<Self>> {
        let bw = c.bandwidth.as_ref().and_then(TokenBucket::from_config);
        let ops = c.ops.as_ref().and_then(TokenBucket::from_config);
        if bw.is_none() && ops.is_none() {
            return Ok(None);
        }
        Self::new(bw, ops).map(Some)
    }

    /// Whether a request of `bytes` may go now. If not, the timer is armed
    /// and [`Self::is_blocked`] holds until [`Self::on_timer`].
    pub fn consume(&mut self, bytes: u64) -> bool {
        self.consume_at(bytes, Instant::now())
    }

    pub fn consume_at(&mut self, bytes: u64, now: Instant) -> bool {
        if self.blocked {
            return false;
        }
        if let Some(ops) = &mut self.ops {
            if !ops.reduce_at(1, now) {
                let wait = ops.wait_for(1);
                self.block(wait);
                return false;
            }
        }
        if let Some(bw) = &mut self.bandwidth {
            if !bw.reduce_at(bytes, now) {
                let wait = bw.wait_for(bytes);
                if let Some(ops) = &mut self.ops {
                    ops.refund(1);
                }
                self.block(wait);
                return false;
            }
        }
        true
    }

    fn block(&mut self, wait: Duration) {
        self.blocked = true;
        if let Err(e) = self.timer.reset(wait, None) {
            log::error!("rate limiter: arming the timer failed: {e}");
            self.blocked = false;
        }
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The timer fired: requests may be tried again.
    pub fn on_timer(&mut self) {
        let _ = self.timer.wait();
        self.blocked = false;
    }

    pub fn timer_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_over_time_and_burst_is_spent_once() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 500, Duration::from_millis(100)).unwrap();
        assert!(b.reduce_at(1000, t0));
        assert!(b.reduce_at(500, t0), "the one-time burst");
        assert!(!b.reduce_at(1, t0));
        // 50 ms refills half the bucket.
        let t1 = t0 + Duration::from_millis(50);
        assert!(b.reduce_at(400, t1));
        assert!(!b.reduce_at(200, t1));
        assert!(b.wait_for(200) >= Duration::from_millis(9));
        // Never more than the size.
        let t2 = t1 + Duration::from_secs(10);
        assert!(b.reduce_at(1000, t2));
        assert!(!b.reduce_at(1, t2));
        // A request larger than the bucket needs a full bucket, not forever.
        let t3 = t2 + Duration::from_millis(100);
        assert!(b.reduce_at(5000, t3));
        assert!(TokenBucket::new(0, 0, Duration::from_millis(1)).is_none());
        assert!(TokenBucket::new(1, 0, Duration::ZERO).is_none());
    }

    #[test]
    fn limiter_blocks_then_fires_its_timer() {
        let ops = TokenBucket::new(2, 0, Duration::from_millis(20));
        let mut l = RateLimiter::new(None, ops).unwrap();
        assert!(l.consume(1 << 20));
        assert!(l.consume(1 << 20));
        assert!(!l.consume(1));
        assert!(l.is_blocked());
        assert!(!l.consume(1), "stays blocked until the timer");
        let start = Instant::now();
        l.on_timer();
        assert!(start.elapsed() >= Duration::from_millis(5));
        assert!(!l.is_blocked());
        assert!(l.consume(1));
    }

    #[test]
    fn bandwidth_refusal_refunds_the_op() {
        let bw = TokenBucket::new(100, 0, Duration::from_secs(1));
        let ops = TokenBucket::new(10, 0, Duration::from_secs(1));
        let mut l = RateLimiter::new(bw, ops).unwrap();
        let now = Instant::now();
        assert!(l.consume_at(100, now));
        assert!(!l.consume_at(50, now));
        assert_eq!(l.ops.as_ref().unwrap().budget, 9);
    }
}
