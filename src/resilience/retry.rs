//! `[route.retry]`: retries with a budget, full-jitter exponential backoff (`crate::backoff`) and
//! bounded body replay.
//!
//! - Conditions (`on`): `connect-failure` (the request never reached an upstream, so it is safe
//!   for every method), and — for idempotent methods only — `reset`, `5xx`, `gateway-error`
//!   (502/503/504), `status:NNN` and `timeout` (the `per_try_timeout` layer below fired).
//! - A request that never reached an upstream (`connect-failure`) is retried at once and outside
//!   the budget and `max_retries` (see the comment in `call`).
//! - The budget is tower's `TpsBudget` (Finagle/Linkerd's design): every request deposits, every
//!   retry withdraws (a `connect-failure` retry, outside the budget, does neither); retries may add at most `budget` × recent requests, with a floor of
//!   [`MIN_RETRIES_PER_SEC`] so that a quiet route can still retry.
//! - Backoff is "full jitter" (AWS architecture blog): sleep a uniform random time in
//!   `[0, min(cap, base × 2^n))`, `cap` = 10 × base.
//! - Retries go to an endpoint not yet tried whenever one exists: the attempts share the
//!   request's `RequestInfo` (in its extensions), whose tried list the forwarder reads and fills.
//! - When retries on a status run out, the upstream's last response is returned as it is.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Method, Request, Response};
use http_body::Body as _;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service, ServiceExt};

use super::replay::ReplayBody;
use crate::backoff::{Backoff, Jitter};
use crate::body::{self, Body};
use crate::config::{RetryOn, RetryPolicy};
use crate::context::RequestInfo;
use crate::error::{cause_ref, ConnectFailed, Elapsed, Error, UpstreamReset};
use crate::metrics::{Metrics, Name, RetryLabels};
use crate::proxy::headers::upgrade_requested;

/// The budget's floor (docs/configuration.md, `[route.retry] budget`): at least this many retries per second are always allowed.
pub(crate) const MIN_RETRIES_PER_SEC: u32 = 10;
/// How far back the budget looks (Linkerd's default window).
const BUDGET_TTL: Duration = Duration::from_secs(10);

/// Limits retries in flight across an upstream (`[upstream.limits] max_retries`).
pub(crate) trait RetryGate: Send + Sync + std::fmt::Debug {
    /// Take a retry slot, or say no.
    fn try_begin(&self) -> Option<Box<dyn Send>>;
}

/// `[route.retry]` for one upstream of a route. One `Arc`, so that the clone each request
/// makes of its route's stack counts one reference here, not five that every serving thread
/// writes.
#[derive(Clone, Debug)]
pub(crate) struct RetryLayer(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    /// Whether any retry can take from the budget: a policy that retries only on
    /// `connect-failure` (the default) never does, so its requests need not deposit (a deposit
    /// takes the budget's lock, which every serving thread takes).
    deposits: bool,
    /// Whether the policy retries only on `connect-failure` (the default) and the service
    /// below gives back a request it could not send ([`ConnectFailed::unsent`]): then a
    /// request is not copied for a retry that can only ever resend it untouched.
    resend_unsent: bool,
    policy: RetryPolicy,
    budget: Arc<TpsBudget>,
    route: Name,
    metrics: Arc<Metrics>,
    gate: Option<Arc<dyn RetryGate>>,
}

impl RetryLayer {
    /// A layer for `policy`; `budget` is shared by every upstream of the route. `gives_back`:
    /// whether the service below gives back a request it failed to connect for (an HTTP/1
    /// upstream's forwarder does).
    pub(crate) fn new(
        policy: RetryPolicy,
        budget: Arc<TpsBudget>,
        route: Name,
        metrics: Arc<Metrics>,
        gate: Option<Arc<dyn RetryGate>>,
        gives_back: bool,
    ) -> Self {
        let connect_only = policy.on.contains(&RetryOn::ConnectFailure)
            && policy.on.iter().all(|c| *c == RetryOn::ConnectFailure);
        let deposits = policy.attempts > 0 && !connect_only;
        let resend_unsent = policy.attempts > 0 && connect_only && gives_back;
        RetryLayer(Arc::new(Shared { deposits, resend_unsent, policy, budget, route, metrics, gate }))
    }

    /// The route's budget for `policy`.
    pub(crate) fn budget_for(policy: &RetryPolicy) -> Arc<TpsBudget> {
        Arc::new(TpsBudget::new(BUDGET_TTL, MIN_RETRIES_PER_SEC, policy.budget as f32))
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry { inner, layer: self.clone() }
    }
}

/// See [`RetryLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Retry<S> {
    inner: S,
    layer: RetryLayer,
}

impl<S> Retry<S> {
    /// The wrapped service.
    #[allow(dead_code, reason = "every middleware has tower\'s shape: new, get_ref, into_inner")]
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwrap.
    #[allow(dead_code, reason = "every middleware has tower\'s shape: new, get_ref, into_inner")]
    pub(crate) fn into_inner(self) -> S {
        self.inner
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// Which configured condition, if any, this outcome meets.
fn fired(on: &[RetryOn], out: &Result<Response<Body>, Error>) -> Option<RetryOn> {
    match out {
        Ok(res) => {
            let s = res.status().as_u16();
            on.iter().copied().find(|c| match c {
                RetryOn::Status5xx => (500..600).contains(&s),
                RetryOn::GatewayError => matches!(s, 502..=504),
                RetryOn::Status(n) => *n == s,
                _ => false,
            })
        }
        Err(e) => {
            let e = e.as_ref();
            let kind = if cause_ref::<ConnectFailed>(e).is_some() {
                RetryOn::ConnectFailure
            } else if cause_ref::<Elapsed>(e).is_some() {
                RetryOn::Timeout
            } else if cause_ref::<UpstreamReset>(e).is_some() {
                RetryOn::Reset
            } else {
                return None;
            };
            // A connect failure or reset is also a "gateway error" (it would have been a 502).
            on.iter().copied().find(|c| {
                *c == kind
                    || (*c == RetryOn::GatewayError
                        && matches!(kind, RetryOn::ConnectFailure | RetryOn::Reset))
            })
        }
    }
}

/// Full-jitter exponential backoff: uniform in `[0, min(10 × base, base × 2^n))`.
fn backoff(base: Duration, n: u32) -> Duration {
    Backoff::new(base, base.saturating_mul(10), Jitter::Full).delay(n)
}

impl<S> Service<Request<Body>> for Retry<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = RetryFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if self.layer.0.deposits {
            self.layer.0.budget.deposit();
        }
        // A policy with no retries needs no bookkeeping. An upgrade is retried only when it
        // never left (`resend_unsent`: the request given back keeps the client's side of the
        // upgrade); a copy of it could not tunnel (the client connection is handed over once).
        // (`per_try_timeout` is a layer below this one.)
        let upgrade = match req.extensions().get::<Arc<RequestInfo>>() {
            // From a listener: hop-by-hop headers are gone, the upgrade is noted here.
            Some(info) => info.upgrade.is_some(),
            None => upgrade_requested(req.headers()).is_some(),
        };
        if self.layer.0.policy.attempts == 0 || (upgrade && !self.layer.0.resend_unsent) {
            return RetryFuture::Once { attempt: self.inner.call(req) };
        }
        let layer = Arc::clone(&self.layer.0);
        let inner = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, inner);
        if layer.resend_unsent {
            return RetryFuture::Resend { resend: resend_unsent(layer, inner, req) };
        }
        let general = Box::pin(async move {
            let may_retry_all = idempotent(req.method());
            let (mut parts, body) = req.into_parts();
            // The first attempt takes the request's extensions as they are; later ones carry
            // only the request's shared facts (`RequestInfo`, which also holds the endpoints
            // already tried), so nothing is cloned per attempt but an `Arc`.
            let info = parts.extensions.get::<Arc<RequestInfo>>().cloned();
            let mut first_extensions = Some(std::mem::take(&mut parts.extensions));
            let empty = body.is_end_stream();
            let policy = &layer.policy;
            let replay = (!empty).then(|| ReplayBody::new(body, policy.max_replay_body_bytes));
            let mut attempt = 0u32;
            // Held while a retry is in flight (`max_retries`); replaced by the next one.
            let mut _retry_slot: Option<Box<dyn Send>> = None;
            loop {
                // Replayability is checked before every retry and nothing reads in between, so
                // a reader is always available here.
                let body = match &replay {
                    None => body::empty(),
                    Some(r) => match r.replay() {
                        Some(b) => body::boxed(b),
                        None => return Err(NotReplayable.into()),
                    },
                };
                let mut req = Request::new(body);
                *req.method_mut() = parts.method.clone();
                *req.uri_mut() = parts.uri.clone();
                *req.version_mut() = parts.version;
                *req.headers_mut() = parts.headers.clone();
                *req.extensions_mut() = match first_extensions.take() {
                    Some(e) => e,
                    None => {
                        let mut e = http::Extensions::new();
                        if let Some(i) = &info {
                            e.insert(Arc::clone(i));
                        }
                        e
                    }
                };
                let out = call_boxed(inner.ready().await?, req).await;
                let Some(cond) = fired(&policy.on, &out) else { return out };
                let allowed_for_method = may_retry_all || cond == RetryOn::ConnectFailure;
                let replayable = match &replay {
                    None => true,
                    Some(r) => r.replay().is_some(),
                };
                if attempt >= policy.attempts || !allowed_for_method || !replayable {
                    return out;
                }
                // A request that never reached an upstream (connect refused or timed out) is sent
                // elsewhere at once, outside the budget and `max_retries`: it adds no load to the
                // upstream that failed, and it is what NGINX's `proxy_next_upstream error` and
                // HAProxy's `redispatch` do. Those limits exist to stop retry storms against
                // upstreams that *did* get the request.
                let never_sent = matches!(&out, Err(e) if cause_ref::<ConnectFailed>(e.as_ref()).is_some());
                let slot = if never_sent {
                    None
                } else {
                    if !layer.budget.withdraw() {
                        tracing::debug!(route = %layer.route, "retry budget exhausted");
                        return out;
                    }
                    match &layer.gate {
                        Some(g) => match g.try_begin() {
                            Some(s) => Some(s),
                            None => return out,
                        },
                        None => None,
                    }
                };
                layer
                    .metrics
                    .retries
                    .get_or_create(&RetryLabels { route: Arc::clone(&layer.route), reason: cond.label() })
                    .inc();
                drop(out);
                let wait = if never_sent { Duration::ZERO } else { backoff(policy.backoff, attempt) };
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                attempt += 1;
                _retry_slot = slot;
            }
        });
        RetryFuture::General { general }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Retry`]. The two paths every request of a default route takes (no
    /// retries, or only resending a request that never left) are named rather than boxed, so
    /// they sit in the allocation of the request's future instead of one of their own.
    #[project = RetryFutureProj]
    pub(crate) enum RetryFuture<S: Service<Request<Body>>> {
        /// No retries: the one attempt.
        Once { #[pin] attempt: S::Future },
        /// See [`resend_unsent`].
        Resend { #[pin] resend: ResendUnsent<S> },
        /// Retries on conditions other than a request that never left.
        General { general: BoxFuture<'static, Result<Response<Body>, Error>> },
    }
}

impl<S> std::future::Future for RetryFuture<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Output = Result<Response<Body>, Error>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RetryFutureProj::Once { attempt } => attempt.poll(cx),
            RetryFutureProj::Resend { resend } => resend.poll(cx),
            RetryFutureProj::General { general } => general.as_mut().poll(cx),
        }
    }
}

/// A policy that retries only requests that never reached an upstream, over a service that
/// gives those back: each retry sends the request it got back, at once. As on the general path,
/// such a retry takes nothing from the budget or `max_retries`, waits for no backoff, is made
/// whatever the method, and is counted in `switchyard_retries_total`.
fn resend_unsent<S>(layer: Arc<Shared>, mut inner: S, req: Request<Body>) -> ResendUnsent<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    let attempt = inner.call(req);
    let left = layer.policy.attempts;
    // A future of its own rather than an `async` block, so that the attempt's future sits in
    // this one's allocation (an `async` block holding it needed it boxed once more).
    ResendUnsent { layer, inner, attempt, unsent: None, left }
}

pin_project_lite::pin_project! {
    /// See [`resend_unsent`].
    pub(crate) struct ResendUnsent<S: Service<Request<Body>>> {
        layer: Arc<Shared>,
        inner: S,
        #[pin]
        attempt: S::Future,
        // A request given back, waiting for `inner` to be ready. Boxed: it is almost never
        // there, and inline it took 240 of this future's bytes, written for every request.
        unsent: Option<Box<Request<Body>>>,
        // Retries left.
        left: u32,
    }
}

impl<S> std::future::Future for ResendUnsent<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Output = Result<Response<Body>, Error>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if this.unsent.is_some() {
                match this.inner.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let req = this.unsent.take().expect("looked at above");
                        this.attempt.set(this.inner.call(*req));
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let out = std::task::ready!(this.attempt.as_mut().poll(cx));
            let unsent = match &out {
                Err(e) if *this.left > 0 => {
                    cause_ref::<ConnectFailed>(e.as_ref()).and_then(|c| c.unsent.take::<Request<Body>>())
                }
                _ => None,
            };
            let Some(req) = unsent else { return Poll::Ready(out) };
            this.layer
                .metrics
                .retries
                .get_or_create(&RetryLabels {
                    route: Arc::clone(&this.layer.route),
                    reason: RetryOn::ConnectFailure.label(),
                })
                .inc();
            *this.left -= 1;
            *this.unsent = Some(Box::new(req));
        }
    }
}

/// Box the inner future outside the `async` block, where the `Send` bound is checked for the
/// concrete (`'static`) error type rather than for every lifetime.
fn call_boxed<S>(svc: &mut S, req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, Error>>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
    S::Future: Send + 'static,
{
    Box::pin(svc.call(req))
}

/// The request body could not be sent again (it outgrew `max_replay_body_bytes`).
#[derive(Debug, thiserror::Error)]
#[error("the request body cannot be replayed")]
struct NotReplayable;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::timeout::{Timeout, TimeoutLayer};

    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A service that answers `script[n]` to its n-th call (the last entry repeats), and
    /// records each request body it read.
    #[derive(Clone)]
    struct Scripted {
        calls: Arc<AtomicUsize>,
        bodies: Arc<Mutex<Vec<bytes::Bytes>>>,
        script: Arc<Vec<Outcome>>,
    }

    #[derive(Clone, Copy)]
    enum Outcome {
        Status(u16),
        Refused,
        /// Refused, with the request given back (as an HTTP/1 upstream's forwarder does).
        RefusedGivingBack,
        Hang,
    }

    impl Scripted {
        fn new(script: Vec<Outcome>) -> Self {
            Scripted { calls: Default::default(), bodies: Default::default(), script: Arc::new(script) }
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Service<Request<Body>> for Scripted {
        type Response = Response<Body>;
        type Error = Error;
        type Future = BoxFuture<'static, Result<Response<Body>, Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: Request<Body>) -> Self::Future {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let out = self.script[n.min(self.script.len() - 1)];
            let bodies = Arc::clone(&self.bodies);
            Box::pin(async move {
                match out {
                    Outcome::Refused => {
                        let unsent = Default::default();
                        return Err(
                            ConnectFailed { endpoint: "e".into(), source: "refused".into(), unsent }.into()
                        );
                    }
                    Outcome::RefusedGivingBack => {
                        let unsent = crate::error::Unsent::new(req);
                        return Err(
                            ConnectFailed { endpoint: "e".into(), source: "refused".into(), unsent }.into()
                        );
                    }
                    _ => {}
                }
                let b = req.into_body().collect().await?.to_bytes();
                bodies.lock().unwrap().push(b);
                match out {
                    Outcome::Status(s) => {
                        let mut r = Response::new(body::empty());
                        *r.status_mut() = http::StatusCode::from_u16(s).unwrap();
                        Ok(r)
                    }
                    _ => std::future::pending().await,
                }
            })
        }
    }

    fn policy(attempts: u32, on: Vec<RetryOn>) -> RetryPolicy {
        RetryPolicy {
            attempts,
            on,
            per_try_timeout: None,
            backoff: Duration::ZERO,
            budget: 1.0,
            max_replay_body_bytes: 16,
        }
    }

    /// The retry layer over `inner`, with `per_try_timeout` between them as `stack` builds it.
    fn retry(p: RetryPolicy, inner: Scripted) -> Retry<Timeout<Scripted>> {
        retry_with(p, inner, false, Arc::new(Metrics::new()))
    }

    fn retry_with(
        p: RetryPolicy,
        inner: Scripted,
        gives_back: bool,
        m: Arc<Metrics>,
    ) -> Retry<Timeout<Scripted>> {
        let budget = RetryLayer::budget_for(&p);
        let per_try = TimeoutLayer::new(p.per_try_timeout).layer(inner);
        RetryLayer::new(p, budget, Arc::new("r".into()), m, None, gives_back).layer(per_try)
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_given_back_by_a_failed_connect_is_sent_again_as_it_is() {
        let m = Arc::new(Metrics::new());
        let script = vec![Outcome::RefusedGivingBack, Outcome::RefusedGivingBack, Outcome::Status(200)];
        let inner = Scripted::new(script);
        let mut svc =
            retry_with(policy(2, vec![RetryOn::ConnectFailure]), inner.clone(), true, Arc::clone(&m));
        assert_eq!(svc.call(req(Method::POST, "hello")).await.unwrap().status(), 200);
        assert_eq!(inner.calls(), 3);
        assert_eq!(inner.bodies.lock().unwrap().as_slice(), ["hello"], "the body reached the upstream whole");
        let labels = RetryLabels { route: Arc::new("r".into()), reason: RetryOn::ConnectFailure.label() };
        assert_eq!(m.retries.get_or_create(&labels).get(), 2);

        // Attempts run out: the last connect failure is the answer.
        let inner = Scripted::new(vec![Outcome::RefusedGivingBack]);
        let mut svc = retry_with(
            policy(1, vec![RetryOn::ConnectFailure]),
            inner.clone(),
            true,
            Arc::new(Metrics::new()),
        );
        let err = svc.call(req(Method::GET, "")).await.unwrap_err();
        assert!(cause_ref::<ConnectFailed>(err.as_ref()).is_some());
        assert_eq!(inner.calls(), 2);

        // A failure that gives nothing back, or is not a connect failure, is the answer.
        for out in [Outcome::Refused, Outcome::Status(502)] {
            let inner = Scripted::new(vec![out, Outcome::Status(200)]);
            let p = policy(2, vec![RetryOn::ConnectFailure]);
            let mut svc = retry_with(p, inner.clone(), true, Arc::new(Metrics::new()));
            let _ = svc.call(req(Method::GET, "")).await;
            assert_eq!(inner.calls(), 1);
        }

        // With the general path (a service that gives nothing back), the same policy copies
        // the request first, and still retries.
        let inner = Scripted::new(vec![Outcome::Refused, Outcome::Status(200)]);
        let mut svc = retry(policy(1, vec![RetryOn::ConnectFailure]), inner.clone());
        assert_eq!(svc.call(req(Method::PUT, "x")).await.unwrap().status(), 200);
        assert_eq!(inner.calls(), 2);
    }

    fn req(method: Method, body: &'static str) -> Request<Body> {
        let mut r = Request::new(if body.is_empty() { body::empty() } else { body::full(body) });
        *r.method_mut() = method;
        r
    }

    #[tokio::test(start_paused = true)]
    async fn get_is_retried_on_5xx_up_to_attempts_and_the_last_answer_returned() {
        let inner = Scripted::new(vec![Outcome::Status(503)]);
        let mut svc = retry(policy(2, vec![RetryOn::Status5xx]), inner.clone());
        let res = svc.call(req(Method::GET, "")).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(inner.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn post_is_not_retried_on_5xx_but_is_on_connect_failure() {
        let inner = Scripted::new(vec![Outcome::Status(500)]);
        let mut svc = retry(policy(2, vec![RetryOn::Status5xx, RetryOn::ConnectFailure]), inner.clone());
        assert_eq!(svc.call(req(Method::POST, "hello")).await.unwrap().status(), 500);
        assert_eq!(inner.calls(), 1);

        let inner = Scripted::new(vec![Outcome::Refused, Outcome::Status(200)]);
        let mut svc = retry(policy(2, vec![RetryOn::Status5xx, RetryOn::ConnectFailure]), inner.clone());
        assert_eq!(svc.call(req(Method::POST, "hello")).await.unwrap().status(), 200);
        assert_eq!(inner.calls(), 2);
        assert_eq!(inner.bodies.lock().unwrap().as_slice(), ["hello"], "the body reached the upstream whole");
    }

    #[tokio::test(start_paused = true)]
    async fn replayed_bodies_are_whole_and_large_ones_are_not_replayed() {
        let inner = Scripted::new(vec![Outcome::Status(503), Outcome::Status(200)]);
        let mut svc = retry(policy(1, vec![RetryOn::Status5xx]), inner.clone());
        assert_eq!(svc.call(req(Method::PUT, "small body")).await.unwrap().status(), 200);
        assert_eq!(inner.bodies.lock().unwrap().as_slice(), ["small body", "small body"]);

        let inner = Scripted::new(vec![Outcome::Status(503), Outcome::Status(200)]);
        let mut svc = retry(policy(1, vec![RetryOn::Status5xx]), inner.clone());
        let res = svc.call(req(Method::PUT, "a body longer than sixteen bytes")).await.unwrap();
        assert_eq!(res.status(), 503, "not replayed: the upstream's answer is returned");
        assert_eq!(inner.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn per_try_timeout_moves_on_to_the_next_attempt() {
        let inner = Scripted::new(vec![Outcome::Hang, Outcome::Status(200)]);
        let mut p = policy(1, vec![RetryOn::Timeout]);
        p.per_try_timeout = Some(Duration::from_millis(50));
        let mut svc = retry(p, inner.clone());
        assert_eq!(svc.call(req(Method::GET, "")).await.unwrap().status(), 200);
        assert_eq!(inner.calls(), 2);

        // When the last try times out, the error is a timeout (504).
        let inner = Scripted::new(vec![Outcome::Hang]);
        let mut p = policy(1, vec![RetryOn::Timeout]);
        p.per_try_timeout = Some(Duration::from_millis(20));
        let mut svc = retry(p, inner.clone());
        let err = svc.call(req(Method::GET, "")).await.unwrap_err();
        assert!(cause_ref::<Elapsed>(err.as_ref()).is_some());
        assert_eq!(inner.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_retries_near_its_ratio() {
        let inner = Scripted::new(vec![Outcome::Status(503)]);
        let mut p = policy(3, vec![RetryOn::Status5xx]);
        p.budget = 0.1;
        let mut svc = retry(p, inner.clone());
        let n = 2_000;
        for _ in 0..n {
            let _ = svc.call(req(Method::GET, "")).await;
        }
        let retries = inner.calls() - n;
        // 10% of requests plus the floor's reserve (10/s over the 10 s window); without the
        // budget it would be 3 per request.
        let bound = n / 10 + (MIN_RETRIES_PER_SEC as usize) * 10;
        assert!(retries <= bound, "{retries} retries > {bound}");
        assert!(retries >= n / 10, "{retries} retries: the ratio itself must be usable");
    }

    #[test]
    fn conditions() {
        let ok = |s: u16| -> Result<Response<Body>, Error> {
            let mut r = Response::new(body::empty());
            *r.status_mut() = http::StatusCode::from_u16(s).unwrap();
            Ok(r)
        };
        assert_eq!(fired(&[RetryOn::Status5xx], &ok(500)), Some(RetryOn::Status5xx));
        assert_eq!(fired(&[RetryOn::Status5xx], &ok(404)), None);
        assert_eq!(fired(&[RetryOn::GatewayError], &ok(503)), Some(RetryOn::GatewayError));
        assert_eq!(fired(&[RetryOn::GatewayError], &ok(500)), None);
        assert_eq!(fired(&[RetryOn::Status(409)], &ok(409)), Some(RetryOn::Status(409)));
        let cf: Result<Response<Body>, Error> =
            Err(ConnectFailed { endpoint: "x".into(), source: "refused".into(), unsent: Default::default() }
                .into());
        assert_eq!(fired(&[RetryOn::ConnectFailure], &cf), Some(RetryOn::ConnectFailure));
        assert_eq!(fired(&[RetryOn::GatewayError], &cf), Some(RetryOn::GatewayError));
        assert_eq!(fired(&[RetryOn::Reset], &cf), None);
        let to: Result<Response<Body>, Error> = Err(Elapsed(Duration::from_secs(1)).into());
        assert_eq!(fired(&[RetryOn::Timeout], &to), Some(RetryOn::Timeout));
    }
}
