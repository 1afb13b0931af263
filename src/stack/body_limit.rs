//! `max_request_body_bytes`: a declared `content-length` over the limit is refused before
//! anything is sent (413); a body that outgrows it while streaming fails the exchange.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{header, Request, Response};
use tower::{Layer, Service};

use crate::body::{self, Body, Metered};
use crate::context::RequestInfo;
use crate::error::{BodyTooLarge, Error};

/// Enforces the request body limit (route's, else `[limits]`'s; 0 = none) and counts request
/// body bytes for the access log. A declared `content-length` over the limit is refused before
/// anything is forwarded; an undeclared one fails the stream when it crosses the limit.
#[derive(Clone, Debug)]
pub(crate) struct BodyLimitLayer {
    limit: u64,
}

impl BodyLimitLayer {
    /// Limit in bytes; 0 = unlimited.
    pub(crate) fn new(limit: u64) -> Self {
        BodyLimitLayer { limit }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;
    fn layer(&self, inner: S) -> BodyLimit<S> {
        BodyLimit { inner, limit: self.limit }
    }
}

/// See [`BodyLimitLayer`].
#[derive(Clone, Debug)]
pub(crate) struct BodyLimit<S> {
    inner: S,
    limit: u64,
}

impl<S> BodyLimit<S> {
    inner_access!();
}

impl<S> Service<Request<Body>> for BodyLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Either<S::Future, std::future::Ready<Result<Response<Body>, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let limit = self.limit;
        if limit > 0 {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                return Either::Right(std::future::ready(Err(BodyTooLarge { limit }.into())));
            }
        }
        // A request without a body (most GETs) has nothing to count or limit.
        if http_body::Body::is_end_stream(req.body()) {
            return Either::Left(self.inner.call(req));
        }
        let count = req.extensions().get::<Arc<RequestInfo>>().and_then(|i| i.bytes_in.clone());
        let req = match count {
            Some(count) => req.map(|b| body::boxed(Metered::new(b, count, limit))),
            None if limit > 0 => req.map(|b| body::boxed(Metered::new(b, Default::default(), limit))),
            None => req,
        };
        Either::Left(self.inner.call(req))
    }
}
