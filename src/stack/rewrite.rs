//! The request rewrites of a route, applied after it matched: `strip_prefix` /
//! `rewrite_prefix` on the path, `host_rewrite`, and `request_headers` edits.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Uri};
use tower::{Layer, Service};

use super::apply_edits;
use crate::body::Body;
use crate::config::HeaderEdits;

/// Strips / rewrites the matched path prefix, rewrites Host, applies `request_headers`.
#[derive(Clone, Debug)]
pub(crate) struct RequestRewriteLayer {
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
    pub(crate) fn new(
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
pub(crate) struct RequestRewrite<S> {
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

#[cfg(test)]
mod tests {
    use super::rewrite_path;

    #[test]
    fn strip_and_rewrite_prefixes() {
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
