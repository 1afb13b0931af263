//! The per-route tower stack, built once per route at load time:
//!
//! ```text
//! ResponseHeaders → RequestRewrite → RateLimit → BodyLimit → Timeout → terminal
//! terminal = Retry(Forward(upstream)) | Split(weighted Retry(Forward)) | Respond | Redirect
//! ```
//!
//! Every per-request concern is its own Layer/Service; the listener's service looks the route up
//! and calls its stack. Failures travel up as [`crate::error::Error`] and become responses in
//! one place (`server::service`).

mod forward;
mod layers;
mod terminal;

use std::collections::HashMap;
use std::sync::Arc;

use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::Layer;

use crate::balance::Upstream;
use crate::body::Body;
use crate::config::{Action, Limits, PathMatch, RouteConfig};
use crate::error::Error;
use crate::metrics::{Metrics, Name};
use crate::proxy::limits::Limits as UpstreamLimits;
use crate::resilience::rate_limit::{RateLimitLayer, RateLimiter};
use crate::resilience::retry::{RetryGate, RetryLayer};

pub use forward::Forward;
pub use layers::{
    BodyLimit, BodyLimitLayer, RequestRewrite, RequestRewriteLayer, ResponseHeaders, ResponseHeadersLayer,
    Timeout, TimeoutLayer,
};
pub use terminal::{Redirect, Respond, Split};

/// A route's whole stack, boxed so that every route has the same type.
pub type RouteService = BoxCloneSyncService<Request<Body>, Response<Body>, Error>;

/// Build the stack for `route`. `upstreams` holds every upstream of the snapshot by name
/// (validation guarantees the names a route uses exist); `limiter` holds the route's rate-limit
/// buckets (the snapshot keeps them across reloads).
pub fn build(
    route: &RouteConfig,
    upstreams: &HashMap<String, Arc<Upstream>>,
    limiter: Option<Arc<RateLimiter>>,
    limits: &Limits,
    metrics: &Arc<Metrics>,
) -> RouteService {
    let route_name: Name = Arc::new(route.name.clone());
    // One retry budget per route, shared by the upstreams of a split.
    let budget = RetryLayer::budget_for(&route.retry);
    let forward = |name: &String| -> RouteService {
        let up = upstreams.get(name).map(Arc::clone).expect("validated: upstream exists");
        let gate: Arc<dyn RetryGate> = Arc::new(RetryLimit(Arc::clone(&up.limits)));
        let retry = RetryLayer::new(
            route.retry.clone(),
            Arc::clone(&budget),
            Arc::clone(&route_name),
            Arc::clone(metrics),
            Some(gate),
        );
        BoxCloneSyncService::new(retry.layer(Forward::new(up, Arc::clone(metrics), route.timeout)))
    };
    let terminal: RouteService = match &route.action {
        Action::Upstream(name) => forward(name),
        Action::Split(choices) => {
            BoxCloneSyncService::new(Split::new(choices.iter().map(|(n, w)| (forward(n), *w)).collect()))
        }
        Action::Respond { status, body, headers } => {
            BoxCloneSyncService::new(Respond::new(*status, body.clone(), headers.clone()))
        }
        Action::Redirect { to, status } => BoxCloneSyncService::new(Redirect::new(to.clone(), *status)),
    };

    let body_limit = route.max_request_body_bytes.unwrap_or(limits.max_request_body_bytes);
    let prefix = match &route.path {
        PathMatch::Prefix(p) if route.strip_prefix || route.rewrite_prefix.is_some() => Some(p.clone()),
        _ => None,
    };

    let svc = TimeoutLayer::new(route.timeout).layer(terminal);
    let svc = BodyLimitLayer::new(body_limit).layer(svc);
    let svc = RateLimitLayer::new(limiter, Arc::clone(&route_name), Arc::clone(metrics)).layer(svc);
    let svc = RequestRewriteLayer::new(
        prefix,
        route.rewrite_prefix.clone(),
        route.host_rewrite.clone(),
        route.request_headers.clone(),
    )
    .layer(svc);
    let svc = ResponseHeadersLayer::new(route.response_headers.clone()).layer(svc);
    BoxCloneSyncService::new(svc)
}

/// A retry takes a `max_retries` unit of the upstream's `[upstream.limits]`.
#[derive(Debug)]
struct RetryLimit(Arc<UpstreamLimits>);

impl RetryGate for RetryLimit {
    fn try_begin(&self) -> Option<Box<dyn Send>> {
        self.0.retry().ok().map(|s| Box::new(s) as Box<dyn Send>)
    }
}
