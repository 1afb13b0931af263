//! HTTP/3 bodies: an h3 request stream's receive half as an [`http_body::Body`] (what the
//! gateway's service takes, whatever the protocol), and a response written out through the
//! send half, frame by frame, with backpressure both ways.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h3::error::{Code, StreamError};
use h3::server::RequestStream;
use http::{HeaderMap, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::Body;
use crate::proxy::headers::strip_hop_by_hop;

/// The receive half of a request stream.
pub(super) type Recv = RequestStream<h3_quinn::RecvStream, Bytes>;
/// The send half of a request stream.
pub(super) type Send = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// Where a request body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Data,
    Trailers,
    Done,
}

/// A request body arriving on an HTTP/3 stream. Read only when polled: quinn returns flow
/// control credit as data is read, so a body nobody reads stops the client at the stream's
/// receive window. A `content-length` is enforced (h3 does not check it): a body that differs
/// fails, so a mismatch never reaches an HTTP/1.1 upstream as a shorter or longer message.
pub(crate) struct H3Body {
    rx: Recv,
    phase: Phase,
    /// Bytes the declared `content-length` still allows.
    left: Option<u64>,
}

impl std::fmt::Debug for H3Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Body").field("phase", &self.phase).field("left", &self.left).finish()
    }
}

/// Why a request body failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H3BodyError {
    /// The stream or the connection failed.
    #[error("HTTP/3 request body: {0}")]
    Stream(StreamError),
    /// More or fewer bytes than `content-length` said.
    #[error("HTTP/3 request body length differs from its content-length")]
    Length,
}

impl H3Body {
    /// The body of a request with `headers`, read from `rx`.
    pub(super) fn new(rx: Recv, headers: &HeaderMap) -> Self {
        let left = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        H3Body { rx, phase: Phase::Data, left }
    }

    fn fail(&mut self, e: H3BodyError) -> Poll<Option<Result<Frame<Bytes>, H3BodyError>>> {
        self.phase = Phase::Done;
        Poll::Ready(Some(Err(e)))
    }
}

impl HttpBody for H3Body {
    type Data = Bytes;
    type Error = H3BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H3BodyError>>> {
        let this = self.get_mut();
        loop {
            match this.phase {
                Phase::Data => match ready!(this.rx.poll_recv_data(cx)) {
                    Ok(Some(mut buf)) => {
                        // A `Bytes` inside: taking it whole copies nothing.
                        let chunk = buf.copy_to_bytes(buf.remaining());
                        if let Some(left) = this.left.as_mut() {
                            match left.checked_sub(chunk.len() as u64) {
                                Some(l) => *left = l,
                                None => return this.fail(H3BodyError::Length),
                            }
                        }
                        if !chunk.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(chunk))));
                        }
                    }
                    Ok(None) => {
                        if this.left.is_some_and(|l| l != 0) {
                            return this.fail(H3BodyError::Length);
                        }
                        // Trailers only once the data is over: h3 panics when asked before.
                        this.phase = Phase::Trailers;
                    }
                    Err(e) => return this.fail(H3BodyError::Stream(e)),
                },
                Phase::Trailers => {
                    let r = ready!(this.rx.poll_recv_trailers(cx));
                    this.phase = Phase::Done;
                    return Poll::Ready(match r {
                        Ok(Some(t)) => Some(Ok(Frame::trailers(t))),
                        Ok(None) => None,
                        Err(e) => Some(Err(H3BodyError::Stream(e))),
                    });
                }
                Phase::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.phase == Phase::Done
    }

    fn size_hint(&self) -> SizeHint {
        self.left.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// Write `res` out on `tx`: the head, each data frame as the body yields it (the next one is
/// asked for only once quinn took the last, so a slow client slows the upstream rather than
/// filling memory), then the trailers if any. A body that fails midway resets the stream, so
/// the client never takes a cut response for a whole one.
pub(super) async fn send_response(mut tx: Send, res: Response<Body>) -> Result<(), StreamError> {
    let (mut parts, mut body) = res.into_parts();
    // RFC 9114 §4.2: connection-specific fields make an HTTP/3 message malformed.
    strip_hop_by_hop(&mut parts.headers, None);
    tx.send_response(Response::from_parts(parts, ())).await?;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "response body failed; resetting the HTTP/3 stream");
                tx.stop_stream(Code::H3_INTERNAL_ERROR);
                return Ok(());
            }
        };
        match frame.into_data() {
            Ok(d) if d.is_empty() => {}
            Ok(d) => tx.send_data(d).await?,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    tx.send_trailers(t).await?;
                }
                break;
            }
        }
    }
    tx.finish().await
}
