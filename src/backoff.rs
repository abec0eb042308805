//! The redelivery delay policy.

use std::cell::Cell;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Curve {
    Fixed(Duration),
    Exponential { initial: Duration, max: Duration },
}

/// How long a failed message waits before its next delivery.
///
/// The delay depends on the attempt that failed: `fixed` waits the same every
/// time; `exponential` starts at `initial`, doubles per failed attempt and is
/// capped at `max`. Optional jitter shortens each delay by a random fraction,
/// so messages that failed together do not all come back together.
///
/// ```
/// use rebound::Backoff;
/// use std::time::Duration;
/// let b = Backoff::exponential(Duration::from_millis(10), Duration::from_millis(50));
/// assert_eq!(b.delay(1), Duration::from_millis(10));
/// assert_eq!(b.delay(2), Duration::from_millis(20));
/// assert_eq!(b.delay(4), Duration::from_millis(50));
/// assert_eq!(Backoff::fixed(Duration::from_secs(1)).delay(9), Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    curve: Curve,
    jitter: f64,
}

impl Backoff {
    /// The same delay after every failure.
    ///
    /// ```
    /// let b = rebound::Backoff::fixed(std::time::Duration::ZERO);
    /// assert_eq!(b.delay(3), std::time::Duration::ZERO);
    /// ```
    pub fn fixed(delay: Duration) -> Self {
        Self {
            curve: Curve::Fixed(delay),
            jitter: 0.0,
        }
    }

    /// `initial` after the first failure, doubling after each further one,
    /// never more than `max`. If `max < initial`, every delay is `max`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = rebound::Backoff::exponential(Duration::from_millis(1), Duration::from_secs(1));
    /// assert_eq!(b.delay(3), Duration::from_millis(4));
    /// ```
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Self {
            curve: Curve::Exponential { initial, max },
            jitter: 0.0,
        }
    }

    /// Shortens each delay by a random fraction in `[0, fraction)`, with
    /// `fraction` clamped to `[0, 1]` (NaN counts as 0).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = rebound::Backoff::fixed(Duration::from_millis(100)).with_jitter(0.5);
    /// let d = b.delay(1);
    /// assert!(d > Duration::from_millis(50) && d <= Duration::from_millis(100));
    /// ```
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// The delay before redelivering a message whose delivery number
    /// `attempt` (1 for the first) failed.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = rebound::Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60));
    /// assert_eq!(b.delay(0), Duration::from_secs(1));
    /// assert_eq!(b.delay(1000), Duration::from_secs(60));
    /// ```
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = match self.curve {
            Curve::Fixed(d) => d,
            Curve::Exponential { initial, max } => {
                // Doubling a non-zero delay reaches `max` (or the end of
                // `Duration`) within 128 steps, so the loop is short for
                // any attempt number and the delay saturates at `max`.
                let mut delay = initial.min(max);
                if delay.is_zero() {
                    return delay;
                }
                for _ in 1..attempt {
                    match delay.checked_mul(2) {
                        Some(doubled) if doubled < max => delay = doubled,
                        _ => return self.jittered(max),
                    }
                }
                delay
            }
        };
        self.jittered(base)
    }

    /// `base` shortened by the jitter fraction: never longer than `base`,
    /// never a panic, whatever its size (`Duration::mul_f64` panics when
    /// the product does not fit a `Duration`, which a rounding up of
    /// `Duration::MAX` does).
    fn jittered(&self, base: Duration) -> Duration {
        if self.jitter == 0.0 || base.is_zero() {
            return base;
        }
        let factor = 1.0 - self.jitter * unit_random();
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).map_or(base, |d| d.min(base))
    }
}

impl Default for Backoff {
    /// `exponential(100 ms, 30 s)`.
    fn default() -> Self {
        Backoff::exponential(Duration::from_millis(100), Duration::from_secs(30))
    }
}

/// A uniform draw in `[0, 1)` from a per-thread xorshift generator: jitter
/// needs spread, not cryptographic quality, and no dependency.
fn unit_random() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let seed = std::collections::hash_map::RandomState::new();
            std::hash::BuildHasher::hash_one(&seed, 0u64) | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_and_caps_without_overflow() {
        let b = Backoff::exponential(Duration::from_millis(3), Duration::from_millis(20));
        let got: Vec<_> = (1..=5).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(got, [3, 6, 12, 20, 20]);
        let huge = Backoff::exponential(Duration::MAX / 2, Duration::MAX);
        assert_eq!(huge.delay(40), Duration::MAX);
    }

    /// Doubling goes on past 2^31 x `initial` and saturates at `max`, for
    /// every attempt number.
    #[test]
    fn exponential_reaches_max_however_small_the_start() {
        let hour = Duration::from_secs(3600);
        let b = Backoff::exponential(Duration::from_micros(1), hour);
        assert_eq!(b.delay(40), hour);
        assert_eq!(b.delay(u32::MAX), hour);
        // 2^32 us is about 71.6 minutes, past the hour.
        assert_eq!(b.delay(33), hour);
        assert_eq!(b.delay(32), Duration::from_micros(1 << 31));
        let tiny = Backoff::exponential(Duration::from_nanos(1), Duration::MAX);
        assert_eq!(tiny.delay(64), Duration::from_nanos(1 << 63));
        assert_eq!(tiny.delay(200), Duration::MAX);
        assert_eq!(
            Backoff::exponential(Duration::ZERO, hour).delay(9),
            Duration::ZERO
        );
    }

    /// Jitter on the largest delays never panics, never lengthens them,
    /// and shortens them by at most its fraction.
    #[test]
    fn jitter_on_huge_delays_saturates_instead_of_panicking() {
        for fraction in [0.0, 1e-20, 1e-12, 0.5, 1.0] {
            let plain = [
                Backoff::fixed(Duration::MAX),
                Backoff::exponential(Duration::from_secs(1), Duration::MAX),
            ];
            for backoff in plain {
                let jittered = backoff.with_jitter(fraction);
                for attempt in [1, 2, 64, 1000] {
                    let (base, delay) = (backoff.delay(attempt), jittered.delay(attempt));
                    assert!(delay <= base, "{fraction}: {delay:?} > {base:?}");
                    let floor = base.as_secs_f64() * (1.0 - fraction) * 0.999_999;
                    assert!(delay.as_secs_f64() >= floor, "{fraction}: {delay:?}");
                }
            }
        }
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let b = Backoff::fixed(Duration::from_millis(1000)).with_jitter(0.25);
        for _ in 0..1000 {
            let d = b.delay(1);
            assert!(
                d > Duration::from_millis(750) && d <= Duration::from_millis(1000),
                "{d:?}"
            );
        }
        assert_eq!(
            Backoff::fixed(Duration::from_secs(1))
                .with_jitter(f64::NAN)
                .delay(1),
            Duration::from_secs(1)
        );
    }
}
