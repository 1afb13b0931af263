//! HTTP/1 upstream connections driven by the task that uses them.
//!
//! hyper-util's pooled client drives every connection in a task of its own: each exchange
//! hands the request to that task and the response back through channels, wakes it, boxes
//! the exchange's future, and spawns one more task per response to notice when the connection
//! is idle again. Here, as in NGINX and Pingora, the connection's state machine
//! (hyper's `client::conn::http1`) is polled by whoever waits on it: the request's future
//! until the head arrives, then the response body ([`UpstreamBody`]) until its end, when the
//! connection goes back to the idle list of the serving thread that used it. Nothing crosses
//! a task, and the idle lists take no lock another thread holds.
//!
//! An idle connection is polled by nobody. One the upstream closed is found closed when it is
//! next taken (and skipped), or by the sweep that runs every [`SWEEP_EVERY`] on each thread
//! with idle connections, which also closes those idle for the pool's idle timeout. Idle time
//! is counted in sweeps, not read from the clock (two clock reads and a subtraction of
//! instants per request): a connection goes after a whole idle timeout's worth of sweeps, so
//! after between the timeout less one sweep period and the timeout (45 to 50 s). A request that a reused connection could not start (the upstream closed it just
//! then) is sent again on another connection, as hyper-util's client does.
//!
//! Why not hyper-util's client, the stack's usual choice: measured with `bench/compare.sh`
//! against the build that used it, in one run, this costs 3.5 % (two threads) to 8 % (one
//! thread) less CPU per proxied request. HTTP/2 upstreams still use hyper-util's client.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::connect::UpstreamConnector;
use super::limits::LimitedConnector;
use crate::body::Body;
use crate::error::Error;

/// How often each thread's idle connections are looked at. A connection the upstream closed
/// holds its socket and its `max_connections` place until then, so the look comes well inside
/// the 50 s idle timeout. Each look is one poll per idle connection, which reads from the
/// socket only when the upstream has sent something (or closed it).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One HTTP/1 connection: the handle that sends on it and the state machine that runs it.
struct Conn {
    send: http1::SendRequest<Body>,
    /// `None` once the connection has ended.
    driver: Option<Driver>,
    /// When it went idle: its idle list's [`Idle::sweeps`] then.
    since: u64,
}

impl Conn {
    /// Run the connection as far as it can go now; false once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(d) = self.driver.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                self.driver = None;
            }
        }
        self.driver.is_some()
    }

    /// Whether it can take the next request, running it (twice at most, with no waker: nobody
    /// waits on an idle connection) to find out.
    fn ready_for_next(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..2 {
            if !self.drive(&mut cx) {
                return false;
            }
            if self.send.is_ready() {
                return true;
            }
        }
        false
    }
}

/// Idle connections by endpoint, for one serving thread.
#[derive(Default)]
struct Idle {
    // Keys are endpoint addresses from configuration and discovery, not from clients: a fast
    // hash is safe (std's SipHash cost ~300 instructions a request here).
    by_endpoint: rustc_hash::FxHashMap<Arc<str>, List>,
    sweeping: bool,
    /// Sweeps of this list so far: its clock, in steps of [`SWEEP_EVERY`].
    sweeps: u64,
}

/// One endpoint's idle connections, and its key (shared by the connections lent out).
struct List {
    key: Arc<str>,
    conns: Vec<Conn>,
}

/// One serving thread's idle list, and the signal that a connection went back to it.
#[derive(Default)]
struct Slot {
    idle: Mutex<Idle>,
    returned: tokio::sync::Notify,
    /// Requests waiting on `returned` (`connect_or_wait`): with none, a return notifies
    /// nobody, and skips the lock `notify_waiters` takes.
    waiting: AtomicUsize,
}

/// The HTTP/1 connections of one upstream: an idle list per serving thread.
pub(crate) struct H1Pool {
    connector: LimitedConnector<UpstreamConnector>,
    idle: Box<[Slot]>,
    /// The idle timeout in sweeps (at least one).
    idle_sweeps: u64,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pool").field("threads", &self.idle.len()).finish_non_exhaustive()
    }
}

/// Why an exchange failed: while connecting, or on the connection.
pub(crate) enum Failure {
    /// Connecting failed; the request was not sent and is given back.
    Connect(Error, Box<Request<Body>>),
    Exchange(Error),
}

impl H1Pool {
    pub(crate) fn new(
        connector: LimitedConnector<UpstreamConnector>,
        threads: usize,
        idle_timeout: Duration,
    ) -> Self {
        let idle = (0..threads.max(1)).map(|_| Slot::default()).collect();
        let idle_sweeps = (idle_timeout.as_millis() / SWEEP_EVERY.as_millis()).max(1) as u64;
        H1Pool { connector, idle, idle_sweeps }
    }

    /// Which idle list `thread` uses (its address), for tests.
    #[cfg(test)]
    pub(crate) fn slot_id(&self, thread: usize) -> usize {
        &self.idle[thread % self.idle.len()] as *const Slot as usize
    }

    fn slot(&self, thread: usize) -> std::sync::MutexGuard<'_, Idle> {
        self.idle[thread % self.idle.len()].idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest idle connection to `endpoint` not past the idle timeout (not run first: see
    /// below), with the list's key.
    fn take(&self, thread: usize, endpoint: &str) -> (Arc<str>, Option<Conn>) {
        let mut idle = self.slot(thread);
        let now = idle.sweeps;
        let Some(list) = idle.by_endpoint.get_mut(endpoint) else {
            return (Arc::from(endpoint), None);
        };
        let key = Arc::clone(&list.key);
        // A taken connection is not run here to see whether the upstream closed it: the exchange
        // runs it next, and one that closed reads its end before it writes the request, which
        // it gives back unsent (the exchange sends it again on another connection). Running
        // each one here cost a whole poll of the connection per request (665 instructions).
        // `try_send` (hyper, vendored) wakes no task, so the waker a connection kept from the
        // task that ran it last is not woken for nothing either.
        while let Some(c) = list.conns.pop() {
            if now - c.since < self.idle_sweeps {
                return (key, Some(c));
            }
        }
        (key, None)
    }

    /// Put `conn` back as idle, if it can take another request. Most often it says so at once
    /// (the poll that read the body's end left it waiting for the next request), and only
    /// otherwise is it run to find out: an upstream that answered before the request's body
    /// was all sent is still sending it, and such a connection is closed, not kept.
    fn put(self: &Arc<Self>, thread: usize, key: Arc<str>, mut conn: Conn) {
        if conn.driver.is_none() || !(conn.send.is_ready() || conn.ready_for_next()) {
            return;
        }
        let mut idle = self.slot(thread);
        conn.since = idle.sweeps;
        let list =
            idle.by_endpoint.entry(Arc::clone(&key)).or_insert_with(|| List { key, conns: Vec::new() });
        list.conns.push(conn);
        let sweep_now = !std::mem::replace(&mut idle.sweeping, true);
        drop(idle);
        // After the push: a request that starts waiting after this load looks at the list
        // (`connect_or_wait` counts itself, then takes) and finds the connection there.
        let slot = &self.idle[thread % self.idle.len()];
        if slot.waiting.load(Ordering::SeqCst) > 0 {
            slot.returned.notify_waiters();
        }
        if sweep_now {
            tokio::spawn(sweep(Arc::downgrade(self), thread));
        }
    }

    async fn connect(&self, endpoint: &str) -> Result<Conn, Error> {
        let mut connector = self.connector.clone();
        // The connector reads the host (the TLS server name when no `sni` is set) and port.
        let uri = Uri::builder().scheme("http").authority(endpoint).path_and_query("/").build()?;
        let io = tower::Service::call(&mut connector, uri).await?;
        let (send, conn) = http1::Builder::new().handshake(io).await?;
        Ok(Conn { send, driver: Some(Box::pin(conn.with_upgrades())), since: 0 })
    }

    /// A new connection, or one that goes back to this thread's list first (with `true`).
    /// With `max_connections` reached, connecting waits for a permit that a connection
    /// lying idle here would never give back: that connection is the one to take.
    async fn connect_or_wait(&self, thread: usize, endpoint: &str) -> Result<(Conn, bool), Error> {
        let slot = &self.idle[thread % self.idle.len()];
        let mut connect = std::pin::pin!(self.connect(endpoint));
        // Counted before the first look at the list (see `put`), until this returns or is dropped.
        let _waiting = Waiting::count(&slot.waiting);
        loop {
            let returned = slot.returned.notified();
            let mut returned = std::pin::pin!(returned);
            returned.as_mut().enable();
            // One may have come back since the caller looked.
            if let (_, Some(c)) = self.take(thread, endpoint) {
                return Ok((c, true));
            }
            tokio::select! {
                r = &mut connect => return r.map(|c| (c, false)),
                () = returned => {}
            }
        }
    }

    /// Start sending `req` to `endpoint` (`host:port`) on an idle connection of this thread's
    /// list: it is handed to the connection here, and the [`Exchange`] runs the connection
    /// until the answer's head is in. Without an idle connection, the exchange connects first.
    /// A request in absolute form is sent in origin form.
    pub(crate) fn start(self: &Arc<Self>, thread: usize, endpoint: &str, mut req: Request<Body>) -> Exchange {
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            *req.uri_mut() = origin_form(req.uri());
        }
        // No yield before the write (there was one, so that a thread's upstream writes went
        // out together): measured again against the same build without it, interleaved in one
        // run, it no longer paid: +0.4 to +0.5 % requests per CPU-second at the default threads
        // and +2 to +12 % at one worker without it. It moved kernel time from the upstream to
        // the proxy and the client, and cost a second poll of the connection's task.
        let (key, idle) = self.take(thread, endpoint);
        if let Some(mut conn) = idle {
            match conn.send.try_send(req) {
                Ok(answer) => {
                    let pool = Arc::clone(self);
                    return Exchange(State::Sent { pool, thread, key, conn, answer, reused: true });
                }
                // Not ready after all (`take` found it ready): another connection.
                Err(r) => req = r,
            }
        }
        Exchange(State::Slow(Box::pin(Arc::clone(self).send(thread, key, req))))
    }

    /// Send `req` on an idle connection of this thread's list, or a new one: the slow path of
    /// [`H1Pool::start`], boxed there. Once a connection has the request, the wait for the
    /// answer is the [`Exchange`]'s, as on the fast path.
    async fn send(
        self: Arc<Self>,
        thread: usize,
        endpoint: Arc<str>,
        mut req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, Error> {
        loop {
            let (key, idle) = self.take(thread, &endpoint);
            let (mut conn, reused) = match idle {
                Some(c) => (c, true),
                None => match self.connect_or_wait(thread, &endpoint).await {
                    Ok(c) => c,
                    Err(e) => return Err(super::failed(&endpoint, Failure::Connect(e, Box::new(req)))),
                },
            };
            match conn.send.try_send(req) {
                // The same wait as a request sent at once on an idle connection.
                Ok(answer) => {
                    return Exchange(State::Sent { pool: self, thread, key, conn, answer, reused }).await;
                }
                Err(r) if reused => req = r,
                // A new connection takes its first request (hyper's), so this is one that ended.
                Err(_) => {
                    let e = "the connection was not ready for a request".into();
                    return Err(super::failed(&endpoint, Failure::Exchange(e)));
                }
            }
        }
    }

    fn respond(
        self: Arc<Self>,
        thread: usize,
        key: Arc<str>,
        conn: Conn,
        res: Response<Incoming>,
    ) -> Response<UpstreamBody> {
        if res.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection becomes the tunnel's: it runs on its own until it hands it over.
            if let Some(d) = conn.driver {
                tokio::spawn(d);
            }
            return res.map(UpstreamBody::plain);
        }
        let (parts, inner) = res.into_parts();
        let lease = Lease { pool: self, thread, key, conn };
        let mut body = UpstreamBody { inner, lease: Some(lease), failed: None };
        if body.inner.is_end_stream() {
            body.release();
        }
        Response::from_parts(parts, body)
    }

    /// Close connections idle for too long or ended; true when none is left.
    fn sweep_once(&self, thread: usize) -> bool {
        let mut idle = self.slot(thread);
        idle.sweeps += 1;
        let now = idle.sweeps;
        idle.by_endpoint.retain(|_, list| {
            list.conns.retain_mut(|c| now - c.since < self.idle_sweeps && c.ready_for_next());
            !list.conns.is_empty()
        });
        if idle.by_endpoint.is_empty() {
            idle.sweeping = false;
            return true;
        }
        false
    }
}

/// An exchange on an HTTP/1 connection of one thread's list ([`H1Pool::start`]): its future
/// is the response's head, or the failure classified (`ConnectFailed` gives the request back).
/// Written out rather than as an `async fn`, so that the request is moved once, into the
/// connection, rather than into each layer's future as well (an `async fn` keeps its
/// arguments), and the forwarder's future can hold this one without boxing it.
pub(crate) struct Exchange(State);

enum State {
    /// Handed to a connection, which is run here until the head is in.
    Sent {
        pool: Arc<H1Pool>,
        thread: usize,
        key: Arc<str>,
        conn: Conn,
        answer: http1::ResponseFuture<Body>,
        /// Taken idle (rather than new): if it closed before the request went out, the request
        /// is sent again on another connection.
        reused: bool,
    },
    /// Connecting first, or sent again after a kept-alive connection closed just then.
    Slow(futures_util::future::BoxFuture<'static, Result<Response<UpstreamBody>, Error>>),
    Done,
}

impl Future for Exchange {
    type Output = Result<Response<UpstreamBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = &mut self.get_mut().0;
        loop {
            let out = match state {
                State::Sent { conn, answer, .. } => {
                    // The connection writes the request and reads the head; then the answer is
                    // in. Only `drive` can complete `answer` (the connection answers it, or
                    // drops it as it ends), and this task is woken for everything `drive` waits
                    // on. Asked with no waker, `answer` does not wake this task once more when
                    // it comes: that would cost a whole extra poll of the client's connection.
                    conn.drive(cx);
                    std::task::ready!(Pin::new(answer).poll(&mut Context::from_waker(Waker::noop())))
                }
                State::Slow(f) => {
                    let out = std::task::ready!(f.as_mut().poll(cx));
                    *state = State::Done;
                    return Poll::Ready(out);
                }
                State::Done => panic!("an exchange polled after it ended"),
            };
            let State::Sent { pool, thread, key, conn, reused, .. } = std::mem::replace(state, State::Done)
            else {
                unreachable!("only a sent exchange has an answer")
            };
            match out {
                Ok(res) => return Poll::Ready(Ok(pool.respond(thread, key, conn, res))),
                Err(mut e) => match e.take_message() {
                    // Not started on a kept-alive connection (closed just then): another one.
                    Some(req) if reused => *state = State::Slow(Box::pin(pool.send(thread, key, req))),
                    _ => {
                        return Poll::Ready(Err(super::failed(
                            &key,
                            Failure::Exchange(e.into_error().into()),
                        )));
                    }
                },
            }
        }
    }
}

/// One request counted in [`Slot::waiting`] while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Look at `thread`'s idle connections every [`SWEEP_EVERY`] while there are any.
async fn sweep(pool: Weak<H1Pool>, thread: usize) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        match pool.upgrade() {
            Some(p) if !p.sweep_once(thread) => {}
            _ => return,
        }
    }
}

/// `uri`'s path and query (`/` when it has none), as HTTP/1 sends them.
pub(crate) fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) if pq.as_str() != "/" => Uri::from(pq.clone()),
        _ => Uri::default(),
    }
}

/// A connection lent to one exchange, and where it goes back.
struct Lease {
    pool: Arc<H1Pool>,
    thread: usize,
    key: Arc<str>,
    conn: Conn,
}

/// An upstream response's body. Over HTTP/1 it also runs the connection it arrives on, and
/// returns that connection to the idle list at its end; dropped before its end, it closes it.
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
    /// An error held back one poll (see `poll_frame`).
    failed: Option<hyper::Error>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// A body that runs no connection (HTTP/2's are run by their own task).
    pub(crate) fn plain(inner: Incoming) -> Self {
        UpstreamBody { inner, lease: None, failed: None }
    }

    fn release(&mut self) {
        if let Some(l) = self.lease.take() {
            l.pool.put(l.thread, l.key, l.conn);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        // What the connection has read is taken first: most often the whole body came with
        // the head, and the connection need not run again (a poll of it cost 627 instructions
        // per request). Only when nothing is there is it run, to read more, and looked at again.
        let mut polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() {
            if let Some(l) = this.lease.as_mut() {
                l.conn.drive(cx);
                polled = Pin::new(&mut this.inner).poll_frame(cx);
            }
        }
        match polled {
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(f))) => {
                if this.inner.is_end_stream() {
                    this.release();
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The connection is done for. The error waits one poll: hyper's server drops
                // what it has not written yet when a body fails, and the head and the bytes
                // that came before the failure should reach the client (as when the
                // connection ran in a task of its own and the failure came a little later).
                this.lease = None;
                this.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::{UpstreamConfig, UpstreamLimits};
    use crate::proxy::limits::Limits;
    use crate::proxy::UpstreamClient;

    /// A raw upstream on loopback: answers `ok` to each request, and closes each connection
    /// after `per_conn` answers (without saying so). Counts connections, and sends on
    /// `closed` each time it has closed one.
    struct Raw {
        addr: String,
        conns: Arc<AtomicUsize>,
        closed: tokio::sync::mpsc::UnboundedReceiver<()>,
    }

    async fn raw(per_conn: usize) -> Raw {
        raw_answering(per_conn, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await
    }

    /// [`raw`], answering `answer` to each request.
    async fn raw_answering(per_conn: usize, answer: &'static [u8]) -> Raw {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let conns = Arc::new(AtomicUsize::new(0));
        let (tx, closed) = tokio::sync::mpsc::unbounded_channel();
        let n = Arc::clone(&conns);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                n.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut answered = 0;
                    while answered < per_conn {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                        let _ = s.write_all(answer).await;
                        answered += 1;
                    }
                    // Closed here after `per_conn` answers, or by the other side.
                    drop(s);
                    let _ = tx.send(());
                });
            }
        });
        Raw { addr, conns, closed }
    }

    fn client() -> UpstreamClient {
        let cfg = UpstreamConfig {
            connect_timeout: Duration::from_secs(5),
            ..UpstreamConfig::new("u", crate::config::DiscoveryConfig::Static(Vec::new()))
        };
        let limits = Limits::new(UpstreamLimits::default(), Arc::new("u".into()), Default::default());
        UpstreamClient::new(&cfg, limits).unwrap()
    }

    async fn get(c: &UpstreamClient, addr: &str) -> Response<UpstreamBody> {
        let mut req = Request::get("/x").body(crate::body::empty()).unwrap();
        c.address(&mut req, &addr.parse().unwrap());
        c.send(addr, req).await.expect("the exchange succeeds")
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_returns_the_connection_and_one_dropped_early_closes_it() {
        let up = raw(usize::MAX).await;
        let c = client();
        for _ in 0..3 {
            let body = get(&c, &up.addr).await.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
        }
        assert_eq!(up.conns.load(Ordering::SeqCst), 1, "one connection, kept alive");
        // A response whose body is never read: its connection cannot be reused.
        drop(get(&c, &up.addr).await);
        get(&c, &up.addr).await.into_body().collect().await.unwrap();
        assert_eq!(up.conns.load(Ordering::SeqCst), 2, "the unread one was closed");
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_skipped() {
        let mut up = raw(1).await;
        let c = client();
        for i in 1..=3 {
            get(&c, &up.addr).await.into_body().collect().await.unwrap();
            // The upstream has closed that connection; the next request must not fail on it.
            up.closed.recv().await.unwrap();
            assert_eq!(up.conns.load(Ordering::SeqCst), i);
        }
    }

    /// The same with a request that is not idempotent, which nothing else would send twice: it
    /// goes out once, on a new connection, because the closed one never wrote it.
    #[tokio::test]
    async fn a_post_is_not_lost_to_an_idle_connection_the_upstream_closed() {
        let mut up = raw(1).await;
        let c = client();
        get(&c, &up.addr).await.into_body().collect().await.unwrap();
        up.closed.recv().await.unwrap();
        let mut req = Request::post("/x").body(crate::body::full("hi")).unwrap();
        c.address(&mut req, &up.addr.parse().unwrap());
        let res = c.send(&up.addr, req).await.expect("sent on a new connection");
        assert_eq!(&res.into_body().collect().await.unwrap().to_bytes()[..], b"ok");
        assert_eq!(up.conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_says_it_closes_is_not_kept() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ] {
            let up = raw_answering(usize::MAX, answer).await;
            let c = client();
            get(&c, &up.addr).await.into_body().collect().await.unwrap();
            let pool = c.h1.as_ref().unwrap();
            let idle: usize = pool.slot(0).by_endpoint.values().map(|l| l.conns.len()).sum();
            assert_eq!(idle, 0, "not kept idle after {:?}", String::from_utf8_lossy(&answer[..17]));
        }
        // HTTP/1.0 that asks to keep the connection is kept.
        let up = raw_answering(
            usize::MAX,
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
        )
        .await;
        let c = client();
        get(&c, &up.addr).await.into_body().collect().await.unwrap();
        let idle: usize = c.h1.as_ref().unwrap().slot(0).by_endpoint.values().map(|l| l.conns.len()).sum();
        assert_eq!(idle, 1);
    }

    #[tokio::test]
    async fn a_connection_still_sending_the_request_body_when_the_answer_ends_is_not_kept() {
        // The upstream answers as soon as it has read something; the request's body never ends.
        let up = raw(usize::MAX).await;
        let c = client();
        let (_tx, body_rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Error>>(1);
        let body = crate::body::boxed(http_body_util::StreamBody::new(tokio_stream_from(body_rx)));
        let mut req = Request::post("/x").body(body).unwrap();
        c.address(&mut req, &up.addr.parse().unwrap());
        let res = c.send(&up.addr, req).await.expect("the exchange succeeds");
        assert_eq!(&res.into_body().collect().await.unwrap().to_bytes()[..], b"ok");
        let idle: usize = c.h1.as_ref().unwrap().slot(0).by_endpoint.values().map(|l| l.conns.len()).sum();
        assert_eq!(idle, 0, "a connection still writing a request body is not idle");
    }

    /// The receiving end of `rx` as a stream.
    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Send + 'static {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_idle_past_the_idle_timeout_is_closed() {
        let mut up = raw(usize::MAX).await;
        let c = client();
        get(&c, &up.addr).await.into_body().collect().await.unwrap();
        tokio::time::sleep(super::super::POOL_IDLE_TIMEOUT - Duration::from_secs(10)).await;
        assert!(up.closed.try_recv().is_err(), "not closed before its idle timeout");
        tokio::time::sleep(Duration::from_secs(10) + SWEEP_EVERY).await;
        tokio::time::timeout(Duration::from_secs(1), up.closed.recv())
            .await
            .expect("the sweep closes it")
            .unwrap();
        assert_eq!(c.h1.as_ref().unwrap().slot(0).by_endpoint.len(), 0);
    }

    /// hyper's request channel (vendored patch 9): a request handed to a connection that ends
    /// before writing it comes back in the error, and one handed to a connection already gone
    /// comes back at once. (The pool sends such a request again on another connection.)
    #[tokio::test]
    async fn a_request_a_connection_never_wrote_is_given_back() {
        let (client_io, _server_io) = tokio::io::duplex(1024);
        let (mut send, conn) =
            http1::handshake::<_, Body>(hyper_util::rt::TokioIo::new(client_io)).await.unwrap();
        let req = |path: &str| Request::get(path).body(crate::body::empty()).unwrap();
        let answer = send.try_send(req("/first")).expect("a new connection takes its first request");
        // The connection goes before it was ever run: the request is still queued.
        drop(conn);
        let answered = tokio::time::timeout(Duration::from_secs(10), answer).await;
        let mut err = answered.expect("answered").expect_err("the connection is gone");
        let back = err.take_message().expect("the request is given back");
        assert_eq!(back.uri(), "/first");
        let again = send.try_send(req("/second")).expect_err("nothing takes requests any more");
        assert_eq!(again.uri(), "/second");
    }

    #[tokio::test]
    async fn a_request_goes_out_in_origin_form_to_the_endpoint_it_is_sent_to() {
        // An upstream that answers with the request line it read.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        let line = buf[..n].split(|b| *b == b'\r').next().unwrap().to_vec();
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", line.len());
                        let _ = s.write_all(&[head.as_bytes(), &line].concat()).await;
                    }
                });
            }
        });
        let c = client();
        // Absolute form as an HTTP/2 client's request has it, with another authority: the
        // endpoint given to `send` is where it goes, and the target is the path and query.
        for (target, addressed) in
            [("http://elsewhere.example:1/a/b?c=d", true), ("http://h.example/", false)]
        {
            let mut req = Request::get(target).body(crate::body::empty()).unwrap();
            if addressed {
                c.address(&mut req, &addr.parse().unwrap());
            }
            let res = c.send(&addr, req).await.expect("the exchange succeeds");
            let line = res.into_body().collect().await.unwrap().to_bytes();
            let want: &[u8] = if addressed { b"GET /a/b?c=d HTTP/1.1" } else { b"GET / HTTP/1.1" };
            assert_eq!(&line[..], want);
        }
    }
}
