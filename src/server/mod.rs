//! Listeners: the accept loop (bounded by `max_connections`), one task per connection serving
//! HTTP/1.1 and h2c on the same port with hyper-util's auto builder, the `[limits]` timeouts,
//! and graceful drain (stop accepting, let in-flight requests finish).
//!
//! On a TLS listener each connection's task first runs the handshake (bounded by
//! `header_read_timeout`; a failure closes only that connection), then ALPN picks the
//! protocol: `h2` serves HTTP/2 only, `http/1.1` HTTP/1.1 only, no ALPN either (auto).

pub mod conn;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Limits, ListenerConfig};
use crate::metrics::{ListenerLabel, Name};
use crate::tls;
use conn::{ConnState, Verdict, Watched};
use service::{GatewayService, Shared};

/// The kernel's accept queue per socket (NGINX's default on Linux is 511; we allow bursts).
const BACKLOG: i32 = 1024;

/// Bind a listener's address `copies` times (one socket per serving thread, spread by the
/// kernel with `SO_REUSEPORT`), or say plainly why not.
///
/// With several copies the port is first bound once without `SO_REUSEPORT`: otherwise a second
/// gateway started by mistake on the same port would silently share it instead of failing.
pub fn bind(cfg: &ListenerConfig, copies: usize) -> Result<Vec<std::net::TcpListener>, String> {
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
pub struct Listener {
    /// Its name.
    pub name: Name,
    /// The bound socket (registered with the runtime that serves it, in [`spawn`]).
    pub socket: std::net::TcpListener,
    /// Connection limits.
    pub limits: Arc<Limits>,
    /// The TLS side, for a listener with `[listener.tls]`.
    pub tls: Option<Arc<tls::Acceptor>>,
    /// `max_connections` permits, shared by every thread's copy of this listener.
    pub slots: Arc<Semaphore>,
}

impl Listener {
    /// The permits for `max_connections`, made once per listener and shared by its copies.
    pub fn slots(limits: &Limits) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(limits.max_connections.max(1)))
    }
}

/// A listener registered with the runtime that accepts on it.
struct Accepting {
    name: Name,
    socket: TcpListener,
    limits: Arc<Limits>,
    tls: Option<Arc<tls::Acceptor>>,
}

/// Accept connections until `shutdown`, serving each on a task tracked by `tracker`. Call it
/// from within the runtime that is to serve the listener.
pub fn spawn(listener: Listener, shared: Arc<Shared>, shutdown: CancellationToken, tracker: TaskTracker) {
    let socket = match TcpListener::from_std(listener.socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(listener = %listener.name, error = %e, "cannot register the listening socket");
            return;
        }
    };
    let slots = listener.slots;
    let listener = Accepting { name: listener.name, socket, limits: listener.limits, tls: listener.tls };
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
            let conn = Connection {
                name: Arc::clone(&listener.name),
                limits: Arc::clone(&listener.limits),
                shared: Arc::clone(&shared),
                builder: Arc::clone(&builder),
                shutdown: shutdown.clone(),
            };
            let tls = listener.tls.clone();
            tracker.spawn(async move {
                match tls {
                    None => conn.serve(stream, peer, Protocol::Auto, None).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(a) => {
                            let protocol = match a.h2 {
                                Some(true) => Protocol::Http2,
                                Some(false) => Protocol::Http1,
                                None => Protocol::Auto,
                            };
                            conn.serve(a.stream, peer, protocol, Some(a.client_cert)).await
                        }
                        Err(e) => tracing::debug!(listener = %conn.name, client = %peer, error = %e, "TLS handshake failed"),
                    },
                }
                drop(permit);
            });
        }
    });
}

/// Which protocol a connection speaks: both (plain listeners: HTTP/1.1 and h2c by preface,
/// or TLS without ALPN), or the one ALPN chose.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    Auto,
    Http1,
    Http2,
}

/// The connection builders, one per [`Protocol`], built once per listener.
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &Limits) -> Self {
        let auto = builder(limits);
        Builders { http1: auto.clone().http1_only(), http2: auto.clone().http2_only(), auto }
    }

    fn get(&self, p: Protocol) -> &auto::Builder<TokioExecutor> {
        match p {
            Protocol::Auto => &self.auto,
            Protocol::Http1 => &self.http1,
            Protocol::Http2 => &self.http2,
        }
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper's read buffer bounds the request head; past it hyper answers 431.
    let head = usize::try_from(limits.max_request_header_bytes).unwrap_or(usize::MAX).max(8192);
    // hyper's own header-read timer (30 s by default) also runs while a keep-alive connection
    // waits for its next request; `conn.rs` enforces header_read_timeout and idle_timeout
    // apart, so hyper's is turned off or it would cut every idle connection at 30 s.
    b.http1().timer(TokioTimer::new()).header_read_timeout(None).max_buf_size(head).keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX));
    b
}

struct Connection {
    name: Name,
    limits: Arc<Limits>,
    shared: Arc<Shared>,
    builder: Arc<Builders>,
    shutdown: CancellationToken,
}

impl Connection {
    /// Serve one connection. `client_cert` is `Some` on TLS connections (holding the
    /// `x-forwarded-client-cert` value when the client presented a certificate).
    async fn serve<I>(
        self,
        stream: I,
        peer: SocketAddr,
        protocol: Protocol,
        client_cert: Option<Option<http::HeaderValue>>,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let gauge = self
            .shared
            .metrics
            .connections_active
            .get_or_create_owned(&ListenerLabel { listener: Arc::clone(&self.name) });
        gauge.inc();
        let state = Arc::new(ConnState::default());
        let https = client_cert.is_some();
        let svc = GatewayService::new(
            Arc::clone(&self.shared),
            Arc::clone(&self.name),
            peer,
            https,
            Arc::clone(&state),
        )
        .with_client_cert(client_cert.flatten());
        let io = TokioIo::new(Watched::new(stream, Arc::clone(&state)));
        let conn = self.builder.get(protocol).serve_connection_with_upgrades(io, svc);
        tokio::pin!(conn);
        let mut draining = false;
        let mut closing = false;
        let mut next = tokio::time::Instant::now() + self.limits.header_read_timeout;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                _ = tokio::time::sleep_until(next) => {
                    match state.check(&self.limits) {
                        Verdict::WaitUntil(at) => next = at.into(),
                        Verdict::Abort => {
                            tracing::debug!(client = %peer, "request head not received in time; closing");
                            break;
                        }
                        Verdict::CloseIdle if closing => break,
                        Verdict::CloseIdle => {
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                            // Give the close a moment; an idle connection closes at once.
                            next = tokio::time::Instant::now() + self.limits.header_read_timeout;
                        }
                    }
                }
                _ = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
        gauge.dec();
    }
}
