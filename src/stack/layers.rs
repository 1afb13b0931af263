//! The thin per-route layers: response header edits, request rewriting (prefix, host, header
//! edits), the request body limit and the route timeout. Each is a Layer holding only config and
//! a Service with `new`, `get_ref`, `into_inner` (tower's shape).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{Either, MapOk};
use futures_util::TryFutureExt;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use tokio::time::Sleep;
use tower::{Layer, Service};

use crate::body::{self, Body, Metered};
use crate::config::HeaderEdits;
use crate::context::RequestInfo;
use crate::error::{BodyTooLarge, Elapsed, Error};

fn apply_edits(headers: &mut http::HeaderMap, edits: &HeaderEdits) {
    for name in &edits.remove {
        headers.remove(name);
    }
    for (name, value) in &edits.set {
        headers.insert(name.clone(), value.clone());
    }
}

macro_rules! inner_access {
    () => {
        /// The wrapped service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// Unwrap.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

// === impl ResponseHeaders ===

/// Applies `response_headers` edits.
#[derive(Clone, Debug)]
pub struct ResponseHeadersLayer {
    edits: Option<Arc<HeaderEdits>>,
}

impl ResponseHeadersLayer {
    /// Layer for these edits (none = pass-through).
    pub fn new(edits: HeaderEdits) -> Self {
        ResponseHeadersLayer { edits: (!edits.is_empty()).then(|| Arc::new(edits)) }
    }
}

impl<S> Layer<S> for ResponseHeadersLayer {
    type Service = ResponseHeaders<S>;
    fn layer(&self, inner: S) -> ResponseHeaders<S> {
        ResponseHeaders { inner, edits: self.edits.clone() }
    }
}

/// See [`ResponseHeadersLayer`].
#[derive(Clone, Debug)]
pub struct ResponseHeaders<S> {
    inner: S,
    edits: Option<Arc<HeaderEdits>>,
}

impl<S> ResponseHeaders<S> {
    /// Wrap `inner`.
    pub fn new(inner: S, edits: HeaderEdits) -> Self {
        ResponseHeadersLayer::new(edits).layer(inner)
    }
    inner_access!();
}

type EditFn = Box<dyn FnOnce(Response<Body>) -> Response<Body> + Send>;

impl<S> Service<Request<Body>> for ResponseHeaders<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Either<S::Future, MapOk<S::Future, EditFn>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match &self.edits {
            None => Either::Left(self.inner.call(req)),
            Some(edits) => {
                let edits = Arc::clone(edits);
                let f: EditFn = Box::new(move |mut res| {
                    apply_edits(res.headers_mut(), &edits);
                    res
                });
                Either::Right(self.inner.call(req).map_ok(f))
            }
        }
    }
}

// === impl RequestRewrite ===

/// Strips / rewrites the matched path prefix, rewrites Host, applies `request_headers`.
#[derive(Clone, Debug)]
pub struct RequestRewriteLayer {
    rewrite: Option<Arc<Rewrite>>,
}

#[derive(Debug)]
struct Rewrite {
    strip: Option<String>,
    replace_with: Option<String>,
    host: Option<HeaderValue>,
    edits: HeaderEdits,
}

impl RequestRewriteLayer {
    /// `strip`: the matched prefix to remove (without trailing slash); `replace_with`: what
    /// goes in its place; `host`: a Host to send instead of the client's.
    pub fn new(
        strip: Option<String>,
        replace_with: Option<String>,
        host: Option<HeaderValue>,
        edits: HeaderEdits,
    ) -> Self {
        let noop = strip.is_none() && host.is_none() && edits.is_empty();
        RequestRewriteLayer {
            rewrite: (!noop).then(|| Arc::new(Rewrite { strip, replace_with, host, edits })),
        }
    }
}

impl<S> Layer<S> for RequestRewriteLayer {
    type Service = RequestRewrite<S>;
    fn layer(&self, inner: S) -> RequestRewrite<S> {
        RequestRewrite { inner, rewrite: self.rewrite.clone() }
    }
}

/// See [`RequestRewriteLayer`].
#[derive(Clone, Debug)]
pub struct RequestRewrite<S> {
    inner: S,
    rewrite: Option<Arc<Rewrite>>,
}

impl<S> RequestRewrite<S> {
    inner_access!();
}

/// With prefix `/api`, strip turns `/api/x` into `/x` and `/api` into `/`;
/// a replacement `/v1` turns them into `/v1/x` and `/v1`.
pub(crate) fn rewrite_path(path: &str, prefix: &str, replace_with: Option<&str>) -> String {
    let rest = if prefix == "/" { path } else { path.get(prefix.len()..).unwrap_or("") };
    match replace_with {
        Some(r) => {
            let base = r.trim_end_matches('/');
            let out = format!("{base}{rest}");
            if out.is_empty() {
                "/".to_owned()
            } else if out.starts_with('/') {
                out
            } else {
                format!("/{out}")
            }
        }
        None if rest.is_empty() => "/".to_owned(),
        None => rest.to_owned(),
    }
}

impl<S> Service<Request<Body>> for RequestRewrite<S>
where
    S: Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> S::Future {
        if let Some(rw) = &self.rewrite {
            if let Some(prefix) = &rw.strip {
                let path = rewrite_path(req.uri().path(), prefix, rw.replace_with.as_deref());
                let pq = match req.uri().query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path,
                };
                if let Ok(pq) = PathAndQuery::try_from(pq) {
                    let mut parts = req.uri().clone().into_parts();
                    parts.path_and_query = Some(pq);
                    if let Ok(uri) = Uri::from_parts(parts) {
                        *req.uri_mut() = uri;
                    }
                }
            }
            if let Some(host) = &rw.host {
                req.headers_mut().insert(header::HOST, host.clone());
            }
            apply_edits(req.headers_mut(), &rw.edits);
        }
        self.inner.call(req)
    }
}

// === impl BodyLimit ===

/// Enforces the request body limit (route's, else `[limits]`'s; 0 = none) and counts request
/// body bytes for the access log. A declared `content-length` over the limit is refused before
/// anything is forwarded; an undeclared one fails the stream when it crosses the limit.
#[derive(Clone, Debug)]
pub struct BodyLimitLayer {
    limit: u64,
}

impl BodyLimitLayer {
    /// Limit in bytes; 0 = unlimited.
    pub fn new(limit: u64) -> Self {
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
pub struct BodyLimit<S> {
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
        let count = req.extensions().get::<Arc<RequestInfo>>().map(|i| Arc::clone(&i.bytes_in));
        let req = match count {
            Some(count) => req.map(|b| body::boxed(Metered::new(b, count, limit))),
            None if limit > 0 => req.map(|b| body::boxed(Metered::new(b, Default::default(), limit))),
            None => req,
        };
        Either::Left(self.inner.call(req))
    }
}

// === impl Timeout ===

/// The route `timeout`: the whole exchange up to the response head, retries included.
#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    timeout: Option<Duration>,
}

impl TimeoutLayer {
    /// `None` = no timeout.
    pub fn new(timeout: Option<Duration>) -> Self {
        TimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout { inner, timeout: self.timeout }
    }
}

/// See [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    timeout: Option<Duration>,
}

impl<S> Timeout<S> {
    inner_access!();
}

pin_project_lite::pin_project! {
    /// [`Timeout`]'s future.
    #[derive(Debug)]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        after: Duration,
    }
}

impl<F, T> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, Error>>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out);
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => match sleep.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Elapsed(*this.after).into())),
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

impl<S> Service<Request<Body>> for Timeout<S>
where
    S: Service<Request<Body>, Error = Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        TimeoutFuture {
            inner: self.inner.call(req),
            sleep: self.timeout.map(tokio::time::sleep),
            after: self.timeout.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite_path;

    #[test]
    fn strip_and_rewrite_follow_spec() {
        assert_eq!(rewrite_path("/api/x", "/api", None), "/x");
        assert_eq!(rewrite_path("/api", "/api", None), "/");
        assert_eq!(rewrite_path("/api/", "/api", None), "/");
        assert_eq!(rewrite_path("/api/x", "/api", Some("/v1")), "/v1/x");
        assert_eq!(rewrite_path("/api", "/api", Some("/v1")), "/v1");
        assert_eq!(rewrite_path("/api/x", "/api", Some("/")), "/x");
        assert_eq!(rewrite_path("/api", "/api", Some("/")), "/");
        assert_eq!(rewrite_path("/x/y", "/", Some("/v2")), "/v2/x/y");
        assert_eq!(rewrite_path("/x/y", "/", None), "/x/y");
    }
}
