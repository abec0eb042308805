//! Time for the hot paths: a recent reading of the clock, kept fresh by the
//! traffic itself and, as a backstop, by the redeliverer thread.
//!
//! Reading `Instant::now()` costs tens of nanoseconds, and a message needs a
//! time on produce (its timestamp) and on claim (its lease deadline). So
//! the hot paths read a shared recent reading instead, and producers store a
//! fresh one once per block of 64 messages they open
//! ([`Clock::refresh_from_traffic`]). Consumers do not: a reading stored
//! while a block fills gives its later messages a timestamp after the
//! block's key, and then every claim walk visits the next block too
//! (docs/design.md, "The recent clock"). While
//! the queue sees traffic the redeliverer also stores one every
//! [`UPKEEP_INTERVAL`], which bounds how old the reading gets when traffic
//! is too slow to fill blocks; it marks the reading stale when it goes idle,
//! and a thread that finds it stale reads the clock itself and restarts the
//! upkeep.
//!
//! A recent reading is never later than the real time, so a due check made
//! with it is never early; it can be late by the reading's age (under one
//! upkeep interval plus scheduling delay), which the slow paths correct with
//! a precise reading.
//!
//! A queue built with a [`ManualClock`] reads that instead of the real
//! time; its `advance` refreshes the recent reading, so the reading never
//! lags it, and every lease is timed from a precise reading (no upkeep
//! allowance, no lag log).

use crate::manual_clock::ManualClock;
use crate::sync::{AtomicU64, Instant, MODEL, Ordering, PlainMutex, lock_plain, now};
use crossbeam_utils::CachePadded;
use std::collections::VecDeque;
use std::time::Duration;

/// How often the redeliverer refreshes the recent reading while the queue is
/// busy: the oldest the reading gets when traffic does not refresh it.
///
/// Each refresh wakes the redeliverer, which takes a core from a producer
/// or a consumer on a loaded machine. Traffic refreshes the reading itself,
/// so this is only a backstop (docs/design.md, "The redeliverer").
pub(crate) const UPKEEP_INTERVAL: Duration = Duration::from_millis(10);
/// The age a lease timed from a recent reading allows for: the upkeep
/// interval plus 1 ms of scheduling delay. A reading that stands longer
/// than this before it is replaced (its upkeep thread was off the CPU) is
/// noted in the lag log ([`Clock::lags`]), and the redeliverer gives the
/// leases timed from it the difference back ([`Lags::grace`]).
pub(crate) const RECENT_MAX_AGE: Duration =
    UPKEEP_INTERVAL.saturating_add(Duration::from_millis(1));
const STALE: u64 = u64::MAX;
const NANOS_PER_TICK: u64 = 1_000_000;

/// Readings that stood longer than [`RECENT_MAX_AGE`]: each reading in
/// `from..=to` was replaced at most `extra` nanoseconds later than that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lag {
    from: u64,
    to: u64,
    extra: u64,
}

/// The most ranges the lag log keeps; past it the two oldest merge (which
/// only lengthens some graces: later, never earlier).
const LAG_RANGES: usize = 64;

/// The lag log: readings that stood too long, as ranges in reading order
/// (readings only grow, and every note is made under the log's lock in the
/// same critical section as the store that replaced the reading). Empty
/// unless the threads that refresh the reading stall.
#[derive(Debug)]
pub(crate) struct Lags {
    ranges: VecDeque<Lag>,
    /// How long after its reading a range can still matter: the lease,
    /// the allowed age, and two ticks of rounding.
    span: u64,
}

impl Lags {
    fn new(lease: Duration) -> Self {
        Lags {
            ranges: VecDeque::new(),
            span: add(2 * NANOS_PER_TICK, lease.saturating_add(RECENT_MAX_AGE)),
        }
    }

    /// Notes that `reading` stood `extra` nanoseconds longer than allowed,
    /// at `now`; forgets what no lease can need any more.
    fn note(&mut self, reading: u64, extra: u64, now: u64) {
        match self.ranges.back_mut() {
            Some(last) if reading <= last.to => last.extra = last.extra.max(extra),
            _ => self.ranges.push_back(Lag {
                from: reading,
                to: reading,
                extra,
            }),
        }
        if self.ranges.len() > LAG_RANGES {
            if let Some(oldest) = self.ranges.pop_front() {
                if let Some(next) = self.ranges.front_mut() {
                    next.from = oldest.from;
                    next.extra = next.extra.max(oldest.extra);
                }
            }
        }
        let span = self.span;
        while self
            .ranges
            .front()
            .is_some_and(|lag| lag.to.saturating_add(span).saturating_add(lag.extra) < now)
        {
            self.ranges.pop_front();
        }
    }

    /// Extra nanoseconds a lease that ends at `deadline_ns` (the start of
    /// its deadline tick), timed from a recent reading, lasts: the lag of
    /// the reading it was timed from, if that one stood too long. A lease
    /// of `lease` timed from reading `r` ends in the tick of
    /// `r + RECENT_MAX_AGE + lease` (rounded up), so `r` lies in the
    /// millisecond up to `deadline_ns - lease - RECENT_MAX_AGE`. Another
    /// lease that happens to end in the same tick lasts as long: later,
    /// never earlier, than promised.
    fn grace(&self, deadline_ns: u64, lease: Duration) -> u64 {
        let high = deadline_ns.saturating_sub(add(0, lease.saturating_add(RECENT_MAX_AGE)));
        let low = high.saturating_sub(NANOS_PER_TICK);
        self.ranges
            .iter()
            .filter(|lag| lag.from <= high && lag.to >= low)
            .map(|lag| lag.extra)
            .max()
            .unwrap_or(0)
    }
}

/// A recent reading, and whether the caller just restarted the upkeep.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recent {
    Fresh(u64),
    /// The reading was stale; the caller read the clock and must wake the
    /// redeliverer so it resumes the upkeep.
    Restarted(u64),
}

pub(crate) struct Clock {
    origin: Instant,
    /// Nanoseconds since `origin`, or `STALE`.
    recent: CachePadded<AtomicU64>,
    /// Readings that stood too long (see [`RECENT_MAX_AGE`]). Every store
    /// that replaces a reading takes this lock around the store, so a
    /// reading is in the log by the time anyone sees the newer one. A lock
    /// loom does not see (`sync::PlainMutex`): it guards bookkeeping of
    /// time, not state the queue synchronises through, and no loom
    /// operation runs while it is held.
    lags: PlainMutex<Lags>,
    /// The clock read instead of the real time (`Builder::clock`).
    pub(crate) manual: Option<ManualClock>,
}

impl Clock {
    /// A clock for a queue whose leases last `lease`, reading `manual` if
    /// given, else the real time.
    pub(crate) fn new(lease: Duration, manual: Option<ManualClock>) -> Self {
        let origin = manual.as_ref().map_or_else(now, ManualClock::now);
        Self {
            origin,
            recent: CachePadded::new(AtomicU64::new(0)),
            lags: PlainMutex::new(Lags::new(lease)),
            manual,
        }
    }

    /// The current time (`sync::now`: in the loom world, the model's; or
    /// the manual clock's).
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        match &self.manual {
            None => now(),
            Some(manual) => manual.now(),
        }
    }

    /// Whether this is a manual clock, which moves only when advanced:
    /// nothing waits for it with a timeout.
    pub(crate) fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// A manual clock moved: store its reading as the recent one unless
    /// that is stale (then the next reader reads the clock itself).
    pub(crate) fn advanced(&self) {
        self.store_newer(self.precise(), false);
    }

    /// Nanoseconds from the queue's origin to `at` (0 before it).
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.origin + Duration::from_nanos(nanos)
    }

    /// A precise reading, in nanoseconds.
    pub(crate) fn precise(&self) -> u64 {
        self.nanos(self.now())
    }

    /// A reading at most one upkeep interval old (while the upkeep runs).
    pub(crate) fn recent(&self) -> Recent {
        // Relaxed: the value is a time estimate that publishes nothing else;
        // any stored value was read from the clock before it was stored, so
        // it is never later than the real time.
        let recent = self.recent.load(Ordering::Relaxed);
        if recent != STALE {
            return Recent::Fresh(recent);
        }
        let precise = self.precise();
        // Relaxed: as above; the winner of the swap is the one that restarts.
        match self
            .recent
            .compare_exchange(STALE, precise, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => Recent::Restarted(precise),
            Err(_) => Recent::Fresh(precise),
        }
    }

    /// Traffic: a precise reading, also stored as the recent one unless that
    /// is newer or stale (restarting the upkeep is [`Self::recent`]'s job:
    /// a reading stored here would not restart it, and would then age
    /// unseen). Called once per block of messages. Returns the reading.
    ///
    /// In the loom world it only reads the clock: the models advance the
    /// recent reading themselves (`rebound::__loom::advance`).
    pub(crate) fn refresh_from_traffic(&self) -> u64 {
        let precise = self.precise();
        if !MODEL {
            self.store_newer(precise, false);
        }
        precise
    }

    /// Upkeep: store a fresh reading taken at `at`.
    /// Replaces a stale reading, or an older one (a producer may have
    /// stored a newer one since `at` was read).
    pub(crate) fn refresh(&self, at: Instant) -> u64 {
        let nanos = self.nanos(at);
        self.store_newer(nanos, true);
        nanos
    }

    /// Stores `nanos` as the recent reading unless a newer one is there,
    /// and, unless `over_stale`, unless the reading is stale. Losing to a
    /// concurrent store is fine: the reading then is at least as fresh.
    /// A reading replaced later than [`RECENT_MAX_AGE`] after it was taken
    /// goes to the lag log.
    fn store_newer(&self, nanos: u64, over_stale: bool) {
        let mut lags = lock_plain(&self.lags);
        // Relaxed: see `recent`.
        let replaced = self
            .recent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                let replace = if current == STALE {
                    over_stale
                } else {
                    current < nanos
                };
                replace.then_some(nanos)
            });
        if let Ok(old) = replaced {
            // Read after the store: this thread may have been off the CPU
            // between its reading and the store, and the old reading stood
            // until the store.
            self.note_lag(&mut lags, old);
        }
    }

    /// Notes that reading `old` stood as the recent one until now, if that
    /// is longer than [`RECENT_MAX_AGE`]. The caller holds the log's lock
    /// and just replaced `old`.
    fn note_lag(&self, lags: &mut Lags, old: u64) {
        // A manual clock's readings stand until it is advanced: no lease is
        // timed from them (`Config::precise_leases`).
        if old == STALE || self.is_manual() {
            return;
        }
        let now = self.precise();
        let stood = now.saturating_sub(old);
        if let Some(extra) = stood.checked_sub(add(0, RECENT_MAX_AGE)) {
            if extra > 0 {
                lags.note(old, extra, now);
            }
        }
    }

    /// Extra ticks a lease that ends at tick start `deadline_ns`, timed
    /// from a recent reading, of a queue whose leases last `lease`, lasts
    /// (see [`Lags::grace`]).
    pub(crate) fn grace_ticks(&self, deadline_ns: u64, lease: Duration) -> u64 {
        tick_ceil(lock_plain(&self.lags).grace(deadline_ns, lease))
    }

    /// Upkeep going idle: mark the reading stale, unless someone stored a
    /// newer one since `seen` (then the upkeep must go on). The reading
    /// `seen` stood until now: noted in the lag log if that is too long.
    #[must_use]
    pub(crate) fn stop_upkeep(&self, seen: u64) -> bool {
        let mut lags = lock_plain(&self.lags);
        // Relaxed: see `recent`.
        let stopped = self
            .recent
            .compare_exchange(seen, STALE, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if stopped {
            self.note_lag(&mut lags, seen);
        }
        stopped
    }
}

/// `now + delay` in nanoseconds, saturating.
pub(crate) fn add(now: u64, delay: Duration) -> u64 {
    now.saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX))
}

/// The millisecond tick `nanos` falls in.
pub(crate) fn tick_floor(nanos: u64) -> u64 {
    nanos / NANOS_PER_TICK
}

/// The tick `nanos` ends in, rounded up so that a deadline is never early.
pub(crate) fn tick_ceil(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_TICK)
}

/// Nanoseconds at the start of `tick`.
pub(crate) fn tick_nanos(tick: u64) -> u64 {
    tick.saturating_mul(NANOS_PER_TICK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_reading_is_replaced_once_and_restarts_the_upkeep() {
        let clock = Clock::new(Duration::from_secs(30), None);
        let seen = clock.refresh(now());
        assert!(matches!(clock.recent(), Recent::Fresh(n) if n == seen));
        assert!(clock.stop_upkeep(seen));
        assert!(matches!(clock.recent(), Recent::Restarted(_)));
        assert!(matches!(clock.recent(), Recent::Fresh(_)));
        assert!(
            !clock.stop_upkeep(seen),
            "a newer reading keeps the upkeep going"
        );
    }

    #[test]
    fn traffic_refreshes_a_fresh_reading_but_never_a_stale_one() {
        let clock = Clock::new(Duration::from_secs(30), None);
        let seen = clock.refresh(now());
        std::thread::sleep(Duration::from_millis(2));
        let traffic = clock.refresh_from_traffic();
        assert!(traffic > seen);
        assert!(matches!(clock.recent(), Recent::Fresh(n) if n == traffic));
        // Stale: the traffic leaves it so, for `recent` to restart the upkeep.
        assert!(clock.stop_upkeep(traffic));
        let _ = clock.refresh_from_traffic();
        assert!(matches!(clock.recent(), Recent::Restarted(_)));
    }

    #[test]
    fn ticks_round_deadlines_up_and_now_down() {
        assert_eq!(
            (
                tick_floor(1_999_999),
                tick_ceil(1_000_001),
                tick_ceil(2_000_000)
            ),
            (1, 2, 2)
        );
        assert_eq!(add(u64::MAX - 1, Duration::from_secs(1)), u64::MAX);
    }

    const MS: u64 = 1_000_000;

    /// The tick a lease of `lease` timed from reading `r` ends in, as
    /// `Shared::claim_deadline` computes it, in nanoseconds.
    fn deadline_ns(r: u64, lease: Duration) -> u64 {
        tick_nanos(tick_ceil(add(r, lease + RECENT_MAX_AGE)))
    }

    #[test]
    fn a_lag_graces_exactly_the_leases_timed_from_its_reading() {
        let lease = Duration::from_secs(1);
        for r in [5 * MS, 5 * MS + 1, 6 * MS - 1] {
            let mut lags = Lags::new(lease);
            lags.note(r, 400 * MS, r + 411 * MS);
            assert_eq!(
                lags.grace(deadline_ns(r, lease), lease),
                400 * MS,
                "r = {r}"
            );
            // Timed from a reading 2 ms later, or 2 ms earlier: none.
            assert_eq!(lags.grace(deadline_ns(r + 2 * MS, lease), lease), 0);
            assert_eq!(lags.grace(deadline_ns(r - 2 * MS, lease), lease), 0);
        }
    }

    #[test]
    fn the_lag_log_stays_small_and_forgets_what_no_lease_needs() {
        let lease = Duration::from_secs(1);
        let mut lags = Lags::new(lease);
        for i in 0..200 {
            lags.note(i * MS, MS * (i + 1), i * MS + 12 * MS);
        }
        assert!(lags.ranges.len() <= LAG_RANGES);
        // The oldest readings were merged, never dropped while needed: a
        // lease timed from the first still gets at least its lag.
        assert!(lags.grace(deadline_ns(0, lease), lease) >= MS);
        // Long after every lease timed from them ended, they go.
        lags.note(100_000 * MS, MS, 100_000 * MS + 12 * MS);
        assert_eq!(lags.ranges.len(), 1);
        assert_eq!(lags.grace(deadline_ns(0, lease), lease), 0);
    }

    #[test]
    fn only_a_reading_that_stood_too_long_is_noted() {
        let clock = Clock::new(Duration::from_secs(1), None);
        let mut lags = Lags::new(Duration::from_secs(1));
        clock.note_lag(&mut lags, clock.precise());
        clock.note_lag(&mut lags, STALE);
        assert!(lags.ranges.is_empty());
        std::thread::sleep(RECENT_MAX_AGE + Duration::from_millis(50));
        clock.note_lag(&mut lags, 0);
        assert_eq!(lags.ranges.len(), 1);
        assert!(lags.ranges[0].extra >= 50 * MS);
    }
}
