//! The forwarding terminal: pick an endpoint of the upstream, rewrite the request for it, send
//! it on the upstream's pooled client, and record the outcome.
//!
//! Each attempt's outcome feeds the upstream's passive outlier detection
//! ([`Upstream::report`]) and its time to the response head feeds the endpoint's peak-EWMA
//! latency (`p2c_ewma`); hashing pickers get the request's `hash_on` key.
//!
//! One call is one attempt. Retries are the resilience layer's (`resilience::retry`), which
//! wraps this service; the attempts of a request share its `RequestInfo`, whose tried list the
//! pick avoids and this service adds to. Each attempt holds one
//! `max_requests` slot of the upstream (`[upstream.limits]`) until its response body ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Ready;

use futures_util::future::Either;
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;

use crate::balance::{Endpoint, Upstream, OUTCOMES};
use crate::body::{self, Body, ReadTimeout};
use crate::config::HashOn;
use crate::context::{RequestInfo, TunnelCtx, UpstreamInfo};
use crate::error::{
    cause_ref, BodyReadTimeout, BodyTooLarge, ClientBodyError, ConnectFailed, Elapsed, Error,
    NoHealthyUpstream, Overloaded, UpstreamReadTimeout, UpstreamReset,
};
use crate::metrics::{Metrics, UpstreamRequestLabels};
use crate::proxy::headers::{self, upgrade_requested};
use crate::proxy::limits::Slot;
use crate::proxy::{self, Sending, UpstreamBody};
use crate::resilience::outlier::{Breaker, HasBreaker, TrialGuard};
use crate::stack::timeout::Deadline;

/// Forwards to one upstream. One `Arc`, so that a request's clone of it counts one reference
/// that every serving thread writes, not two.
#[derive(Clone, Debug)]
pub(crate) struct Forward(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    /// Whether the upstream's `read_timeout` needs its own timer while waiting for a head:
    /// not when the route's `timeout` (which covers every attempt) fires no later anyway.
    head_timer: bool,
    /// Whether the headers the gateway sets go as `HeaderLines` (HTTP/1 upstreams), not into
    /// the map: not when the upstream hashes on one of them, which must then be in the map.
    lines: bool,
}

impl Forward {
    /// A forwarder to `upstream` for a route whose `timeout` is `route_timeout`.
    pub(crate) fn new(
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        route_timeout: Option<Duration>,
    ) -> Self {
        let head_timer = route_timeout.is_none_or(|t| t > upstream.config.read_timeout);
        let hashes_a_set_header =
            matches!(&upstream.config.hash_on, Some(HashOn::Header(n)) if headers::is_set_by_gateway(n));
        let lines = upstream.client.version() == Version::HTTP_11 && !hashes_a_set_header;
        Forward(Arc::new(Shared { upstream, metrics, head_timer, lines }))
    }
}

impl Shared {
    /// Count an attempt's outcome (index into [`OUTCOMES`]).
    fn record(&self, ep: &Endpoint, outcome: usize) {
        let counters = ep.state.outcomes.get_or_init(|| {
            OUTCOMES.map(|outcome| {
                self.metrics.upstream_requests.get_or_create_owned(&UpstreamRequestLabels {
                    upstream: Arc::clone(&self.upstream.name),
                    endpoint: Arc::clone(&ep.address),
                    outcome,
                })
            })
        });
        counters[outcome].inc();
    }
}

impl HasBreaker for Arc<Endpoint> {
    fn breaker(&self) -> &Breaker {
        &self.state.breaker
    }
}

/// Decrements an endpoint's in-flight count when dropped (with the response body, or with the
/// request future if it is abandoned).
#[derive(Debug)]
struct InFlight(Arc<Endpoint>);

impl InFlight {
    fn new(ep: Arc<Endpoint>) -> Self {
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(ep)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether a failed attempt says nothing about the endpoint: shed before it was reached, or
/// caused by the client (its body was over the limit, or stopped coming).
fn not_the_endpoints_fault(err: &Error) -> bool {
    let e = err.as_ref();
    cause_ref::<Overloaded>(e).is_some()
        || cause_ref::<BodyTooLarge>(e).is_some()
        || cause_ref::<BodyReadTimeout>(e).is_some()
        || cause_ref::<ClientBodyError>(e).is_some()
}

/// The [`OUTCOMES`] index of a failed attempt.
fn outcome_of(err: &Error) -> usize {
    if cause_ref::<ConnectFailed>(err.as_ref()).is_some() {
        2
    } else if cause_ref::<Elapsed>(err.as_ref()).is_some() {
        4
    } else {
        3
    }
}

impl tower::Service<Request<Body>> for Forward {
    type Response = Response<Body>;
    type Error = Error;
    type Future = Either<Ready<Result<Response<Body>, Error>>, Attempt>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match start(&self.0, req) {
            Ok(a) => Either::Right(a),
            Err(e) => Either::Left(std::future::ready(Err(e))),
        }
    }
}

/// Everything up to handing the request to the upstream's client, done in the call: there is
/// nothing to wait for until the answer (a pooled connection, or connecting, is the client's).
fn start(this: &Arc<Shared>, mut req: Request<Body>) -> Result<Attempt, Error> {
    let info = req.extensions().get::<Arc<RequestInfo>>().cloned();
    let tried = info.as_deref().map(RequestInfo::tried).unwrap_or_default();
    // A request from the listener is canonical: its hop-by-hop headers are gone, and an
    // upgrade it asked for is noted in its info. One from elsewhere is read as it is.
    let (upgrade, tunnel) = match info.as_ref().map(|i| &i.upgrade) {
        Some(Some(up)) => (Some(up.value.clone()), up.tunnel.clone()),
        Some(None) => (None, None),
        None => (upgrade_requested(req.headers()), None),
    };
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    match info.as_deref() {
        Some(i) if this.lines => {
            let lines = headers::prepare_request_lines(req.headers_mut(), i, upgrade);
            req.extensions_mut().insert(lines);
        }
        i => headers::prepare_request(req.headers_mut(), i, upgrade),
    }

    let set = this.upstream.endpoints();
    let key = this.upstream.request_key(req.headers(), req.uri(), info.as_deref().map(|i| i.client.ip()));
    let exchange = |endpoint: Option<&Arc<Endpoint>>, attempts: u32| {
        if let Some(info) = &info {
            info.set_exchange(UpstreamInfo {
                upstream: Arc::clone(&this.upstream.name),
                endpoint: endpoint.map(|e| Arc::clone(&e.address)),
                attempts,
                upstream_ms: 0.0,
            });
        }
    };
    let Some(ep) = this.upstream.pick_keyed(&set, key, tried.as_slice()) else {
        exchange(None, tried.attempts() as u32);
        return Err(NoHealthyUpstream { upstream: this.upstream.name.to_string() }.into());
    };
    let attempts = match &info {
        Some(i) => i.note_tried(Arc::as_ptr(&ep) as usize),
        None => 1,
    };
    exchange(Some(&ep), attempts);
    let slot = this.upstream.limits.request()?;
    this.upstream.client.address(&mut req, &ep.authority);

    let guard = InFlight::new(Arc::clone(&ep));
    let trial = TrialGuard::arm(&ep);
    let sent = crate::clock::nanos();
    // The upstream's silence before the head, measured from the last request body
    // progress (a slow upload is not the upstream's fault).
    let progress = info.as_ref().and_then(|i| i.bytes_in.clone());
    let head_timeout = this.head_timer.then_some(this.upstream.config.read_timeout);
    let send = this.upstream.client.start(&ep.address, req);
    Ok(Attempt {
        send: Some(Deadline::new(send, head_timeout).resetting_on(progress)),
        then: Some(Then {
            this: Arc::clone(this),
            info,
            client_upgrade,
            tunnel,
            guard: (guard, slot),
            trial,
            sent,
        }),
    })
}

pin_project_lite::pin_project! {
    /// One attempt sent: its answer's head, then what it says of the endpoint.
    pub(crate) struct Attempt {
        // Dropped (in place) as soon as it has answered: a head that never came closes its
        // connection before the attempt's outcome is recorded and its slot given back.
        #[pin]
        send: Option<Deadline<Sending>>,
        then: Option<Then>,
    }
}

/// What an attempt does with its answer. Fields drop in order: a dropped attempt hands a
/// half-open endpoint's trial back before its in-flight count and slot go.
struct Then {
    this: Arc<Shared>,
    info: Option<Arc<RequestInfo>>,
    /// The client's side of the upgrade it asked for.
    client_upgrade: Option<OnUpgrade>,
    tunnel: Option<Arc<TunnelCtx>>,
    trial: TrialGuard<Arc<Endpoint>>,
    /// The endpoint's in-flight count and the upstream's `max_requests` slot, held until the
    /// response body is dropped.
    guard: (InFlight, Slot),
    /// [`crate::clock::nanos`] when the request went.
    sent: u64,
}

impl std::future::Future for Attempt {
    type Output = Result<Response<Body>, Error>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let send = this.send.as_mut().as_pin_mut().expect("an attempt polled after it ended");
        let out = std::task::ready!(send.poll(cx));
        this.send.set(None);
        let then = this.then.take().expect("an attempt polled after it ended");
        Poll::Ready(then.answer(out))
    }
}

impl Then {
    fn answer(self, out: Result<Response<UpstreamBody>, Error>) -> Result<Response<Body>, Error> {
        let Then { this, info, client_upgrade, tunnel, guard, trial, sent } = self;
        let ep = &guard.0 .0;
        match out {
            Ok(mut res) => {
                let rtt = crate::clock::since(sent);
                let upstream_ms = rtt.as_secs_f64() * 1e3;
                ep.state.observe_rtt(rtt);
                let ok = !res.status().is_server_error();
                this.record(ep, if ok { 0 } else { 1 });
                trial.disarm();
                this.upstream.report(ep, ok);
                if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                    match client_upgrade {
                        Some(cu) => proxy::tunnel(cu, hyper::upgrade::on(&mut res), tunnel),
                        None => {
                            // A 101 we did not ask for cannot be relayed.
                            return Err(UpstreamReset {
                                endpoint: ep.address.to_string(),
                                source: "unexpected 101 from upstream".into(),
                            }
                            .into());
                        }
                    }
                } else {
                    headers::strip_hop_by_hop(res.headers_mut(), None);
                }
                // The exchange was recorded before sending (the upstream and endpoint
                // the access log names, should the attempt fail); now it has its time.
                if let Some(info) = &info {
                    info.set_upstream_ms(upstream_ms);
                }
                // After the head, a stalled upstream resets the client's stream.
                let read_timeout = this.upstream.config.read_timeout;
                Ok(res.map(|b| {
                    let b = ReadTimeout::new(b, read_timeout, |d| UpstreamReadTimeout(d).into());
                    body::boxed(Guarded { inner: b, upstream: Arc::clone(&this.upstream), guard })
                }))
            }
            Err(e) if not_the_endpoints_fault(&e) => {
                // Shed before reaching the endpoint (`max_pending_requests`), or the client's
                // own doing (a body over its limit or stalled): not the endpoint's failure,
                // so neither an outcome nor an outlier signal.
                drop(guard);
                drop(trial);
                Err(e)
            }
            Err(e) => {
                let ep = Arc::clone(ep);
                drop(guard);
                // A request given back unsent takes the client's side of its upgrade
                // along, so that a retry elsewhere can still tunnel.
                if let (Some(cu), Some(c)) = (client_upgrade, cause_ref::<ConnectFailed>(e.as_ref())) {
                    c.unsent.update(|r: &mut Request<Body>| {
                        r.extensions_mut().insert(cu);
                    });
                }
                this.record(&ep, outcome_of(&e));
                trial.disarm();
                this.upstream.report(&ep, false);
                Err(e)
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The upstream's response body: holds the attempt's in-flight count and `max_requests`
    /// slot until it is dropped, and turns a body the upstream cuts short (closed, reset,
    /// silent past `read_timeout`) into a `reset` outcome and an outlier failure for the
    /// endpoint: the head was counted `ok`, the exchange was not.
    struct Guarded<B> {
        #[pin]
        inner: B,
        upstream: Arc<Upstream>,
        guard: (InFlight, Slot),
    }
}

impl<B: http_body::Body> http_body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &r {
            let ep = &this.guard.0 .0;
            if let Some(counters) = ep.state.outcomes.get() {
                counters[3].inc();
            }
            this.upstream.report(ep, false);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
