//! Token-bucket rate limiting for a device's queues, as Firecracker offers:
//! one bucket for bytes and one for operations, each with a size, a refill
//! time (the time to refill an empty bucket completely) and an optional
//! one-time burst on top.
//!
//! A device asks [`RateLimiter::consume`] before serving a request; when
//! refused, it stops serving and the limiter's timerfd (watched by the
//! worker) fires when enough tokens should be back.
//!
//! A request larger than the bucket passes once the bucket is full and
//! leaves it in debt for the excess: nothing more passes until the refill
//! has paid the debt back, so the long-run rate is the configured one
//! whatever the request sizes (a request is never capped at the bucket
//! size, and never waits for more than a full bucket). The accounting is
//! exact integer arithmetic in token-nanoseconds, so no rounding lets a
//! guest gain over a long run.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use kiln_api::vm::{RateLimitConfig, TokenBucketConfig};
use vmm_sys_util::timerfd::TimerFd;

/// Longest refill time kept (about 146 years); a longer one is clamped.
/// With it, every product below fits an `i128` with room to spare:
/// `u64` tokens × `MAX_REFILL_NS` < 2^126.
const MAX_REFILL_NS: u64 = 1 << 62;
/// Shortest wait armed on the timer (a zero would disarm it).
const MIN_WAIT: Duration = Duration::from_millis(1);

/// One bucket.
///
/// Its content is kept as credit in token-nanoseconds: a token costs
/// `refill_ns` units and each nanosecond adds `size` units, so the rate is
/// exact. The credit is at most a full bucket (`size × refill_ns`) and
/// below zero while the bucket is in debt.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    size: u64,
    refill_ns: u64,
    credit: i128,
    one_time_burst: u64,
    last: Instant,
}

impl TokenBucket {
    /// None if `size` or `refill_time` is zero (no limit). The bucket
    /// starts full.
    pub fn new(size: u64, one_time_burst: u64, refill_time: Duration) -> Option<Self> {
        let refill_ns = refill_time.as_nanos().min(u128::from(MAX_REFILL_NS)) as u64;
        if size == 0 || refill_ns == 0 {
            return None;
        }
        let mut b = TokenBucket {
            size,
            refill_ns,
            credit: 0,
            one_time_burst,
            last: Instant::now(),
        };
        b.credit = b.full();
        Some(b)
    }

    pub fn from_config(c: &TokenBucketConfig) -> Option<Self> {
        Self::new(
            c.size,
            c.one_time_burst,
            Duration::from_millis(c.refill_time_ms),
        )
    }

    /// The credit of a full bucket (< 2^126).
    fn full(&self) -> i128 {
        i128::from(self.size) * i128::from(self.refill_ns)
    }

    /// The credit `tokens` cost (< 2^126).
    fn cost(&self, tokens: u64) -> i128 {
        i128::from(tokens) * i128::from(self.refill_ns)
    }

    /// Add what the time since the last update refilled, up to a full
    /// bucket. A `now` before the last update adds nothing.
    fn replenish(&mut self, now: Instant) {
        if now <= self.last {
            return;
        }
        let elapsed = now.duration_since(self.last).as_nanos();
        self.last = now;
        let full = self.full();
        // The credit never falls below full minus the cost of one request,
        // so the gap is below 2^126.
        let gap = full - self.credit;
        if gap <= 0 {
            return;
        }
        match elapsed
            .checked_mul(u128::from(self.size))
            .and_then(|add| i128::try_from(add).ok())
        {
            Some(add) if add < gap => self.credit += add,
            _ => self.credit = full,
        }
    }

    /// Whether [`Self::reduce_at`] would take `tokens` at time `now`
    /// (brings the bucket up to `now`, takes nothing).
    fn may_take(&mut self, tokens: u64, now: Instant) -> bool {
        let rest = tokens.saturating_sub(self.one_time_burst);
        if rest == 0 {
            return true;
        }
        self.replenish(now);
        self.credit >= self.cost(rest).min(self.full())
    }

    /// Take `tokens` at time `now`: from the one-time burst first, the rest
    /// from the bucket. True if the request may go.
    ///
    /// A request no larger than the bucket needs that many tokens in it. A
    /// larger one needs a full bucket and leaves it in debt for the excess
    /// (below zero), so later requests wait until the refill has paid it:
    /// over any period, what passes is at most the refill over that period,
    /// plus the bucket and the burst, plus the excess of the last request.
    /// A refused request takes nothing.
    pub fn reduce_at(&mut self, tokens: u64, now: Instant) -> bool {
        if !self.may_take(tokens, now) {
            return false;
        }
        let from_burst = tokens.min(self.one_time_burst);
        self.one_time_burst -= from_burst;
        // At least full - cost > -2^126.
        self.credit -= self.cost(tokens - from_burst);
        true
    }

    /// Give back `tokens` taken by a request that was then not served (a
    /// debt it made is cancelled), up to a full bucket. Tokens the request
    /// took from the one-time burst come back to the bucket, not the burst.
    pub fn refund(&mut self, tokens: u64) {
        self.credit = self
            .credit
            .saturating_add(self.cost(tokens))
            .min(self.full());
    }

    /// How long after the last [`Self::reduce_at`] a request of `tokens`
    /// may go: the time to pay any debt and then refill what the request
    /// needs (a full bucket if it is larger). At least a millisecond, so
    /// a timer armed with it always fires.
    pub fn wait_for(&self, tokens: u64) -> Duration {
        let rest = tokens.saturating_sub(self.one_time_burst);
        let need = self.cost(rest).min(self.full()) - self.credit;
        if need <= 0 {
            return MIN_WAIT;
        }
        // Nanoseconds rounded up, so the request passes then.
        let ns = (need - 1) / i128::from(self.size) + 1;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)).max(MIN_WAIT)
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

    /// Whether a request of `bytes` may go now (one operation). If not,
    /// nothing is taken, the timer is armed for when it may go (after any
    /// debt a larger-than-the-bucket request left is paid), and
    /// [`Self::is_blocked`] holds until [`Self::on_timer`]. Call it again
    /// for the same request then.
    pub fn consume(&mut self, bytes: u64) -> bool {
        self.consume_at(bytes, Instant::now())
    }

    /// [`Self::consume`] at the time `now`.
    pub fn consume_at(&mut self, bytes: u64, now: Instant) -> bool {
        if self.blocked {
            return false;
        }
        // Both buckets must allow it before either is charged, so a
        // refusal takes nothing from either (not even a one-time burst).
        if let Some(ops) = &mut self.ops {
            if !ops.may_take(1, now) {
                let wait = ops.wait_for(1);
                self.block(wait);
                return false;
            }
        }
        if let Some(bw) = &mut self.bandwidth {
            if !bw.may_take(bytes, now) {
                let wait = bw.wait_for(bytes);
                self.block(wait);
                return false;
            }
            bw.reduce_at(bytes, now);
        }
        if let Some(ops) = &mut self.ops {
            ops.reduce_at(1, now);
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
mod tests;
