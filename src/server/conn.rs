//! Per-connection bookkeeping for the listener's timeouts.
//!
//! hyper's own HTTP/1 header-read timer also runs while a keep-alive connection sits idle, so
//! it would close idle connections after `header_read_timeout` instead of `idle_timeout`. We
//! keep both apart, as NGINX does (`client_header_timeout` vs `keepalive_timeout`):
//!
//! - a new connection must deliver its first request head within `header_read_timeout`;
//! - between requests, a connection with nothing in flight is closed after `idle_timeout`;
//! - once the first bytes of a next request arrive, its head must be complete within
//!   `header_read_timeout` (slowloris).
//!
//! - a write to the client that cannot complete for `send_timeout` (the client stopped reading)
//!   closes the connection (NGINX's `send_timeout`), whether a request is in flight or not;
//! - on HTTP/2 a client can stop reading without blocking the socket, by granting no
//!   flow-control window: hyper then stops asking the response body for data. So a response
//!   body that handed out data and was not asked again ("handed") while nothing was written to
//!   the connection for `send_timeout` closes it too.
//!
//! The IO wrapper notes when bytes arrive while idle and when a write starts and stops
//! waiting; the service notes when a request starts and ends; the connection task sleeps
//! until the next deadline and checks.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::Limits;

use crate::clock::millis as now_ms;

/// What the connection is doing, shared by its IO, its service and its task.
#[derive(Debug)]
pub struct ConnState {
    active: AtomicUsize,
    served: AtomicU64,
    idle_since: AtomicU64,
    partial_since: AtomicU64,
    /// When a write to the client started waiting (0: no write is waiting).
    write_blocked_since: AtomicU64,
    /// HTTP/2: response bodies that handed out data and have not been asked for more.
    handed: AtomicUsize,
    /// HTTP/2: when bytes were last written to the client, or a body started waiting.
    h2_progress: AtomicU64,
    /// When the connection task checks next (ms, as `now_ms`).
    next_check: AtomicU64,
    /// `send_timeout`, `idle_timeout` and `header_read_timeout` in ms, noted by each check.
    send_ms: AtomicU64,
    idle_ms: AtomicU64,
    header_ms: AtomicU64,
    /// Set (and `waker` woken) when something falls due before the task's next check.
    nudged: AtomicBool,
    waker: futures_util::task::AtomicWaker,
    http2: AtomicBool,
}

/// What the connection task should do at a deadline.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing yet; check again at this instant.
    WaitUntil(Instant),
    /// The client is too slow sending a request head: close at once.
    Abort,
    /// Idle too long: close gracefully.
    CloseIdle,
    /// The client has not taken a byte of the response for `send_timeout`: close at once.
    Stalled,
}

impl Verdict {
    /// Why the connection is closed at once (`Abort`, `Stalled`), for the debug log.
    pub fn why_now(&self) -> &'static str {
        match self {
            Verdict::Abort => "request head not received in time",
            Verdict::Stalled => "the client stopped reading for send_timeout",
            Verdict::WaitUntil(_) | Verdict::CloseIdle => "",
        }
    }
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState {
            active: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since: AtomicU64::new(now_ms()),
            partial_since: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            handed: AtomicUsize::new(0),
            h2_progress: AtomicU64::new(0),
            next_check: AtomicU64::new(0),
            send_ms: AtomicU64::new(0),
            idle_ms: AtomicU64::new(0),
            header_ms: AtomicU64::new(0),
            nudged: AtomicBool::new(false),
            waker: futures_util::task::AtomicWaker::new(),
            http2: AtomicBool::new(false),
        }
    }
}

impl ConnState {
    /// A request head was parsed and handed to the service.
    pub fn begin(self: &Arc<Self>, http2: bool) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.partial_since.store(0, Ordering::Relaxed);
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        RequestGuard(Arc::clone(self))
    }

    fn end(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        self.idle_since.store(now, Ordering::Relaxed);
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Idle from now: the idle deadline may be nearer than the task's next check.
            self.nudge(now + self.idle_ms.load(Ordering::Relaxed));
        }
    }

    fn on_read(&self) {
        if self.active.load(Ordering::Acquire) == 0 && self.partial_since.load(Ordering::Relaxed) == 0 {
            let now = now_ms();
            self.partial_since.store(now, Ordering::Relaxed);
            // The next head is due within header_read_timeout, perhaps before the idle deadline.
            self.nudge(now + self.header_ms.load(Ordering::Relaxed));
        }
    }

    /// Something falls due at `due` (ms): wake the connection task if it would otherwise sleep
    /// past it (it sleeps until the deadline it last computed). Nothing happens when the task
    /// will look in time anyway, which is the common case on a busy connection.
    fn nudge(&self, due: u64) {
        if due < self.next_check.load(Ordering::Relaxed) {
            self.nudged.store(true, Ordering::Release);
            self.waker.wake();
        }
    }

    /// Resolves when [`ConnState::nudge`] asks the connection task to check now; it can be
    /// polled again after that. Polled with the task's [`SideEvents`] waker, which a nudge
    /// wakes.
    pub(super) fn nudged(&self) -> Nudged<'_> {
        Nudged(self)
    }

    /// A response body (HTTP/2) handed out data (`true`), or was asked again or ended
    /// (`false`), after having handed out data.
    pub fn note_handed(&self, waiting: bool) {
        if waiting {
            if self.handed.fetch_add(1, Ordering::Relaxed) == 0 {
                // The stall clock starts now, not at the last write (which may be long ago).
                let now = now_ms();
                self.h2_progress.store(now, Ordering::Relaxed);
                self.stall_started(now);
            }
        } else {
            self.handed.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A write to the client returned `Pending` (`blocked`) or completed.
    /// `wrote`: bytes went out (a flush that had nothing to write is no progress: an HTTP/2
    /// connection flushes on every wake, stalled or not).
    fn note_write(&self, blocked: bool, wrote: bool) {
        if wrote && self.handed.load(Ordering::Relaxed) > 0 {
            self.h2_progress.store(now_ms(), Ordering::Relaxed);
        }
        let since = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked && since == 0 {
            let now = now_ms();
            self.write_blocked_since.store(now, Ordering::Relaxed);
            self.stall_started(now);
        } else if !blocked && since != 0 {
            self.write_blocked_since.store(0, Ordering::Relaxed);
        }
    }

    /// A stall that started at `now` must be looked at within `send_timeout`: wake the
    /// connection task if it would otherwise sleep past that (it sleeps until the next head or
    /// idle deadline, which can be a minute away). A stall reaching a nearer check costs nothing.
    fn stall_started(&self, now: u64) {
        self.nudge(now + self.send_ms.load(Ordering::Relaxed));
    }

    /// Decide, at `now`, what the connection should do under `limits`.
    pub fn check(&self, limits: &Limits) -> Verdict {
        let now = now_ms();
        let at = |ms: u64| crate::clock::start() + Duration::from_millis(ms.saturating_sub(1));
        let send_ms = limits.send_timeout.as_millis() as u64;
        let header_ms = limits.header_read_timeout.as_millis() as u64;
        let idle_ms = limits.idle_timeout.as_millis() as u64;
        self.send_ms.store(send_ms, Ordering::Relaxed);
        self.idle_ms.store(idle_ms, Ordering::Relaxed);
        self.header_ms.store(header_ms, Ordering::Relaxed);
        let wait = |ms: u64| {
            self.next_check.store(ms, Ordering::Relaxed);
            Verdict::WaitUntil(at(ms))
        };
        // A write waiting on the client bounds every state, in flight or idle.
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        let mut stall_at = if blocked != 0 { blocked + send_ms } else { u64::MAX };
        if self.handed.load(Ordering::Relaxed) > 0 {
            stall_at = stall_at.min(self.h2_progress.load(Ordering::Relaxed) + send_ms);
        }
        if now >= stall_at {
            return Verdict::Stalled;
        }
        if self.active.load(Ordering::Acquire) > 0 {
            // Look again within send_timeout, to catch a write that starts waiting meanwhile.
            return wait((now + send_ms).min(stall_at));
        }
        let idle_since = self.idle_since.load(Ordering::Relaxed);
        let partial = self.partial_since.load(Ordering::Relaxed);
        let first = self.served.load(Ordering::Relaxed) == 0;
        let h2 = self.http2.load(Ordering::Relaxed);
        let (deadline, abort) = if first {
            (idle_since + header_ms, true)
        } else if partial != 0 && !h2 {
            (partial + header_ms, true)
        } else {
            (idle_since + idle_ms, false)
        };
        if now >= deadline {
            if abort {
                Verdict::Abort
            } else {
                Verdict::CloseIdle
            }
        } else {
            wait(deadline.min(stall_at))
        }
    }
}

/// See [`ConnState::nudged`].
#[derive(Debug)]
pub(super) struct Nudged<'a>(&'a ConnState);

impl std::future::Future for Nudged<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let st = self.0;
        st.waker.register(cx.waker());
        // Read after registering, so a nudge in between is not lost.
        if st.nudged.load(Ordering::Acquire) {
            st.nudged.store(false, Ordering::Relaxed);
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The waker a connection task gives its side events (its timer, the drain, a nudge), which
/// notes that one of them fired before it wakes the task. Between those wakes the task polls
/// only its connection: polling every side event on each of the few wakes a request takes (a
/// timer, and a drain token whose check takes a lock all connections share) was a cost paid
/// per request for events that come once per connection at most.
#[derive(Debug)]
pub(super) struct SideEvents {
    fired: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl SideEvents {
    /// Fired to begin with, so that the first poll arms every side event.
    pub(super) fn new() -> Arc<Self> {
        Arc::new(SideEvents { fired: AtomicBool::new(true), task: Default::default() })
    }

    /// Note the task's current waker; then whether a side event fired since the last call
    /// (or [`Self::rearm`] asked for a look), clearing it.
    pub(super) fn take(&self, task: &std::task::Waker) -> bool {
        self.task.register(task);
        self.fired.swap(false, Ordering::AcqRel)
    }

    /// Poll the side events on the next wake (one was added or changed).
    pub(super) fn rearm(&self) {
        self.fired.store(true, Ordering::Release);
    }
}

impl std::task::Wake for SideEvents {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Marks a request in flight on its connection until dropped (with the response body).
#[derive(Debug)]
pub struct RequestGuard(pub(super) Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

pin_project_lite::pin_project! {
    /// The client stream, noting when bytes arrive.
    #[derive(Debug)]
    pub struct Watched<T> {
        #[pin]
        inner: T,
        state: Arc<ConnState>,
    }
}

impl<T> Watched<T> {
    /// Wrap `inner`.
    pub(crate) fn new(inner: T, state: Arc<ConnState>) -> Self {
        Watched { inner, state }
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.on_read();
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        this.state.note_write(r.is_pending(), matches!(r, Poll::Ready(Ok(n)) if n > 0));
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let r = this.inner.poll_flush(cx);
        this.state.note_write(r.is_pending(), false);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        this.state.note_write(r.is_pending(), matches!(r, Poll::Ready(Ok(n)) if n > 0));
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
