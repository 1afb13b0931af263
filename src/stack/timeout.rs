//! The one timeout mechanism of the request path: a [`Deadline`] around a future that fails it
//! with [`Elapsed`] (504 `timeout`, retry condition `timeout`) when it has not finished in time.
//! Three waits use it:
//!
//! - the route's `timeout`, the whole exchange up to the response head, retries included
//!   ([`TimeoutLayer`] outside the retry layer);
//! - `[route.retry] per_try_timeout`, one attempt ([`TimeoutLayer`] inside the retry layer);
//! - the upstream's `read_timeout` while the forwarder waits for a response head
//!   ([`Deadline::resetting_on`]): there the timer restarts whenever the client's request body
//!   made progress, so that the upstream's silence is measured, never a slow upload.
//!
//! After the head, the upstream's `read_timeout` applies to each body frame instead
//! (`body::ReadTimeout`), which is a wait of a different shape: between frames of a stream.
//!
//! A deadline's timer is the connection's, when it has one to lend ([`lend`]): an HTTP/1
//! connection serves one request after another, and the timer of the one before is moved to
//! the new deadline instead of a new timer being registered with the runtime and the old one
//! taken out (a lock and a wheel insertion each, about 500 instructions per request). A timer
//! moved to a later deadline stays where it is in the runtime's wheel; when the wheel reaches
//! its old deadline it finds the new one and files it there (tokio's `Sleep::reset`), as
//! NGINX's timers are re-armed lazily.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::Request;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::body::Body;
use crate::error::{Elapsed, Error};

/// A timer a connection keeps between its requests (see [`lend`]).
pub(crate) type Timer = Pin<Box<Sleep>>;

/// What the connection being polled on this thread lends to the deadlines made meanwhile.
#[derive(Default)]
enum Lent {
    /// No connection is being polled (or it lends nothing): a deadline makes its own timer.
    #[default]
    Outside,
    /// A connection is being polled; its timer is out (or it has none yet).
    Empty,
    /// A connection is being polled, and this is its timer.
    Timer(Timer),
}

thread_local! {
    static LENT: Cell<Lent> = const { Cell::new(Lent::Outside) };
}

/// While the guard lives, deadlines made on this thread take their timer from `home`, and
/// give it back when they end (a deadline that outlives the guard drops its timer). Made by
/// a connection's task around each poll of the connection: every deadline of its requests is
/// made, and (but for a cancelled connection) ends, in such a poll, and all of them in the
/// runtime the timer belongs to. A guard inside another one lends nothing.
pub(crate) fn lend(home: &mut Option<Timer>) -> Lending<'_> {
    match LENT.take() {
        Lent::Outside => {
            LENT.set(home.take().map_or(Lent::Empty, Lent::Timer));
            Lending(Some(home))
        }
        outer => {
            LENT.set(outer);
            Lending(None)
        }
    }
}

/// See [`lend`]: takes the timer back into its home when dropped.
pub(crate) struct Lending<'a>(Option<&'a mut Option<Timer>>);

impl Drop for Lending<'_> {
    fn drop(&mut self) {
        if let Some(home) = self.0.take() {
            if let Lent::Timer(t) = LENT.replace(Lent::Outside) {
                *home = Some(t);
            }
        }
    }
}

/// A timer for `at`: the lent one moved there, or a new one.
fn timer(at: Instant) -> Timer {
    match LENT.take() {
        Lent::Timer(mut t) => {
            LENT.set(Lent::Empty);
            t.as_mut().reset(at);
            t
        }
        other => {
            LENT.set(other);
            Box::pin(tokio::time::sleep_until(at))
        }
    }
}

/// Give a deadline's timer back to the connection that lent it, if it is being polled and
/// has none; else drop it (which takes it out of the runtime's wheel).
fn give_back(t: Timer) {
    match LENT.take() {
        Lent::Empty => LENT.set(Lent::Timer(t)),
        other => LENT.set(other),
    }
}

pin_project_lite::pin_project! {
    /// `inner`, failed with [`Elapsed`] once `after` passes (with no progress, when a progress
    /// counter is given). Without a duration it is `inner` as it is.
    #[derive(Debug)]
    pub struct Deadline<F> {
        #[pin]
        inner: F,
        sleep: Option<Timer>,
        after: Duration,
        progress: Option<Arc<AtomicU64>>,
        seen: u64,
        // The waker the armed timer holds. Polled again with the same waker before it fires,
        // the timer need not be polled: it will wake this task. (Most polls of a request's
        // future are for something else: a deadline is polled about three times per request.)
        armed: Option<Waker>,
    }
    impl<F> PinnedDrop for Deadline<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(t) = this.project().sleep.take() {
                give_back(t);
            }
        }
    }
}

impl<F> Deadline<F> {
    /// `inner` within `after` (`None`: no limit).
    pub(crate) fn new(inner: F, after: Option<Duration>) -> Self {
        Deadline {
            inner,
            sleep: after.map(|d| timer(Instant::now() + d)),
            after: after.unwrap_or_default(),
            progress: None,
            seen: 0,
            armed: None,
        }
    }

    /// Restart the timer instead of failing when `progress` moved since it was armed.
    pub(crate) fn resetting_on(mut self, progress: Option<Arc<AtomicU64>>) -> Self {
        self.seen = progress.as_ref().map_or(0, |p| p.load(Ordering::Relaxed));
        self.progress = progress;
        self
    }
}

impl<F, T> Future for Deadline<F>
where
    F: Future<Output = Result<T, Error>>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out);
        }
        let Some(sleep) = this.sleep.as_mut() else { return Poll::Pending };
        if let Some(w) = this.armed.as_ref() {
            if w.will_wake(cx.waker()) && !sleep.is_elapsed() {
                return Poll::Pending;
            }
        }
        loop {
            // With the task's budget spent, the poll returns `Pending` without arming the timer
            // (tokio wakes the task at once instead): nothing to remember then.
            let budget = tokio::task::coop::has_budget_remaining();
            if sleep.as_mut().poll(cx).is_pending() {
                if budget && !this.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *this.armed = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let now = this.progress.as_ref().map_or(0, |p| p.load(Ordering::Relaxed));
            if now == *this.seen {
                return Poll::Ready(Err(Elapsed(*this.after).into()));
            }
            *this.seen = now;
            *this.armed = None;
            sleep.as_mut().reset(Instant::now() + *this.after);
        }
    }
}

/// Fails a call with [`Elapsed`] after a time: the route `timeout`, or `per_try_timeout`.
#[derive(Clone, Debug)]
pub(crate) struct TimeoutLayer {
    timeout: Option<Duration>,
}

impl TimeoutLayer {
    /// `None` = no timeout.
    pub(crate) fn new(timeout: Option<Duration>) -> Self {
        TimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout { inner, timeout: self.timeout }
    }
}

/// See [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Timeout<S> {
    inner: S,
    timeout: Option<Duration>,
}

impl<S> Timeout<S> {
    inner_access!();
}

impl<S> Service<Request<Body>> for Timeout<S>
where
    S: Service<Request<Body>, Error = Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = Deadline<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        Deadline::new(self.inner.call(req), self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::cause_ref;

    const SEC: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_deadline_fails_a_slow_future_and_passes_a_fast_one() {
        let slow = Deadline::new(
            async {
                tokio::time::sleep(2 * SEC).await;
                Ok::<_, Error>(())
            },
            Some(SEC),
        );
        let err = slow.await.unwrap_err();
        assert_eq!(cause_ref::<Elapsed>(err.as_ref()).unwrap().0, SEC);
        let fast = Deadline::new(
            async {
                tokio::time::sleep(SEC / 2).await;
                Ok::<_, Error>(7)
            },
            Some(SEC),
        );
        assert_eq!(fast.await.unwrap(), 7);
        let unlimited = Deadline::new(
            async {
                tokio::time::sleep(3600 * SEC).await;
                Ok::<_, Error>(1)
            },
            None,
        );
        assert_eq!(unlimited.await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_restarts_the_timer_and_silence_ends_it() {
        let progress = Arc::new(AtomicU64::new(0));
        let p = Arc::clone(&progress);
        // Body bytes arrive every 0.7 s until 3.5 s, then nothing. The 1 s timer, checked at
        // 1, 2, 3 and 4 s, sees progress each time; at 5 s it sees none and fires.
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(SEC * 7 / 10).await;
                p.fetch_add(1, Ordering::Relaxed);
            }
        });
        let start = Instant::now();
        let never = Deadline::new(std::future::pending::<Result<(), Error>>(), Some(SEC))
            .resetting_on(Some(progress));
        assert!(never.await.is_err());
        let waited = start.elapsed();
        assert!(waited >= 5 * SEC && waited < 5 * SEC + SEC / 10, "{waited:?}");
    }

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_polled_often_by_one_task_still_fires() {
        // The inner future wakes its task 1000 times before it goes quiet: most of the
        // deadline's polls come with the waker its timer already holds.
        let mut left = 1000;
        let busy = std::future::poll_fn(move |cx| {
            if left > 0 {
                left -= 1;
                cx.waker().wake_by_ref();
            }
            Poll::<Result<(), Error>>::Pending
        });
        let start = Instant::now();
        let err = Deadline::new(busy, Some(SEC)).await.unwrap_err();
        assert_eq!(cause_ref::<Elapsed>(err.as_ref()).unwrap().0, SEC);
        assert_eq!(start.elapsed(), SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_to_another_task_wakes_that_one() {
        let mut d = Box::pin(Deadline::new(std::future::pending::<Result<(), Error>>(), Some(SEC)));
        let (first, second) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let (w1, w2) = (Waker::from(Arc::clone(&first)), Waker::from(Arc::clone(&second)));
        assert!(d.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        assert!(d.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
        // Let the timer fire: the task that polled last is the one woken.
        tokio::time::sleep(2 * SEC).await;
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        match d.as_mut().poll(&mut Context::from_waker(&w2)) {
            Poll::Ready(Err(e)) => assert!(cause_ref::<Elapsed>(e.as_ref()).is_some()),
            other => panic!("expected the deadline to have passed, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_first_polled_with_the_task_budget_spent_still_fires() {
        let mut d = Box::pin(Deadline::new(std::future::pending::<Result<(), Error>>(), Some(SEC)));
        let mut first = true;
        let polled = std::future::poll_fn(move |cx| {
            if std::mem::take(&mut first) {
                // Spend the task's budget: the timer's first poll then cannot arm it.
                while let Poll::Ready(r) = tokio::task::coop::poll_proceed(cx) {
                    r.made_progress();
                }
            }
            d.as_mut().poll(cx)
        });
        let start = Instant::now();
        let out = tokio::time::timeout(10 * SEC, polled).await.expect("the deadline fired");
        assert!(cause_ref::<Elapsed>(out.unwrap_err().as_ref()).is_some());
        assert_eq!(start.elapsed(), SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lent_timer_serves_the_next_deadline_and_fires_at_its_time_only() {
        let never = std::future::pending::<Result<(), Error>>;
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut home = None;
        // A first request's deadline (1 s) is armed, then the request ends: its timer goes home.
        {
            let _lending = lend(&mut home);
            let mut d = Box::pin(Deadline::new(never(), Some(SEC)));
            assert!(d.as_mut().poll(&mut cx).is_pending());
        }
        let first: *const Sleep = &**home.as_ref().expect("the timer went back to the connection");
        tokio::time::sleep(SEC / 2).await;
        // The next request's deadline (1.5 s) takes that same timer.
        let mut d = {
            let _lending = lend(&mut home);
            let mut d = Box::pin(Deadline::new(never(), Some(SEC)));
            assert!(d.as_mut().poll(&mut cx).is_pending());
            d
        };
        assert!(std::ptr::eq(&**d.sleep.as_ref().unwrap(), first), "the lent timer, not a new one");
        assert!(home.is_none(), "lent out while the deadline lives");
        // Past the first deadline: nothing fires.
        tokio::time::sleep(SEC * 6 / 10).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "woken at the timer's old deadline");
        assert!(d.as_mut().poll(&mut cx).is_pending());
        // Past the second: it fires, once.
        tokio::time::sleep(SEC / 2).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        match d.as_mut().poll(&mut cx) {
            Poll::Ready(Err(e)) => assert_eq!(cause_ref::<Elapsed>(e.as_ref()).unwrap().0, SEC),
            other => panic!("expected the deadline to have passed, got {other:?}"),
        }
        // A deadline that ends outside a lending (its connection's task dropped it) keeps its
        // timer to itself; one made outside takes none, and a lending inside another lends nothing.
        drop(d);
        assert!(home.is_none());
        let mut other = Some(Box::pin(tokio::time::sleep(SEC)));
        {
            let _outer = lend(&mut home);
            let _inner = lend(&mut other);
            drop(Deadline::new(never(), Some(SEC)));
        }
        assert!(other.is_some(), "the inner lending lent nothing");
        assert!(home.is_some(), "the outer lending kept the deadline's timer");
        let d = Deadline::new(never(), Some(SEC));
        drop(d);
        assert!(home.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_fails_a_call_the_inner_service_does_not_answer_in_time() {
        use tower::ServiceExt;
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, http::Response<Body>>();
        let mut svc = TimeoutLayer::new(Some(SEC)).layer(mock);
        handle.allow(2);

        let call = svc.ready().await.unwrap().call(Request::new(crate::body::empty()));
        let (_req, unanswered) = handle.next_request().await.unwrap();
        let err = call.await.unwrap_err();
        assert_eq!(cause_ref::<Elapsed>(err.as_ref()).unwrap().0, SEC);
        drop(unanswered);

        let call = svc.ready().await.unwrap().call(Request::new(crate::body::empty()));
        let (_req, respond) = handle.next_request().await.unwrap();
        respond.send_response(http::Response::new(crate::body::empty()));
        assert!(call.await.is_ok());
    }
}
