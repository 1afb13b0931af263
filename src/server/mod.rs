//! Listeners: the accept loop (bounded by `max_connections`), one task per connection serving
//! HTTP/1.1 and h2c on the same port, the `[limits]` timeouts, and graceful drain (stop
//! accepting, let in-flight requests finish).
//!
//! A plain connection's protocol is told by peeking at its first bytes (the HTTP/2 preface or
//! not). On a TLS listener each connection's task first runs the handshake (bounded by
//! `header_read_timeout`; a failure closes only that connection), then ALPN picks the
//! protocol: `h2` serves HTTP/2 only, `http/1.1` HTTP/1.1 only, no ALPN either (decided from
//! the first bytes by hyper-util's auto reader).

pub mod canonical;
pub(crate) mod conn;
pub(crate) mod h3;
pub(crate) mod service;
mod streams;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use streams::StreamExecutor;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Limits, ListenerConfig};
use crate::context::TunnelCtx;
use crate::metrics::{ListenerLabel, Name};
use crate::tls;
use conn::{ConnState, SideEvents, Verdict, Watched};
use service::{GatewayService, Shared};

/// The kernel's accept queue per socket (NGINX's default on Linux is 511; we allow bursts).
const BACKLOG: i32 = 1024;

/// Bind `cfg`'s TCP sockets and, with `http3`, the UDP socket on the same port number.
///
/// With port 0 the kernel picks a free TCP port, but that number may be taken for UDP (by any
/// process's UDP socket): then the TCP sockets are dropped and a new port is picked, up to
/// [`PORT_ATTEMPTS`] times. A fixed port is tried once.
pub(crate) fn bind_listener(
    cfg: &ListenerConfig,
    copies: usize,
    http3: bool,
) -> Result<(Vec<std::net::TcpListener>, Option<std::net::UdpSocket>), String> {
    let attempts = if http3 && cfg.listen.port() == 0 { PORT_ATTEMPTS } else { 1 };
    let mut last = String::new();
    for _ in 0..attempts {
        let sockets = bind(cfg, copies)?;
        if !http3 {
            return Ok((sockets, None));
        }
        let addr = sockets[0].local_addr().map_err(|e| e.to_string())?;
        match h3::bind(addr) {
            Ok(udp) => return Ok((sockets, Some(udp))),
            Err(e) => last = format!("listener {:?}: cannot bind UDP {addr} for HTTP/3: {e}", cfg.name),
        }
    }
    Err(last)
}

/// How many ports a port-0 listener with HTTP/3 tries before it gives up: each try fails only
/// when the kernel's new TCP port is already a UDP port, which is rare.
const PORT_ATTEMPTS: usize = 8;

/// Bind a listener's address `copies` times (one socket per serving thread, spread by the
/// kernel with `SO_REUSEPORT`), or say plainly why not.
///
/// With several copies the port is first bound once without `SO_REUSEPORT`: otherwise a second
/// gateway started by mistake on the same port would silently share it instead of failing.
pub(crate) fn bind(cfg: &ListenerConfig, copies: usize) -> Result<Vec<std::net::TcpListener>, String> {
    let fail = |e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another process is using it: stop it, or change `listen` in gateway.toml)"
            }
            std::io::ErrorKind::PermissionDenied => {
                " (ports below 1024 need privileges: use a higher port or grant CAP_NET_BIND_SERVICE)"
            }
            _ => "",
        };
        format!("cannot listen on {} for listener {:?}: {e}{hint}", cfg.listen, cfg.name)
    };
    let copies = copies.max(1);
    if copies > 1 && cfg.listen.port() != 0 {
        drop(bind_one(cfg.listen, false).map_err(fail)?);
    }
    let first = bind_one(cfg.listen, copies > 1).map_err(fail)?;
    let addr = first.local_addr().map_err(fail)?;
    let mut all = vec![first];
    for _ in 1..copies {
        all.push(bind_one(addr, true).map_err(fail)?);
    }
    Ok(all)
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(SockProtocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Everything a listener needs to serve.
#[derive(Debug)]
pub(crate) struct Listener {
    /// Its name.
    pub name: Name,
    /// The bound socket (registered with the runtime that serves it, in [`spawn`]).
    pub socket: std::net::TcpListener,
    /// Connection limits.
    pub limits: Arc<Limits>,
    /// The TLS side, for a listener with `[listener.tls]`.
    pub tls: Option<Arc<tls::Acceptor>>,
    /// `max_connections` permits, shared by every thread's copy of this listener (and by its
    /// HTTP/3 side).
    pub slots: Arc<Semaphore>,
    /// `alt-svc` for every response, when the listener also serves HTTP/3.
    pub alt_svc: Option<http::HeaderValue>,
}

impl Listener {
    /// The permits for `max_connections`, made once per listener and shared by its copies.
    pub(crate) fn slots(limits: &Limits) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(limits.max_connections.max(1)))
    }
}

/// A listener registered with the runtime that accepts on it.
struct Accepting {
    name: Name,
    socket: TcpListener,
    limits: Arc<Limits>,
    tls: Option<Arc<tls::Acceptor>>,
    alt_svc: Option<http::HeaderValue>,
}

/// Accept connections until `shutdown`, serving each on a task tracked by `tracker`. Call it
/// from within the runtime that is to serve the listener.
pub(crate) fn spawn(
    listener: Listener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let socket = match TcpListener::from_std(listener.socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(listener = %listener.name, error = %e, "cannot register the listening socket");
            return;
        }
    };
    let slots = listener.slots;
    let listener = Accepting {
        name: listener.name,
        socket,
        limits: listener.limits,
        tls: listener.tls,
        alt_svc: listener.alt_svc,
    };
    let builder = Arc::new(Builders::new(&listener.limits));
    let t = tracker.clone();
    t.spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.socket.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(listener = %listener.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            // Over max_connections, the accepted connection waits unserved until one closes (and
            // this thread accepts no more meanwhile, so the rest wait in the kernel's backlog).
            // The permit is taken after accepting, not before: a thread idling in accept must
            // not hold a permit that another thread's connection is waiting for.
            let permit = tokio::select! {
                p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = shutdown.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            // From here to the close (or the end of a tunnel it turns into), the connection
            // holds its permit and counts in `switchyard_connections_active`.
            let hold = Arc::new(ConnHold::new(permit, gauge_of(&shared, &listener.name)));
            let conn = Connection {
                name: Arc::clone(&listener.name),
                limits: Arc::clone(&listener.limits),
                shared: Arc::clone(&shared),
                builder: Arc::clone(&builder),
                shutdown: shutdown.clone(),
                tracker: tracker.clone(),
                hold,
                alt_svc: listener.alt_svc.clone(),
            };
            let tls = listener.tls.clone();
            tracker.spawn(async move {
                // The first request head is due `header_read_timeout` after the accept, however
                // long the TLS handshake or the protocol sniffing took (`serve` checks from it).
                let state = Arc::new(ConnState::default());
                match tls {
                    None => match conn.sniff(&stream).await {
                        Some(protocol) => conn.serve(stream, peer, protocol, None, state).await,
                        None => tracing::debug!(client = %peer, "no request: the connection closed or sent nothing in time"),
                    },
                    // Boxed whole: a TLS session is large, and the task of every plain
                    // connection would otherwise be sized for it. (Awaited in this block, the
                    // handshake's result took 1.3 KiB in every state of the task, a plain
                    // connection's too: this future was 2 920 bytes, now 1 640.)
                    Some(acceptor) => Box::pin(conn.serve_tls(acceptor, stream, peer, state)).await,
                }
            });
        }
    });
}

/// Which protocol a connection speaks: the one ALPN chose or the first bytes showed, or not
/// known yet (TLS without ALPN, or the start of an h2c preface): hyper-util's auto reader then
/// decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Auto,
    Http1,
    Http2,
}

/// The HTTP/2 client preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol a plain connection speaks, from the first bytes it sent (`None`: it closed
/// without sending any).
fn classify(first: &[u8]) -> Option<Protocol> {
    match first.len() {
        0 => None,
        n if first != &H2_PREFACE[..n] => Some(Protocol::Http1),
        n if n == H2_PREFACE.len() => Some(Protocol::Http2),
        // Part of the preface so far: let hyper-util's reader wait for the rest.
        _ => Some(Protocol::Auto),
    }
}

/// The connection builders, built once per listener.
///
/// HTTP/1.1 and HTTP/2 connections are served by hyper's own builders rather than hyper-util's
/// auto builder: the auto reader reads the first 24 bytes itself and replays them, so hyper's
/// first read returns only those and its read buffer then doubles to 16 KiB for the life of
/// the connection. Deciding first (ALPN, or peeking at a plain connection's first bytes) keeps
/// every keep-alive connection at hyper's 8 KiB.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<StreamExecutor>,
    auto: auto::Builder<StreamExecutor>,
}

impl Builders {
    fn new(limits: &Limits) -> Self {
        // hyper's read buffer bounds the request head; past it hyper answers 431.
        let head = usize::try_from(limits.max_request_header_bytes).unwrap_or(usize::MAX).max(8192);
        let header_list = u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX);
        let streams = limits.http2_max_concurrent_streams;
        // hyper's own header-read timer (30 s by default) also runs while a keep-alive connection
        // waits for its next request; `conn.rs` enforces header_read_timeout and idle_timeout
        // apart, so hyper's is turned off or it would cut every idle connection at 30 s.
        let mut http1 = http1::Builder::new();
        http1.timer(TokioTimer::new()).header_read_timeout(None).max_buf_size(head).keep_alive(true);
        let mut http2 = http2::Builder::new(StreamExecutor);
        h2_bounds(&mut http2, streams, header_list);
        let mut auto = auto::Builder::new(StreamExecutor);
        auto.http1().timer(TokioTimer::new()).header_read_timeout(None).max_buf_size(head).keep_alive(true);
        let mut h2 = auto.http2();
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(streams)
            .max_header_list_size(header_list)
            .max_send_buf_size(H2_SEND_BUF)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
        Builders { http1, http2, auto }
    }
}

/// Per-stream send buffer of an HTTP/2 connection: what one stream may queue for a client
/// that does not grant flow-control window. hyper's default is about 400 KiB per stream, which
/// at 256 streams lets one connection pin 100 MiB; 64 KiB still fills a fast link's window.
const H2_SEND_BUF: usize = 64 * 1024;

/// Streams a client may open and reset before the server has accepted them, before the
/// connection is closed with GOAWAY: the Rapid Reset attack (CVE-2023-44487) opens and resets
/// streams in a loop. 20 is h2's default, set here on purpose so an upgrade cannot change it.
const H2_MAX_PENDING_RESETS: usize = 20;

/// Streams the server may reset because the client broke a rule (a malformed header block,
/// a flow-control error) before the connection is closed (RUSTSEC-2024-0003). hyper's default.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The HTTP/2 bounds every server connection gets: streams, header list (which also bounds a
/// CONTINUATION flood: h2 counts the decoded header block against it and refuses past it),
/// per-stream send buffer and reset-flood limits.
fn h2_bounds(b: &mut http2::Builder<StreamExecutor>, streams: u32, header_list: u32) {
    b.timer(TokioTimer::new())
        .max_concurrent_streams(streams)
        .max_header_list_size(header_list)
        .max_send_buf_size(H2_SEND_BUF)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
}

type Io<I> = TokioIo<Watched<I>>;

pin_project_lite::pin_project! {
    /// One connection being served by the protocol it speaks.
    #[project = ServedProj]
    enum Served<'a, I> {
        Http1 { #[pin] conn: http1::UpgradeableConnection<Io<I>, GatewayService> },
        // Rare or few (one per h2 client), so kept out of every HTTP/1 connection's task.
        Http2 { conn: Pin<Box<http2::Connection<Io<I>, GatewayService, StreamExecutor>>> },
        Auto { conn: Pin<Box<auto::UpgradeableConnection<'a, Io<I>, GatewayService, StreamExecutor>>> },
    }
}

impl<'a, I> Served<'a, I>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    fn new(builders: &'a Builders, protocol: Protocol, io: Io<I>, svc: GatewayService) -> Self {
        match protocol {
            Protocol::Http1 => {
                Served::Http1 { conn: builders.http1.serve_connection(io, svc).with_upgrades() }
            }
            Protocol::Http2 => Served::Http2 { conn: Box::pin(builders.http2.serve_connection(io, svc)) },
            Protocol::Auto => {
                Served::Auto { conn: Box::pin(builders.auto.serve_connection_with_upgrades(io, svc)) }
            }
        }
    }

    fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            ServedProj::Http1 { conn } => conn.graceful_shutdown(),
            ServedProj::Http2 { conn } => conn.as_mut().graceful_shutdown(),
            ServedProj::Auto { conn } => conn.as_mut().graceful_shutdown(),
        }
    }
}

impl<I> Future for Served<'_, I>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Output = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // What this poll does (read a request, forward it, write a response) reads the clock
        // once between all its parts.
        let _turn = crate::clock::turn();
        match self.project() {
            ServedProj::Http1 { conn } => conn.poll(cx).map_err(Into::into),
            ServedProj::Http2 { conn } => conn.as_mut().poll(cx).map_err(Into::into),
            ServedProj::Auto { conn } => conn.as_mut().poll(cx),
        }
    }
}

struct Connection {
    name: Name,
    limits: Arc<Limits>,
    shared: Arc<Shared>,
    builder: Arc<Builders>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    hold: Arc<ConnHold>,
    alt_svc: Option<http::HeaderValue>,
}

/// What an open client connection holds: its `max_connections` permit and its count in
/// `switchyard_connections_active`. Shared with a tunnel the connection turns into, so both
/// last until the tunnel closes.
struct ConnHold {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl ConnHold {
    fn new(permit: OwnedSemaphorePermit, gauge: Gauge) -> Self {
        gauge.inc();
        ConnHold { _permit: permit, gauge }
    }
}

impl Drop for ConnHold {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn gauge_of(shared: &Shared, listener: &Name) -> Gauge {
    shared.metrics.connections_active.get_or_create_owned(&ListenerLabel { listener: Arc::clone(listener) })
}

impl Connection {
    /// Which protocol a plain connection speaks, from its first bytes (peeked, so hyper still
    /// reads the whole request head in one go); `None` if it closed, or sent nothing within
    /// `header_read_timeout`, or the gateway is draining.
    async fn sniff(&self, stream: &TcpStream) -> Option<Protocol> {
        let mut first = [0u8; H2_PREFACE.len()];
        let peeked = tokio::select! {
            r = stream.peek(&mut first) => r,
            _ = tokio::time::sleep(self.limits.header_read_timeout) => return None,
            _ = self.shutdown.cancelled() => return None,
        };
        match peeked {
            Ok(n) => classify(&first[..n]),
            Err(_) => None,
        }
    }

    /// Run the TLS handshake, then serve the connection in the protocol ALPN chose.
    async fn serve_tls(
        self,
        acceptor: Arc<tls::Acceptor>,
        stream: TcpStream,
        peer: SocketAddr,
        state: Arc<ConnState>,
    ) {
        let tls::Accepted { stream, h2, client_cert } = match acceptor.accept(stream).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(listener = %self.name, client = %peer, error = %e, "TLS handshake failed");
                return;
            }
        };
        let protocol = match h2 {
            Some(true) => Protocol::Http2,
            Some(false) => Protocol::Http1,
            None => Protocol::Auto,
        };
        self.serve(stream, peer, protocol, Some(client_cert), state).await
    }

    /// Serve one connection. `client_cert` is `Some` on TLS connections (holding the
    /// `x-forwarded-client-cert` value when the client presented a certificate).
    async fn serve<I>(
        self,
        stream: I,
        peer: SocketAddr,
        protocol: Protocol,
        client_cert: Option<Option<http::HeaderValue>>,
        state: Arc<ConnState>,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let https = client_cert.is_some();
        let tunnel = Arc::new(TunnelCtx {
            hold: Arc::clone(&self.hold) as Arc<dyn std::any::Any + Send + Sync>,
            idle_timeout: self.limits.tunnel_idle_timeout,
            tracker: self.tracker.clone(),
            stop: self.shared.hard_stop.clone(),
        });
        let svc = GatewayService::new(
            Arc::clone(&self.shared),
            Arc::clone(&self.name),
            peer,
            https,
            Arc::clone(&state),
        )
        .with_client_cert(client_cert.flatten())
        .with_tunnel(tunnel)
        .with_alt_svc(self.alt_svc);
        let io = TokioIo::new(Watched::new(stream, Arc::clone(&state)));
        let conn = Served::new(&self.builder, protocol, io, svc);
        tokio::pin!(conn);
        let mut draining = false;
        let mut closing = false;
        // The first deadline counts from the accept (`state` was made then), not from here.
        let first = match state.check(&self.limits) {
            Verdict::WaitUntil(at) => at.into(),
            Verdict::Abort | Verdict::CloseIdle | Verdict::Stalled => tokio::time::Instant::now(),
        };
        let timer = tokio::time::sleep_until(first);
        let drain = self.shutdown.cancelled();
        let hard_stop = self.shared.hard_stop.cancelled();
        let nudged = state.nudged();
        tokio::pin!(timer, drain, hard_stop, nudged);
        // The timer, the drain and nudges wake the task through `side`, which notes that they
        // did: the task polls them only then, and otherwise just the connection.
        let side = SideEvents::new();
        let side_waker = Waker::from(Arc::clone(&side));
        // The timer the connection's requests take their deadlines from, one after another
        // (`stack::timeout::lend`).
        let mut timer_home = None;
        loop {
            let event = std::future::poll_fn(|cx| {
                let fired = side.take(cx.waker());
                let lending = crate::stack::timeout::lend(&mut timer_home);
                if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Event::Ended(r));
                }
                drop(lending);
                // A timer that fired at home: the connection sat idle past its last deadline.
                // It goes, so that a long-idle connection does not hold it (112 bytes).
                if timer_home.as_ref().is_some_and(|t| t.is_elapsed()) {
                    timer_home = None;
                }
                if !fired {
                    return Poll::Pending;
                }
                let mut side_cx = Context::from_waker(&side_waker);
                if timer.as_mut().poll(&mut side_cx).is_ready() {
                    return Poll::Ready(Event::Timer);
                }
                // Something falls due before the timer (idle, a next head, a stall): check now.
                if !closing && nudged.as_mut().poll(&mut side_cx).is_ready() {
                    return Poll::Ready(Event::Nudged);
                }
                if !draining && drain.as_mut().poll(&mut side_cx).is_ready() {
                    return Poll::Ready(Event::Drain);
                }
                // Only ever after the drain began: not polled on the request path before.
                if draining && hard_stop.as_mut().poll(&mut side_cx).is_ready() {
                    return Poll::Ready(Event::HardStop);
                }
                Poll::Pending
            })
            .await;
            // Whatever happened changes which side events matter, or when: look at them all.
            side.rearm();
            match event {
                Event::Ended(res) => {
                    if let Err(e) = res {
                        tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                Event::Timer => match state.check(&self.limits) {
                    Verdict::WaitUntil(at) => timer.as_mut().reset(at.into()),
                    v @ (Verdict::Abort | Verdict::Stalled) => {
                        tracing::debug!(client = %peer, "{}; closing", v.why_now());
                        break;
                    }
                    Verdict::CloseIdle if closing => break,
                    Verdict::CloseIdle => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        // Give the close a moment; an idle connection closes at once.
                        timer.as_mut().reset(tokio::time::Instant::now() + self.limits.header_read_timeout);
                    }
                },
                Event::Nudged => timer.as_mut().reset(tokio::time::Instant::now()),
                Event::Drain => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                Event::HardStop => {
                    tracing::debug!(client = %peer, "drain timeout: closing the connection");
                    break;
                }
            }
        }
    }
}

/// What woke a connection's task and needs handling.
enum Event<E> {
    /// The connection ended.
    Ended(Result<(), E>),
    /// The timer fell due: check the connection's deadlines.
    Timer,
    /// A deadline may have come nearer than the timer.
    Nudged,
    /// The drain began.
    Drain,
    /// The drain ran out of time.
    HardStop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_the_protocol() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"P"), Some(Protocol::Auto));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Some(Protocol::Auto));
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"POST /x HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
    }
}
