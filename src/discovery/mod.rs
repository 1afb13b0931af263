//! Service discovery: where an upstream's endpoints come from (docs/discovery.md).
//!
//! The design follows linkerd2-proxy's resolve stack (`linkerd/proxy/core/src/resolve.rs`,
//! `linkerd/proxy/dns-resolve`) and the spirit of `tower::discover`: **discovery pushes,
//! consumers diff** (STYLE 6).
//!
//! - A *source* ([`fixed`], [`dns`], [`zookeeper`], [`consul`]) is a task that knows one
//!   protocol. It pushes [`Update`]s — a whole authoritative endpoint set, or a failure — into a
//!   [`Publisher`]. It never touches an upstream.
//! - The [`Publisher`] folds those updates into a [`Resolution`] (the latest set, the current
//!   error, and running counts) held in a `tokio::sync::watch`, so any number of consumers see
//!   the latest state without a lock on the request path, and a consumer that falls behind
//!   skips straight to the newest set. Failures never clear the set (the opposite of pingora's
//!   `// TODO: log err` in `pingora-load-balancing`): they are logged once per state change,
//!   counted, and shown.
//! - One adapter per upstream ([`Attachment`]) diffs each new [`Resolution`] against what it
//!   last applied and calls the upstream's [`Target::apply_endpoints`] (the upstream keeps the
//!   state of endpoints that stay and swaps in a new immutable set) or
//!   [`Target::apply_error`], and counts `switchyard_discovery_updates_total` /
//!   `switchyard_discovery_errors_total`. `Target` is how this module reaches an upstream
//!   without importing `balance` (imports run one way, STYLE "Layout"); `snapshot` implements
//!   it for `Upstream`.
//! - The [`Registry`] shares sources: two upstreams whose `DiscoveryConfig`s are equal run one
//!   watch. Each attachment holds an `Arc` of its source; when the last one is dropped (the
//!   snapshot holding it was replaced by a reload and finished its in-flight requests) the
//!   source task is aborted. Reloads reuse unchanged upstreams together with their attachments,
//!   so an unchanged source keeps running across reloads.

pub mod consul;
pub mod dns;
pub mod fixed;
pub mod zookeeper;

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::backoff::{Backoff, Jitter};
use crate::config::{DiscoveryConfig, StaticEndpoint};
use crate::metrics::{DiscoveryLabels, Metrics, Name};

/// `/ready` waits at most this long after start for every upstream's first discovery result
/// (docs/discovery.md): long enough for a healthy ZooKeeper or Consul to answer, short enough that a
/// dead one does not keep a gateway with static routes out of a load balancer forever.
pub const READY_BOUND: Duration = Duration::from_secs(10);

/// What discovery feeds: an upstream's endpoint set.
pub trait Target: Send + Sync + 'static {
    /// Install a new authoritative set (endpoints that stay keep their state).
    fn apply_endpoints(&self, set: &[StaticEndpoint]) -> Result<(), String>;
    /// Record a failure; the set stays as it is.
    fn apply_error(&self, error: String);
}

/// One step from a source: the unit of the discovery stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// The complete, authoritative endpoint set now. Empty is a real answer (NXDOMAIN, no
    /// children, no passing instances) and does empty the upstream.
    Reset(Vec<StaticEndpoint>),
    /// The source failed (server down, SERVFAIL, timeout, session lost). The last set stands.
    Failed(String),
}

/// What a source has said so far: the value carried by its `watch` channel.
#[derive(Clone, Debug, Default)]
pub struct Resolution {
    /// The last authoritative set (duplicates merged, in the source's order); `None` until
    /// the first one.
    pub endpoints: Option<Arc<Vec<StaticEndpoint>>>,
    /// The current failure; `None` while the source is healthy.
    pub error: Option<Arc<str>>,
    /// How many times the set changed.
    pub updates: u64,
    /// How many failures were reported (every retry counts).
    pub errors: u64,
}

impl Resolution {
    /// Whether the source has produced a first result (a set or an error).
    pub fn answered(&self) -> bool {
        self.endpoints.is_some() || self.error.is_some()
    }
}

// === impl Publisher ===

/// The sending half given to a source: folds [`Update`]s into the shared [`Resolution`].
#[derive(Debug)]
pub struct Publisher {
    tx: watch::Sender<Resolution>,
    what: Arc<str>,
}

impl Publisher {
    /// A publisher and the receiver consumers subscribe from; `what` names the source in logs
    /// (e.g. `dns users.internal`).
    pub fn new(what: impl Into<Arc<str>>) -> (Publisher, watch::Receiver<Resolution>) {
        let (tx, rx) = watch::channel(Resolution::default());
        (Publisher { tx, what: what.into() }, rx)
    }

    /// Push one update.
    pub fn send(&self, update: Update) {
        match update {
            Update::Reset(set) => self.reset(set),
            Update::Failed(e) => self.fail(e),
        }
    }

    /// An authoritative set. Unchanged sets only clear a pending error; logs recovery once.
    pub fn reset(&self, mut set: Vec<StaticEndpoint>) {
        canonicalize(&mut set);
        let what = &self.what;
        self.tx.send_if_modified(|r| {
            let recovered = r.error.take();
            if let Some(e) = &recovered {
                tracing::info!(source = %what, endpoints = set.len(), previous_error = %e, "discovery recovered");
            }
            let same = r.endpoints.as_deref().is_some_and(|old| same_endpoints(old, &set));
            if !same {
                tracing::debug!(source = %what, endpoints = set.len(), "discovery update");
                r.endpoints = Some(Arc::new(set));
                r.updates += 1;
            }
            !same || recovered.is_some()
        });
    }

    /// A failure: the set stays. Logged when the source enters the failing state (and at
    /// debug level on later retries), counted every time.
    pub fn fail(&self, error: impl Into<String>) {
        let error: String = error.into();
        let what = &self.what;
        self.tx.send_modify(|r| {
            match &r.error {
                None => tracing::warn!(
                    source = %what,
                    error = %error,
                    kept = r.endpoints.as_ref().map_or(0, |e| e.len()),
                    "discovery failed; keeping the last endpoint set"
                ),
                Some(_) => tracing::debug!(source = %what, error = %error, "discovery still failing"),
            }
            r.error = Some(error.into());
            r.errors += 1;
        });
    }

    /// Whether every consumer is gone (the source may stop).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Merge duplicate addresses (the first keeps its place, the highest weight wins) and make
/// weights at least 1. The order is kept: a static list is served in the order written.
fn canonicalize(set: &mut Vec<StaticEndpoint>) {
    let mut seen: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(set.len());
    let mut out: Vec<StaticEndpoint> = Vec::with_capacity(set.len());
    for mut e in set.drain(..) {
        e.weight = e.weight.max(1);
        match seen.get(&e.address) {
            Some(&i) => out[i].weight = out[i].weight.max(e.weight),
            None => {
                seen.insert(e.address.clone(), out.len());
                out.push(e);
            }
        }
    }
    *set = out;
}

/// Whether two sets hold the same endpoints, whatever the order (a DNS server rotating its
/// answers is not a change).
fn same_endpoints(a: &[StaticEndpoint], b: &[StaticEndpoint]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a == b {
        return true;
    }
    let mut x: Vec<(&str, u32)> = a.iter().map(|e| (e.address.as_str(), e.weight)).collect();
    let mut y: Vec<(&str, u32)> = b.iter().map(|e| (e.address.as_str(), e.weight)).collect();
    x.sort_unstable();
    y.sort_unstable();
    x == y
}

// === backoff ===

/// The reconnect backoff of every source: from 1 s to 30 s (docs/discovery.md), doubling per
/// consecutive failure, each sleep scaled by a random factor in [0.8, 1.2) so that many
/// gateways do not retry in lockstep (linkerd's `ExponentialBackoff`).
pub(crate) fn backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(30), Jitter::Spread(0.2))
}

// === impl Registry ===

/// Shared discovery sources, keyed by their [`DiscoveryConfig`] value.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

#[derive(Debug)]
struct RegistryInner {
    sources: Mutex<Vec<(DiscoveryConfig, Weak<Source>)>>,
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
    started: Instant,
}

/// One running source; dropping the last `Arc` stops it.
#[derive(Debug)]
pub struct Source {
    rx: watch::Receiver<Resolution>,
    task: AbortHandle,
}

impl Source {
    /// A receiver of this source's resolutions.
    pub fn subscribe(&self) -> watch::Receiver<Resolution> {
        self.rx.clone()
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Registry {
    /// A registry that spawns sources on the current tokio runtime. Must be called inside one.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Registry {
            inner: Arc::new(RegistryInner {
                sources: Mutex::new(Vec::new()),
                metrics,
                runtime: tokio::runtime::Handle::current(),
                started: Instant::now(),
            }),
        }
    }

    /// When the registry (and so the gateway) started; `/ready` bounds its wait from here.
    pub fn started(&self) -> Instant {
        self.inner.started
    }

    /// How many sources are running now.
    pub fn running(&self) -> usize {
        let mut sources = self.inner.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.retain(|(_, w)| w.strong_count() > 0);
        sources.len()
    }

    /// The source for `config`: the running one if an equal config has one, else a new one.
    /// Fails, starting nothing, when a new source cannot be set up (a Consul `tls_ca` that
    /// cannot be read): the snapshot that needs it is then refused, as one with an unreadable
    /// `[upstream.tls] ca` is.
    pub fn source(&self, config: &DiscoveryConfig) -> Result<Arc<Source>, String> {
        let mut sources = self.inner.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.retain(|(_, w)| w.strong_count() > 0);
        if let Some(s) = sources.iter().find(|(k, _)| k == config).and_then(|(_, w)| w.upgrade()) {
            return Ok(s);
        }
        let (publisher, rx) = Publisher::new(describe(config));
        let task = self.inner.runtime.spawn(source_task(config.clone(), publisher)?).abort_handle();
        let source = Arc::new(Source { rx, task });
        sources.push((config.clone(), Arc::downgrade(&source)));
        Ok(source)
    }

    /// Feed `upstream` from the source for its discovery config. The current resolution (if
    /// the source already has one) is applied before this returns, so an upstream added by a
    /// reload next to an existing source has its endpoints before the new snapshot is swapped
    /// in. Dropping the returned [`Attachment`] stops feeding it.
    /// `name` labels the metrics. Fails as [`source`](Self::source) does.
    pub fn attach<T: Target>(
        &self,
        upstream: &Arc<T>,
        name: &Name,
        config: &DiscoveryConfig,
    ) -> Result<Attachment, String> {
        let source = self.source(config).map_err(|e| format!("upstream {:?}: {e}", name.as_str()))?;
        let mut rx = source.subscribe();
        let mut adapter = Adapter::new(name, config.kind(), Arc::clone(&self.inner.metrics));
        adapter.apply(&**upstream, &rx.borrow_and_update().clone());
        let weak = Arc::downgrade(upstream);
        let task = self
            .inner
            .runtime
            .spawn(async move {
                while rx.changed().await.is_ok() {
                    let r = rx.borrow_and_update().clone();
                    let Some(up) = weak.upgrade() else { return };
                    adapter.apply(&*up, &r);
                }
            })
            .abort_handle();
        Ok(Attachment { _source: source, task })
    }
}

/// A short name for a source in logs.
fn describe(config: &DiscoveryConfig) -> String {
    match config {
        DiscoveryConfig::Static(list) => format!("static ({} endpoints)", list.len()),
        DiscoveryConfig::Dns { name, .. } => format!("dns {name}"),
        DiscoveryConfig::ZooKeeper { servers, path, .. } => format!("zookeeper {servers}{path}"),
        DiscoveryConfig::Consul { address, service, .. } => format!("consul {address} {service}"),
    }
}

/// The task of one source, set up (a Consul agent's TLS client) before anything is spawned.
fn source_task(
    config: DiscoveryConfig,
    out: Publisher,
) -> Result<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>, String> {
    Ok(match config {
        DiscoveryConfig::Static(list) => Box::pin(fixed::run(list, out)),
        DiscoveryConfig::Dns { name, port, record, refresh, resolver } => {
            Box::pin(dns::run(dns::DnsSource { name, port, record, refresh, resolver }, out))
        }
        DiscoveryConfig::ZooKeeper { servers, path, format, endpoint_name, session_timeout } => {
            Box::pin(zookeeper::run(
                zookeeper::ZkSource { servers, path, format, endpoint_name, session_timeout },
                out,
            ))
        }
        DiscoveryConfig::Consul {
            address,
            service,
            tag,
            datacenter,
            passing_only,
            token_env,
            wait,
            tls_ca,
            tls_insecure_skip_verify,
        } => {
            let src = consul::ConsulSource {
                address,
                service,
                tag,
                datacenter,
                passing_only,
                token_env,
                wait,
                tls_ca,
                tls_insecure_skip_verify,
            };
            let agent = consul::Agent::new(&src)?;
            Box::pin(consul::run(src, agent, out))
        }
    })
}

// === impl Attachment ===

/// Keeps one upstream fed by its (shared) source. Held by the snapshot next to the upstream;
/// dropping it stops the adapter and releases the source.
#[derive(Debug)]
pub struct Attachment {
    _source: Arc<Source>,
    task: AbortHandle,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The one diff adapter: turns a stream of [`Resolution`]s into calls on one upstream.
#[derive(Debug)]
pub struct Adapter {
    labels: DiscoveryLabels,
    metrics: Arc<Metrics>,
    applied: Option<Arc<Vec<StaticEndpoint>>>,
    updates: u64,
    errors: u64,
    failing: bool,
}

impl Adapter {
    /// An adapter for the upstream `name` fed by a source of `kind`, that has applied nothing.
    pub fn new(name: &Name, kind: &'static str, metrics: Arc<Metrics>) -> Self {
        Adapter {
            labels: DiscoveryLabels { upstream: Arc::clone(name), r#type: kind },
            metrics,
            applied: None,
            updates: 0,
            errors: 0,
            failing: false,
        }
    }

    /// Bring `upstream` up to date with `r`.
    pub fn apply<T: Target + ?Sized>(&mut self, upstream: &T, r: &Resolution) {
        if let Some(set) = &r.endpoints {
            let changed = !self.applied.as_ref().is_some_and(|a| Arc::ptr_eq(a, set));
            // A recovery with an unchanged set re-applies it: that keeps every endpoint (same
            // addresses and weights) and clears `last_error`.
            let recovered = self.failing && r.error.is_none();
            if changed || recovered {
                match upstream.apply_endpoints(set) {
                    Ok(()) => {
                        if changed {
                            // Count what the source published since we last looked, at least 1.
                            let n =
                                if self.applied.is_none() { 1 } else { (r.updates - self.updates).max(1) };
                            self.metrics.discovery_updates.get_or_create(&self.labels).inc_by(n);
                        }
                        self.applied = Some(Arc::clone(set));
                    }
                    Err(e) => {
                        // A malformed address: keep the last set and say so.
                        upstream.apply_error(e);
                        self.metrics.discovery_errors.get_or_create(&self.labels).inc();
                    }
                }
            }
        }
        self.updates = r.updates;
        if let Some(e) = &r.error {
            if r.errors != self.errors || !self.failing {
                upstream.apply_error(e.to_string());
                let n = r.errors.saturating_sub(self.errors).max(1);
                self.metrics.discovery_errors.get_or_create(&self.labels).inc_by(n);
            }
        }
        self.errors = r.errors;
        self.failing = r.error.is_some();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Upstream;
    use crate::config::{Balance, UpstreamConfig, UpstreamLimits, UpstreamProtocol};

    fn ep(a: &str, w: u32) -> StaticEndpoint {
        StaticEndpoint { address: a.into(), weight: w }
    }

    fn upstream(discovery: DiscoveryConfig) -> Arc<Upstream> {
        Upstream::new(UpstreamConfig {
            name: "u".into(),
            discovery,
            balance: Balance::RoundRobin,
            hash_on: None,
            protocol: UpstreamProtocol::Http1,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(60),
            panic_threshold: 0,
            tls: None,
            health: None,
            outlier: None,
            limits: UpstreamLimits::default(),
        })
        .unwrap()
    }

    fn addrs(u: &Upstream) -> Vec<String> {
        u.endpoints().endpoints.iter().map(|e| e.address.to_string()).collect()
    }

    #[test]
    fn publisher_dedups_and_failures_keep_the_set() {
        let (p, rx) = Publisher::new("t");
        p.reset(vec![ep("b:1", 1), ep("a:1", 2), ep("a:1", 1)]);
        let r = rx.borrow().clone();
        assert_eq!(*r.endpoints.unwrap(), vec![ep("b:1", 1), ep("a:1", 2)]);
        assert_eq!(r.updates, 1);
        p.reset(vec![ep("a:1", 2), ep("b:1", 1)]);
        assert_eq!(rx.borrow().updates, 1, "an equal set in another order is not an update");
        p.fail("down");
        p.fail("down");
        let r = rx.borrow().clone();
        assert_eq!(r.endpoints.unwrap().len(), 2);
        assert_eq!((r.errors, r.error.as_deref()), (2, Some("down")));
        p.reset(vec![]);
        let r = rx.borrow().clone();
        assert!(r.error.is_none() && r.endpoints.unwrap().is_empty(), "an authoritative empty set empties");
    }

    #[test]
    fn adapter_applies_sets_errors_and_recovery() {
        let metrics = Arc::new(Metrics::new());
        let u = upstream(DiscoveryConfig::Dns {
            name: "x".into(),
            port: 1,
            record: crate::config::DnsRecord::A,
            refresh: Duration::from_secs(1),
            resolver: None,
        });
        let mut a = Adapter::new(&u.name, "dns", Arc::clone(&metrics));
        let (p, rx) = Publisher::new("t");
        a.apply(&*u, &rx.borrow());
        assert!(u.discovery_status().first_result_at.is_none());
        p.reset(vec![ep("a:1", 1)]);
        a.apply(&*u, &rx.borrow());
        assert_eq!(addrs(&u), ["a:1"]);
        let kept = Arc::clone(&u.endpoints().endpoints[0]);
        p.fail("boom");
        a.apply(&*u, &rx.borrow());
        assert_eq!(u.discovery_status().last_error.as_deref(), Some("boom"));
        assert_eq!(addrs(&u), ["a:1"]);
        p.reset(vec![ep("a:1", 1)]);
        a.apply(&*u, &rx.borrow());
        assert!(u.discovery_status().last_error.is_none());
        assert!(Arc::ptr_eq(&kept, &u.endpoints().endpoints[0]), "endpoints that stay keep their state");
        let text = metrics.encode();
        assert!(text.contains("switchyard_discovery_updates_total{upstream=\"u\",type=\"dns\"} 1"), "{text}");
        assert!(text.contains("switchyard_discovery_errors_total{upstream=\"u\",type=\"dns\"} 1"), "{text}");
    }

    #[tokio::test]
    async fn sources_are_shared_and_stop_with_their_last_user() {
        let reg = Registry::new(Arc::new(Metrics::new()));
        let cfg = DiscoveryConfig::Static(vec![ep("127.0.0.1:1", 1)]);
        let (u1, u2) = (upstream(cfg.clone()), upstream(cfg.clone()));
        let a1 = reg.attach(&u1, &u1.name, &cfg).unwrap();
        let a2 = reg.attach(&u2, &u2.name, &cfg).unwrap();
        assert_eq!(reg.running(), 1, "equal configs share one source");
        let cfg2 = DiscoveryConfig::Static(vec![ep("127.0.0.1:2", 1)]);
        let other = reg.attach(&upstream(cfg2.clone()), &u1.name, &cfg2).unwrap();
        assert_eq!(reg.running(), 2);
        drop(a1);
        assert_eq!(reg.running(), 2);
        drop(a2);
        drop(other);
        assert_eq!(reg.running(), 0, "a source stops when no upstream uses it");
    }

    fn consul(tls_ca: Option<&str>, insecure: bool) -> DiscoveryConfig {
        DiscoveryConfig::Consul {
            // Nothing listens there: the sources only have to start, not to succeed.
            address: crate::config::ConsulAddress::parse("https://127.0.0.1:1").unwrap(),
            service: "s".into(),
            tag: None,
            datacenter: None,
            passing_only: true,
            token_env: None,
            wait: Duration::from_secs(300),
            tls_ca: tls_ca.map(Into::into),
            tls_insecure_skip_verify: insecure,
        }
    }

    #[tokio::test]
    async fn consul_tls_settings_are_part_of_the_source_identity() {
        let reg = Registry::new(Arc::new(Metrics::new()));
        let (plain, insecure) = (consul(None, false), consul(None, true));
        let u = upstream(DiscoveryConfig::Static(vec![ep("127.0.0.1:1", 1)]));
        let a1 = reg.attach(&u, &u.name, &plain).unwrap();
        let a2 = reg.attach(&u, &u.name, &plain).unwrap();
        assert_eq!(reg.running(), 1, "equal TLS settings share one watch");
        let a3 = reg.attach(&u, &u.name, &insecure).unwrap();
        assert_eq!(reg.running(), 2, "other TLS settings are another watch");
        drop((a1, a2, a3));
        assert_eq!(reg.running(), 0);
    }

    #[tokio::test]
    async fn an_unreadable_consul_tls_ca_refuses_the_attachment_and_starts_nothing() {
        let reg = Registry::new(Arc::new(Metrics::new()));
        let u = upstream(DiscoveryConfig::Static(vec![ep("127.0.0.1:1", 1)]));
        let missing = "/nonexistent/switchyard-consul-ca.pem";
        let e = reg.attach(&u, &u.name, &consul(Some(missing), false)).unwrap_err();
        assert!(
            e.starts_with("upstream \"u\": consul https://127.0.0.1:1: tls_ca: ") && e.contains(missing),
            "{e}"
        );
        assert_eq!(reg.running(), 0);
    }
}
