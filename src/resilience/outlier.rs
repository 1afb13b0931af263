//! `[upstream.outlier]`: the passive outlier breaker of one endpoint, Envoy's
//! consecutive-failure detector with an explicit half-open trial.
//!
//! ```text
//!            N failures in a row              time over               trial succeeds
//!   Closed ─────────────────────▶ Ejected ───────────────▶ HalfOpen ─▶ Trial ──────────▶ Closed
//!      ▲                            ▲                        │  ▲        │
//!      │ a probe passes             │ trial fails (longer)   │  └────────┘ trial abandoned
//!      └────────────────────────────┴────────────────────────┴───────────┘
//! ```
//!
//! Closed lets traffic flow and counts consecutive failures. `consecutive_failures` of them
//! eject the endpoint for `ejection_time` × times ejected (capped at 300 s), unless
//! `max_ejection_percent` of the upstream's endpoints are out already (one may always be). When
//! the time is over it is half-open: the next request is the one trial ([`Breaker::admit`]),
//! whose success closes the breaker and whose failure ejects again, for longer. A trial whose
//! request ends without an outcome (cancelled) is offered again ([`TrialGuard`]). A passing
//! active health probe closes the breaker at once (Envoy's default).
//!
//! This module is the state machine only, all atomics and one rarely-taken mutex. The upstream
//! (`balance::Upstream`) owns what the machine drives: the set rebuild that takes an ejected
//! endpoint out of (or back into) the pick set, and the expiry timer.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Outlier;

/// The longest ejection, whatever the multiplier (Envoy's `max_ejection_time` default).
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// An ejection count is forgotten after the endpoint has been back this long without being
/// ejected again, so that one bad hour does not lengthen ejections forever.
const EJECTION_MEMORY: Duration = MAX_EJECTION;

/// The breaker's phase (Closed lets traffic flow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Traffic flows; consecutive failures are counted.
    Closed,
    /// Ejected until its time ends; out of the pick set.
    Ejected,
    /// Ejection ended; the next request (or probe) is the trial.
    HalfOpen,
    /// The trial request is in flight; nothing else goes there.
    Trial,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Ejected,
            2 => Phase::HalfOpen,
            3 => Phase::Trial,
            _ => Phase::Closed,
        }
    }
}

/// Ejection bookkeeping, touched only when an endpoint fails, is ejected or recovers.
#[derive(Debug, Default)]
struct Ejections {
    /// Ejections so far (the multiplier of `ejection_time`).
    times: u32,
    /// When the current ejection ends (wall clock, for `GET /upstreams`).
    until: Option<SystemTime>,
    /// When the last ejection ended: a long quiet spell resets `times`.
    last_end: Option<Instant>,
    /// Bumped by every ejection and every un-ejection, so that a stale expiry timer does
    /// nothing.
    generation: u64,
}

/// What the owner of a breaker must do after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing: the pick set is still right.
    Keep,
    /// Try to eject ([`Breaker::eject`]); `retrial` when a trial failed (always re-ejected).
    Eject {
        /// A failed trial, already out of traffic.
        retrial: bool,
    },
    /// The endpoint is back: rebuild the pick set.
    Restore,
}

/// One endpoint's breaker.
#[derive(Debug)]
pub struct Breaker {
    phase: AtomicU8,
    failures: AtomicU32,
    ejections: Mutex<Ejections>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            phase: AtomicU8::new(Phase::Closed as u8),
            failures: AtomicU32::new(0),
            ejections: Mutex::default(),
        }
    }
}

impl Breaker {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
    }

    /// Move `from` → `to` if the phase is still `from`.
    fn swap_phase(&self, from: Phase, to: Phase) -> bool {
        self.phase.compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Ejections> {
        self.ejections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a request go here now? Closed: yes. HalfOpen: the first caller wins the trial.
    pub(crate) fn admit(&self) -> bool {
        match self.phase() {
            Phase::Closed => true,
            Phase::HalfOpen => self.swap_phase(Phase::HalfOpen, Phase::Trial),
            Phase::Ejected | Phase::Trial => false,
        }
    }

    /// When the current ejection ends, if ejected.
    pub fn ejected_until(&self) -> Option<SystemTime> {
        if self.phase() != Phase::Ejected {
            return None;
        }
        self.book().until
    }

    /// The outcome of a request (`success`: a response that is not a 5xx).
    pub(crate) fn on_outcome(&self, cfg: &Outlier, success: bool) -> Verdict {
        match self.phase() {
            Phase::Closed if success => {
                if self.failures.load(Ordering::Relaxed) != 0 {
                    self.failures.store(0, Ordering::Relaxed);
                }
                Verdict::Keep
            }
            Phase::Closed => {
                let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if n >= cfg.consecutive_failures {
                    Verdict::Eject { retrial: false }
                } else {
                    Verdict::Keep
                }
            }
            Phase::Trial if success => {
                // Already in the pick set: closing needs no rebuild.
                if self.swap_phase(Phase::Trial, Phase::Closed) {
                    self.failures.store(0, Ordering::Relaxed);
                }
                Verdict::Keep
            }
            Phase::Trial => Verdict::Eject { retrial: true },
            // Late answers of requests sent before the ejection change nothing.
            Phase::Ejected | Phase::HalfOpen => Verdict::Keep,
        }
    }

    /// A trial request was abandoned without an outcome: offer the trial again.
    pub(crate) fn abandon(&self) {
        self.swap_phase(Phase::Trial, Phase::HalfOpen);
    }

    /// Eject, if the limit allows: `out` of `total` endpoints are not closed now (the caller
    /// holds the lock that serialises ejections, so the count is exact). Returns how long,
    /// and the generation the expiry timer must present to [`Breaker::expire`].
    pub(crate) fn eject(
        &self,
        cfg: &Outlier,
        retrial: bool,
        out: usize,
        total: usize,
    ) -> Option<(Duration, u64)> {
        if !retrial {
            if self.phase() != Phase::Closed {
                return None;
            }
            if out > 0 && (out + 1) * 100 > usize::from(cfg.max_ejection_percent) * total {
                return None;
            }
        }
        let mut book = self.book();
        if !retrial && book.last_end.is_some_and(|t| t.elapsed() > EJECTION_MEMORY) {
            book.times = 0;
        }
        book.times = book.times.saturating_add(1);
        let d = cfg.ejection_time.saturating_mul(book.times).min(MAX_EJECTION);
        book.until = Some(SystemTime::now() + d);
        book.generation += 1;
        self.failures.store(0, Ordering::Relaxed);
        self.set_phase(Phase::Ejected);
        Some((d, book.generation))
    }

    /// The ejection timer of `generation` ran out: half-open, unless something newer happened.
    /// True when the endpoint must go back into the pick set.
    pub(crate) fn expire(&self, generation: u64) -> bool {
        let mut book = self.book();
        if book.generation != generation || !self.swap_phase(Phase::Ejected, Phase::HalfOpen) {
            return false;
        }
        book.last_end = Some(Instant::now());
        true
    }

    /// An active health probe's result: a pass closes the breaker, a failure of a half-open
    /// endpoint is a failed trial.
    pub(crate) fn on_probe(&self, ok: bool) -> Verdict {
        if ok && self.phase() != Phase::Closed {
            let mut book = self.book();
            book.generation += 1; // disarm the expiry timer
            book.last_end = Some(Instant::now());
            self.set_phase(Phase::Closed);
            self.failures.store(0, Ordering::Relaxed);
            Verdict::Restore
        } else if !ok && self.swap_phase(Phase::HalfOpen, Phase::Trial) {
            Verdict::Eject { retrial: true }
        } else {
            Verdict::Keep
        }
    }
}

/// What holds a [`Breaker`]: a reference to it, or what owns one (an endpoint).
pub(crate) trait HasBreaker: Clone {
    fn breaker(&self) -> &Breaker;
}

impl HasBreaker for &Breaker {
    fn breaker(&self) -> &Breaker {
        self
    }
}

/// Hands a half-open endpoint's trial back when the attempt that holds it ends without an
/// outcome (its future was dropped: route timeout, client gone), so another request may try.
#[derive(Debug)]
pub(crate) struct TrialGuard<T: HasBreaker>(Option<T>);

impl<T: HasBreaker> TrialGuard<T> {
    /// Guard the attempt about to be sent to the endpoint of `owner`'s breaker (a clone of
    /// `owner` is kept only when the attempt is the trial).
    pub(crate) fn arm(owner: &T) -> Self {
        TrialGuard((owner.breaker().phase() == Phase::Trial).then(|| owner.clone()))
    }

    /// The attempt has an outcome: nothing to hand back.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl<T: HasBreaker> Drop for TrialGuard<T> {
    fn drop(&mut self) {
        if let Some(o) = &self.0 {
            o.breaker().abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n: u32, pct: u8) -> Outlier {
        Outlier { consecutive_failures: n, ejection_time: Duration::from_secs(10), max_ejection_percent: pct }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let (b, c) = (Breaker::default(), cfg(3, 100));
        assert_eq!(b.on_outcome(&c, false), Verdict::Keep);
        assert_eq!(b.on_outcome(&c, false), Verdict::Keep);
        assert_eq!(b.on_outcome(&c, true), Verdict::Keep);
        assert_eq!(b.on_outcome(&c, false), Verdict::Keep);
        assert_eq!(b.on_outcome(&c, false), Verdict::Keep);
        assert_eq!(b.on_outcome(&c, false), Verdict::Eject { retrial: false });
        let (d, _) = b.eject(&c, false, 0, 2).unwrap();
        assert_eq!(d, Duration::from_secs(10));
        assert_eq!(b.phase(), Phase::Ejected);
        assert!(b.ejected_until().is_some());
        assert!(!b.admit());
    }

    #[test]
    fn max_ejection_percent_holds_but_one_may_always_go() {
        let c = cfg(1, 10);
        assert!(Breaker::default().eject(&c, false, 0, 3).is_some(), "the first may always go");
        assert!(Breaker::default().eject(&c, false, 1, 3).is_none());
        assert!(Breaker::default().eject(&cfg(1, 50), false, 1, 4).is_some());
        assert!(Breaker::default().eject(&cfg(1, 50), false, 2, 4).is_none());
    }

    #[test]
    fn half_open_admits_exactly_one_trial_and_its_outcome_decides() {
        let c = cfg(1, 100);
        let b = Breaker::default();
        let (_, generation) = b.eject(&c, false, 0, 1).unwrap();
        assert!(!b.expire(generation + 1), "a stale timer does nothing");
        assert!(b.expire(generation));
        assert_eq!(b.phase(), Phase::HalfOpen);
        assert!(b.admit());
        assert!(!b.admit());
        assert_eq!(b.phase(), Phase::Trial);
        // A failed trial is re-ejected whatever the limit, for twice as long.
        assert_eq!(b.on_outcome(&c, false), Verdict::Eject { retrial: true });
        let (d, g2) = b.eject(&c, true, 1, 1).unwrap();
        assert_eq!(d, Duration::from_secs(20));
        assert!(b.expire(g2));
        assert!(b.admit());
        assert_eq!(b.on_outcome(&c, true), Verdict::Keep);
        assert_eq!(b.phase(), Phase::Closed);
    }

    #[test]
    fn an_abandoned_trial_is_offered_again() {
        let c = cfg(1, 100);
        let b = Breaker::default();
        let (_, g) = b.eject(&c, false, 0, 1).unwrap();
        b.expire(g);
        assert!(b.admit());
        TrialGuard::arm(&&b); // dropped armed: the request ended without an outcome
        assert_eq!(b.phase(), Phase::HalfOpen);
        assert!(b.admit());
        TrialGuard::arm(&&b).disarm();
        assert_eq!(b.phase(), Phase::Trial);
    }

    #[test]
    fn a_passing_probe_closes_and_disarms_the_timer() {
        let c = cfg(1, 100);
        let b = Breaker::default();
        let (_, g) = b.eject(&c, false, 0, 1).unwrap();
        assert_eq!(b.on_probe(true), Verdict::Restore);
        assert_eq!(b.phase(), Phase::Closed);
        assert!(!b.expire(g));
        assert_eq!(b.on_probe(true), Verdict::Keep);
        // A failing probe of a half-open endpoint is a failed trial.
        let (_, g) = b.eject(&c, false, 0, 1).unwrap();
        b.expire(g);
        assert_eq!(b.on_probe(false), Verdict::Eject { retrial: true });
    }

    #[test]
    fn ejections_grow_up_to_the_cap() {
        let c = Outlier {
            consecutive_failures: 1,
            ejection_time: Duration::from_secs(100),
            max_ejection_percent: 100,
        };
        let b = Breaker::default();
        let mut last = Duration::ZERO;
        for _ in 0..5 {
            let (d, g) = b.eject(&c, true, 0, 1).unwrap();
            last = d;
            b.expire(g);
        }
        assert_eq!(last, MAX_EJECTION);
    }
}
