//! `response_headers`: the route's edits to the response head (remove, then set).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, MapOk};
use futures_util::TryFutureExt;
use http::{Request, Response};
use tower::{Layer, Service};

use super::apply_edits;
use crate::body::Body;
use crate::config::HeaderEdits;
use crate::error::Error;

/// Applies `response_headers` edits.
#[derive(Clone, Debug)]
pub(crate) struct ResponseHeadersLayer {
    edits: Option<Arc<HeaderEdits>>,
}

impl ResponseHeadersLayer {
    /// Layer for these edits (none = pass-through).
    pub(crate) fn new(edits: HeaderEdits) -> Self {
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
