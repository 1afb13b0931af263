//! Body types: the one boxed body used across the stack, and the thin wrappers the gateway
//! puts around streamed bodies (byte counting, size limits). Nothing here buffers.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::error::{BodyTooLarge, Error};

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
pub fn boxed<B>(b: B) -> Body
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
    pub fn new(inner: B, count: Arc<AtomicU64>, limit: u64) -> Self {
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
