//! The one backoff of the gateway: exponential, capped and jittered. Retries of a request
//! (`[route.retry] backoff`) and discovery sources that lost their server both use it; they
//! differ only in their numbers and in how much jitter they want.
//!
//! The delay before attempt `n` (0-based) grows as `base × 2^n` up to `cap`, then jitter
//! spreads it so that many clients (or many gateways) do not retry in lockstep:
//! - [`Jitter::Full`]: uniform in `[0, delay)` (AWS's "full jitter", best for retries of
//!   requests, which compete for the same upstream);
//! - [`Jitter::Spread`]: `delay × [1 − f, 1 + f)`, kept within `[base, cap]` (linkerd's
//!   `ExponentialBackoff`, for reconnect loops, which should not retry faster than `base`).

use std::time::Duration;

/// How a delay is randomised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Jitter {
    /// Uniform in `[0, delay)`.
    Full,
    /// `delay × [1 − f, 1 + f)`, clamped to `[base, cap]`.
    Spread(f64),
}

/// Exponential backoff from `base` to `cap`, with a counter of consecutive failures.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
    attempt: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub(crate) const fn new(base: Duration, cap: Duration, jitter: Jitter) -> Self {
        Backoff { base, cap, jitter, attempt: 0 }
    }

    /// The delay before attempt `n` (0-based), jittered; zero when `base` is zero.
    pub(crate) fn delay(&self, n: u32) -> Duration {
        if self.base.is_zero() {
            return Duration::ZERO;
        }
        let ceiling = self.base.saturating_mul(1u32 << n.min(16)).min(self.cap);
        match self.jitter {
            Jitter::Full => ceiling.mul_f64(fastrand::f64()),
            Jitter::Spread(f) => {
                ceiling.mul_f64(1.0 - f + 2.0 * f * fastrand::f64()).clamp(self.base, self.cap.max(self.base))
            }
        }
    }

    /// The next delay of a loop, growing with each call until [`reset`](Self::reset).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// After a success: the next delay is the shortest again.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn full_jitter_stays_under_the_doubling_ceiling_and_the_cap() {
        let b = Backoff::new(10 * MS, 100 * MS, Jitter::Full);
        for n in 0..40 {
            let ceiling = (10 * MS * (1 << n.min(16))).min(100 * MS);
            for _ in 0..50 {
                assert!(b.delay(n) < ceiling, "attempt {n}");
            }
        }
        assert_eq!(Backoff::new(Duration::ZERO, MS, Jitter::Full).delay(3), Duration::ZERO);
    }

    #[test]
    fn spread_grows_to_the_cap_and_resets() {
        let secs = Duration::from_secs;
        let mut b = Backoff::new(secs(1), secs(30), Jitter::Spread(0.2));
        let first = b.next_delay();
        assert!(first >= secs(1) && first < Duration::from_millis(1200), "{first:?}");
        for _ in 0..10 {
            b.next_delay();
        }
        let late = b.next_delay();
        assert!(late >= Duration::from_millis(24_000) && late <= secs(30), "{late:?}");
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(1200));
    }
}
