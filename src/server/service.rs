//! The service handed to hyper for each client connection: request id and trace context, route
//! lookup on the current snapshot, the route's stack, and — the one place — failures turned
//! into responses. The response body is wrapped so that metrics and the access log are written
//! when it ends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::future::{BoxFuture, Either};
use http::{HeaderValue, Method, Request, Response, Version};
use http_body::{Frame, SizeHint};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::canonical::{self, Rejection};
use super::conn::{ConnState, RequestGuard};
use crate::access_log::{AccessLog, Record};
use crate::body::{self, Body, FromClient, ReadTimeout};
use crate::config::HttpConfig;
use crate::context::{RequestInfo, TunnelCtx, Upgrade, UpstreamInfo};
use crate::error::{BodyReadTimeout, ErrorReason, Reason};
use crate::metrics::{Metrics, Name, RequestCounters};
use crate::proxy::headers::{self, Present, X_FORWARDED_CLIENT_CERT, X_REQUEST_ID};
use crate::reply::{error_response, response_for};
use crate::snapshot::RouteMetrics;
use crate::snapshot::Snapshot;
use crate::stack::RouteService;
use crate::trace_context::{TraceContext, TRACESTATE};

/// What every connection of every listener shares.
#[derive(Debug)]
pub struct Shared {
    /// The live routing snapshot.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Access log.
    pub access_log: AccessLog,
    /// The empty label value (no route, no upstream), shared so that no request allocates it.
    pub empty: Name,
    /// `switchyard_requests_total` series of requests that matched no route.
    pub unrouted: RequestCounters,
    /// `[http]`: how requests are put in canonical form.
    pub http: HttpConfig,
    /// `[limits] body_read_timeout`.
    pub body_read_timeout: Duration,
    /// `[limits] max_request_header_bytes`.
    pub max_header_bytes: u64,
    /// Cancelled when the drain runs out of time: connections and tunnels still open close.
    pub hard_stop: CancellationToken,
}

/// The per-connection service: one `Arc` of what the connection's requests share, so that a
/// request's record of it counts a reference no other thread writes.
#[derive(Clone, Debug)]
pub struct GatewayService(Arc<Conn>);

#[derive(Clone, Debug)]
struct Conn {
    shared: Arc<Shared>,
    listener: Name,
    client: SocketAddr,
    https: bool,
    conn: Arc<ConnState>,
    client_cert: Option<HeaderValue>,
    /// The client IP as a header value, made once per connection.
    client_ip: HeaderValue,
    /// What an upgrade on this connection hands to its tunnel.
    tunnel: Option<Arc<TunnelCtx>>,
    /// `alt-svc: h3=":PORT"; ma=86400` on a TCP connection of a listener serving HTTP/3.
    alt_svc: Option<HeaderValue>,
}

impl GatewayService {
    /// A service for one client connection.
    pub fn new(
        shared: Arc<Shared>,
        listener: Name,
        client: SocketAddr,
        https: bool,
        conn: Arc<ConnState>,
    ) -> Self {
        // An IP address is always a valid header value.
        let client_ip = HeaderValue::try_from(client.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        GatewayService(Arc::new(Conn {
            shared,
            listener,
            client,
            https,
            conn,
            client_cert: None,
            client_ip,
            tunnel: None,
            alt_svc: None,
        }))
    }

    /// Advertise HTTP/3 on `port` in every response (`alt-svc: h3=":PORT"; ma=86400`).
    pub fn with_alt_svc(mut self, alt_svc: Option<HeaderValue>) -> Self {
        Arc::make_mut(&mut self.0).alt_svc = alt_svc;
        self
    }

    /// On an mTLS connection: the `x-forwarded-client-cert` value (Envoy's XFCC form) for the verified
    /// client certificate, set on every request after any client-sent one is removed.
    pub fn with_client_cert(mut self, xfcc: Option<HeaderValue>) -> Self {
        Arc::make_mut(&mut self.0).client_cert = xfcc;
        self
    }

    /// What an HTTP/1.1 upgrade on this connection hands to its tunnel (its connection slot,
    /// the tunnel idle timeout, the drain).
    pub fn with_tunnel(mut self, ctx: Arc<TunnelCtx>) -> Self {
        Arc::make_mut(&mut self.0).tunnel = Some(ctx);
        self
    }
}

/// Generic over the request body: hyper hands it [`Incoming`](hyper::body::Incoming); the
/// request-path bench calls it with an in-memory body, without a client connection.
impl<B> hyper::service::Service<Request<B>> for GatewayService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::error::Error>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn call(&self, mut req: Request<B>) -> Self::Future {
        let c = &*self.0;
        let started = crate::clock::nanos();
        // HTTP/2 and HTTP/3 multiplex requests on one connection: both are watched per stream.
        let multiplexed = matches!(req.version(), Version::HTTP_2 | Version::HTTP_3);
        let guard = c.conn.begin(multiplexed);
        // Borrowed for the lookup only: what the request keeps of its snapshot (its route's
        // stack, which holds its upstream, and its route's metrics) it clones below. Holding
        // the snapshot itself would write its reference count, which every serving thread
        // writes, twice per request.
        let snap = c.shared.snapshot.load();
        // hyper marks an HTTP/1 head that had both `transfer-encoding` and `content-length`
        // (it keeps the first, drops the second): refused below.
        let conflicting = req.extensions().get::<hyper::ext::ConflictingFraming>().is_some();
        let protocol = match req.version() {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        };
        // Decided, like the request id, before anything can refuse the request: every answer
        // has a trace id in the access log, and the upstream gets this `traceparent`.
        // Which of the headers read below are there, from one pass over the names: a lookup
        // of one that is not costs a hash of its name.
        let scan = Present::scan(req.headers());
        let present = scan.present;
        let trace = if present.has(Present::TRACEPARENT) {
            TraceContext::from_headers(req.headers())
        } else {
            TraceContext::new_root()
        };
        // Taken before anything can refuse the request, so every answer carries it.
        let request_id = if present.has(Present::X_REQUEST_ID) {
            headers::request_id(req.headers())
        } else {
            headers::new_request_id()
        };
        let method = req.method().clone();
        // What is known of the request when it is answered, refused or not (its identity is
        // in its `RequestInfo`, which every answer has).
        let done = |info, route, path| Done {
            conn: Arc::clone(&self.0),
            started,
            method,
            path,
            protocol,
            route,
            info,
            http2: multiplexed,
            _guard: guard,
        };
        // hyper bounds its read buffer by the limit, but a head that arrives whole in one read
        // is parsed however large it is (up to about twice the limit); the limit is ours.
        if head_size(&req) > c.shared.max_header_bytes {
            let info = c.request_info(None, request_id, trace, None, false);
            return Box::pin(std::future::ready(Ok(done(info, None, None).finish(header_too_large()))));
        }
        // One canonical request before anything looks at it (`canonical`): routes, rewrites,
        // the access log and the upstream all see this form.
        let canonical = canonical::request_with(&mut req, &c.shared.http, &scan);
        let path = c.shared.access_log.enabled().then(|| req.uri().path().to_owned());
        let canonical = match canonical {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(client = %c.client, error = %e, "request refused");
                let reason = match e {
                    Rejection::Connect => Reason::MethodNotAllowed,
                    _ => Reason::BadRequest,
                };
                let info = c.request_info(None, request_id, trace, None, false);
                return Box::pin(std::future::ready(Ok(
                    done(info, None, path).finish(error_response(reason))
                )));
            }
        };
        // Set after hop-by-hop removal, so `Connection: x-forwarded-client-cert` cannot undo it.
        if present.has(Present::X_FORWARDED_CLIENT_CERT) {
            req.headers_mut().remove(&X_FORWARDED_CLIENT_CERT);
        }
        if let Some(xfcc) = &c.client_cert {
            req.headers_mut().insert(&X_FORWARDED_CLIENT_CERT, xfcc.clone());
        }
        // A `tracestate` goes only with the client's own valid `traceparent` (W3C Trace Context);
        // the forwarder sets the `traceparent` itself (`headers::prepare_request`).
        if !trace.incoming && present.has(Present::TRACESTATE) {
            req.headers_mut().remove(&TRACESTATE);
        }
        let host = canonical.host;

        // RFC 9112 §6.1: both `transfer-encoding` and `content-length` is a smuggling vector;
        // hyper drops the `content-length` before we see the request and marks the request
        // (`hyper::ext::ConflictingFraming`, a vendored patch); like NGINX and Envoy we refuse
        // rather than forward.
        if conflicting {
            let info = c.request_info(host, request_id, trace, None, false);
            let res = error_response(Reason::BadRequest);
            return Box::pin(std::future::ready(Ok(done(info, None, path).finish(res))));
        }
        let found = snap.router.lookup(
            req.method(),
            host.as_ref().and_then(|h| h.to_str().ok()),
            req.uri().path(),
            req.uri().query(),
            req.headers(),
        );
        let Some(idx) = found else {
            let info = c.request_info(host, request_id, trace, None, false);
            let res = error_response(Reason::NoRoute);
            return Box::pin(std::future::ready(Ok(done(info, None, path).finish(res))));
        };
        let entry = &snap.routes[idx];
        let svc = entry.service().clone();
        let upgrade = canonical.upgrade.map(|value| Box::new(Upgrade { value, tunnel: c.tunnel.clone() }));
        let has_body = !http_body::Body::is_end_stream(req.body());
        let info = c.request_info(host, request_id, trace, upgrade, has_body);
        let done = done(Arc::clone(&info), Some(Arc::clone(&entry.metrics)), path);
        req.extensions_mut().insert(info);
        // A client that stops sending its body is cut off after `body_read_timeout` (408, or a
        // reset once the response started). A request without a body has nothing to time.
        let timeout = c.shared.body_read_timeout;
        let req = req.map(|b| {
            if http_body::Body::is_end_stream(&b) {
                // Nothing to read (most GETs): an empty body, which boxes without allocating.
                body::empty()
            } else {
                body::boxed(ReadTimeout::new(FromClient::new(b), timeout, |d| BodyReadTimeout(d).into()))
            }
        });
        // A route's stack is always ready (no layer holds requests back in `poll_ready`): asked
        // here, it is called at once, and the future below only waits for its answer. (Waiting
        // for readiness in the future made that future, moved and boxed per request, 1.1 KiB.)
        let mut svc = svc;
        let answer: Either<StackFuture, BoxFuture<'static, Result<Response<Body>, crate::error::Error>>> =
            match tower::Service::poll_ready(&mut svc, &mut Context::from_waker(Waker::noop())) {
                Poll::Ready(Ok(())) => Either::Left(tower::Service::call(&mut svc, req)),
                Poll::Ready(Err(e)) => Either::Right(Box::pin(std::future::ready(Err(e)))),
                Poll::Pending => Either::Right(Box::pin(call(svc, req))),
            };
        Box::pin(Answer { answer, done: Some(done) })
    }
}

pin_project_lite::pin_project! {
    /// The route's answer, then [`Done::finish`]. A future of its own rather than an `async`
    /// block: the block kept the stack's future twice (captured, and moved into its await),
    /// and this one is boxed and written for every request.
    struct Answer<F> {
        #[pin]
        answer: F,
        done: Option<Done>,
    }
}

impl<F> std::future::Future for Answer<F>
where
    F: std::future::Future<Output = Result<Response<Body>, crate::error::Error>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = match std::task::ready!(this.answer.poll(cx)) {
            Ok(res) => res,
            Err(e) => {
                tracing::debug!(error = %e, "request failed");
                response_for(e.as_ref())
            }
        };
        let done = this.done.take().expect("an answer is polled again after it was ready");
        Poll::Ready(Ok(done.finish(res)))
    }
}

impl Conn {
    /// A request's shared facts, for the stack below and for the accounting at its end.
    fn request_info(
        &self,
        host: Option<HeaderValue>,
        request_id: HeaderValue,
        trace: TraceContext,
        upgrade: Option<Box<Upgrade>>,
        has_body: bool,
    ) -> Arc<RequestInfo> {
        Arc::new(RequestInfo {
            client: self.client,
            listener: Arc::clone(&self.listener),
            https: self.https,
            host,
            request_id,
            trace,
            bytes_in: has_body.then(Default::default),
            client_ip: self.client_ip.clone(),
            exchange: Default::default(),
            tried: Default::default(),
            upgrade,
        })
    }
}

/// The size of a request head as HTTP/1.1 would carry it: request line, and `name: value`
/// plus CRLF per field, plus the blank line.
fn head_size<B>(req: &Request<B>) -> u64 {
    let line = req.method().as_str().len() + req.uri().path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    let fields: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    (line + fields + 2) as u64
}

/// 431, as hyper answers a head over its buffer (RFC 6585 section 5); the connection closes.
fn header_too_large() -> Response<Body> {
    let mut res = Response::new(body::full("431 request header fields too large\n"));
    *res.status_mut() = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    let h = res.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// The future of a route's stack.
type StackFuture = <RouteService as tower::Service<Request<Body>>>::Future;

async fn call(mut svc: RouteService, req: Request<Body>) -> Result<Response<Body>, crate::error::Error> {
    use tower::Service;
    svc.ready().await?;
    svc.call(req).await
}

/// Everything needed to account for a request once its response body ends.
#[derive(Debug)]
struct Done {
    /// The connection's shared parts: the gateway's, the listener, the client, `alt-svc`.
    conn: Arc<Conn>,
    /// [`crate::clock::nanos`] when the request came.
    started: u64,
    method: Method,
    /// Only kept when the access log wants it.
    path: Option<String>,
    protocol: &'static str,
    route: Option<Arc<RouteMetrics>>,
    /// The request's identity (host, request id, trace) and its upstream exchange. A refused
    /// request has one too, so that its identity is kept once, here, for every request.
    info: Arc<RequestInfo>,
    http2: bool,
    _guard: RequestGuard,
}

impl Done {
    fn finish(self, mut res: Response<Body>) -> Response<Body> {
        res.headers_mut().insert(&X_REQUEST_ID, self.info.request_id.clone());
        if let Some(alt) = &self.conn.alt_svc {
            // Ours replaces an upstream's: the client is told what this listener serves.
            res.headers_mut().insert(http::header::ALT_SVC, alt.clone());
        }
        let status = res.status().as_u16();
        let upstream = self.info.take_exchange();
        let error = res.extensions().get::<ErrorReason>().map(|r| r.0.as_str());
        // HTTP/2 streams watch for a client that grants no window (`conn::ConnState`).
        let watch = self.http2.then(|| Arc::clone(&self._guard.0));
        res.map(|inner| {
            body::boxed(Logged {
                inner,
                bytes_out: 0,
                end: Some(End { done: self, status, upstream, error }),
                watch,
                handed: false,
            })
        })
    }
}

#[derive(Debug)]
struct End {
    done: Done,
    status: u16,
    upstream: Option<UpstreamInfo>,
    error: Option<&'static str>,
}

impl End {
    fn emit(self, bytes_out: u64) {
        let d = self.done;
        let elapsed = crate::clock::since(d.started);
        let m = &d.conn.shared.metrics;
        let empty = &d.conn.shared.empty;
        let route = d.route.as_ref().map_or(empty, |r| &r.name);
        let upstream = self.upstream.as_ref().map_or(empty, |u| &u.upstream);
        match &d.route {
            Some(r) => {
                r.requests.inc(&m.requests, &d.conn.listener, route, upstream, self.status);
                r.duration.observe(elapsed.as_secs_f64());
            }
            None => d.conn.shared.unrouted.inc(&m.requests, &d.conn.listener, route, upstream, self.status),
        }
        let log = &d.conn.shared.access_log;
        if log.enabled() {
            let up = self.upstream;
            log.log(Record {
                ts: SystemTime::now(),
                listener: Arc::clone(&d.conn.listener),
                client: d.conn.client.ip(),
                method: d.method.clone(),
                host: d.info.host.clone(),
                path: d.path.unwrap_or_default(),
                protocol: d.protocol,
                status: self.status,
                route: d.route.as_ref().map(|r| Arc::clone(&r.name)),
                upstream: up.as_ref().map(|u| Arc::clone(&u.upstream)),
                endpoint: up.as_ref().and_then(|u| u.endpoint.clone()),
                attempts: up.as_ref().map_or(0, |u| u.attempts),
                duration_ms: elapsed.as_secs_f64() * 1e3,
                upstream_ms: up.as_ref().map(|u| u.upstream_ms),
                bytes_in: d.info.bytes_in.as_ref().map_or(0, |b| b.load(Ordering::Relaxed)),
                bytes_out,
                request_id: d.info.request_id.clone(),
                trace_id: d.info.trace.trace_id,
                error: self.error,
            });
        }
    }
}

pin_project_lite::pin_project! {
    /// The response body, counting bytes and accounting for the request when it ends or is
    /// dropped (a client that goes away mid-body is logged too). Boxed: hyper moves the
    /// response body several times, and unboxed (some 300 bytes) it cost more in copies
    /// (+520 instructions per GET) than the allocation it saves.
    struct Logged {
        #[pin]
        inner: Body,
        bytes_out: u64,
        end: Option<End>,
        // HTTP/2 only: the connection's state, told when this body waits for the client.
        watch: Option<Arc<ConnState>>,
        handed: bool,
    }

    impl PinnedDrop for Logged {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let (Some(w), true) = (this.watch.as_ref(), *this.handed) {
                w.note_handed(false);
            }
            if let Some(end) = this.end.take() {
                end.emit(*this.bytes_out);
            }
        }
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = crate::error::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Some(w) = this.watch.as_ref() {
            if *this.handed {
                *this.handed = false;
                w.note_handed(false);
            }
        }
        let r = this.inner.poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    *this.bytes_out += d.len() as u64;
                    if let Some(w) = this.watch.as_ref() {
                        *this.handed = true;
                        w.note_handed(true);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(end) = this.end.take() {
                    end.emit(*this.bytes_out);
                }
            }
            // The response body broke off (the upstream closed, reset or went silent): the
            // status line is out, but the access log says what happened.
            Poll::Ready(Some(Err(_))) => {
                if let Some(end) = this.end.as_mut() {
                    end.error = Some(Reason::UpstreamReset.as_str());
                }
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
