//! switchyard: an HTTP reverse-proxy gateway.
//!
//! It terminates client connections, matches each request against hot-reloaded routing rules,
//! and forwards it through a per-route tower stack to upstream endpoints. This file is the only
//! place that knows every module: it wires them into a running [`Gateway`].
//!
//! The library's API is [`Gateway`], [`run`], [`check`], [`config`] (load and validate
//! configuration) and [`echo`] (the test upstream). Everything else is crate-private, so the
//! compiler reports what is unused; [`internals`] re-exports what benches, fuzz targets and
//! integration tests drive directly. docs/architecture.md shows the module layers (imports run
//! one way, down them).

mod access_log;
mod admin;
mod backoff;
mod balance;
mod body;
mod clock;
pub mod config;
mod context;
mod discovery;
pub mod echo;
mod error;
mod fleet;
mod health;
mod metrics;
mod proxy;
mod reply;
mod resilience;
mod router;
mod server;
mod snapshot;
mod stack;
mod tls;
mod trace_context;

/// Internals for benches, fuzz targets and integration tests. Not a stable API: anything here
/// may change without notice.
#[doc(hidden)]
pub mod internals {
    pub use crate::access_log::AccessLog;
    pub use crate::balance::{Endpoint, EndpointSet, Phase, Upstream};
    pub use crate::body::{empty, full, Body};
    pub use crate::context::RequestInfo;
    pub use crate::discovery::consul::parse as parse_consul;
    pub use crate::discovery::zookeeper::{parse_curator, parse_hostport, parse_member, parse_serverset};
    pub use crate::discovery::{Adapter, Publisher, Registry, Target};
    pub use crate::error::Error;
    pub use crate::health::Health;
    pub use crate::metrics::Metrics;
    pub use crate::proxy::headers;
    pub use crate::router::Router;
    pub use crate::server::canonical;
    pub use crate::server::conn::ConnState;
    pub use crate::server::service::{GatewayService, Shared};
    pub use crate::snapshot::Snapshot;
    pub use crate::stack::ResponseHeaders;
    pub use crate::trace_context::{TraceContext, TraceId};

    /// Close the `GET /stats` bucket now, as the sampler does at each multiple of 10 s (a
    /// reading taken within the bucket the sampler last closed is added to it).
    pub fn tick_stats(gw: &crate::Gateway) {
        gw.admin_state.stats.tick_now();
    }
}

pub use fleet::commands::{
    publish as publish_routes, pull as pull_routes, status as fleet_status, CommandError, FleetStatus, Pulled,
};

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::admin::AdminState;
use crate::config::{ConfigErrors, GatewayConfig};
use crate::metrics::Metrics;
use crate::server::service::Shared;
use crate::snapshot::Reloader;

/// Everything `switchyard check` reports for the configuration at `path`, each with its file,
/// line and column: `gateway.toml`, every route file, the CA bundles upstreams name (the
/// gateway refuses a route set whose bundles it cannot read), and each TLS listener's
/// certificate pairs and `client_ca`. Empty when all is well.
pub fn check(path: &std::path::Path) -> Vec<config::ConfigError> {
    let gw = match config::load_gateway(path) {
        Ok(gw) => gw,
        Err(e) => return e.0,
    };
    let mut errors = Vec::new();
    let set = match &gw.routes_source {
        None => config::load_routes(&gw.routes_dir, gw.base_dir()),
        Some(_) => fleet::commands::published_set(&gw),
    };
    match set {
        Ok(set) => errors.extend(tls::route_set_cas(&set)),
        Err(e) => errors.extend(e.0),
    }
    for t in gw.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        errors.extend(tls::store::check(&t.certs_dir, t.client_ca.as_deref()));
    }
    errors
}

/// A fatal start-up problem, with a message that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The route files are invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// Anything else (a port in use, an unwritable log file).
    #[error("{0}")]
    Other(String),
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    listeners: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
    stop_accepting: CancellationToken,
    stop_admin: CancellationToken,
    tracker: TaskTracker,
    admin_state: Arc<AdminState>,
    access_log: AccessLog,
    drain_delay: Duration,
    drain_timeout: Duration,
    hard_stop: CancellationToken,
    /// The HTTP/3 endpoints, closed at the end of the drain.
    h3: Vec<quinn::Endpoint>,
    /// Fleet mode: the follower (stopped, and the member record removed, at the end of the
    /// drain) and its state.
    fleet: Option<(Arc<fleet::Fleet>, CancellationToken, tokio::task::JoinHandle<()>)>,
    _watch: Option<config::watch::FolderWatch>,
    certs: tls::Stores,
    _certs_watch: Option<config::watch::FolderWatch>,
}

impl Gateway {
    /// Load the routes, bind every listener and the admin API, and start serving.
    pub async fn start(cfg: GatewayConfig) -> Result<Gateway, StartError> {
        Self::start_with(cfg, 1).await
    }

    /// Like [`Gateway::start`], serving the listeners on `threads` threads: the calling runtime
    /// plus `threads - 1` threads of our own, each with a single-threaded runtime and its own
    /// copy of every listening socket (`SO_REUSEPORT`, so the kernel spreads connections).
    /// A connection then lives on one thread from accept to close, with no work stealing or
    /// cross-thread wake-ups on the request path (the design of NGINX workers and Pingora).
    pub async fn start_with(cfg: GatewayConfig, threads: usize) -> Result<Gateway, StartError> {
        proxy::reserve_pools(threads);
        let threads = threads.max(1);
        let metrics = Arc::new(Metrics::new());
        let routes_dir = cfg.routes_dir.clone();
        // Discovery sources are shared by every snapshot and started as upstreams need them.
        let registry = discovery::Registry::new(Arc::clone(&metrics));
        // Fleet mode: the published set (or routes_cache) instead of a folder.
        let (files, fleet) = match &cfg.routes_source {
            None => (snapshot::RouteFiles::Dir(routes_dir.clone()), None),
            Some(_) => {
                let start = fleet::start(&cfg, Arc::clone(&metrics)).await.map_err(StartError::Other)?;
                (start.files, Some((start.fleet, start.fresh)))
            }
        };
        let reloader = Arc::new(Reloader::new(
            files,
            cfg.base_dir().to_path_buf(),
            cfg.limits.clone(),
            Arc::clone(&metrics),
            registry,
        )?);
        let access_log = AccessLog::start(&cfg.access_log).map_err(|e| {
            StartError::Other(format!(
                "cannot open the access log {}: {e}",
                cfg.access_log.path.as_deref().map_or("-".into(), |p| p.display().to_string())
            ))
        })?;

        // Bind everything before serving anything, so a port in use fails the start cleanly.
        let mut bound = Vec::new();
        let mut certs = tls::Stores::default();
        for l in &cfg.listeners {
            // HTTP/3: UDP on the port the TCP side got (the same number, even for port 0).
            let http3 = l.tls.as_ref().is_some_and(|t| t.http3);
            let (sockets, udp) = server::bind_listener(l, threads, http3).map_err(StartError::Other)?;
            let acceptor = match &l.tls {
                Some(t) => {
                    let name = Arc::new(l.name.clone());
                    let timeout = cfg.limits.header_read_timeout;
                    let a = Arc::new(
                        tls::Acceptor::new(name, t, Arc::clone(&metrics), timeout)
                            .map_err(StartError::Other)?,
                    );
                    certs.0.push(Arc::clone(&a));
                    Some(a)
                }
                None => None,
            };
            bound.push((l, sockets, acceptor, udp));
        }
        let admin_socket = match cfg.admin {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                StartError::Other(format!(
                    "cannot listen on {addr} for the admin API: {e} (change [admin] listen)"
                ))
            })?),
            None => None,
        };

        let hard_stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            snapshot: Arc::clone(reloader.current()),
            metrics: Arc::clone(&metrics),
            access_log: access_log.clone(),
            empty: Arc::new(String::new()),
            unrouted: Default::default(),
            http: cfg.http,
            body_read_timeout: cfg.limits.body_read_timeout,
            max_header_bytes: cfg.limits.max_request_header_bytes,
            hard_stop: hard_stop.clone(),
        });
        let stop_accepting = CancellationToken::new();
        let stop_admin = CancellationToken::new();
        let tracker = TaskTracker::new();
        let limits = Arc::new(cfg.limits.clone());
        let mut listeners = Vec::new();
        // per_thread[i] holds thread i's copy of every listener.
        let mut per_thread: Vec<Vec<server::Listener>> = (0..threads).map(|_| Vec::new()).collect();
        let mut h3 = Vec::new();
        for (l, sockets, tls, udp) in bound {
            let addr = sockets[0].local_addr().map_err(|e| StartError::Other(e.to_string()))?;
            tracing::info!(listener = %l.name, %addr, threads, http3 = udp.is_some(), "listening");
            listeners.push((l.name.clone(), addr));
            let name = Arc::new(l.name.clone());
            // max_connections holds per listener, whichever thread accepted the connection
            // (and over TCP and QUIC together).
            let slots = server::Listener::slots(&limits);
            let mut alt_svc = None;
            if let (Some(udp), Some(acceptor)) = (udp, &tls) {
                let h3_listener = server::h3::H3Listener {
                    name: Arc::clone(&name),
                    limits: Arc::clone(&limits),
                    tls: Arc::clone(acceptor),
                    slots: Arc::clone(&slots),
                };
                // On this (the main) runtime, whatever the thread count: one endpoint per port.
                let ep = server::h3::spawn(
                    h3_listener,
                    udp,
                    Arc::clone(&shared),
                    stop_accepting.clone(),
                    tracker.clone(),
                )
                .map_err(StartError::Other)?;
                h3.push(ep);
                alt_svc = http::HeaderValue::try_from(format!("h3=\":{}\"; ma=86400", addr.port())).ok();
            }
            for (i, socket) in sockets.into_iter().enumerate() {
                per_thread[i].push(server::Listener {
                    name: Arc::clone(&name),
                    socket,
                    limits: Arc::clone(&limits),
                    tls: tls.clone(),
                    slots: Arc::clone(&slots),
                    alt_svc: alt_svc.clone(),
                });
            }
        }
        let mut per_thread = per_thread.into_iter();
        for l in per_thread.next().unwrap_or_default() {
            server::spawn(l, Arc::clone(&shared), stop_accepting.clone(), tracker.clone());
        }
        for (i, set) in per_thread.enumerate() {
            let (shared, stop, tracker) = (Arc::clone(&shared), stop_accepting.clone(), tracker.clone());
            std::thread::Builder::new()
                .name(format!("switchyard-worker-{}", i + 1))
                .spawn(move || serve_thread(i + 1, set, shared, stop, tracker))
                .map_err(|e| StartError::Other(format!("cannot start a worker thread: {e}")))?;
        }

        let stats = admin::stats::Stats::new(
            &metrics,
            Arc::downgrade(reloader.current()),
            Arc::new(std::time::SystemTime::now),
        );
        let admin_state = Arc::new(AdminState {
            reloader: Arc::clone(&reloader),
            metrics,
            draining: false.into(),
            certs: certs.clone(),
            token: cfg.admin_token.clone(),
            stats: Arc::new(stats),
            fleet: fleet.as_ref().map(|(f, _)| Arc::clone(f)),
        });
        let admin = match admin_socket {
            Some(s) => {
                let addr = s.local_addr().map_err(|e| StartError::Other(e.to_string()))?;
                tracing::info!(%addr, "admin API listening");
                admin::spawn(s, Arc::clone(&admin_state), stop_admin.clone());
                // Only `GET /stats` reads the buckets: without the admin API, no sampler.
                drop(admin::stats::spawn(Arc::clone(&admin_state.stats), stop_admin.clone()));
                Some(addr)
            }
            None => None,
        };

        let mut watch = None;
        let fleet = match fleet {
            Some((f, fresh)) => {
                f.set_addresses(&listeners, admin);
                let stop = CancellationToken::new();
                let cache = cfg.routes_cache.clone();
                let task = fleet::spawn(Arc::clone(&f), Arc::clone(&reloader), cache, fresh, stop.clone());
                Some((f, stop, task))
            }
            None => {
                watch = watch_routes(&routes_dir, &reloader);
                None
            }
        };

        Ok(Gateway {
            listeners,
            admin,
            stop_accepting,
            stop_admin,
            tracker,
            admin_state,
            access_log,
            h3,
            fleet,
            drain_delay: cfg.drain_delay,
            drain_timeout: cfg.drain_timeout,
            hard_stop,
            _watch: watch,
            _certs_watch: certs.watch(),
            certs,
        })
    }

    /// The bound address of the listener named `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Every listener's name and bound address.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// The admin API's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Reload routes and certificates now (as SIGHUP does). In fleet mode the routes are
    /// validated again and the source is read again.
    pub async fn reload(&self) -> Result<u64, ConfigErrors> {
        if let Some((f, _, _)) = &self.fleet {
            f.nudge.notify_one();
        }
        let r = Arc::clone(&self.admin_state.reloader);
        let certs = self.certs.clone();
        tokio::task::spawn_blocking(move || {
            certs.reload();
            r.reload()
        })
        .await
        .unwrap_or_else(|e| {
            Err(ConfigErrors(vec![config::ConfigError {
                file: Default::default(),
                line: 1,
                column: 1,
                message: e.to_string(),
            }]))
        })
    }

    /// Reopen the access log file (SIGUSR1).
    pub fn reopen_access_log(&self) {
        self.access_log.reopen();
    }

    /// Drain: `/ready` says 503 at once; the listeners keep accepting and serving for
    /// `drain_delay` (time for load balancers to notice and stop sending); then they stop
    /// accepting and in-flight requests get up to `drain_timeout`. Returns whether everything
    /// finished in time.
    pub async fn drain(self) -> bool {
        self.admin_state.draining.store(true, Ordering::Relaxed);
        if !self.drain_delay.is_zero() {
            tracing::info!(delay = ?self.drain_delay, "/ready says 503; still accepting until the drain delay ends");
            tokio::time::sleep(self.drain_delay).await;
        }
        self.stop_accepting.cancel();
        self.tracker.close();
        let clean = tokio::time::timeout(self.drain_timeout, self.tracker.wait()).await.is_ok();
        if !clean {
            tracing::warn!(timeout = ?self.drain_timeout, "drain timeout reached; closing remaining connections");
            // Connections and tunnels still open close now (each task ends at once).
            self.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await;
        }
        for ep in &self.h3 {
            ep.close(quinn::VarInt::from_u32(0x100), b"");
            let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
        }
        if let Some((_, stop, task)) = self.fleet {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
        self.stop_admin.cancel();
        // Every request has ended: its access log line is queued. Wait (bounded) until the
        // writer has it on disk, so that exiting now loses no line.
        let log = self.access_log.clone();
        let flushed =
            tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(2))).await.unwrap_or(false);
        if !flushed {
            tracing::warn!("access log lines were still queued after 2 s; some may be lost at exit");
        }
        clean
    }
}

/// Reload on every change under `routes_dir` (debounced by the watcher).
fn watch_routes(dir: &std::path::Path, reloader: &Arc<Reloader>) -> Option<config::watch::FolderWatch> {
    let (tx, mut rx) = mpsc::channel(1);
    let watch = match config::watch::watch(&[dir], &[], tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the routes folder; reload with SIGHUP or POST /reload");
            None
        }
    };
    let r = Arc::clone(reloader);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            let r = Arc::clone(&r);
            let _ = tokio::task::spawn_blocking(move || r.reload()).await;
        }
    });
    watch
}

/// One extra serving thread: a single-threaded runtime accepting on its copies of the listening
/// sockets until draining ends.
fn serve_thread(
    index: usize,
    listeners: Vec<server::Listener>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    proxy::set_worker(index);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a worker runtime; this thread will not serve");
            return;
        }
    };
    rt.block_on(async move {
        for l in listeners {
            server::spawn(l, Arc::clone(&shared), stop.clone(), tracker.clone());
        }
        stop.cancelled().await;
        // Keep serving this thread's connections until the drain is over.
        tracker.wait().await;
    });
}

/// The number of serving threads: `SWITCHYARD_WORKER_THREADS`, else one per CPU.
pub fn serving_threads() -> usize {
    std::env::var("SWITCHYARD_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The open-file limit before and after [`raise_open_file_limit`].
#[derive(Debug)]
struct FileLimit {
    was: u64,
    now: u64,
    hard: u64,
    error: Option<String>,
}

/// Raise the soft open-file limit to the hard one, as HAProxy does at start: the soft limit is
/// often 1 024 while `max_connections` defaults to 10 000 per listener, and each proxied
/// request needs a second descriptor upstream.
fn raise_open_file_limit() -> Option<FileLimit> {
    use rlimit::Resource;
    let (soft, hard) = Resource::NOFILE.get().ok()?;
    let mut limit = FileLimit { was: soft, now: soft, hard, error: None };
    if soft < hard {
        match Resource::NOFILE.set(hard, hard) {
            Ok(()) => limit.now = hard,
            Err(e) => limit.error = Some(e.to_string()),
        }
    }
    Some(limit)
}

/// Log both limits, with a warning when even the raised one is below `wanted` (two
/// descriptors per connection the listeners may hold: client and upstream).
fn log_file_limit(limit: Option<&FileLimit>, wanted: u64) {
    let Some(l) = limit else {
        tracing::warn!("cannot read the open-file limit");
        return;
    };
    tracing::info!(was = l.was, now = l.now, hard = l.hard, "open-file limit");
    if let Some(e) = &l.error {
        tracing::warn!(error = %e, "cannot raise the open-file soft limit");
    }
    if l.now < wanted {
        tracing::warn!(
            limit = l.now,
            wanted,
            "the open-file limit is below 2 x max_connections per listener; raise the hard limit \
             (LimitNOFILE= in systemd, ulimit -Hn) or lower [limits] max_connections"
        );
    }
}

/// Run until SIGTERM/SIGINT, reloading on SIGHUP and reopening the access log on SIGUSR1.
pub async fn run(cfg: GatewayConfig) -> Result<(), StartError> {
    use tokio::signal::unix::{signal, SignalKind};
    let sig = |k| signal(k).map_err(|e| StartError::Other(format!("cannot install a signal handler: {e}")));
    let (mut term, mut int, mut hup, mut usr1) = (
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
        sig(SignalKind::hangup())?,
        sig(SignalKind::user_defined1())?,
    );
    let files = raise_open_file_limit();
    let wanted = cfg.listeners.len() as u64 * cfg.limits.max_connections as u64 * 2 + 256;
    let gw = Gateway::start_with(cfg, serving_threads()).await?;
    // Logged once the start succeeded, so a failed start prints only its cause.
    log_file_limit(files.as_ref(), wanted);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading routes and certificates");
                let _ = gw.reload().await;
            }
            _ = usr1.recv() => gw.reopen_access_log(),
        }
    }
    tracing::info!("draining");
    gw.drain().await;
    tracing::info!("stopped");
    Ok(())
}
