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

use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::balance::Upstream;
use crate::body::Body;
use crate::config::{Action, HeaderEdits, Limits, PathMatch, RouteConfig};
use crate::error::Error;
use crate::metrics::{Metrics, Name};
use crate::proxy::limits::Limits as UpstreamLimits;
use crate::resilience::rate_limit::{RateLimitLayer, RateLimiter};
use crate::resilience::retry::{RetryGate, RetryLayer};

use body_limit::BodyLimitLayer;
use forward::Forward;
pub use response_headers::ResponseHeaders;
use response_headers::ResponseHeadersLayer;
use rewrite::RequestRewriteLayer;
use terminal::{Redirect, Respond, Split};
pub(crate) use timeout::TimeoutLayer;

/// A route's whole stack, boxed so that every route has the same type.
pub(crate) type RouteService = BoxCloneSyncService<Request<Body>, Response<Body>, Error>;

/// Build the stack for `route`. `upstreams` holds every upstream of the snapshot by name
/// (validation guarantees the names a route uses exist); `limiter` holds the route's rate-limit
/// buckets (the snapshot keeps them across reloads).
pub(crate) fn build(
    route: &RouteConfig,
    upstreams: &HashMap<String, Arc<Upstream>>,
    limiter: Option<Arc<RateLimiter>>,
    limits: &Limits,
    metrics: &Arc<Metrics>,
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

    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(ResponseHeadersLayer::new(route.response_headers.clone()))
            .layer(rewrite)
            .layer(RateLimitLayer::new(limiter, Arc::clone(&route_name), Arc::clone(metrics)))
            .layer(BodyLimitLayer::new(body_limit))
            .layer(TimeoutLayer::new(route.timeout))
            .service(terminal(route, &route_name, upstreams, metrics)),
    )
}

/// What ends a route's stack: its action.
fn terminal(
    route: &RouteConfig,
    route_name: &Name,
    upstreams: &HashMap<String, Arc<Upstream>>,
    metrics: &Arc<Metrics>,
) -> RouteService {
    // One retry budget per route, shared by the upstreams of a split.
    let budget = RetryLayer::budget_for(&route.retry);
    let forward = |name: &String| -> RouteService {
        let up = upstreams.get(name).map(Arc::clone).expect("validated: upstream exists");
        let gate: Arc<dyn RetryGate> = Arc::new(RetryLimit(Arc::clone(&up.limits)));
        BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(RetryLayer::new(
                    route.retry.clone(),
                    Arc::clone(&budget),
                    Arc::clone(route_name),
                    Arc::clone(metrics),
                    Some(gate),
                ))
                .layer(TimeoutLayer::new(route.retry.per_try_timeout))
                .service(Forward::new(up, Arc::clone(metrics), route.timeout)),
        )
    };
    match &route.action {
        Action::Upstream(name) => forward(name),
        Action::Split(choices) => {
            BoxCloneSyncService::new(Split::new(choices.iter().map(|(n, w)| (forward(n), *w)).collect()))
        }
        Action::Respond { status, body, headers } => {
            BoxCloneSyncService::new(Respond::new(*status, body.clone(), headers.clone()))
        }
        Action::Redirect { to, status } => BoxCloneSyncService::new(Redirect::new(to.clone(), *status)),
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
