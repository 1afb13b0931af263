//! The [`Registry`] of shared sources, and the [`Adapter`] that feeds one upstream from one.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::config::{DiscoveryConfig, StaticEndpoint};
use crate::metrics::{DiscoveryLabels, Metrics, Name};

use super::{consul, dns, fixed, zookeeper, Publisher, Resolution, Target};

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
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
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
fn source_task(config: DiscoveryConfig, out: Publisher) -> Result<BoxFuture<'static, ()>, String> {
    Ok(match config {
        DiscoveryConfig::Static(list) => fixed::run(list, out).boxed(),
        DiscoveryConfig::Dns { name, port, record, refresh, resolver } => {
            dns::run(dns::DnsSource { name, port, record, refresh, resolver }, out).boxed()
        }
        DiscoveryConfig::ZooKeeper { servers, path, format, endpoint_name, session_timeout } => {
            zookeeper::run(zookeeper::ZkSource { servers, path, format, endpoint_name, session_timeout }, out)
                .boxed()
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
            consul::run(src, agent, out).boxed()
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
