//! The routing snapshot: everything a request needs, built from one validated [`RouteSet`] and
//! swapped in atomically (`ArcSwap`). In-flight requests hold the `Arc` of the snapshot they
//! started on, so a reload never disturbs them.
//!
//! The [`Reloader`] serialises reloads (file changes, SIGHUP, `POST /reload`): load and validate
//! the whole set, build a new snapshot reusing every upstream whose definition did not change
//! (endpoints, pools and state kept), swap, and keep the last error for `GET /config`.
//!
//! Each upstream is fed by a discovery [`Attachment`] held here, next to it: a reused upstream
//! keeps its attachment (its source keeps running), a new one is attached to the shared source
//! for its config, and a removed one's attachment is dropped with the old snapshot, which stops
//! its source once no upstream uses it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::balance::Upstream;
use crate::config::{self, ConfigError, ConfigErrors, Limits, RouteConfig, RouteSet, StaticEndpoint};
use crate::discovery::{Attachment, Registry, Target};
use crate::metrics::{Metrics, Name, RequestCounters, ResultLabel, RouteLabel};
use crate::resilience::rate_limit::RateLimiter;
use crate::router::Router;
use crate::stack::{self, RouteService};
use prometheus_client::metrics::histogram::Histogram;

/// One route, ready to serve.
#[derive(Debug)]
pub struct RouteEntry {
    /// Its definition.
    pub config: RouteConfig,
    /// Its name, shared with metric labels.
    pub name: Name,
    /// Its tower stack, one copy per serving thread ([`RouteEntry::service`]).
    services: Box<[RouteService]>,
    /// Its metric series, resolved here rather than looked up per request.
    pub metrics: Arc<RouteMetrics>,
    /// Its rate-limit buckets, handed on to the next snapshot while `rate_limit` is unchanged.
    pub limiter: Option<Arc<RateLimiter>>,
}

impl RouteEntry {
    /// Its tower stack, this serving thread's copy.
    pub(crate) fn service(&self) -> &RouteService {
        &self.services[crate::proxy::worker() % self.services.len()]
    }
}

/// A route's metric series.
#[derive(Debug)]
pub struct RouteMetrics {
    /// The route's name (the `route` label).
    pub name: Name,
    /// `switchyard_request_duration_seconds{route}`.
    pub duration: Histogram,
    /// `switchyard_requests_total{…, route, …}`.
    pub requests: RequestCounters,
}

/// Everything routing needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every successful load.
    pub version: u64,
    /// When it was built.
    pub loaded_at: SystemTime,
    /// The route files it came from.
    pub files: Vec<PathBuf>,
    /// The compiled route table (indices into `routes`).
    pub router: Router,
    /// The routes, in load order.
    pub routes: Vec<RouteEntry>,
    /// The upstreams, in load order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// What feeds each upstream (same order as `upstreams`); dropping one stops feeding it.
    pub discovery: Vec<Arc<Attachment>>,
}

impl Snapshot {
    /// Build a snapshot; upstreams equal to one in `previous` are reused as they are.
    pub fn build(
        set: RouteSet,
        previous: Option<&Snapshot>,
        version: u64,
        limits: &Limits,
        metrics: &Arc<Metrics>,
        registry: &Registry,
    ) -> Result<Snapshot, String> {
        let old: HashMap<&str, (&Arc<Upstream>, &Arc<Attachment>)> = previous
            .map(|p| p.upstreams.iter().zip(&p.discovery).map(|(u, a)| (u.name.as_str(), (u, a))).collect())
            .unwrap_or_default();
        let mut upstreams = Vec::with_capacity(set.upstreams.len());
        let mut discovery = Vec::with_capacity(set.upstreams.len());
        for cfg in set.upstreams {
            match old.get(cfg.name.as_str()) {
                Some((u, a)) if u.config == cfg => {
                    upstreams.push(Arc::clone(u));
                    discovery.push(Arc::clone(a));
                }
                _ => {
                    let u = Upstream::with_metrics(cfg, Some(Arc::clone(metrics)))?;
                    discovery.push(Arc::new(registry.attach(&u, &u.name, &u.config.discovery)?));
                    upstreams.push(u);
                }
            }
        }
        let by_name: HashMap<String, Arc<Upstream>> =
            upstreams.iter().map(|u| (u.name.to_string(), Arc::clone(u))).collect();
        let router = Router::new(&set.routes);
        // A route keeps its buckets across a reload when its rate_limit did not change.
        let old_limiters: HashMap<&str, &Arc<RateLimiter>> = previous
            .map(|p| p.routes.iter().filter_map(|r| Some((r.name.as_str(), r.limiter.as_ref()?))).collect())
            .unwrap_or_default();
        let routes = set
            .routes
            .into_iter()
            .map(|config| {
                let name: Name = Arc::new(config.name.clone());
                let limiter =
                    config.rate_limit.as_ref().map(|rl| match old_limiters.get(config.name.as_str()) {
                        Some(l) if l.config() == rl => Arc::clone(l),
                        _ => Arc::new(RateLimiter::new(rl)),
                    });
                RouteEntry {
                    metrics: Arc::new(RouteMetrics {
                        duration: metrics
                            .request_duration
                            .get_or_create_owned(&RouteLabel { route: Arc::clone(&name) }),
                        requests: RequestCounters::default(),
                        name: Arc::clone(&name),
                    }),
                    services: stack::build_per_thread(
                        &config,
                        &by_name,
                        limiter.clone(),
                        limits,
                        metrics,
                        crate::proxy::serving_threads(),
                    ),
                    name,
                    config,
                    limiter,
                }
            })
            .collect();
        Ok(Snapshot {
            version,
            loaded_at: SystemTime::now(),
            files: set.files,
            router,
            routes,
            upstreams,
            discovery,
        })
    }
}

/// Discovery feeds an upstream through its own bookkeeping (`balance` owns the set).
impl Target for Upstream {
    fn apply_endpoints(&self, set: &[StaticEndpoint]) -> Result<(), String> {
        self.set_endpoints(set)
    }
    fn apply_error(&self, error: String) {
        self.set_discovery_error(error)
    }
}

/// The last reload failure, for `GET /config`.
#[derive(Clone, Debug)]
pub(crate) struct LastError {
    /// The first error (file, line, column, message).
    pub error: ConfigError,
    /// When it happened.
    pub at: SystemTime,
}

/// Where a [`Reloader`] takes its route files from.
#[derive(Debug)]
pub(crate) enum RouteFiles {
    /// Every `*.toml` of a folder (`routes_dir`), read again at each reload.
    Dir(PathBuf),
    /// Files handed over in memory (fleet mode: read from ZooKeeper or Consul), as `(name,
    /// text)` in load order, with what to call the set in an error that names no file; a
    /// reload validates them again.
    Held { label: PathBuf, files: Vec<(PathBuf, String)> },
}

impl RouteFiles {
    /// Load and validate the set: one validator for both kinds.
    fn load(&self, base_dir: &std::path::Path) -> Result<RouteSet, ConfigErrors> {
        match self {
            RouteFiles::Dir(dir) => config::load_routes(dir, base_dir),
            RouteFiles::Held { files, .. } => config::validate_route_files(files.clone(), base_dir),
        }
    }

    fn label(&self) -> &PathBuf {
        match self {
            RouteFiles::Dir(dir) => dir,
            RouteFiles::Held { label, .. } => label,
        }
    }
}

/// Loads, validates and swaps route snapshots.
#[derive(Debug)]
pub(crate) struct Reloader {
    /// The files of the set serving (in fleet mode, the last set applied).
    files: Mutex<RouteFiles>,
    /// What relative paths in route files resolve against (gateway.toml's folder).
    base_dir: PathBuf,
    limits: Limits,
    metrics: Arc<Metrics>,
    registry: Registry,
    current: Arc<ArcSwap<Snapshot>>,
    last_error: Mutex<Option<LastError>>,
    serial: Mutex<()>,
}

impl Reloader {
    /// Load the first snapshot, starting its discovery sources in `registry`; errors here are
    /// fatal at start.
    pub(crate) fn new(
        files: RouteFiles,
        base_dir: PathBuf,
        limits: Limits,
        metrics: Arc<Metrics>,
        registry: Registry,
    ) -> Result<Self, ConfigErrors> {
        let set = files.load(&base_dir)?;
        let snap = Snapshot::build(set, None, 1, &limits, &metrics, &registry).map_err(|m| {
            ConfigErrors(vec![ConfigError { file: files.label().clone(), line: 1, column: 1, message: m }])
        })?;
        Ok(Reloader {
            files: Mutex::new(files),
            base_dir,
            limits,
            metrics,
            registry,
            current: Arc::new(ArcSwap::from_pointee(snap)),
            last_error: Mutex::new(None),
            serial: Mutex::new(()),
        })
    }

    /// The live snapshot cell, shared with the listeners.
    pub(crate) fn current(&self) -> &Arc<ArcSwap<Snapshot>> {
        &self.current
    }

    /// The shared discovery sources.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The last failure, if the last attempt failed.
    pub(crate) fn last_error(&self) -> Option<LastError> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reload now (blocking: file IO and compilation): the folder is read again, held files
    /// are validated again. Returns the new version.
    pub(crate) fn reload(&self) -> Result<u64, ConfigErrors> {
        let _serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let result = files.load(&self.base_dir).and_then(|set| self.build(set, files.label()));
        drop(files);
        self.install(result)
    }

    /// Validate `files` (fleet mode: a published set) exactly as a folder's files are, and
    /// serve them if they are valid; otherwise the running set stays. Blocking, as
    /// [`reload`](Self::reload).
    pub(crate) fn apply(&self, label: PathBuf, files: Vec<(PathBuf, String)>) -> Result<u64, ConfigErrors> {
        let _serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let candidate = RouteFiles::Held { label, files };
        let result = candidate.load(&self.base_dir).and_then(|set| self.build(set, candidate.label()));
        if result.is_ok() {
            *self.files.lock().unwrap_or_else(|p| p.into_inner()) = candidate;
        }
        self.install(result)
    }

    fn build(&self, set: RouteSet, label: &std::path::Path) -> Result<Snapshot, ConfigErrors> {
        let prev = self.current.load_full();
        Snapshot::build(set, Some(&prev), prev.version + 1, &self.limits, &self.metrics, &self.registry)
            .map_err(|m| {
                ConfigErrors(vec![ConfigError { file: label.to_path_buf(), line: 1, column: 1, message: m }])
            })
    }

    /// Swap in a built snapshot, or record why there is none.
    fn install(&self, result: Result<Snapshot, ConfigErrors>) -> Result<u64, ConfigErrors> {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(snap) => {
                let v = snap.version;
                self.current.store(Arc::new(snap));
                *last = None;
                self.metrics.config_reloads.get_or_create(&ResultLabel { result: "success" }).inc();
                tracing::info!(version = v, "routes reloaded");
                Ok(v)
            }
            Err(errs) => {
                for e in &errs.0 {
                    tracing::error!("reload rejected, the previous routes keep serving: {e}");
                }
                if let Some(first) = errs.0.first() {
                    *last = Some(LastError { error: first.clone(), at: SystemTime::now() });
                }
                self.metrics.config_reloads.get_or_create(&ResultLabel { result: "failure" }).inc();
                Err(errs)
            }
        }
    }
}
