//! One upstream exchange: the request rewritten for the upstream (forwarded headers,
//! hop-by-hop rules of the README's "Security model"), sent on a kept-alive connection to its
//! endpoint, its failure classified, and HTTP/1.1 upgrades tunnelled. HTTP/1 connections are
//! run by the request's own task ([`h1`]); HTTP/2 ones by hyper-util's pooled client.
//! Upstreams with `[upstream.tls]` connect through rustls ([`connect`]).

pub(crate) mod connect;
pub(crate) mod h1;
pub mod headers;
pub(crate) mod limits;

use std::cell::Cell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use self::connect::UpstreamConnector;
pub(crate) use self::h1::UpstreamBody;
use self::h1::{Failure, H1Pool};
use self::limits::{LimitedConnector, Limits};
use crate::body::Body;
use crate::config::{UpstreamConfig, UpstreamProtocol};
use crate::context::TunnelCtx;
use crate::error::{
    cause_ref, BadUpstreamResponse, BodyReadTimeout, BodyTooLarge, ClientBodyError, ConnectFailed, Error,
    Overloaded, Unsent, UpstreamReset,
};

/// How long an idle pooled upstream connection is kept. Shorter than the 60 s idle timeout
/// that most servers (and our own listeners) use, so that we close first and never send a
/// request on a connection the upstream is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

thread_local! {
    /// The serving thread this runs on: 0 for the main runtime's thread (and every thread that
    /// is not a serving thread), i for the i-th extra serving thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// How many connection pools each upstream keeps, one per serving thread: raised by
/// `Gateway::start_with` to its thread count before any upstream is built.
static POOL_SLOTS: AtomicUsize = AtomicUsize::new(1);

/// Mark this thread as serving thread `i` (0 is the main runtime's).
pub(crate) fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// The serving thread this runs on (0 outside the serving threads).
pub(crate) fn worker() -> usize {
    WORKER.with(Cell::get)
}

/// How many serving threads the gateway runs (what `reserve_pools` was told).
pub(crate) fn serving_threads() -> usize {
    POOL_SLOTS.load(Ordering::Relaxed)
}

/// Make upstreams built from now on keep at least `threads` pools.
pub(crate) fn reserve_pools(threads: usize) {
    POOL_SLOTS.fetch_max(threads.max(1), Ordering::Relaxed);
}

type Pool = Client<LimitedConnector<UpstreamConnector>, Body>;

/// The pooled client of one upstream: one pool per serving thread, each keyed by endpoint.
///
/// A pool per thread keeps each exchange on the thread that accepted the request, as NGINX's
/// per-worker keep-alive pools do: a connection another thread runs would wake that thread
/// twice per exchange. The limits (`[upstream.limits]`) stay shared. HTTP/1 upstreams use
/// [`H1Pool`]; HTTP/2 ones hyper-util's client, whose connections each run in a task of their
/// own (one connection carries many requests at once).
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    h1: Option<Arc<H1Pool>>,
    pools: Arc<[OnceLock<Pool>]>,
    builder: Arc<hyper_util::client::legacy::Builder>,
    connector: LimitedConnector<UpstreamConnector>,
    version: Version,
    tls: bool,
}

impl UpstreamClient {
    /// A client for `cfg`'s protocol, connect timeout and TLS settings, whose connections each
    /// hold a `max_connections` permit of `limits`. Fails when the TLS settings cannot be used
    /// (an unreadable `ca` file, an invalid `sni`).
    pub fn new(cfg: &UpstreamConfig, limits: Arc<Limits>) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        // TLS upstreams are addressed as https:// (for h2's :scheme); TLS itself is ours.
        http.enforce_http(false);
        let tls = match &cfg.tls {
            Some(t) => Some((
                crate::tls::client::config(t, cfg.protocol)
                    .map_err(|e| format!("upstream {:?}: {e}", cfg.name))?,
                t.sni.clone(),
            )),
            None => None,
        };
        let connector = UpstreamConnector::new(http, tls, cfg.connect_timeout)
            .map_err(|e| format!("upstream {:?}: {e}", cfg.name))?;
        let tls = connector.is_tls();
        // A request waiting for a connection waits at most as long as connecting may take.
        let connector = LimitedConnector::new(connector, limits, cfg.connect_timeout);
        let threads = POOL_SLOTS.load(Ordering::Relaxed);
        let mut b = Client::builder(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // We set Host ourselves: the client's, or host_rewrite.
            .set_host(false);
        let mut h1 = None;
        let version = match cfg.protocol {
            UpstreamProtocol::Http1 => {
                h1 = Some(Arc::new(H1Pool::new(connector.clone(), threads, POOL_IDLE_TIMEOUT)));
                Version::HTTP_11
            }
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => {
                b.http2_only(true);
                Version::HTTP_2
            }
        };
        let pools = (0..threads).map(|_| OnceLock::new()).collect();
        Ok(UpstreamClient { h1, pools, builder: Arc::new(b), connector, version, tls })
    }

    /// This thread's pool, made on first use.
    fn pool(&self) -> &Pool {
        let i = WORKER.with(Cell::get) % self.pools.len();
        self.pools[i].get_or_init(|| self.builder.build(self.connector.clone()))
    }

    /// Which pool this thread uses (its address), for tests.
    #[cfg(test)]
    pub(crate) fn pool_id(&self) -> usize {
        match &self.h1 {
            Some(h1) => h1.slot_id(WORKER.with(Cell::get)),
            None => self.pool() as *const Pool as usize,
        }
    }

    /// Whether a request that could not be sent because connecting failed comes back in
    /// its error ([`ConnectFailed::unsent`]): for HTTP/1 upstreams.
    pub(crate) fn gives_back_unsent(&self) -> bool {
        self.h1.is_some()
    }

    /// The HTTP version spoken to the upstream.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Send `req` (already addressed to `endpoint`) and classify any failure.
    pub async fn send(&self, endpoint: &str, req: Request<Body>) -> Result<Response<UpstreamBody>, Error> {
        self.start(&Arc::new(endpoint.to_owned()), req).await
    }

    /// Start sending `req` (already addressed to `endpoint`): over HTTP/1 it is handed to a
    /// kept-alive connection here, if this thread has one idle. The future is the response's
    /// head, or the failure classified.
    pub(crate) fn start(&self, endpoint: &Arc<String>, req: Request<Body>) -> Sending {
        match &self.h1 {
            Some(h1) => Sending::H1(h1.start(WORKER.with(Cell::get), endpoint, req)),
            None => Sending::Pooled { answer: self.pool().request(req), endpoint: Arc::clone(endpoint) },
        }
    }

    /// Point `req` at `authority` — `https://` when this upstream speaks TLS (for h2's
    /// `:scheme`; the TLS itself is the connector's), else `http://` — keeping its path and
    /// query, and set the version spoken upstream. An HTTP/1 request gets its origin form
    /// (`/path?query`): that is what HTTP/1 sends, and the connection is picked by endpoint.
    pub fn address(&self, req: &mut Request<Body>, authority: &http::uri::Authority) {
        *req.version_mut() = self.version;
        if self.h1.is_some() {
            if req.uri().scheme().is_some() || req.uri().authority().is_some() {
                *req.uri_mut() = h1::origin_form(req.uri());
            }
            return;
        }
        let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if self.tls { Scheme::HTTPS } else { Scheme::HTTP });
        parts.authority = Some(authority.clone());
        parts.path_and_query = Some(pq);
        // Scheme, authority and path are all present, so this cannot fail.
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// Turn a client failure (`connect`: while connecting) into the gateway's typed leaves.
/// An exchange under way ([`UpstreamClient::start`]).
pub(crate) enum Sending {
    H1(h1::Exchange),
    /// On hyper-util's client (HTTP/2).
    Pooled {
        answer: hyper_util::client::legacy::ResponseFuture,
        endpoint: Arc<String>,
    },
}

impl std::future::Future for Sending {
    type Output = Result<Response<UpstreamBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Sending::H1(x) => Pin::new(x).poll(cx),
            Sending::Pooled { answer, endpoint } => {
                Poll::Ready(match std::task::ready!(Pin::new(answer).poll(cx)) {
                    Ok(res) => Ok(res.map(UpstreamBody::plain)),
                    Err(e) => {
                        let connect = e.is_connect();
                        Err(classify(endpoint, e.into(), connect))
                    }
                })
            }
        }
    }
}

/// An HTTP/1 exchange's failure, classified; a request that connecting failed for is given
/// back in its `ConnectFailed`.
fn failed(endpoint: &str, f: Failure) -> Error {
    match f {
        Failure::Connect(e, req) => {
            let mut e = classify(endpoint, e, true);
            if let Some(c) = e.downcast_mut::<ConnectFailed>() {
                c.unsent = Unsent::new(*req);
            }
            e
        }
        Failure::Exchange(e) => classify(endpoint, e, false),
    }
}

fn classify(endpoint: &str, e: Error, connect: bool) -> Error {
    let endpoint = endpoint.to_owned();
    if let Some(o) = cause_ref::<Overloaded>(&*e) {
        return Overloaded { upstream: o.upstream.clone(), limit: o.limit }.into();
    }
    if let Some(b) = cause_ref::<BodyTooLarge>(&*e) {
        return BodyTooLarge { limit: b.limit }.into();
    }
    if let Some(t) = cause_ref::<BodyReadTimeout>(&*e) {
        return BodyReadTimeout(t.0).into();
    }
    if cause_ref::<ClientBodyError>(&*e).is_some() {
        return ClientBodyError { source: e }.into();
    }
    if connect {
        return ConnectFailed { endpoint, source: e, unsent: Unsent::default() }.into();
    }
    if let Some(h) = cause_ref::<hyper::Error>(&*e) {
        if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
            return BadUpstreamResponse { endpoint, source: e }.into();
        }
    }
    UpstreamReset { endpoint, source: e }.into()
}

/// A tunnel's idle timeout when it did not come through a listener (no [`TunnelCtx`]): the
/// default of `[limits] tunnel_idle_timeout`.
const DEFAULT_TUNNEL_IDLE: Duration = Duration::from_secs(15 * 60);

/// Tunnel an upgraded connection (WebSocket or another HTTP/1.1 upgrade) between the client
/// and the upstream until either side closes, no byte moves either way for the tunnel's idle
/// timeout, or the drain runs out of time. With `ctx`, the tunnel keeps the client
/// connection's slot and gauge until it closes, and drain waits for it.
pub(crate) fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    ctx: Option<Arc<TunnelCtx>>,
) {
    let idle = ctx.as_ref().map_or(DEFAULT_TUNNEL_IDLE, |c| c.idle_timeout);
    let stop = ctx.as_ref().map(|c| c.stop.clone()).unwrap_or_default();
    let tracker = ctx.as_ref().map(|c| c.tracker.clone());
    let run = async move {
        let (c, u) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let start = tokio::time::Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let mut c = Active { inner: TokioIo::new(c), start, last: Arc::clone(&last) };
        let mut u = Active { inner: TokioIo::new(u), start, last: Arc::clone(&last) };
        let copy = tokio::io::copy_bidirectional(&mut c, &mut u);
        tokio::pin!(copy);
        let mut deadline = start + idle;
        loop {
            tokio::select! {
                r = &mut copy => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "upgraded tunnel closed with an error");
                    }
                    break;
                }
                () = tokio::time::sleep_until(deadline) => {
                    let moved = start + Duration::from_millis(last.load(Ordering::Relaxed));
                    if moved + idle <= tokio::time::Instant::now() {
                        tracing::debug!(?idle, "upgraded tunnel idle; closing");
                        break;
                    }
                    deadline = moved + idle;
                }
                () = stop.cancelled() => {
                    tracing::debug!("drain timeout: closing an upgraded tunnel");
                    break;
                }
            }
        }
        // `ctx` (and the client connection's hold) goes with this task.
        drop(ctx);
    };
    match tracker {
        Some(t) => drop(t.spawn(run)),
        None => drop(tokio::spawn(run)),
    }
}

pin_project_lite::pin_project! {
    /// One side of a tunnel, noting when bytes last arrived (in ms after `start`).
    struct Active<T> {
        #[pin]
        inner: T,
        start: tokio::time::Instant,
        last: Arc<AtomicU64>,
    }
}

impl<T: tokio::io::AsyncRead> tokio::io::AsyncRead for Active<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.last.store(this.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite> tokio::io::AsyncWrite for Active<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
