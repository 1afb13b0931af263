//! The per-route tower stack, built once per route at load time. [`build`] lists its layers in
//! the order a request meets them; each lives in its own module:
//!
//! ```text
//!  request ─▶ ResponseHeaders    response_headers.rs   edit the response on its way back
//!             RequestRewrite     rewrite.rs            strip/rewrite prefix, host, headers
//!             RateLimit          resilience/rate_limit.rs   429 over the route's rate
//!             BodyLimit          body_limit.rs         413 over max_request_body_bytes
//!             Timeout            timeout.rs            the route `timeout` (all attempts)
//!             terminal, one of:
//!               Retry            resilience/retry.rs   budgets, backoff, body replay
//!                 Timeout        timeout.rs            `per_try_timeout` (one attempt)
//!                   Forward      forward.rs            pick, limits, send, outcome, breaker
//!               Split            terminal.rs           weighted choice among Retry→Forward
//!               Respond, Redirect terminal.rs          answered by the gateway
//! ```
//!
//! The listener's service (`server::service`) looks the route up and calls its stack. Failures
//! travel up as [`crate::error::Error`] and become responses in one place (`crate::reply`).

macro_rules! inner_access {
    () => {
        #[allow(dead_code, reason = "every middleware has tower's shape: new, get_ref, into_inner")]
        /// The wrapped service.
        pub(crate) fn get_ref(&self) -> &S {
            &self.inner
        }

        /// Unwrap.
        #[allow(dead_code, reason = "every middleware has tower's shape: new, get_ref, into_inner")]
        pub(crate) fn into_inner(self) -> S {
            self.inner
        }
    };
}

mod body_limit;
mod forward;
mod response_headers;
mod rewrite;
mod terminal;
pub(crate) mod timeout;

use std::collections::HashMap;
use std::sync::Arc;

use tower::retry::budget::TpsBudget;
use tower::ServiceBuilder;

use crate::balance::Upstream;
use crate::config::{Action, HeaderEdits, Limits, PathMatch, RouteConfig};
use crate::metrics::{Metrics, Name};
use crate::proxy::limits::Limits as UpstreamLimits;
use crate::resilience::rate_limit::{RateLimitLayer, RateLimitService, RateLimiter};
use crate::resilience::retry::{Retry, RetryGate, RetryLayer};

use body_limit::{BodyLimit, BodyLimitLayer};
use forward::Forward;
pub use response_headers::ResponseHeaders;
use response_headers::ResponseHeadersLayer;
use rewrite::{RequestRewrite, RequestRewriteLayer};
use terminal::{Redirect, Respond, Split, Terminal};
pub(crate) use timeout::{Timeout, TimeoutLayer};

/// A route's whole stack. Every route has the same layers (a layer a route does not use
/// passes the request on), so the type is named rather than boxed: a request's futures nest
/// in one allocation instead of one per boxed level, and its copy of the stack is not one.
pub(crate) type RouteService =
    ResponseHeaders<RequestRewrite<RateLimitService<BodyLimit<Timeout<Terminal>>>>>;

/// One upstream's part of a route's stack: retries, the per-try timeout, the forwarder.
pub(crate) type ForwardStack = Retry<Timeout<Forward>>;

/// Build `route`'s stack, one copy per serving thread (`threads`): a request clones its
/// thread's copy, so the reference counts that clone writes are written by one thread only.
/// What the copies share is shared: the upstreams, the retry budget, the rate-limit buckets.
pub(crate) fn build_per_thread(
    route: &RouteConfig,
    upstreams: &HashMap<String, Arc<Upstream>>,
    limiter: Option<Arc<RateLimiter>>,
    limits: &Limits,
    metrics: &Arc<Metrics>,
    threads: usize,
) -> Box<[RouteService]> {
    // One retry budget per route, shared by the upstreams of a split and by the threads.
    let budget = RetryLayer::budget_for(&route.retry);
    (0..threads.max(1)).map(|_| build(route, upstreams, limiter.clone(), limits, metrics, &budget)).collect()
}

/// Build the stack for `route`. `upstreams` holds every upstream of the snapshot by name
/// (validation guarantees the names a route uses exist); `limiter` holds the route's rate-limit
/// buckets (the snapshot keeps them across reloads); `budget` is the route's retry budget.
fn build(
    route: &RouteConfig,
    upstreams: &HashMap<String, Arc<Upstream>>,
    limiter: Option<Arc<RateLimiter>>,
    limits: &Limits,
    metrics: &Arc<Metrics>,
    budget: &Arc<TpsBudget>,
) -> RouteService {
    let route_name: Name = Arc::new(route.name.clone());
    let prefix = match &route.path {
        PathMatch::Prefix(p) if route.strip_prefix || route.rewrite_prefix.is_some() => Some(p.clone()),
        _ => None,
    };
    let rewrite = RequestRewriteLayer::new(
        prefix,
        route.rewrite_prefix.clone(),
        route.host_rewrite.clone(),
        route.request_headers.clone(),
    );
    let body_limit = route.max_request_body_bytes.unwrap_or(limits.max_request_body_bytes);

    ServiceBuilder::new()
        .layer(ResponseHeadersLayer::new(route.response_headers.clone()))
        .layer(rewrite)
        .layer(RateLimitLayer::new(limiter, Arc::clone(&route_name), Arc::clone(metrics)))
        .layer(BodyLimitLayer::new(body_limit))
        .layer(TimeoutLayer::new(route.timeout))
        .service(terminal(route, &route_name, upstreams, metrics, budget))
}

/// What ends a route's stack: its action.
fn terminal(
    route: &RouteConfig,
    route_name: &Name,
    upstreams: &HashMap<String, Arc<Upstream>>,
    metrics: &Arc<Metrics>,
    budget: &Arc<TpsBudget>,
) -> Terminal {
    let forward = |name: &String| -> ForwardStack {
        let up = upstreams.get(name).map(Arc::clone).expect("validated: upstream exists");
        let gate: Arc<dyn RetryGate> = Arc::new(RetryLimit(Arc::clone(&up.limits)));
        ServiceBuilder::new()
            .layer(RetryLayer::new(
                route.retry.clone(),
                Arc::clone(budget),
                Arc::clone(route_name),
                Arc::clone(metrics),
                Some(gate),
                up.client.gives_back_unsent(),
            ))
            .layer(TimeoutLayer::new(route.retry.per_try_timeout))
            .service(Forward::new(up, Arc::clone(metrics), route.timeout))
    };
    match &route.action {
        Action::Upstream(name) => Terminal::Forward(forward(name)),
        Action::Split(choices) => {
            Terminal::Split(Split::new(choices.iter().map(|(n, w)| (forward(n), *w)).collect()))
        }
        Action::Respond { status, body, headers } => {
            Terminal::Respond(Respond::new(*status, body.clone(), headers.clone()))
        }
        Action::Redirect { to, status } => Terminal::Redirect(Redirect::new(to.clone(), *status)),
    }
}

/// A retry takes a `max_retries` unit of the upstream's `[upstream.limits]`.
#[derive(Debug)]
struct RetryLimit(Arc<UpstreamLimits>);

impl RetryGate for RetryLimit {
    fn try_begin(&self) -> Option<Box<dyn Send>> {
        self.0.retry().ok().map(|s| Box::new(s) as Box<dyn Send>)
    }
}

/// Apply `edits` to `headers`: removals first, then sets.
fn apply_edits(headers: &mut http::HeaderMap, edits: &HeaderEdits) {
    for name in &edits.remove {
        headers.remove(name);
    }
    for (name, value) in &edits.set {
        headers.insert(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_routes_from_sources;
    use crate::snapshot::Snapshot;
    use http::{Request, Response};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    /// An upstream that answers 503 to everything, counting requests.
    async fn failing() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let h = Arc::clone(&h);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let mut res = Response::new(crate::body::empty());
                        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                        async move { Ok::<_, std::convert::Infallible>(res) }
                    });
                    let io = hyper_util::rt::TokioIo::new(s);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        (addr, hits)
    }

    #[tokio::test]
    async fn the_copies_of_a_route_for_each_thread_share_one_retry_budget() {
        let (addr, hits) = failing().await;
        let routes = format!(
            "[[upstream]]\nname = \"u\"\nendpoints = [\"{addr}\"]\n[[route]]\nname = \"r\"\nupstream = \"u\"\n\
             [route.retry]\nattempts = 1\non = [\"5xx\"]\nbackoff = \"1ms\"\nbudget = 0.0\n"
        );
        let set = load_routes_from_sources(vec![("t.toml".into(), routes)]).unwrap();
        let metrics = Arc::new(Metrics::default());
        let registry = crate::discovery::Registry::new(Arc::clone(&metrics));
        let snap = Snapshot::build(set, None, 1, &Limits::default(), &metrics, &registry).unwrap();
        let route = &snap.routes[0].config;
        let by_name = snap.upstreams.iter().map(|u| (u.name.to_string(), Arc::clone(u))).collect();
        let copies = build_per_thread(route, &by_name, None, &Limits::default(), &metrics, 2);
        assert_eq!(copies.len(), 2);
        let get = || Request::get(format!("http://{addr}/")).body(crate::body::empty()).unwrap();
        // With no deposits (budget 0), the floor allows MIN_RETRIES_PER_SEC for each of the
        // budget's 10 seconds: the first copy spends all of it.
        let floor = crate::resilience::retry::MIN_RETRIES_PER_SEC as usize * 10;
        for _ in 0..floor {
            let res = copies[0].clone().oneshot(get()).await.unwrap();
            assert_eq!(res.status(), 503);
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2 * floor, "every request was retried once");
        // The other thread's copy finds the budget spent: no retry.
        let res = copies[1].clone().oneshot(get()).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(hits.load(Ordering::SeqCst), 2 * floor + 1, "the budget is the route's, not the copy's");
    }
}
