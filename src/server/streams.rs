//! The executor an HTTP/2 connection spawns its streams with: tokio's, with each poll of a
//! stream's task a clock turn ([`crate::clock::turn`]). hyper serves each HTTP/2 request in a
//! task of its own, outside the connection's poll and so outside its turn; without one, every
//! instant the request takes (its start, the upstream's round trip, the endpoint's EWMA, its
//! end) would read the clock again.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Spawns onto the current tokio runtime, as hyper-util's `TokioExecutor` does.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Turned { fut });
    }
}

pin_project_lite::pin_project! {
    /// A future each poll of which is one clock turn.
    struct Turned<F> {
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Turned<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _turn = crate::clock::turn();
        self.project().fut.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;

    #[tokio::test]
    async fn a_spawned_stream_reads_the_clock_once_a_poll() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        StreamExecutor.execute(async move {
            let first = crate::clock::nanos();
            let t = std::time::Instant::now();
            while t.elapsed() < std::time::Duration::from_micros(50) {}
            let same = crate::clock::nanos();
            tokio::task::yield_now().await;
            let next = crate::clock::nanos();
            let _ = tx.send((first, same, next));
        });
        let (first, same, next) = rx.await.unwrap();
        assert_eq!(same, first, "one poll, one reading");
        assert!(next > first, "the next poll reads the clock again");
    }
}
