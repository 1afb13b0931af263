//! The per-request context: what the listener knows about a request ([`RequestInfo`], put in
//! its extensions once) and what the layers below record in it for metrics and the access log
//! (the endpoints tried, the upstream exchange). A leaf: every layer may read it, and it
//! imports nothing of theirs.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Name;
use crate::trace_context::TraceContext;

/// What the listener knows about a request, put in its extensions for every layer below.
#[derive(Debug)]
pub struct RequestInfo {
    /// The client's address.
    pub client: SocketAddr,
    /// The listener's name.
    pub listener: Name,
    /// Whether the client connection is TLS.
    pub https: bool,
    /// The host the client asked for (`Host`, or HTTP/2 `:authority`), before any rewrite.
    pub host: Option<HeaderValue>,
    /// The request id (the client's, if acceptable, else generated).
    pub request_id: HeaderValue,
    /// The W3C trace context: the `traceparent` the upstream gets (the client's when valid,
    /// else a new one) and its trace id.
    pub trace: TraceContext,
    /// Request body bytes read so far; `None` for a request without a body (most GETs), which
    /// then allocates no counter.
    pub bytes_in: Option<Arc<AtomicU64>>,
    /// The client IP as a header value, made once per connection (for `x-forwarded-for`).
    pub client_ip: HeaderValue,
    /// The upstream exchange of the latest attempt, set by the forwarder whether it succeeded
    /// or not, read for metrics and the access log.
    pub exchange: std::sync::Mutex<Option<UpstreamInfo>>,
    /// The endpoints (by `Arc<Endpoint>` address) the attempts so far went to.
    pub tried: std::sync::Mutex<Tried>,
    /// When the client asked for an HTTP/1.1 upgrade: what the forwarder needs to ask the
    /// upstream for it (hop-by-hop headers were removed on arrival) and to run the tunnel.
    /// (Boxed: it is rare, and this is written for every request.)
    pub upgrade: Option<Box<Upgrade>>,
}

/// An HTTP/1.1 upgrade the client asked for.
#[derive(Clone, Debug)]
pub struct Upgrade {
    /// The client's `Upgrade` value (`websocket`, ...).
    pub value: HeaderValue,
    /// The client connection's side of the tunnel (`None` outside a listener: benches, tests).
    pub tunnel: Option<Arc<TunnelCtx>>,
}

/// What a tunnel takes over from the client connection that asked for it.
#[derive(Clone)]
pub struct TunnelCtx {
    /// Held until the tunnel closes: the client connection's `max_connections` permit and its
    /// place in `switchyard_connections_active` (the connection is still open, as a tunnel).
    pub hold: Arc<dyn std::any::Any + Send + Sync>,
    /// `[limits] tunnel_idle_timeout`.
    pub idle_timeout: Duration,
    /// The listeners' task tracker: drain waits for tunnels as for connections.
    pub tracker: TaskTracker,
    /// Cancelled when `drain_timeout` runs out: open tunnels then close.
    pub stop: CancellationToken,
}

impl std::fmt::Debug for TunnelCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelCtx").field("idle_timeout", &self.idle_timeout).finish_non_exhaustive()
    }
}

/// The endpoints tried for one request, kept inline: a request makes a handful of attempts at
/// most, and this list must not allocate on the request path. Past its capacity the oldest
/// entries are overwritten (a retry may then revisit one of them).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tried {
    items: [usize; 8],
    len: usize,
}

impl Tried {
    /// The endpoints tried.
    pub fn as_slice(&self) -> &[usize] {
        &self.items[..self.len.min(self.items.len())]
    }

    /// Note an endpoint as tried.
    pub fn push(&mut self, ep: usize) {
        let cap = self.items.len();
        self.items[self.len % cap] = ep;
        self.len += 1;
    }

    /// How many attempts picked an endpoint.
    pub fn attempts(&self) -> usize {
        self.len
    }
}

impl RequestInfo {
    /// Record the latest attempt's exchange.
    pub fn set_exchange(&self, x: UpstreamInfo) {
        *self.exchange.lock().unwrap_or_else(|p| p.into_inner()) = Some(x);
    }

    /// Record the time to the response head of the latest attempt's exchange.
    pub fn set_upstream_ms(&self, ms: f64) {
        if let Some(x) = self.exchange.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            x.upstream_ms = ms;
        }
    }

    /// Note the endpoint an attempt goes to; returns the attempt number (1-based).
    pub fn note_tried(&self, ep: usize) -> u32 {
        let mut t = self.tried.lock().unwrap_or_else(|p| p.into_inner());
        t.push(ep);
        t.attempts() as u32
    }

    /// The endpoints tried so far.
    pub fn tried(&self) -> Tried {
        *self.tried.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest attempt's exchange, taken out: for its one reader, once the response is in
    /// (retries are over then).
    pub fn take_exchange(&self) -> Option<UpstreamInfo> {
        self.exchange.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Which upstream exchange produced a response (or the failure), for metrics and the access log.
#[derive(Clone, Debug)]
pub struct UpstreamInfo {
    /// Upstream name.
    pub upstream: Name,
    /// Endpoint address of the last attempt.
    pub endpoint: Option<Name>,
    /// Attempts made (1 + retries).
    pub attempts: u32,
    /// Time from sending the last attempt to its response head.
    pub upstream_ms: f64,
}
