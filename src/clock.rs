//! One clock read per turn of a connection task, as NGINX reads its clock once per turn of
//! its event loop: the instants that one poll of a client connection takes (the request's
//! start, the upstream's round trip, the connection's activity) share one read of the clock
//! instead of taking one each (about a dozen per proxied request).
//!
//! An instant is kept as nanoseconds since the process's base instant ([`start`]): the time
//! between two is a subtraction of integers (subtracting two `Instant`s costs some 40
//! instructions, and a proxied request took eight such).
//!
//! A turn is one poll of a connection task ([`turn`]); the first [`nanos`] in it reads the
//! clock and the others get that reading back, so it is late by at most how long the turn has
//! run since (microseconds: a turn does not wait). Outside a turn (any other task, a thread
//! that serves no connection, a test), [`nanos`] reads the clock each time.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
enum State {
    /// Not in a turn: read the clock each time.
    Outside,
    /// In a turn that has not read the clock yet.
    Unread,
    /// In a turn, which read the clock this many nanoseconds after [`start`].
    Read(u64),
}

thread_local! {
    static STATE: Cell<State> = const { Cell::new(State::Outside) };
}

/// A turn, until dropped.
pub(crate) struct Turn(State);

/// Start a turn on this thread (a turn inside a turn goes on with the outer one's reading).
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

/// The process's base instant (taken on first use), from which readings count.
pub(crate) fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Now, in nanoseconds since [`start`]: this turn's reading, or the clock's outside a turn.
pub(crate) fn nanos() -> u64 {
    match STATE.get() {
        State::Read(ns) => ns,
        State::Unread => {
            let ns = read();
            STATE.set(State::Read(ns));
            ns
        }
        State::Outside => read(),
    }
}

fn read() -> u64 {
    let base = start();
    Instant::now().saturating_duration_since(base).as_nanos() as u64
}

/// Milliseconds since [`start`], as of [`nanos`], plus one: 0 is left to mean "not set".
pub(crate) fn millis() -> u64 {
    nanos() / 1_000_000 + 1
}

/// The time since `then` (a [`nanos`] reading), as of [`nanos`] (zero if `then` is later: it
/// was read after this turn's reading).
pub(crate) fn since(then: u64) -> Duration {
    Duration::from_nanos(nanos().saturating_sub(then))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wait until the clock has moved past the reading `t` (nanoseconds: a few reads).
    fn past(t: u64) {
        while read() <= t {}
    }

    #[test]
    fn a_turn_reads_the_clock_once_and_outside_every_time() {
        let a = nanos();
        past(a);
        assert!(nanos() > a, "outside a turn, the clock is read each time");
        {
            let _t = turn();
            let first = nanos();
            past(first);
            assert_eq!(nanos(), first, "in a turn, one reading");
            assert_eq!(millis(), first / 1_000_000 + 1);
            {
                let _inner = turn();
                assert_eq!(nanos(), first, "a turn inside a turn keeps the outer reading");
            }
            assert_eq!(nanos(), first, "the inner turn's end does not end the outer one");
            assert_eq!(since(first + 1_000_000_000), Duration::ZERO);
            assert_eq!(since(first - 1_000), Duration::from_nanos(1_000));
        }
        let after = nanos();
        past(after);
        assert!(nanos() > after, "after the turn, the clock again");
        let before = Instant::now();
        let reading = nanos();
        assert!(start() + Duration::from_nanos(reading) >= before, "a reading counts from the base instant");
    }
}
