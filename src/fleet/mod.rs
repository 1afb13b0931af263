//! Fleet mode (docs/fleet.md): many gateways share one set of route files through ZooKeeper or
//! Consul KV, and each registers itself as a member.
//!
//! The layout is the same in both stores, under the fleet's ZooKeeper `path` or Consul
//! `prefix`: `routes/<file>.toml` holds a route file's text, `version` the published version
//! (a decimal integer), `members/<id>` one running gateway's [`Member`] record (an ephemeral
//! node, or a key held by a Consul session). A publish writes every route file and the new
//! version in one transaction, so a reader that reads the version and the files in one
//! consistent read never sees half a set.
//!
//! [`Store`] speaks to either service; `follow` keeps a gateway on the published set (watch
//! `version`, read the set, hand it to the same [`Reloader`] path as a `routes_dir` reload,
//! write the cache, update the member record); `commands` are the command line's `routes
//! publish`, `routes pull` and `fleet`, and `check`'s read of the published set; `cache` is
//! `routes_cache`.
//!
//! [`Reloader`]: crate::snapshot::Reloader

mod cache;
pub(crate) mod commands;
mod consul;
mod follow;
mod zookeeper;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigErrors, GatewayConfig, RoutesSource};
use crate::metrics::Metrics;
use crate::snapshot::RouteFiles;

pub(crate) use follow::spawn;

/// The most a read, a write or a connect may take before it counts as a failure (a blocking
/// wait for a change is bounded separately).
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// A published set of route files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Published {
    /// The published version.
    pub version: u64,
    /// `(file name, text)`, in file-name order (the load order of a `routes_dir`).
    pub files: Vec<(String, String)>,
}

/// Whether `name` can be a route file of a fleet: a plain `*.toml` file name (a route file
/// becomes one node or key, and `routes pull` writes it into a folder, so nothing that could
/// name another place is accepted).
pub(crate) fn is_route_file_name(name: &str) -> bool {
    name.len() > ".toml".len()
        && name.ends_with(".toml")
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control)
}

/// Keep the route files among `(name, text)` entries and sort them by name.
fn route_files(entries: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut files: Vec<_> = entries.into_iter().filter(|(n, _)| is_route_file_name(n)).collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// One listener of a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberListener {
    /// The listener's name.
    pub name: String,
    /// Its bound address.
    pub address: String,
}

/// A running gateway's record in `members/<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Member {
    /// `<hostname>-<8 hex digits drawn at start>`.
    pub id: String,
    /// The machine's host name.
    pub hostname: String,
    /// Its listeners.
    pub listeners: Vec<MemberListener>,
    /// Its admin API address, if any.
    pub admin: Option<String>,
    /// The published version it serves (`None` before the first).
    pub routes_version: Option<u64>,
    /// Why the last published set was refused, if it was (`path:line:column: message`); a
    /// failure of the source itself is not here (it shows in `GET /config` `source_error`).
    pub last_error: Option<String>,
    /// When it started (RFC 3339).
    pub started_at: String,
}

/// Why a publish did not happen.
#[derive(Debug)]
pub(crate) enum PublishError {
    /// `--if-version` did not match: the current version (`None`: nothing published).
    Mismatch(Option<u64>),
    /// The set cannot be stored (too large, too many files) or the source failed.
    Failed(String),
}

/// The fleet's store: ZooKeeper or Consul KV.
#[derive(Debug)]
pub(crate) enum Store {
    /// ZooKeeper.
    Zk(Box<zookeeper::ZkStore>),
    /// Consul KV.
    Consul(Box<consul::ConsulStore>),
}

impl Store {
    /// A store for `src`; nothing is connected until the first operation.
    pub(crate) fn new(src: &RoutesSource) -> Result<Store, String> {
        Ok(match src {
            RoutesSource::ZooKeeper { .. } => Store::Zk(Box::new(zookeeper::ZkStore::new(src))),
            RoutesSource::Consul { .. } => Store::Consul(Box::new(consul::ConsulStore::new(src)?)),
        })
    }

    /// The published set, or `None` when nothing was published yet.
    pub(crate) async fn read(&self) -> Result<Option<Published>, String> {
        bounded(async {
            match self {
                Store::Zk(s) => s.read().await,
                Store::Consul(s) => s.read().await,
            }
        })
        .await
    }

    /// Return when the published version may differ from `known` (at the latest after a
    /// minute: the caller reads again either way), or when the source fails.
    pub(crate) async fn wait(&self, known: Option<u64>) -> Result<(), String> {
        match self {
            Store::Zk(s) => s.wait(known).await,
            Store::Consul(s) => s.wait().await,
        }
    }

    /// Publish `files` as the next version, in one transaction; with `if_version`, only if
    /// the current version is that (0: nothing published yet).
    pub(crate) async fn publish(
        &self,
        files: &[(String, String)],
        if_version: Option<u64>,
    ) -> Result<u64, PublishError> {
        let op = async {
            match self {
                Store::Zk(s) => s.publish(files, if_version).await,
                Store::Consul(s) => s.publish(files, if_version).await,
            }
        };
        match tokio::time::timeout(OP_TIMEOUT * 3, op).await {
            Ok(r) => r,
            Err(_) => Err(PublishError::Failed(format!("no answer within {:?}", OP_TIMEOUT * 3))),
        }
    }

    /// Every member record (unreadable ones are skipped), by id.
    pub(crate) async fn members(&self) -> Result<Vec<Member>, String> {
        let mut members = bounded(async {
            match self {
                Store::Zk(s) => s.members().await,
                Store::Consul(s) => s.members().await,
            }
        })
        .await?;
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(members)
    }

    /// Create or update this gateway's member record.
    pub(crate) async fn register(&self, member: &Member) -> Result<(), String> {
        let data = serde_json::to_vec(member).map_err(|e| e.to_string())?;
        bounded(async {
            match self {
                Store::Zk(s) => s.register(&member.id, &data).await,
                Store::Consul(s) => s.register(&member.id, &data).await,
            }
        })
        .await
    }

    /// Whether the member record must be written again (a new session).
    pub(crate) async fn needs_register(&self) -> bool {
        match self {
            Store::Zk(s) => s.needs_register().await,
            Store::Consul(s) => s.needs_register().await,
        }
    }

    /// Keep the registration alive: Consul renews its session; ZooKeeper's client keeps its
    /// own, and this checks that the member node is still this session's.
    pub(crate) async fn keep_alive(&self, id: &str) -> Result<(), String> {
        match self {
            Store::Zk(s) => bounded(s.check_registered(id)).await,
            Store::Consul(s) => bounded(s.renew()).await,
        }
    }

    /// Remove this gateway's member record and end its session.
    pub(crate) async fn close(&self, id: &str) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            match self {
                Store::Zk(s) => s.close(id).await,
                Store::Consul(s) => s.close().await,
            }
        })
        .await;
    }
}

/// `op`, failing after [`OP_TIMEOUT`].
async fn bounded<T>(op: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(OP_TIMEOUT, op)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {OP_TIMEOUT:?}")))
}

/// What a fleet gateway knows of its source, shared by the follower, the admin API and the
/// member record.
#[derive(Debug)]
pub(crate) struct Fleet {
    /// The source's configuration.
    pub source: RoutesSource,
    /// The store.
    pub store: Store,
    /// The newest published version seen (0: none).
    published: AtomicU64,
    /// The published version serving (0: none, e.g. an empty start).
    applied: AtomicU64,
    /// The record this gateway keeps in `members/<id>`.
    member: Mutex<Member>,
    /// The source's last failure, and when, while it lasts.
    source_error: Mutex<Option<(String, SystemTime)>>,
    /// `switchyard_routes_source_errors_total`.
    metrics: Arc<Metrics>,
    /// Woken by `POST /reload` and SIGHUP: read the source now, and try again a version that
    /// was refused.
    pub(crate) nudge: tokio::sync::Notify,
    /// Woken when the registration was lost (a Consul session gone): register again now.
    wake: tokio::sync::Notify,
    /// The published version found invalid at start (the gateway then started from its
    /// cache): not validated again until something changes.
    refused_at_start: Mutex<Option<u64>>,
}

impl Fleet {
    /// The published version seen last.
    pub(crate) fn published_version(&self) -> Option<u64> {
        Some(self.published.load(Ordering::Relaxed)).filter(|&v| v > 0)
    }

    /// The published version serving.
    pub(crate) fn applied_version(&self) -> Option<u64> {
        Some(self.applied.load(Ordering::Relaxed)).filter(|&v| v > 0)
    }

    /// The record as it stands.
    pub(crate) fn member(&self) -> Member {
        self.member.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The source's failure, if the last operation failed.
    pub(crate) fn source_error(&self) -> Option<(String, SystemTime)> {
        self.source_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_published(&self, v: u64) {
        self.published.store(v, Ordering::Relaxed);
    }

    /// A set was applied (or refused): the record says so.
    fn set_applied(&self, v: Option<u64>, error: Option<String>) {
        if let Some(v) = v {
            self.applied.store(v, Ordering::Relaxed);
        }
        let mut m = self.member.lock().unwrap_or_else(|p| p.into_inner());
        m.routes_version = self.applied_version();
        m.last_error = error;
    }

    fn source_failed(&self, error: String) {
        self.metrics
            .routes_source_errors
            .get_or_create(&crate::metrics::SourceLabel { r#type: self.source.kind() })
            .inc();
        tracing::warn!(source = %self.source.describe(), %error, "routes source failed; the running routes keep serving");
        *self.source_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((error, SystemTime::now()));
    }

    fn source_ok(&self) {
        let mut e = self.source_error.lock().unwrap_or_else(|p| p.into_inner());
        if e.take().is_some() {
            tracing::info!(source = %self.source.describe(), "routes source reachable again");
        }
    }

    /// The listeners and the admin address, once bound.
    pub(crate) fn set_addresses(
        &self,
        listeners: &[(String, std::net::SocketAddr)],
        admin: Option<std::net::SocketAddr>,
    ) {
        let mut m = self.member.lock().unwrap_or_else(|p| p.into_inner());
        m.listeners = listeners
            .iter()
            .map(|(n, a)| MemberListener { name: n.clone(), address: a.to_string() })
            .collect();
        m.admin = admin.map(|a| a.to_string());
    }
}

/// The name a route file of the published set carries in errors and in `GET /config`:
/// `zookeeper:/switchyard/edge/routes/10-api.toml`, `consul:switchyard/edge/routes/10-api.toml`.
pub(crate) fn file_label(src: &RoutesSource, name: &str) -> PathBuf {
    match src {
        RoutesSource::ZooKeeper { path, .. } => format!("zookeeper:{path}/routes/{name}").into(),
        RoutesSource::Consul { prefix, .. } => format!("consul:{prefix}/routes/{name}").into(),
    }
}

/// A published set as the files a [`Reloader`](crate::snapshot::Reloader) validates.
pub(crate) fn held(src: &RoutesSource, p: &Published) -> Vec<(PathBuf, String)> {
    p.files.iter().map(|(n, t)| (file_label(src, n), t.clone())).collect()
}

/// The set label (for an error that names no file).
fn set_label(src: &RoutesSource) -> PathBuf {
    match src {
        RoutesSource::ZooKeeper { path, .. } => format!("zookeeper:{path}/routes").into(),
        RoutesSource::Consul { prefix, .. } => format!("consul:{prefix}/routes").into(),
    }
}

/// How a fleet gateway starts: the routes to serve first, and the fleet state.
#[derive(Debug)]
pub(crate) struct Start {
    /// The first route files.
    pub files: RouteFiles,
    /// The fleet.
    pub fleet: Arc<Fleet>,
    /// The set read from the source at start, for `routes_cache` (not when it came from the
    /// cache).
    pub fresh: Option<Published>,
}

/// Read the published set (or, when the source cannot be reached or its set is invalid, the
/// `routes_cache`) for a gateway starting in fleet mode. An error says why it cannot start.
pub(crate) async fn start(cfg: &GatewayConfig, metrics: Arc<Metrics>) -> Result<Start, String> {
    let src = cfg.routes_source.clone().ok_or("no routes_source")?;
    let store = Store::new(&src)?;
    let hostname = hostname();
    let member = Member {
        id: format!("{}-{:08x}", node_name(&hostname), fastrand::u32(..)),
        hostname,
        listeners: Vec::new(),
        admin: None,
        routes_version: None,
        last_error: None,
        started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    let fleet = Arc::new(Fleet {
        source: src.clone(),
        store,
        published: AtomicU64::new(0),
        applied: AtomicU64::new(0),
        member: Mutex::new(member),
        source_error: Mutex::new(None),
        metrics,
        nudge: tokio::sync::Notify::new(),
        wake: tokio::sync::Notify::new(),
        refused_at_start: Mutex::new(None),
    });
    let cached = || cfg.routes_cache.as_deref().and_then(|dir| cache::read(dir).transpose()).transpose();
    let mut fresh = None;
    let first = match fleet.store.read().await {
        Ok(Some(p)) => {
            fleet.set_published(p.version);
            match crate::config::validate_route_files(held(&src, &p), cfg.base_dir()) {
                Ok(_) => {
                    fresh = Some(p.clone());
                    Some(p)
                }
                Err(errs) => {
                    let first = errs.0.first().map(ToString::to_string).unwrap_or_default();
                    let Some(c) = cached()? else {
                        return Err(format!(
                            "the published route set (version {}) is invalid and there is no routes_cache to start from:\n{}",
                            p.version,
                            ConfigErrors(errs.0)
                        ));
                    };
                    tracing::error!(version = p.version, error = %first, "the published route set is invalid; starting from routes_cache (version {})", c.version);
                    *fleet.refused_at_start.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.version);
                    fleet.set_applied(None, Some(first));
                    Some(c)
                }
            }
        }
        Ok(None) => match cached()? {
            Some(c) => {
                tracing::warn!(source = %src.describe(), "nothing is published yet; starting from routes_cache (version {})", c.version);
                Some(c)
            }
            None => {
                tracing::warn!(source = %src.describe(), "nothing is published yet: serving no routes until `switchyard routes publish`");
                None
            }
        },
        Err(e) => {
            let Some(c) = cached()? else {
                return Err(format!(
                    "cannot read the routes from {}: {e}; and there is no routes_cache to start from (set [gateway] routes_cache to start while the source is down)",
                    src.describe()
                ));
            };
            tracing::warn!(source = %src.describe(), error = %e, "cannot read the routes source; starting from routes_cache (version {})", c.version);
            fleet.source_failed(e);
            Some(c)
        }
    };
    let files = match first {
        Some(p) => {
            let last_error = fleet.member().last_error;
            fleet.set_applied(Some(p.version), last_error);
            match (&fresh, &cfg.routes_cache) {
                // From the cache: an error names the cached file.
                (None, Some(dir)) => p.files.iter().map(|(n, t)| (dir.join(n), t.clone())).collect(),
                _ => held(&src, &p),
            }
        }
        None => Vec::new(),
    };
    Ok(Start { files: RouteFiles::Held { label: set_label(&src), files }, fleet, fresh })
}

/// The machine's host name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `s` with every character a ZooKeeper node or Consul key should not hold replaced by `-`.
fn node_name(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '-' })
        .collect()
}
