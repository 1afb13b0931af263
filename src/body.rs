//! Body types: the one boxed body used across the stack, and the thin wrappers the gateway
//! puts around streamed bodies (byte counting, size limits, read timeouts). Nothing here
//! buffers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::time::{Instant, Sleep};

use crate::error::{BodyTooLarge, ClientBodyError, Error};

/// The body type of every request and response inside the gateway.
pub type Body = UnsyncBoxBody<Bytes, Error>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Box any body whose error converts into [`Error`].
pub(crate) fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Error>,
{
    b.map_err(Into::into).boxed_unsync()
}

pin_project_lite::pin_project! {
    /// Counts the data bytes that pass through, and fails with [`BodyTooLarge`] once more than
    /// `limit` bytes have passed (0 = no limit). Used on request bodies, whose size the client
    /// may lie about or not announce at all.
    #[derive(Debug)]
    pub struct Metered<B> {
        #[pin]
        inner: B,
        count: Arc<AtomicU64>,
        seen: u64,
        limit: u64,
    }
}

impl<B> Metered<B> {
    /// Wrap `inner`, adding every data byte to `count`.
    pub(crate) fn new(inner: B, count: Arc<AtomicU64>, limit: u64) -> Self {
        Metered { inner, count, seen: 0, limit }
    }
}

impl<B> http_body::Body for Metered<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    *this.seen += n;
                    this.count.fetch_add(n, Ordering::Relaxed);
                    if *this.limit > 0 && *this.seen > *this.limit {
                        return Poll::Ready(Some(Err(BodyTooLarge { limit: *this.limit }.into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A request body from a client: its errors (a connection closed mid-upload, broken
    /// chunked framing) become [`ClientBodyError`], so that nothing downstream mistakes them
    /// for an upstream failure.
    #[derive(Debug)]
    pub struct FromClient<B> {
        #[pin]
        inner: B,
    }
}

impl<B> FromClient<B> {
    /// Wrap a client's request body.
    pub(crate) fn new(inner: B) -> Self {
        FromClient { inner }
    }
}

impl<B> http_body::Body for FromClient<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match self.project().inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(ClientBodyError { source: e.into() }.into()))),
            other => other.map(|f| f.map(|f| f.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// Fails the body with `on_timeout()` when it waits longer than `timeout` for its next frame
    /// while it is being read: NGINX's `client_body_timeout` on request bodies and
    /// `proxy_read_timeout` on upstream response bodies. The clock runs only while the reader
    /// waits (between two reads), never while the reader itself is slow.
    ///
    /// The timer is made on the first wait and reset on later ones, so a body that is always
    /// ready (a small body that came with its head) never touches the timer wheel.
    pub struct ReadTimeout<B> {
        #[pin]
        inner: B,
        sleep: Option<Pin<Box<Sleep>>>,
        // The timer is stale: a frame arrived since it was set.
        stale: bool,
        timeout: Duration,
        on_timeout: fn(Duration) -> Error,
    }
}

impl<B> ReadTimeout<B> {
    /// Wrap `inner`; after `timeout` without a frame, the body fails with `on_timeout(timeout)`.
    pub(crate) fn new(inner: B, timeout: Duration, on_timeout: fn(Duration) -> Error) -> Self {
        ReadTimeout { inner, sleep: None, stale: false, timeout, on_timeout }
    }
}

impl<B: fmt::Debug> fmt::Debug for ReadTimeout<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadTimeout").field("inner", &self.inner).field("timeout", &self.timeout).finish()
    }
}

impl<B> http_body::Body for ReadTimeout<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.stale = true;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = *this.timeout;
                let sleep = match this.sleep {
                    Some(s) => {
                        if *this.stale {
                            s.as_mut().reset(Instant::now() + timeout);
                        }
                        s
                    }
                    None => this.sleep.insert(Box::pin(tokio::time::sleep(timeout))),
                };
                *this.stale = false;
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err((this.on_timeout)(*this.timeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Elapsed;
    use http_body_util::BodyExt;

    fn elapsed(d: Duration) -> Error {
        Elapsed(d).into()
    }

    /// A body fed by hand through a channel.
    fn channel() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Error>(Frame::data(b)), rx))
        });
        (tx, http_body_util::StreamBody::new(stream).boxed_unsync())
    }

    #[tokio::test(start_paused = true)]
    async fn read_timeout_fires_only_between_frames() {
        let (tx, inner) = channel();
        let mut body = ReadTimeout::new(inner, Duration::from_secs(10), elapsed);
        // Frames 8 s apart never trip a 10 s timeout, however long the whole body takes.
        let feeder = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(8)).await;
                tx.send(Bytes::from_static(b"x")).await.unwrap();
            }
            // Then silence, with the sender kept open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        for _ in 0..5 {
            let f = body.frame().await.unwrap().unwrap();
            assert_eq!(f.into_data().unwrap(), "x");
        }
        let start = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(crate::error::cause_ref::<Elapsed>(err.as_ref()).is_some());
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_body_never_makes_a_timer() {
        let mut body = ReadTimeout::new(full("abc"), Duration::from_secs(1), elapsed);
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "abc");
        assert!(body.frame().await.is_none());
        assert!(body.sleep.is_none());
    }
}
