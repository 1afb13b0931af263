//! The upstream connector: hyper-util's `HttpConnector` (TCP, connect timeout, nodelay), with a
//! rustls handshake on top for upstreams that have `[upstream.tls]`. Any failure here,
//! the TLS handshake included (unknown CA, wrong name), is a connect error to hyper-util's
//! client, so it is classified as `ConnectFailed` (502 `connect_failed`) and retried
//! as a `connect-failure`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::Error;

/// Connects to an endpoint, over TLS when the upstream asks for it.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamConnector {
    http: HttpConnector,
    tls: Option<Tls>,
}

#[derive(Clone)]
struct Tls {
    connector: TlsConnector,
    /// `connect_timeout`: it bounds the TCP connect and the handshake together, so an upstream
    /// that accepts and never finishes the handshake cannot hold the request.
    timeout: std::time::Duration,
    /// `sni` from `[upstream.tls]`; else the endpoint's host.
    sni: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("sni", &self.sni).finish_non_exhaustive()
    }
}

impl UpstreamConnector {
    /// Plain TCP through `http` (which bounds the TCP connect), with TLS on top when `tls` is
    /// set; `timeout` then bounds the connect and the handshake together.
    pub(crate) fn new(
        http: HttpConnector,
        tls: Option<(Arc<rustls::ClientConfig>, Option<String>)>,
        timeout: std::time::Duration,
    ) -> Result<Self, String> {
        let tls = match tls {
            None => None,
            Some((cfg, sni)) => {
                let sni = match sni {
                    Some(s) => {
                        Some(ServerName::try_from(s.clone()).map_err(|e| format!("bad sni {s:?}: {e}"))?)
                    }
                    None => None,
                };
                Some(Tls { connector: TlsConnector::from(cfg), timeout, sni })
            }
        };
        Ok(UpstreamConnector { http, tls })
    }

    /// Whether connections are TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl tower::Service<Uri> for UpstreamConnector {
    type Response = UpstreamIo;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tcp = self.http.call(uri.clone());
        let tls = self.tls.clone();
        let Some(tls) = tls else {
            return Box::pin(async move { Ok(UpstreamIo::Plain(tcp.await?)) });
        };
        let timeout = tls.timeout;
        let connect = async move {
            let tcp = tcp.await?;
            let name = match tls.sni {
                Some(n) => n,
                None => {
                    let host = uri.host().unwrap_or_default();
                    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
                    ServerName::try_from(host.to_owned())
                        .map_err(|e| format!("cannot use {host:?} as the TLS server name: {e}"))?
                }
            };
            let stream = tls.connector.connect(name, tcp.into_inner()).await?;
            Ok::<_, Error>(UpstreamIo::Tls(Box::new(TokioIo::new(stream))))
        };
        Box::pin(async move {
            match tokio::time::timeout(timeout, connect).await {
                Ok(r) => r,
                Err(_) => Err(format!("TCP connect and TLS handshake took longer than {timeout:?}").into()),
            }
        })
    }
}

/// A connection to an upstream endpoint.
#[derive(Debug)]
pub(crate) enum UpstreamIo {
    /// Cleartext.
    Plain(TokioIo<TcpStream>),
    /// TLS (boxed: the rustls state is large).
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            UpstreamIo::Plain(s) => s.connected(),
            UpstreamIo::Tls(s) => {
                let (tcp, conn) = s.inner().get_ref();
                let c = tcp.connected();
                if conn.alpn_protocol() == Some(b"h2") {
                    c.negotiated_h2()
                } else {
                    c
                }
            }
        }
    }
}

impl Read for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }
}
