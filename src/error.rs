//! The one boxed error type that crosses service boundaries, its typed leaves, and the reason
//! codes they map to (`crate::reply` turns a reason into a response).
//!
//! Leaves are small structs carrying data; callers find them with [`cause_ref`], never by
//! matching strings (the design of linkerd's `linkerd-error`).

use std::time::Duration;

use http::StatusCode;

/// The error type of every service in the stack.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Walks `err`'s source chain and returns the first cause of type `T`.
pub(crate) fn cause_ref<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// No route matched the request.
#[derive(Debug, thiserror::Error)]
#[error("no route matches the request")]
pub(crate) struct NoRoute;

/// The request was malformed in a way the HTTP parser let through.
#[derive(Debug, thiserror::Error)]
#[error("bad request: {0}")]
pub(crate) struct BadRequest(pub &'static str);

/// The client's request body broke off (the client closed or reset its connection mid-upload,
/// or sent malformed chunked framing): the client's doing, never the endpoint's.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body broke off")]
pub(crate) struct ClientBodyError {
    /// What hyper said.
    #[source]
    pub source: Error,
}

/// The client stopped sending its request body for `body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body bytes for {0:?}")]
pub(crate) struct BodyReadTimeout(pub Duration);

/// The upstream sent no response body bytes for its `read_timeout` after the head: the
/// client's stream is reset (its status line is already out).
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} mid-response")]
pub(crate) struct UpstreamReadTimeout(pub Duration);

/// The request body exceeded its limit.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than {limit} bytes")]
pub(crate) struct BodyTooLarge {
    /// The limit in bytes.
    pub limit: u64,
}

/// Connecting to the endpoint failed (refused, timed out, TLS failed).
#[derive(Debug, thiserror::Error)]
#[error("connecting to {endpoint} failed")]
pub(crate) struct ConnectFailed {
    /// The endpoint address.
    pub endpoint: String,
    /// What went wrong.
    #[source]
    pub source: Error,
    /// The request, untouched (its body unread), when the client that failed to connect
    /// gives it back (HTTP/1 upstreams): a retry sends it as it is, with no copy made first.
    pub unsent: Unsent,
}

/// A request a failed connect gives back (see [`ConnectFailed::unsent`]): taken once. Held as
/// `Any` so that errors need not know the body type.
#[derive(Default)]
pub(crate) struct Unsent(std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>);

impl Unsent {
    /// Hold `req` for whoever takes it.
    pub(crate) fn new<R: Send + 'static>(req: R) -> Self {
        Unsent(std::sync::Mutex::new(Some(Box::new(req))))
    }

    /// Change the request, if it is here and of type `R`.
    pub(crate) fn update<R: 'static>(&self, f: impl FnOnce(&mut R)) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = held.as_mut().and_then(|r| r.downcast_mut::<R>()) {
            f(r);
        }
    }

    /// The request, if it is here, of type `R`, and nobody took it yet.
    pub(crate) fn take<R: 'static>(&self) -> Option<R> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match held.take()?.downcast::<R>() {
            Ok(r) => Some(*r),
            Err(other) => {
                *held = Some(other);
                None
            }
        }
    }
}

impl std::fmt::Debug for Unsent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unsent")
    }
}

/// The upstream closed or reset the connection before a whole response head.
#[derive(Debug, thiserror::Error)]
#[error("{endpoint} closed the connection before a complete response")]
pub(crate) struct UpstreamReset {
    /// The endpoint address.
    pub endpoint: String,
    /// What went wrong.
    #[source]
    pub source: Error,
}

/// The upstream answered with something that is not valid HTTP.
#[derive(Debug, thiserror::Error)]
#[error("{endpoint} sent a malformed response")]
pub(crate) struct BadUpstreamResponse {
    /// The endpoint address.
    pub endpoint: String,
    /// What went wrong.
    #[source]
    pub source: Error,
}

/// A timeout fired.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {0:?}")]
pub(crate) struct Elapsed(pub Duration);

/// The upstream has no endpoint that may take traffic.
#[derive(Debug, thiserror::Error)]
#[error("upstream {upstream:?} has no healthy endpoint")]
pub(crate) struct NoHealthyUpstream {
    /// The upstream's name.
    pub upstream: String,
}

/// Over a route's rate limit.
#[derive(Debug, thiserror::Error)]
#[error("rate limited; retry after {retry_after:?}")]
pub(crate) struct RateLimited {
    /// When a token is expected.
    pub retry_after: Duration,
}

/// An `[upstream.limits]` threshold was reached.
#[derive(Debug, thiserror::Error)]
#[error("upstream {upstream:?} is over its {limit} limit")]
pub struct Overloaded {
    /// The upstream's name.
    pub upstream: String,
    /// The `[upstream.limits]` key that was hit.
    pub limit: &'static str,
}

/// The reason codes of the README's "Errors the gateway makes", as sent in `x-switchyard-error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// 400
    BadRequest,
    /// 401: the admin API without the right bearer token.
    Unauthorized,
    /// 404
    NoRoute,
    /// 405
    MethodNotAllowed,
    /// 408
    RequestTimeout,
    /// 413
    BodyTooLarge,
    /// 429
    RateLimited,
    /// 502
    ConnectFailed,
    /// 502
    UpstreamReset,
    /// 502
    BadUpstreamResponse,
    /// 503
    NoHealthyUpstream,
    /// 503
    Overloaded,
    /// 504
    Timeout,
}

impl Reason {
    /// The `x-switchyard-error` value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "bad_request",
            Reason::Unauthorized => "unauthorized",
            Reason::NoRoute => "no_route",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::RequestTimeout => "request_timeout",
            Reason::BodyTooLarge => "body_too_large",
            Reason::RateLimited => "rate_limited",
            Reason::ConnectFailed => "connect_failed",
            Reason::UpstreamReset => "upstream_reset",
            Reason::BadUpstreamResponse => "bad_upstream_response",
            Reason::NoHealthyUpstream => "no_healthy_upstream",
            Reason::Overloaded => "overloaded",
            Reason::Timeout => "timeout",
        }
    }

    /// The status code that goes with it.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Reason::BadRequest => StatusCode::BAD_REQUEST,
            Reason::Unauthorized => StatusCode::UNAUTHORIZED,
            Reason::NoRoute => StatusCode::NOT_FOUND,
            Reason::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Reason::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Reason::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Reason::ConnectFailed | Reason::UpstreamReset | Reason::BadUpstreamResponse => {
                StatusCode::BAD_GATEWAY
            }
            Reason::NoHealthyUpstream | Reason::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Reason::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Classify a failure. Anything unrecognised is reported as an upstream reset: the
    /// exchange broke in a way we did not foresee, and 502 is the honest status for that.
    pub(crate) fn of(err: &(dyn std::error::Error + 'static)) -> Reason {
        if cause_ref::<BodyTooLarge>(err).is_some() {
            Reason::BodyTooLarge
        } else if cause_ref::<BodyReadTimeout>(err).is_some() {
            Reason::RequestTimeout
        } else if cause_ref::<ClientBodyError>(err).is_some() {
            Reason::BadRequest
        } else if cause_ref::<RateLimited>(err).is_some() {
            Reason::RateLimited
        } else if cause_ref::<Overloaded>(err).is_some() {
            Reason::Overloaded
        } else if cause_ref::<Elapsed>(err).is_some() {
            Reason::Timeout
        } else if cause_ref::<ConnectFailed>(err).is_some() {
            Reason::ConnectFailed
        } else if cause_ref::<BadUpstreamResponse>(err).is_some() {
            Reason::BadUpstreamResponse
        } else if cause_ref::<NoHealthyUpstream>(err).is_some() {
            Reason::NoHealthyUpstream
        } else if cause_ref::<NoRoute>(err).is_some() {
            Reason::NoRoute
        } else if cause_ref::<BadRequest>(err).is_some() {
            Reason::BadRequest
        } else {
            Reason::UpstreamReset
        }
    }
}

/// The reason of a gateway-made response, carried in its extensions for the access log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ErrorReason(pub Reason);
