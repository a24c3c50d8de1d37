//! Tests of the token buckets and the limiter, on a synthetic clock: small
//! requests, requests larger than the bucket (debt), refunds, waits, and
//! values at the ends of their ranges.

use super::*;

const MS: Duration = Duration::from_millis(1);

/// Whole tokens in the bucket (negative: the debt).
fn tokens(b: &TokenBucket) -> i128 {
    b.credit.div_euclid(i128::from(b.refill_ns))
}

/// A small deterministic pseudo-random sequence (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

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
    assert!(TokenBucket::new(0, 0, Duration::from_millis(1)).is_none());
    assert!(TokenBucket::new(1, 0, Duration::ZERO).is_none());
}

#[test]
fn a_refused_request_takes_nothing_not_even_the_burst() {
    let mut b = TokenBucket::new(100, 50, Duration::from_secs(1)).unwrap();
    let t0 = b.last;
    // The burst goes first: 50 of it and 50 of the bucket.
    assert!(b.reduce_at(100, t0));
    assert_eq!((b.one_time_burst, tokens(&b)), (0, 50));
    let mut b = TokenBucket::new(100, 50, Duration::from_secs(1)).unwrap();
    b.credit = 0;
    // 60 = 50 of burst + 10 from an empty bucket: refused, burst kept.
    assert!(!b.reduce_at(60, t0));
    assert_eq!(b.one_time_burst, 50);
    assert!(b.reduce_at(50, t0), "the burst is still there");
    assert_eq!(b.one_time_burst, 0);
    assert!(!b.reduce_at(1, t0));
}

#[test]
fn an_oversized_request_waits_for_a_full_bucket_then_leaves_a_debt() {
    // 1000 tokens refilled in 1 s: one token per millisecond.
    let mut b = TokenBucket::new(1000, 0, Duration::from_secs(1)).unwrap();
    let t0 = b.last;
    assert!(b.reduce_at(1, t0));
    assert!(!b.reduce_at(5000, t0), "needs a full bucket");
    assert_eq!(tokens(&b), 999, "a refusal takes nothing");
    assert_eq!(b.wait_for(5000), MS, "a full bucket in 1 ms");
    let t1 = t0 + MS;
    assert!(b.reduce_at(5000, t1));
    assert_eq!(tokens(&b), -4000, "in debt for the excess");
    // Paying the debt, then the request's own tokens.
    assert_eq!(b.wait_for(1), Duration::from_millis(4001));
    assert_eq!(b.wait_for(500), Duration::from_millis(4500));
    assert_eq!(b.wait_for(1000), Duration::from_millis(5000));
    assert_eq!(b.wait_for(1 << 40), Duration::from_millis(5000));
    // Nothing passes until the debt is paid; exactly then, it does.
    let paid = t1 + Duration::from_millis(4000);
    assert!(!b.reduce_at(1, paid - MS));
    assert!(!b.reduce_at(1, paid), "the debt is paid, no token yet");
    assert!(b.reduce_at(1, paid + MS));
    // wait_for is exact: after it, the request goes.
    let w = b.wait_for(700);
    assert!(!b.reduce_at(700, paid + MS + w - Duration::from_nanos(1)));
    assert!(b.reduce_at(700, paid + MS + w));
}

#[test]
fn refund_cancels_a_debt_and_never_overfills() {
    let mut b = TokenBucket::new(1000, 0, Duration::from_secs(1)).unwrap();
    let t0 = b.last;
    assert!(b.reduce_at(5000, t0));
    assert_eq!(tokens(&b), -4000);
    b.refund(5000);
    assert_eq!(tokens(&b), 1000, "the request was not served");
    assert!(b.reduce_at(1000, t0));
    assert!(!b.reduce_at(1, t0));
    // A partial refund of a debt leaves the rest of it.
    let t1 = t0 + Duration::from_secs(1);
    assert!(b.reduce_at(3000, t1));
    b.refund(1000);
    assert_eq!(tokens(&b), -1000);
    assert_eq!(b.wait_for(1), Duration::from_millis(1001));
    // Never above a full bucket.
    b.refund(u64::MAX);
    assert_eq!(tokens(&b), 1000);
    assert!(b.reduce_at(1000, t1));
    assert!(!b.reduce_at(1, t1));
}

/// Drive a bucket as a device does: a request is retried when the wait
/// from [`TokenBucket::wait_for`] is over (plus some lateness of the
/// timer), and at every step what passed is within the bound.
fn run(size: u64, burst: u64, refill: Duration, lateness_ms: u64, req: impl Fn(&mut Rng) -> u64) {
    let mut b = TokenBucket::new(size, burst, refill).unwrap();
    let t0 = b.last;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let total = Duration::from_secs(3600);
    let mut now = t0;
    let (mut passed, mut largest, mut served) = (0u128, 0u128, 0u32);
    let mut want = req(&mut rng);
    while now - t0 < total {
        if b.reduce_at(want, now) {
            passed += u128::from(want);
            largest = largest.max(u128::from(want));
            served += 1;
            want = req(&mut rng);
        } else {
            now += b.wait_for(want) + Duration::from_millis(rng.below(lateness_ms + 1));
        }
        // rate × time + bucket + burst + the excess of one request.
        let elapsed = (now - t0).as_nanos();
        let refilled = elapsed * u128::from(size) / refill.as_nanos();
        let bound = refilled + u128::from(size) + u128::from(burst) + largest;
        assert!(
            passed <= bound,
            "size {size}: {passed} bytes passed in {elapsed} ns, more than {bound}"
        );
    }
    // And the rate is reached, not starved (timers a little late).
    let rate_total = total.as_nanos() * u128::from(size) / refill.as_nanos();
    assert!(
        passed * 10 >= rate_total * 9,
        "size {size}: only {passed} of {rate_total} bytes in {served} requests"
    );
}

#[test]
fn oversized_requests_get_the_rate_and_no_more() {
    // 64 MiB requests against a 4 MiB bucket refilled each second.
    run(4 << 20, 0, Duration::from_secs(1), 0, |_| 64 << 20);
    run(4 << 20, 0, Duration::from_secs(1), 5, |_| 64 << 20);
    // With a one-time burst, and requests of any size up to 4 GiB.
    run(4 << 20, 8 << 20, Duration::from_secs(1), 3, |r| {
        1 + r.below(1 << 32)
    });
    // Mostly small, sometimes huge.
    run(1 << 20, 0, Duration::from_millis(250), 2, |r| {
        if r.below(50) == 0 {
            1 << 30
        } else {
            1 + r.below(64 << 10)
        }
    });
    // Frames against a net bucket below the largest frame.
    run(16 << 10, 0, Duration::from_millis(100), 1, |r| {
        60 + r.below(65536)
    });
}

#[test]
fn small_requests_keep_the_rate_too() {
    run(1 << 20, 0, Duration::from_secs(1), 2, |r| {
        512 * (1 + r.below(256))
    });
    run(500, 100, Duration::from_secs(1), 4, |_| 1);
}

#[test]
fn values_at_the_ends_of_their_ranges_neither_overflow_nor_panic() {
    let t0 = Instant::now();
    let later = [
        t0,
        t0 + Duration::from_nanos(1),
        t0 + Duration::from_secs(1),
        t0 + Duration::from_secs(100 * 365 * 86_400),
    ];
    let refills = [
        Duration::from_nanos(1),
        Duration::from_secs(1),
        Duration::MAX,
    ];
    let sizes = [1, 4096, u64::MAX];
    let amounts = [0, 1, 4096, u64::from(u32::MAX), u64::MAX - 1, u64::MAX];
    for &size in &sizes {
        for &refill in &refills {
            for &burst in &[0, u64::MAX] {
                let mut b = TokenBucket::new(size, burst, refill).unwrap();
                for (i, &now) in later.iter().enumerate() {
                    for &n in &amounts {
                        let _ = b.reduce_at(n, now);
                        let w = b.wait_for(n);
                        assert!(w >= MS);
                        b.refund(n / 2);
                        assert!(b.credit <= b.full());
                        // A full bucket lets any request through.
                        if i == 0 {
                            let mut f = TokenBucket::new(size, 0, refill).unwrap();
                            assert!(f.reduce_at(n, now), "{size} {refill:?} {n}");
                        }
                    }
                    // Time going backwards adds nothing.
                    let before = b.credit;
                    b.replenish(t0);
                    assert_eq!(b.credit, before);
                }
            }
        }
    }
    // The longest debt: 2^64 - 1 tokens at one token per 2^62 ns.
    let mut b = TokenBucket::new(1, 0, Duration::MAX).unwrap();
    assert!(b.reduce_at(u64::MAX, t0));
    assert_eq!(b.wait_for(1), Duration::from_nanos(u64::MAX));
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
fn a_refusal_takes_nothing_from_either_bucket() {
    let bw = TokenBucket::new(100, 0, Duration::from_secs(1));
    let ops = TokenBucket::new(10, 0, Duration::from_secs(1));
    let mut l = RateLimiter::new(bw, ops).unwrap();
    let now = Instant::now();
    assert!(l.consume_at(100, now));
    assert!(!l.consume_at(50, now));
    assert_eq!(tokens(l.ops.as_ref().unwrap()), 9);
    // Nor from a one-time burst, of either bucket.
    let bw = TokenBucket::new(100, 0, Duration::from_secs(1));
    let ops = TokenBucket::new(10, 5, Duration::from_secs(1));
    let mut l = RateLimiter::new(bw, ops).unwrap();
    let now = l.bandwidth.as_ref().unwrap().last;
    assert!(l.consume_at(100, now));
    assert!(!l.consume_at(50, now));
    let ops = l.ops.as_ref().unwrap();
    assert_eq!((ops.one_time_burst, tokens(ops)), (4, 10));
    let bw = TokenBucket::new(100, 50, Duration::from_secs(1));
    let ops = TokenBucket::new(1, 0, Duration::from_secs(1));
    let mut l = RateLimiter::new(bw, ops).unwrap();
    let now = l.ops.as_ref().unwrap().last;
    assert!(l.consume_at(10, now));
    l.blocked = false;
    assert!(!l.consume_at(10, now), "no operation left");
    let bw = l.bandwidth.as_ref().unwrap();
    assert_eq!((bw.one_time_burst, tokens(bw)), (40, 100));
}

#[test]
fn the_longest_debt_arms_the_timer() {
    let bw = TokenBucket::new(1, 0, Duration::MAX);
    let mut l = RateLimiter::new(bw, None).unwrap();
    assert!(l.consume(u64::MAX));
    assert!(!l.consume(1));
    assert!(l.is_blocked(), "the timer took a wait of 2^64 ns");
}

#[test]
fn limiter_passes_an_oversized_request_then_blocks_for_its_debt() {
    // 4 KiB per 10 ms; 64 KiB requests, retried every millisecond.
    let bw = TokenBucket::new(4096, 0, Duration::from_millis(10));
    let ops = TokenBucket::new(500, 0, Duration::from_secs(1));
    let mut l = RateLimiter::new(bw, ops).unwrap();
    let t0 = Instant::now();
    let mut served = 0u64;
    for ms in 0..10_000u64 {
        let now = t0 + Duration::from_millis(ms);
        l.blocked = false;
        if l.consume_at(64 << 10, now) {
            served += 1;
        }
        // The first at once, then one per 160 ms: 16x the bucket each.
        assert!(served <= 1 + ms / 160, "{served} served by {ms} ms");
    }
    assert!(served >= 60, "{served}");
    // The refused retries (1000 a second, above the 500 a second of the
    // operations bucket) took no operations.
    assert_eq!(tokens(l.ops.as_ref().unwrap()), 500);
}
