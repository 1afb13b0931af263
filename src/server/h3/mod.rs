//! HTTP/3 (RFC 9114) over QUIC, on the port number of a TLS listener with `http3 = true`, over
//! UDP: quinn for QUIC, h3 for HTTP/3, and behind them the same [`GatewayService`] as HTTP/1.1
//! and HTTP/2, so routes, the stack, limits, metrics and the access log are the same whichever
//! protocol brought a request.
//!
//! - **TLS**: the listener's certificate resolver (SNI, hot reload) and client verification
//!   ([`tls::Acceptor::quic`]), TLS 1.3, ALPN `h3`, no 0-RTT.
//! - **Limits**: a QUIC connection takes one of the listener's `max_connections` permits and
//!   counts in `switchyard_connections_active`, as a TCP one does. At the cap it is refused
//!   (QUIC cannot wait in a backlog; the client falls back to TCP, which waits). The TLS
//!   handshake and the first request head are due within `header_read_timeout` of the first
//!   packet, each later head within `header_read_timeout` of its stream; a connection with no
//!   request for `idle_timeout` gets GOAWAY and closes; one whose client takes no response byte
//!   for `send_timeout` is closed ([`ConnState`], as for HTTP/2).
//! - **Drain**: GOAWAY, requests in flight finish, the connection closes when they have, or at
//!   `drain_timeout`.

mod body;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h3::error::Code;
use h3::server::RequestResolver;
use hyper::service::Service as _;
use quinn::crypto::rustls::QuicServerConfig;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{ConnState, Verdict};
use super::service::{GatewayService, Shared};
use super::{gauge_of, ConnHold};
use crate::config::Limits;
use crate::metrics::Name;
use crate::tls;
use body::H3Body;

/// UDP receive and send buffers asked of the kernel (it grants at most `net.core.rmem_max` and
/// `wmem_max`): a burst of QUIC packets must not be dropped while the endpoint is busy.
const UDP_BUFFER: usize = 4 << 20;
/// Unidirectional streams a client may open: its control stream, the two QPACK streams, and
/// room for grease.
const UNI_STREAMS: u32 = 16;
/// QUIC PINGs on a connection: a request waiting long on a slow upstream sends no packet, and
/// QUIC's idle timer would otherwise drop the connection under it.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// QUIC's idle timeout: how long a peer that stopped answering (even PINGs) is kept. Idle
/// connections are closed by `idle_timeout` (GOAWAY) before that matters.
const DEAD_PEER: Duration = Duration::from_secs(30);
/// Request body bytes in flight per stream, and per connection (quinn's default per connection
/// is unbounded).
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;
/// Response bytes quinn buffers per connection.
const SEND_WINDOW: u64 = 4 << 20;
/// Connection attempts quinn holds before they are accepted or refused.
const MAX_INCOMING: usize = 4096;
/// How long a closing connection waits for the client to acknowledge the close, so that its
/// last response is not cut.
const LINGER: Duration = Duration::from_millis(250);

/// The HTTP/3 side of a TLS listener.
#[derive(Debug)]
pub(crate) struct H3Listener {
    /// The listener's name.
    pub name: Name,
    /// Its limits.
    pub limits: Arc<Limits>,
    /// Its TLS side (certificates, client CA).
    pub tls: Arc<tls::Acceptor>,
    /// Its `max_connections` permits, shared with its TCP side.
    pub slots: Arc<Semaphore>,
}

/// A UDP socket on `addr` (the TCP listener's bound address, so the port number is the same)
/// with [`UDP_BUFFER`]-sized buffers when the kernel allows.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    s.bind(&addr.into())?;
    // Linux reports twice what it granted.
    if s.recv_buffer_size().unwrap_or(0) / 2 < UDP_BUFFER {
        tracing::info!(
            %addr,
            wanted = UDP_BUFFER,
            "the kernel granted a smaller UDP receive buffer; raise net.core.rmem_max for HTTP/3 under load"
        );
    }
    let socket: std::net::UdpSocket = s.into();
    // quinn batches datagrams with GSO (send) and GRO (receive) where the kernel has them.
    if let Ok(st) = quinn::udp::UdpSocketState::new((&socket).into()) {
        tracing::debug!(%addr, gso_segments = st.max_gso_segments(), gro_segments = st.gro_segments(), "HTTP/3 UDP socket");
    }
    Ok(socket)
}

/// The QUIC transport settings of a listener with `limits`.
fn transport(limits: &Limits) -> Result<quinn::TransportConfig, String> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.http2_max_concurrent_streams.max(1)))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(UNI_STREAMS))
        .max_idle_timeout(Some(quinn::IdleTimeout::try_from(DEAD_PEER).map_err(|e| e.to_string())?))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW))
        .receive_window(quinn::VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(SEND_WINDOW);
    Ok(t)
}

fn server_config(
    crypto: Arc<QuicServerConfig>,
    transport: &Arc<quinn::TransportConfig>,
) -> quinn::ServerConfig {
    let mut cfg = quinn::ServerConfig::with_crypto(crypto);
    cfg.transport_config(Arc::clone(transport)).max_incoming(MAX_INCOMING);
    cfg
}

/// Serve HTTP/3 on `socket` until `shutdown` (then refuse new connections while those open
/// drain). Call from within the runtime that is to serve it. The endpoint is returned for the
/// drain to close at its end.
pub(crate) fn spawn(
    listener: H3Listener,
    socket: std::net::UdpSocket,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> Result<quinn::Endpoint, String> {
    let name = &listener.name;
    let transport =
        Arc::new(transport(&listener.limits).map_err(|e| format!("listener {name:?}: HTTP/3: {e}"))?);
    let crypto =
        listener.tls.quic().ok_or_else(|| format!("listener {name:?}: HTTP/3 without its TLS side"))?;
    let initial = server_config(Arc::clone(&crypto), &transport);
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(initial),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| format!("listener {name:?}: HTTP/3: {e}"))?;
    let ep = endpoint.clone();
    tracker.clone().spawn(async move {
        // The configuration built for the current TLS side (a new client CA makes a new one).
        let mut current = (Arc::clone(&crypto), Arc::new(server_config(crypto, &transport)));
        loop {
            let incoming = tokio::select! {
                i = ep.accept() => match i { Some(i) => i, None => return },
                _ = shutdown.cancelled() => break,
            };
            let Ok(permit) = Arc::clone(&listener.slots).try_acquire_owned() else {
                incoming.refuse();
                continue;
            };
            let Some(crypto) = listener.tls.quic() else { return };
            if !Arc::ptr_eq(&crypto, &current.0) {
                current = (Arc::clone(&crypto), Arc::new(server_config(crypto, &transport)));
            }
            let peer = incoming.remote_address();
            // From the first packet: the handshake and the first request head are due within
            // header_read_timeout of it (`serve_connection`).
            let state = Arc::new(ConnState::default());
            let connecting = match incoming.accept_with(Arc::clone(&current.1)) {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(client = %peer, error = %e, "QUIC connection refused");
                    continue;
                }
            };
            let hold = ConnHold::new(permit, gauge_of(&shared, &listener.name));
            let conn = Conn {
                name: Arc::clone(&listener.name),
                limits: Arc::clone(&listener.limits),
                tls: Arc::clone(&listener.tls),
                shared: Arc::clone(&shared),
                shutdown: shutdown.clone(),
                _hold: hold,
            };
            tracker.spawn(conn.serve(connecting, peer, state));
        }
        // Draining: new connections are refused (fast, rather than left to time out) until the
        // drain closes the endpoint.
        tokio::spawn(async move {
            while let Some(i) = ep.accept().await {
                i.refuse();
            }
        });
    });
    Ok(endpoint)
}

/// One QUIC connection and what it holds.
struct Conn {
    name: Name,
    limits: Arc<Limits>,
    tls: Arc<tls::Acceptor>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    /// Its `max_connections` permit and its count in `switchyard_connections_active`.
    _hold: ConnHold,
}

impl Conn {
    /// Finish the handshake, then serve HTTP/3 requests until the client closes, the
    /// connection idles out or stalls, or the drain ends it.
    async fn serve(self, connecting: quinn::Connecting, peer: SocketAddr, state: Arc<ConnState>) {
        let limits = Arc::clone(&self.limits);
        let deadline = tokio::time::Instant::now() + limits.header_read_timeout;
        let quic = match tokio::time::timeout_at(deadline, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.tls.count_handshake(false);
                tracing::debug!(listener = %self.name, client = %peer, error = %e, "QUIC handshake failed");
                return;
            }
            Err(_) => {
                self.tls.count_handshake(false);
                tracing::debug!(listener = %self.name, client = %peer, "QUIC handshake timed out");
                return;
            }
        };
        self.tls.count_handshake(true);
        let xfcc = quic
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>().ok())
            .and_then(|certs| certs.first().and_then(|leaf| tls::xfcc(leaf.as_ref())));
        let svc = GatewayService::new(
            Arc::clone(&self.shared),
            Arc::clone(&self.name),
            peer,
            true,
            Arc::clone(&state),
        )
        .with_client_cert(xfcc);
        let mut builder = h3::server::builder();
        builder.max_field_section_size(limits.max_request_header_bytes);
        // Boxed: the setup's future (4 KiB) would otherwise size this one, and so every
        // HTTP/3 connection's task, for as long as the connection lasts.
        let built = Box::pin(builder.build::<_, Bytes>(h3_quinn::Connection::new(quic.clone())));
        let mut h3 = match tokio::time::timeout_at(deadline, built).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                tracing::debug!(client = %peer, error = %e, "HTTP/3 connection setup failed");
                return;
            }
            Err(_) => return,
        };
        let requests = TaskTracker::new();
        let mut goaway = false;
        let mut draining = false;
        let mut closing = false;
        let mut next = match state.check(&limits) {
            Verdict::WaitUntil(at) => at.into(),
            _ => tokio::time::Instant::now(),
        };
        loop {
            tokio::select! {
                r = h3.accept() => match r {
                    Ok(Some(resolver)) if goaway => { requests.spawn(reject(resolver, limits.header_read_timeout)); }
                    Ok(Some(resolver)) => {
                        requests.spawn(serve_request(resolver, svc.clone(), limits.header_read_timeout));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if !e.is_h3_no_error() {
                            tracing::debug!(client = %peer, error = %e, "HTTP/3 connection ended with an error");
                        }
                        break;
                    }
                },
                _ = tokio::time::sleep_until(next) => match state.check(&limits) {
                    Verdict::WaitUntil(at) => next = at.into(),
                    v @ (Verdict::Abort | Verdict::Stalled) => {
                        tracing::debug!(client = %peer, "{}; closing", v.why_now());
                        break;
                    }
                    Verdict::CloseIdle if closing => break,
                    Verdict::CloseIdle => {
                        closing = true;
                        if !goaway {
                            goaway = true;
                            requests.close();
                            let _ = h3.shutdown(1).await;
                        }
                        next = tokio::time::Instant::now() + limits.header_read_timeout;
                    }
                },
                () = state.nudged(), if !closing => next = tokio::time::Instant::now(),
                _ = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    if !goaway {
                        goaway = true;
                        requests.close();
                        // GOAWAY naming the next stream: every request accepted so far is
                        // processed (0 would tell the client the last one was not, and it
                        // might send it again).
                        let _ = h3.shutdown(1).await;
                    }
                }
                // Only ever after the drain began.
                _ = self.shared.hard_stop.cancelled(), if draining => {
                    tracing::debug!(client = %peer, "drain timeout: closing the HTTP/3 connection");
                    break;
                }
                // After GOAWAY, once every accepted request has ended.
                () = requests.wait(), if goaway => break,
            }
        }
        drop(h3);
        quic.close(quinn::VarInt::from_u32(0x100), b"");
        let _ = tokio::time::timeout(LINGER, quic.closed()).await;
    }
}

/// Read one request's head (within `head_timeout`), hand the request to the gateway's service,
/// and write the response out.
async fn serve_request(
    resolver: RequestResolver<h3_quinn::Connection, Bytes>,
    svc: GatewayService,
    head_timeout: Duration,
) {
    let (req, stream) = match tokio::time::timeout(head_timeout, resolver.resolve_request()).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "HTTP/3 request refused");
            return;
        }
        Err(_) => {
            tracing::debug!("HTTP/3 request head not received in time");
            return;
        }
    };
    if connection_specific(req.headers()) {
        // RFC 9114 §4.2: such a request is malformed; the stream is reset, not answered.
        tracing::debug!("HTTP/3 request with a connection-specific header field refused");
        let mut stream = stream;
        stream.stop_stream(Code::H3_MESSAGE_ERROR);
        return;
    }
    let (send, recv) = stream.split();
    let body = H3Body::new(recv, req.headers());
    let req = req.map(|()| body);
    let Ok(res) = svc.call(req).await;
    if let Err(e) = body::send_response(send, res).await {
        tracing::debug!(error = %e, "HTTP/3 response not sent whole");
    }
}

/// Whether `headers` hold a field that only HTTP/1.1 has (`connection` and the fields it names
/// by custom, `transfer-encoding`, `upgrade`), or `te` other than `trailers`: RFC 9114 §4.2
/// makes such a request malformed (h3 does not check it).
fn connection_specific(headers: &http::HeaderMap) -> bool {
    use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
    const OTHERS: [&str; 2] = ["keep-alive", "proxy-connection"];
    [CONNECTION, TRANSFER_ENCODING, UPGRADE].iter().any(|h| headers.contains_key(h))
        || OTHERS.iter().any(|h| headers.contains_key(*h))
        || headers.get_all(TE).iter().any(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
}

/// A request that arrived after this side's GOAWAY: rejected unprocessed, so the client can
/// send it again on a new connection.
async fn reject(resolver: RequestResolver<h3_quinn::Connection, Bytes>, head_timeout: Duration) {
    if let Ok(Ok((_, mut stream))) = tokio::time::timeout(head_timeout, resolver.resolve_request()).await {
        stream.stop_stream(Code::H3_REQUEST_REJECTED);
    }
}
