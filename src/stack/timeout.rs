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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::Request;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::body::Body;
use crate::error::{Elapsed, Error};

pin_project_lite::pin_project! {
    /// `inner`, failed with [`Elapsed`] once `after` passes (with no progress, when a progress
    /// counter is given). Without a duration it is `inner` as it is.
    #[derive(Debug)]
    pub struct Deadline<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        after: Duration,
        progress: Option<Arc<AtomicU64>>,
        seen: u64,
    }
}

impl<F> Deadline<F> {
    /// `inner` within `after` (`None`: no limit).
    pub(crate) fn new(inner: F, after: Option<Duration>) -> Self {
        Deadline {
            inner,
            sleep: after.map(tokio::time::sleep),
            after: after.unwrap_or_default(),
            progress: None,
            seen: 0,
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
        let mut this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out);
        }
        let Some(mut sleep) = this.sleep.as_mut().as_pin_mut() else { return Poll::Pending };
        loop {
            ready!(sleep.as_mut().poll(cx));
            let now = this.progress.as_ref().map_or(0, |p| p.load(Ordering::Relaxed));
            if now == *this.seen {
                return Poll::Ready(Err(Elapsed(*this.after).into()));
            }
            *this.seen = now;
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
