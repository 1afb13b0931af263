//! What ends a route's stack ([`Terminal`]): forwarding to one upstream, the weighted
//! `split`, or an answer from the gateway (`respond`, `redirect`).

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use tower::Service;

use super::ForwardStack;
use crate::body::{self, Body};
use crate::error::Error;

// === impl Terminal ===

/// A route's action, the last service of its stack.
#[derive(Clone, Debug)]
pub(crate) enum Terminal {
    /// `upstream = "…"`.
    Forward(ForwardStack),
    /// `split = [...]`.
    Split(Split),
    /// `respond = { … }`.
    Respond(Respond),
    /// `redirect = { … }`.
    Redirect(Redirect),
}

impl Service<Request<Body>> for Terminal {
    type Response = Response<Body>;
    type Error = Error;
    type Future = TerminalFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match self {
            Terminal::Forward(s) => s.poll_ready(cx),
            Terminal::Split(s) => s.poll_ready(cx),
            Terminal::Respond(s) => s.poll_ready(cx),
            Terminal::Redirect(s) => s.poll_ready(cx),
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match self {
            Terminal::Forward(s) => TerminalFuture::Forward { forward: s.call(req) },
            Terminal::Split(s) => TerminalFuture::Split { split: s.call(req) },
            Terminal::Respond(s) => TerminalFuture::Answer { answer: s.call(req) },
            Terminal::Redirect(s) => TerminalFuture::Answer { answer: s.call(req) },
        }
    }
}

/// The future of a forward's stack.
type ForwardFuture = <ForwardStack as Service<Request<Body>>>::Future;

pin_project_lite::pin_project! {
    /// The future of [`Terminal`]: named, so that a forward's future (the retry layer's and
    /// everything below it) sits in the allocation of the request's future rather than in a
    /// box of its own.
    #[project = TerminalFutureProj]
    pub(crate) enum TerminalFuture {
        Forward { #[pin] forward: ForwardFuture },
        Split { split: BoxFuture<'static, Result<Response<Body>, Error>> },
        Answer { #[pin] answer: std::future::Ready<Result<Response<Body>, Error>> },
    }
}

impl std::future::Future for TerminalFuture {
    type Output = Result<Response<Body>, Error>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TerminalFutureProj::Forward { forward } => forward.poll(cx),
            TerminalFutureProj::Split { split } => split.as_mut().poll(cx),
            TerminalFutureProj::Answer { answer } => answer.poll(cx),
        }
    }
}

// === impl Respond ===

/// A fixed response: status, body, headers.
type Fixed = (StatusCode, Bytes, Vec<(HeaderName, HeaderValue)>);

/// `respond = { status, body, headers }`.
#[derive(Clone, Debug)]
pub(crate) struct Respond {
    inner: Arc<Fixed>,
}

impl Respond {
    /// A fixed answer.
    pub(crate) fn new(status: StatusCode, body: String, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        Respond { inner: Arc::new((status, Bytes::from(body), headers)) }
    }
}

impl Service<Request<Body>> for Respond {
    type Response = Response<Body>;
    type Error = Error;
    type Future = std::future::Ready<Result<Response<Body>, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Body>) -> Self::Future {
        let (status, body, headers) = &*self.inner;
        let mut res = Response::new(body::full(body.clone()));
        *res.status_mut() = *status;
        for (n, v) in headers {
            res.headers_mut().insert(n.clone(), v.clone());
        }
        std::future::ready(Ok(res))
    }
}

// === impl Redirect ===

/// `redirect = { to, status }`; `{host}`, `{path}`, `{query}` expand (docs/configuration.md).
#[derive(Clone, Debug)]
pub(crate) struct Redirect {
    to: Arc<str>,
    status: StatusCode,
}

impl Redirect {
    /// A redirect to the template `to`.
    pub(crate) fn new(to: String, status: StatusCode) -> Self {
        Redirect { to: to.into(), status }
    }

    /// The `location` for `req`.
    pub(crate) fn location<B>(&self, req: &Request<B>) -> String {
        let host = crate::proxy::headers::request_host(req).map(strip_port).unwrap_or("");
        let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
        self.to.replace("{host}", host).replace("{path}", req.uri().path()).replace("{query}", &query)
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

impl Service<Request<Body>> for Redirect {
    type Response = Response<Body>;
    type Error = Error;
    type Future = std::future::Ready<Result<Response<Body>, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let loc = self.location(&req);
        let mut res = Response::new(body::empty());
        *res.status_mut() = self.status;
        match HeaderValue::try_from(loc) {
            Ok(v) => {
                res.headers_mut().insert(header::LOCATION, v);
            }
            Err(_) => *res.status_mut() = StatusCode::BAD_REQUEST,
        }
        std::future::ready(Ok(res))
    }
}

// === impl Split ===

/// `split = [...]`: picks an upstream by weight per request, then forwards to it.
#[derive(Clone, Debug)]
pub(crate) struct Split {
    choices: Arc<[(ForwardStack, u32)]>,
    total: u32,
}

impl Split {
    /// Choices with their weights (cumulative weights are computed per pick; the list is short).
    pub(crate) fn new(choices: Vec<(ForwardStack, u32)>) -> Self {
        let total = choices.iter().map(|(_, w)| *w).sum::<u32>().max(1);
        Split { choices: choices.into(), total }
    }
}

impl Service<Request<Body>> for Split {
    type Response = Response<Body>;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Response<Body>, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let mut n = fastrand::u32(0..self.total);
        let mut pick = &self.choices[0].0;
        for (f, w) in self.choices.iter() {
            if n < *w {
                pick = f;
                break;
            }
            n -= w;
        }
        let mut f = pick.clone();
        Box::pin(async move {
            use tower::ServiceExt;
            f.ready().await?.call(req).await
        })
    }
}
