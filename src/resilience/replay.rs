//! A request body that can be sent again: Linkerd's `ReplayBody` design, simplified.
//!
//! `Request<Incoming>` cannot be cloned, so a retry needs the bytes the first attempt already
//! sent. The first reader streams from the client as usual while every chunk is also kept, up
//! to `max_replay_body_bytes`; a later attempt reads the kept chunks first and then continues
//! from the client where the previous attempt stopped. Once a body outgrows the cap the kept
//! chunks are dropped and the body can no longer be replayed — but an attempt that failed
//! before reading anything (a connect failure) can still be retried, since nothing was lost.
//!
//! Attempts are sequential (a retry starts after the previous attempt ended), so readers never
//! poll concurrently; the shared state sits behind a mutex that is only held inside a poll.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as _, Frame, SizeHint};

use crate::body::Body;
use crate::error::Error;

#[derive(Debug)]
struct Shared {
    source: Body,
    chunks: Vec<Bytes>,
    kept: u64,
    cap: u64,
    /// Bytes went out that were not kept: no replay any more.
    overflowed: bool,
    /// The source failed: no replay.
    errored: bool,
    /// Bytes read from the source so far.
    read: u64,
    done: bool,
    trailers: Option<HeaderMap>,
}

/// One reader of a replayable body.
#[derive(Debug)]
pub(crate) struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    pos: usize,
    trailers_sent: bool,
    hint: SizeHint,
    empty: bool,
}

impl ReplayBody {
    /// Wrap `body`, keeping up to `cap` bytes for replay.
    pub(crate) fn new(body: Body, cap: u64) -> Self {
        let hint = body.size_hint();
        let empty = body.is_end_stream();
        ReplayBody {
            shared: Arc::new(Mutex::new(Shared {
                source: body,
                chunks: Vec::new(),
                kept: 0,
                cap,
                overflowed: false,
                errored: false,
                read: 0,
                done: empty,
                trailers: None,
            })),
            pos: 0,
            trailers_sent: false,
            hint,
            empty,
        }
    }

    /// A fresh reader for the next attempt, or `None` when the body can no longer be replayed.
    pub(crate) fn replay(&self) -> Option<ReplayBody> {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if s.overflowed || s.errored {
            return None;
        }
        Some(ReplayBody {
            shared: Arc::clone(&self.shared),
            pos: 0,
            trailers_sent: false,
            hint: self.hint,
            empty: self.empty,
        })
    }

    /// Whether any byte of the body has been read from the client yet.
    #[cfg(test)]
    fn started(&self) -> bool {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).read > 0
    }
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let mut s = this.shared.lock().unwrap_or_else(|p| p.into_inner());
        if this.pos < s.chunks.len() {
            let c = s.chunks[this.pos].clone();
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        if s.done {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        match Pin::new(&mut s.source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.done = true;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.errored = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    let n = data.len() as u64;
                    s.read += n;
                    if !s.overflowed && s.kept + n <= s.cap {
                        s.kept += n;
                        s.chunks.push(data.clone());
                        this.pos = s.chunks.len();
                    } else if !s.overflowed {
                        s.overflowed = true;
                        s.chunks = Vec::new();
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        s.trailers = Some(t.clone());
                        s.done = true;
                        this.trailers_sent = true;
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.empty {
            return true;
        }
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.done && self.pos >= s.chunks.len() && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use http_body_util::BodyExt;

    fn chunks(parts: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, Error>> =
            parts.iter().map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))).collect();
        body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test]
    async fn replays_what_was_read_then_continues() {
        let mut first = ReplayBody::new(chunks(&["ab", "cd", "ef"]), 1024);
        // The first attempt reads one chunk, then fails.
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "ab");
        let second = first.replay().expect("replayable");
        drop(first);
        let all = second.collect().await.unwrap().to_bytes();
        assert_eq!(all, "abcdef");
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_not_replayable_once_started() {
        let mut b = ReplayBody::new(chunks(&["0123456789", "x"]), 5);
        assert!(b.replay().is_some(), "nothing read yet: still replayable");
        let _ = b.frame().await;
        assert!(b.started());
        assert!(b.replay().is_none());
    }

    #[tokio::test]
    async fn empty_bodies_stay_empty() {
        let b = ReplayBody::new(body::empty(), 10);
        assert!(b.is_end_stream());
        let r = b.replay().unwrap();
        assert!(r.is_end_stream());
        assert_eq!(r.collect().await.unwrap().to_bytes(), "");
    }
}
