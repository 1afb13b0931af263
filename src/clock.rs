//! One clock read per turn of a connection task, as NGINX reads its clock once per turn of
//! its event loop: the instants that one poll of a client connection takes (the request's
//! start, the upstream's round trip, the pool's idle marks, the connection's activity) share
//! one read of the clock instead of taking one each (about a dozen per proxied request).
//!
//! A turn is one poll of a connection task ([`turn`]); the first [`now`] in it reads the clock
//! and the others get that instant back, so an instant is late by at most how long the turn
//! has run since (microseconds: a turn does not wait). Outside a turn (any other task, a
//! thread that serves no connection, a test), [`now`] reads the clock each time.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
enum State {
    /// Not in a turn: read the clock each time.
    Outside,
    /// In a turn that has not read the clock yet.
    Unread,
    /// In a turn, which read the clock at this instant.
    Read(Instant),
}

thread_local! {
    static STATE: Cell<State> = const { Cell::new(State::Outside) };
}

/// A turn, until dropped.
pub(crate) struct Turn(State);

/// Start a turn on this thread (a turn inside a turn goes on with the outer one's instant).
pub(crate) fn turn() -> Turn {
    let outer = STATE.get();
    if let State::Outside = outer {
        STATE.set(State::Unread);
    }
    Turn(outer)
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let State::Outside = self.0 {
            STATE.set(State::Outside);
        }
    }
}

/// Now: this turn's instant, or the clock's outside a turn.
pub(crate) fn now() -> Instant {
    match STATE.get() {
        State::Read(t) => t,
        State::Unread => {
            let t = Instant::now();
            STATE.set(State::Read(t));
            t
        }
        State::Outside => Instant::now(),
    }
}

/// The time since `then`, as of [`now`] (zero if `then` is later: it was read after this turn's
/// instant).
pub(crate) fn since(then: Instant) -> Duration {
    now().saturating_duration_since(then)
}

/// The process's base instant (taken on first use), from which timestamps kept in atomics
/// count: [`millis`], [`nanos`].
pub(crate) fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since [`start`], as of [`now`], plus one: 0 is left to mean "not set".
pub(crate) fn millis() -> u64 {
    since(start()).as_millis() as u64 + 1
}

/// Nanoseconds since [`start`], as of [`now`].
pub(crate) fn nanos() -> u64 {
    since(start()).as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wait until the clock has moved past `t` (nanoseconds: a few reads).
    fn past(t: Instant) {
        while Instant::now() <= t {}
    }

    #[test]
    fn a_turn_reads_the_clock_once_and_outside_every_time() {
        let a = now();
        past(a);
        assert!(now() > a, "outside a turn, the clock is read each time");
        {
            let _t = turn();
            let first = now();
            past(first);
            assert_eq!(now(), first, "in a turn, one instant");
            {
                let _inner = turn();
                assert_eq!(now(), first, "a turn inside a turn keeps the outer instant");
            }
            assert_eq!(now(), first, "the inner turn's end does not end the outer one");
            assert_eq!(since(first + Duration::from_secs(1)), Duration::ZERO);
        }
        let after = now();
        past(after);
        assert!(now() > after, "after the turn, the clock again");
    }
}
