//! `[upstream.limits]`: Envoy's circuit-breaker thresholds, enforced across every route that
//! uses the upstream. Over a threshold the request fails at once with 503 `overloaded` and a
//! `retry-after`, instead of queueing: an upstream in trouble sheds load.
//!
//! - `max_requests`: requests in flight (from sending until the response body ends);
//! - `max_connections`: open connections; a request that needs a new connection while all are
//!   open waits for one (it is *pending*) …
//! - `max_pending_requests`: … and at most this many may wait; beyond, 503 at once;
//! - `max_retries`: retries in flight at once.
//!
//! Counters are plain atomics: checking a limit costs one `fetch_add` and, when over, one
//! `fetch_sub`. The connection limit is a semaphore whose permit travels with the connection and
//! is released when it closes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::UpstreamLimits;
use crate::error::Overloaded;
use crate::metrics::{Metrics, Name, OverloadLabels};

/// The live counters of one upstream's limits.
#[derive(Debug)]
pub struct Limits {
    cfg: UpstreamLimits,
    upstream: Name,
    metrics: Arc<Metrics>,
    requests: AtomicU32,
    retries: AtomicU32,
    pending: AtomicU32,
    connections: Arc<Semaphore>,
}

/// Holds one unit of a counter until dropped.
#[derive(Debug)]
pub struct Slot {
    counter: Arc<Limits>,
    which: Which,
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Request,
    Retry,
    Pending,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let c = match self.which {
            Which::Request => &self.counter.requests,
            Which::Retry => &self.counter.retries,
            Which::Pending => &self.counter.pending,
        };
        c.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limits {
    /// Counters for an upstream with these thresholds.
    pub fn new(cfg: UpstreamLimits, upstream: Name, metrics: Arc<Metrics>) -> Arc<Self> {
        let conns = cfg.max_connections.max(1) as usize;
        Arc::new(Limits {
            cfg,
            upstream,
            metrics,
            requests: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            connections: Arc::new(Semaphore::new(conns)),
        })
    }

    fn over(&self, limit: &'static str) -> Overloaded {
        self.metrics
            .upstream_overloaded
            .get_or_create(&OverloadLabels { upstream: Arc::clone(&self.upstream), limit })
            .inc();
        Overloaded { upstream: self.upstream.to_string(), limit }
    }

    fn take(self: &Arc<Self>, which: Which, max: u32, name: &'static str) -> Result<Slot, Overloaded> {
        let c = match which {
            Which::Request => &self.requests,
            Which::Retry => &self.retries,
            Which::Pending => &self.pending,
        };
        if c.fetch_add(1, Ordering::AcqRel) >= max {
            c.fetch_sub(1, Ordering::AcqRel);
            return Err(self.over(name));
        }
        Ok(Slot { counter: Arc::clone(self), which })
    }

    /// A request slot (`max_requests`).
    pub fn request(self: &Arc<Self>) -> Result<Slot, Overloaded> {
        self.take(Which::Request, self.cfg.max_requests, "max_requests")
    }

    /// A retry slot (`max_retries`).
    pub fn retry(self: &Arc<Self>) -> Result<Slot, Overloaded> {
        self.take(Which::Retry, self.cfg.max_retries, "max_retries")
    }

    /// A connection permit (`max_connections`), waiting as a pending request
    /// (`max_pending_requests`) when every connection is open, for at most `wait`.
    pub async fn connection(self: &Arc<Self>, wait: Duration) -> Result<OwnedSemaphorePermit, Overloaded> {
        if let Ok(p) = Arc::clone(&self.connections).try_acquire_owned() {
            return Ok(p);
        }
        let _pending = self.take(Which::Pending, self.cfg.max_pending_requests, "max_pending_requests")?;
        match tokio::time::timeout(wait, Arc::clone(&self.connections).acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(self.over("max_connections")),
        }
    }
}

// === impl LimitedConnector ===

/// Wraps a connector so that every connection holds a `max_connections` permit.
#[derive(Clone, Debug)]
pub(crate) struct LimitedConnector<C> {
    inner: C,
    limits: Arc<Limits>,
    wait: Duration,
}

impl<C> LimitedConnector<C> {
    /// `wait`: how long a pending request may wait for a connection (the connect timeout).
    pub(crate) fn new(inner: C, limits: Arc<Limits>, wait: Duration) -> Self {
        LimitedConnector { inner, limits, wait }
    }
}

impl<C> tower::Service<http::Uri> for LimitedConnector<C>
where
    C: tower::Service<http::Uri> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<crate::error::Error>,
{
    type Response = Permitted<C::Response>;
    type Error = crate::error::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let limits = Arc::clone(&self.limits);
        let wait = self.wait;
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let permit = limits.connection(wait).await?;
            let io = inner.call(uri).await.map_err(Into::into)?;
            Ok(Permitted { io, _permit: permit })
        })
    }
}

pin_project_lite::pin_project! {
    /// A connection holding its `max_connections` permit.
    #[derive(Debug)]
    pub struct Permitted<T> {
        #[pin]
        io: T,
        _permit: OwnedSemaphorePermit,
    }
}

impl<T: hyper::rt::Read> hyper::rt::Read for Permitted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write> hyper::rt::Write for Permitted<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
}

impl<T: hyper_util::client::legacy::connect::Connection> hyper_util::client::legacy::connect::Connection
    for Permitted<T>
{
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.io.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_requests: u32, max_connections: u32, max_pending: u32, max_retries: u32) -> Arc<Limits> {
        Limits::new(
            UpstreamLimits { max_connections, max_pending_requests: max_pending, max_requests, max_retries },
            Arc::new("u".into()),
            Arc::new(Metrics::new()),
        )
    }

    #[test]
    fn requests_over_the_limit_are_refused_until_one_ends() {
        let l = limits(2, 10, 10, 1);
        let a = l.request().unwrap();
        let _b = l.request().unwrap();
        let e = l.request().unwrap_err();
        assert_eq!(e.limit, "max_requests");
        drop(a);
        assert!(l.request().is_ok());
    }

    #[test]
    fn retries_are_gated() {
        let l = limits(10, 10, 10, 1);
        let s = l.retry().unwrap();
        assert_eq!(l.retry().unwrap_err().limit, "max_retries");
        drop(s);
        assert!(l.retry().is_ok());
        assert!(l
            .metrics
            .encode()
            .contains(r#"switchyard_upstream_overloaded_total{upstream="u",limit="max_retries"} 1"#));
    }

    #[tokio::test]
    async fn pending_requests_wait_for_a_connection_then_overflow() {
        let l = limits(10, 1, 1, 1);
        let first = l.connection(Duration::from_secs(5)).await.unwrap();
        // The second waits (pending) …
        let l2 = Arc::clone(&l);
        let waiter = tokio::spawn(async move { l2.connection(Duration::from_secs(5)).await.map(|_| ()) });
        while l.pending.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        // … and a third is refused at once: the pending queue is full.
        let e = l.connection(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.limit, "max_pending_requests");
        drop(first);
        waiter.await.unwrap().unwrap();
    }
}
