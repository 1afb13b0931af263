//! TLS termination with rustls (`[listener.tls]`, certs/README.md, XFCC) and the rustls client
//! configuration for TLS to upstreams (`[upstream.tls]`).
//!
//! - [`store`]: the certificates of one listener's `certs_dir`, loaded, checked, indexed by SNI
//!   name and swapped atomically on reload, keeping the last good version of each pair.
//! - [`resolver`]: rustls' `ResolvesServerCert` over the live set (exact, wildcard, default,
//!   single).
//! - [`Acceptor`]: the per-listener handshake: read the ClientHello first (tokio-rustls'
//!   `LazyConfigAcceptor`) so that an unknown SNI name is refused with the `unrecognized_name`
//!   alert that certs/README.md names (rustls' own resolver failure sends `access_denied`), then finish
//!   the handshake with the listener's current `ServerConfig`. The whole handshake is bounded by
//!   `header_read_timeout` (a client that connects and says nothing is a slowloris too), and
//!   counted in `switchyard_tls_handshakes_total{listener,result}`.
//! - The mTLS `client_ca` bundle is reloaded with the certificates. The verifier is part of the
//!   `ServerConfig`, so a changed bundle builds a new one, swapped in for the next handshake;
//!   a bundle that cannot be read or holds no usable CA keeps the serving one (the error shows
//!   in `tls_errors`), as a broken certificate pair does.
//! - [`client`]: the upstream side (webpki roots or a CA file, SNI override, insecure mode).
//!
//! TLS 1.2 and 1.3 only (rustls implements nothing older), ALPN `h2` then `http/1.1`; the ring
//! provider (no native build step). Sessions resume by TLS 1.3 tickets and a session cache.

pub(crate) mod client;
pub(crate) mod resolver;
pub(crate) mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderValue;
use quinn::crypto::rustls::QuicServerConfig;
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::config::{ConfigError, ListenerTls};
use crate::metrics::{HandshakeLabels, Metrics, Name};
pub(crate) use resolver::SniResolver;
pub(crate) use store::{CertStore, LoadedCert};

/// Session-cache entries (TLS 1.2 session ids, and TLS 1.3 when tickets are off): about
/// 200 bytes each, so this bounds the cache near 4 MiB, like NGINX's `ssl_session_cache
/// shared:SSL:4m` order of magnitude.
const SESSION_CACHE_ENTRIES: usize = 20_480;

/// The TLS alert record `fatal unrecognized_name` (RFC 6066 §3), written by hand because
/// rustls' acceptor has no way to send it: record type 21 (alert), legacy version 3.3,
/// length 2, level 2 (fatal), description 112.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 112];

/// The crypto provider: ring builds without cmake or clang.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read a PEM CA bundle into a root store.
pub(crate) fn roots(path: &Path) -> Result<RootCertStore, ConfigError> {
    roots_of(path, store::read_certs(path)?)
}

/// The root store of the certificates read from the CA bundle `path`.
fn roots_of(path: &Path, certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        let message = format!("bad CA bundle: none of its {ignored} certificates is a usable trust anchor");
        return Err(ConfigError { file: path.to_owned(), line: 1, column: 1, message });
    }
    Ok(roots)
}

// === impl Acceptor ===

/// The TLS side of one listener: its certificate store, client CA and rustls configuration.
#[derive(Debug)]
pub(crate) struct Acceptor {
    listener: Name,
    store: Arc<CertStore>,
    resolver: Arc<SniResolver>,
    client_ca: Option<ClientCa>,
    /// Replaced when the client CA changes; each handshake loads the current one.
    config: ArcSwap<ServerConfig>,
    /// The same for QUIC (HTTP/3), when the listener serves it: same resolver and client
    /// verifier, TLS 1.3 only, ALPN `h3`, no early data.
    quic: Option<QuicTls>,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

/// The QUIC side's TLS configuration (quinn's type has no `Debug`).
struct QuicTls(ArcSwap<QuicServerConfig>);

impl std::fmt::Debug for QuicTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuicTls")
    }
}

/// A listener's mTLS `client_ca` bundle, reloaded with its certificates.
#[derive(Debug)]
struct ClientCa {
    path: PathBuf,
    /// Also serialises reloads (file IO under it; never taken on the request path).
    state: Mutex<ClientCaState>,
}

#[derive(Debug)]
struct ClientCaState {
    /// The certificates of the bundle that is verifying clients now.
    serving: Vec<CertificateDer<'static>>,
    /// Why the last reload kept the serving bundle, and when.
    error: Option<(ConfigError, SystemTime)>,
}

/// A finished handshake.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The decrypted stream.
    pub stream: TlsStream<TcpStream>,
    /// Whether ALPN chose `h2` (`Some(false)`: `http/1.1`; `None`: the client offered no ALPN).
    pub h2: Option<bool>,
    /// `x-forwarded-client-cert` for the verified client certificate (mTLS listeners).
    pub client_cert: Option<HeaderValue>,
}

/// Why a handshake did not finish; logged at debug level (clients cause these).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// Not done within `header_read_timeout`.
    #[error("TLS handshake not finished within {0:?}")]
    Timeout(Duration),
    /// No certificate for the SNI name (and no default); `unrecognized_name` was sent.
    #[error("no certificate for server name {0:?}")]
    UnrecognizedName(Option<String>),
    /// Anything rustls or the socket reported (garbage, plain HTTP, bad client certificate).
    #[error("TLS handshake failed: {0}")]
    Io(#[from] std::io::Error),
}

impl Acceptor {
    /// Build a listener's TLS side: generate a development certificate if `certs_dir` holds
    /// none, load the certificates, and read `client_ca` for mTLS. Errors are fatal at start;
    /// later ones (in [`Acceptor::reload`]) keep what serves.
    pub(crate) fn new(
        listener: Name,
        cfg: &ListenerTls,
        metrics: Arc<Metrics>,
        handshake_timeout: Duration,
    ) -> Result<Self, String> {
        store::ensure_dev_cert(&cfg.certs_dir, cfg.client_ca.as_deref())?;
        let store =
            Arc::new(CertStore::open(cfg.certs_dir.clone(), cfg.client_ca.clone(), Arc::clone(&metrics)));
        if store.current().load().certs.is_empty() {
            return Err(format!(
                "listener {listener:?}: no usable certificate in {} (see the errors above)",
                cfg.certs_dir.display()
            ));
        }
        let resolver = Arc::new(SniResolver::new(Arc::clone(store.current()), cfg.default_cert.clone()));
        let (roots, client_ca) = match &cfg.client_ca {
            Some(path) => {
                let certs =
                    store::read_certs(path).map_err(|e| format!("listener {listener:?}: client_ca: {e}"))?;
                let roots = roots_of(path, certs.clone())
                    .map_err(|e| format!("listener {listener:?}: client_ca: {e}"))?;
                let state = ClientCaState { serving: certs, error: None };
                (Some(roots), Some(ClientCa { path: path.clone(), state: Mutex::new(state) }))
            }
            None => (None, None),
        };
        let what = match &cfg.client_ca {
            Some(path) => format!("listener {listener:?}: client_ca {}", path.display()),
            None => format!("listener {listener:?}"),
        };
        let config = server_config(&resolver, roots.clone()).map_err(|e| format!("{what}: {e}"))?;
        let quic = match cfg.http3 {
            true => Some(QuicTls(ArcSwap::new(
                quic_config(&resolver, roots).map_err(|e| format!("{what}: HTTP/3: {e}"))?,
            ))),
            false => None,
        };
        Ok(Acceptor {
            listener,
            store,
            resolver,
            client_ca,
            config: ArcSwap::from_pointee(config),
            quic,
            metrics,
            timeout: handshake_timeout,
        })
    }

    /// Reload the certificates and the client CA bundle (blocking file IO). What fails to
    /// load keeps what was serving; the errors are in [`Acceptor::errors`].
    pub(crate) fn reload(&self) {
        self.store.reload();
        self.reload_client_ca();
    }

    /// The problems of the last reload, each with the time it was seen.
    pub(crate) fn errors(&self) -> Vec<(ConfigError, Option<SystemTime>)> {
        let set = self.store.current().load_full();
        let mut errors: Vec<_> = set.errors.iter().map(|e| (e.clone(), set.loaded_at)).collect();
        if let Some(ca) = &self.client_ca {
            let state = ca.state.lock().unwrap_or_else(|p| p.into_inner());
            errors.extend(state.error.iter().map(|(e, at)| (e.clone(), Some(*at))));
        }
        errors
    }

    /// Read `client_ca` again. A changed bundle builds a new `ServerConfig` for the next
    /// handshakes, with a new session cache and ticket key: a session made under the old
    /// trust anchors cannot be resumed past the change, its client has to be verified again.
    /// An unchanged bundle changes nothing (sessions resume as before).
    fn reload_client_ca(&self) {
        let Some(ca) = &self.client_ca else { return };
        let mut state = ca.state.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = store::read_certs(&ca.path).and_then(|certs| {
            if certs == state.serving {
                return Ok(None);
            }
            let roots = roots_of(&ca.path, certs.clone())?;
            let error = |message| ConfigError { file: ca.path.clone(), line: 1, column: 1, message };
            let config = server_config(&self.resolver, Some(roots.clone())).map_err(error)?;
            let quic = match self.quic {
                Some(_) => Some(quic_config(&self.resolver, Some(roots)).map_err(error)?),
                None => None,
            };
            Ok(Some((certs, config, quic)))
        });
        match loaded {
            Ok(None) => state.error = None,
            Ok(Some((certs, config, quic))) => {
                self.config.store(Arc::new(config));
                if let (Some(cell), Some(quic)) = (&self.quic, quic) {
                    cell.0.store(quic);
                }
                tracing::info!(
                    listener = %self.listener,
                    file = %ca.path.display(),
                    cas = certs.len(),
                    "client CA bundle reloaded"
                );
                *state = ClientCaState { serving: certs, error: None };
            }
            Err(mut e) => {
                e.message.push_str("; the client CA bundle loaded before keeps verifying clients");
                tracing::error!(listener = %self.listener, "{e}");
                state.error = Some((e, SystemTime::now()));
            }
        }
    }

    /// The TLS configuration of the listener's QUIC side, as it is now (`None` without
    /// `http3`): each new QUIC connection takes the current one, as TCP handshakes do.
    pub(crate) fn quic(&self) -> Option<Arc<QuicServerConfig>> {
        self.quic.as_ref().map(|q| q.0.load_full())
    }

    /// Count a QUIC handshake in `switchyard_tls_handshakes_total`, as TCP ones are.
    pub(crate) fn count_handshake(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.metrics
            .tls_handshakes
            .get_or_create(&HandshakeLabels { listener: Arc::clone(&self.listener), result })
            .inc();
    }

    /// Run the handshake on a freshly accepted connection.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> Result<Accepted, HandshakeError> {
        let r = self.handshake(tcp).await;
        self.count_handshake(r.is_ok());
        r
    }

    async fn handshake(&self, tcp: TcpStream) -> Result<Accepted, HandshakeError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timeout = || HandshakeError::Timeout(self.timeout);
        let lazy = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
        let mut start = tokio::time::timeout_at(deadline, lazy).await.map_err(|_| timeout())??;
        let sni = start.client_hello().server_name().map(str::to_owned);
        if !self.resolver.knows(sni.as_deref()) {
            // Best effort: the connection is closed either way.
            let _ = tokio::time::timeout_at(deadline, async {
                start.io.write_all(&UNRECOGNIZED_NAME_ALERT).await?;
                start.io.shutdown().await
            })
            .await;
            return Err(HandshakeError::UnrecognizedName(sni));
        }
        let stream = tokio::time::timeout_at(deadline, start.into_stream(self.config.load_full()))
            .await
            .map_err(|_| timeout())??;
        let conn = stream.get_ref().1;
        let h2 = conn.alpn_protocol().map(|p| p == b"h2");
        let client_cert =
            conn.peer_certificates().and_then(|c| c.first()).and_then(|leaf| xfcc(leaf.as_ref()));
        Ok(Accepted { stream, h2, client_cert })
    }
}

/// A listener's rustls configuration: TLS 1.3 and 1.2, certificates from `resolver`, client
/// certificates required and verified against `client_roots` when given, ALPN `h2` then
/// `http/1.1`, and its own session cache and ticket key.
fn server_config(
    resolver: &Arc<SniResolver>,
    client_roots: Option<RootCertStore>,
) -> Result<ServerConfig, String> {
    let mut config =
        rustls_config(resolver, client_roots, &[&rustls::version::TLS13, &rustls::version::TLS12])?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The QUIC side's rustls configuration: as [`server_config`], but TLS 1.3 only (QUIC has no
/// other), ALPN `h3`, and no early data (no 0-RTT: a replayed request could repeat a POST).
/// Checked here, because quinn finds a configuration it cannot use only at the first
/// connection, and panics then.
fn quic_config(
    resolver: &Arc<SniResolver>,
    client_roots: Option<RootCertStore>,
) -> Result<Arc<QuicServerConfig>, String> {
    let mut config = rustls_config(resolver, client_roots, &[&rustls::version::TLS13])?;
    config.alpn_protocols = vec![b"h3".to_vec()];
    config.max_early_data_size = 0;
    let config = Arc::new(config);
    rustls::quic::ServerConnection::new(Arc::clone(&config), rustls::quic::Version::V1, Vec::new())
        .map_err(|e| format!("QUIC TLS setup failed: {e}"))?;
    QuicServerConfig::try_from(config).map(Arc::new).map_err(|e| format!("QUIC TLS setup failed: {e}"))
}

/// What the TCP and QUIC configurations share: the provider, `versions`, the certificate
/// resolver, client verification, the session cache and the ticket key.
fn rustls_config(
    resolver: &Arc<SniResolver>,
    client_roots: Option<RootCertStore>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = match client_roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("client certificate verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::clone(resolver) as _);
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS ticketer: {e}"))?;
    Ok(config)
}

// === x-forwarded-client-cert ===

/// Envoy's XFCC form for a client leaf certificate (DER):
/// `Hash=<sha256 hex>;Subject="<RFC 4514 subject DN>"`.
pub(crate) fn xfcc(der: &[u8]) -> Option<HeaderValue> {
    let hash = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let subject = x509_parser::parse_x509_certificate(der).ok().map(|(_, c)| rfc4514(c.subject()));
    let mut v = format!("Hash={hex}");
    if let Some(s) = subject {
        v.push_str(";Subject=\"");
        v.push_str(&s);
        v.push('"');
    }
    // A UTF-8 subject is sent as obs-text bytes, as Envoy does.
    HeaderValue::from_bytes(v.as_bytes()).ok()
}

/// A distinguished name as RFC 4514 writes it: the last RDN first, `,` between RDNs, `+`
/// inside one, special characters escaped.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let key = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                        .map(str::to_owned)
                        .unwrap_or_else(|_| attr.attr_type().to_id_string());
                    let value = match attr.as_str() {
                        Ok(s) => escape_dn_value(s),
                        Err(_) => {
                            let raw: String =
                                attr.attr_value().data.iter().map(|b| format!("{b:02x}")).collect();
                            format!("#{raw}")
                        }
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_dn_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i + 1 == s.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        if c.is_control() {
            out.push_str(&format!("\\{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

// === impl Stores ===

/// Every TLS listener's certificates and client CA, reloaded together: on a change under a
/// `certs_dir` or to a `client_ca` file (debounced), on SIGHUP and on
/// `POST /reload`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stores(pub Vec<Arc<Acceptor>>);

impl Stores {
    /// Reload every listener's TLS files (blocking file IO: call from `spawn_blocking`).
    pub(crate) fn reload(&self) {
        for a in &self.0 {
            a.reload();
        }
    }

    /// The problems of the last reloads, with the time each was seen; `GET /config` shows
    /// them as `tls_errors` (a bad pair or bundle keeps what serves and does not fail a
    /// reload, so it is not `last_error`).
    pub(crate) fn errors(&self) -> Vec<(ConfigError, Option<SystemTime>)> {
        self.0.iter().flat_map(|a| a.errors()).collect()
    }

    /// Every loaded certificate, once per `certs_dir` (listeners may share one): the folder,
    /// and each pair's file stem, DNS names and notAfter (Unix seconds), for `GET /config`.
    pub(crate) fn certificates(&self) -> Vec<(PathBuf, Vec<LoadedCert>)> {
        let mut out: Vec<(PathBuf, Vec<LoadedCert>)> = Vec::new();
        for a in &self.0 {
            let dir = a.store.dir();
            if out.iter().any(|(d, _)| d == dir) {
                continue;
            }
            out.push((dir.to_path_buf(), a.store.current().load().certs.clone()));
        }
        out
    }

    /// Watch every `certs_dir` and `client_ca` file (which may live elsewhere) and reload on
    /// changes. `None` when there is nothing to watch or the watch failed (logged: SIGHUP and
    /// `POST /reload` still work).
    pub(crate) fn watch(&self) -> Option<crate::config::watch::FolderWatch> {
        if self.0.is_empty() {
            return None;
        }
        let mut dirs: Vec<&Path> = self.0.iter().map(|a| a.store.dir()).collect();
        dirs.sort();
        dirs.dedup();
        let mut files: Vec<&Path> =
            self.0.iter().filter_map(|a| a.client_ca.as_ref().map(|c| c.path.as_path())).collect();
        files.sort();
        files.dedup();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let w = match crate::config::watch::watch(&dirs, &files, tx) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the certificates folders; reload with SIGHUP or POST /reload");
                return None;
            }
        };
        let stores = self.clone();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                let s = stores.clone();
                let _ = tokio::task::spawn_blocking(move || s.reload()).await;
            }
        });
        Some(w)
    }
}

/// The CA bundles a route set names (`[upstream.tls] ca`, a consul discovery's `tls_ca`),
/// each one that cannot be used as an error: the gateway refuses a set whose bundles it cannot
/// read, so `check` and `routes publish` do too.
pub(crate) fn route_set_cas(set: &crate::config::RouteSet) -> Vec<ConfigError> {
    let consul_ca = |u: &crate::config::UpstreamConfig| match &u.discovery {
        crate::config::DiscoveryConfig::Consul { tls_ca, .. } => tls_ca.clone(),
        _ => None,
    };
    let upstream_ca = |u: &crate::config::UpstreamConfig| u.tls.as_ref()?.ca.clone();
    set.upstreams
        .iter()
        .flat_map(|u| [upstream_ca(u), consul_ca(u)])
        .flatten()
        .filter_map(|ca| roots(&ca).err())
        .collect()
}
