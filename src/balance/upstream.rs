//! A named upstream at run time: its live endpoint set (swapped whole on every change), its
//! discovery status, its connection pool and limits, and the wiring of active health probes and
//! the passive outlier breaker into what may be picked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::{HeaderMap, Uri};
use tokio_util::sync::CancellationToken;

use super::endpoint::{Endpoint, EndpointState};
use super::hash;
use super::set::EndpointSet;
use crate::config::{Balance, StaticEndpoint, UpstreamConfig};
use crate::health::{self, Health};
use crate::metrics::{EndpointStateLabels, Metrics, Name};
use crate::proxy::limits::Limits;
use crate::proxy::UpstreamClient;
use crate::resilience::outlier::{Phase, Verdict};

/// Where an upstream's endpoints came from, for `GET /upstreams`.
#[derive(Clone, Debug, Default)]
pub struct DiscoveryStatus {
    /// When the endpoint set last changed.
    pub last_update: Option<SystemTime>,
    /// The last discovery failure, cleared by the next success.
    pub last_error: Option<String>,
    /// When discovery first produced a result (endpoints, an authoritative empty answer, or an
    /// error); `GET /ready` waits for it.
    pub first_result_at: Option<SystemTime>,
}

/// A named upstream: its definition, live endpoints, picker state and connection pool.
///
/// Its probe and ejection-timer tasks hold only a `Weak` to it and stop when it is dropped (a
/// reload that replaces the upstream), through the cancellation token cancelled in `Drop`.
#[derive(Debug)]
pub struct Upstream {
    /// The name, shared with metric labels.
    pub name: Name,
    /// The definition this was built from; a reload with an equal definition keeps `self`.
    pub config: UpstreamConfig,
    endpoints: ArcSwap<EndpointSet>,
    cursor: AtomicUsize,
    /// The pooled client for all of this upstream's endpoints.
    pub client: UpstreamClient,
    /// `[upstream.limits]`, shared by every route that uses this upstream.
    pub limits: Arc<Limits>,
    status: Mutex<DiscoveryStatus>,
    /// Serialises set rebuilds (discovery, health, ejection) so none is lost; never held on the
    /// request path's fast path nor across an await.
    writer: Mutex<()>,
    /// One probe task per endpoint address.
    probes: Mutex<HashMap<String, CancellationToken>>,
    stop: CancellationToken,
    this: Weak<Upstream>,
    metrics: Option<Arc<Metrics>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Upstream {
    /// Build an upstream; static endpoints are installed at once.
    pub fn new(config: UpstreamConfig) -> Result<Arc<Self>, String> {
        Self::with_metrics(config, None)
    }

    /// Build an upstream that keeps `switchyard_upstream_endpoints` current in `metrics`.
    pub fn with_metrics(config: UpstreamConfig, metrics: Option<Arc<Metrics>>) -> Result<Arc<Self>, String> {
        let name: Name = Arc::new(config.name.clone());
        let limits =
            Limits::new(config.limits.clone(), Arc::clone(&name), metrics.clone().unwrap_or_default());
        let client = UpstreamClient::new(&config, Arc::clone(&limits))?;
        let up = Arc::new_cyclic(|this| Upstream {
            name,
            limits,
            endpoints: ArcSwap::from_pointee(EndpointSet::new(config.balance, Vec::new(), 0)),
            cursor: AtomicUsize::new(0),
            client,
            status: Mutex::new(DiscoveryStatus::default()),
            writer: Mutex::new(()),
            probes: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
            this: this.clone(),
            metrics,
            config,
        });
        if let crate::config::DiscoveryConfig::Static(list) = &up.config.discovery {
            up.set_endpoints(list)?;
        }
        Ok(up)
    }

    /// The current endpoint set.
    pub fn endpoints(&self) -> Arc<EndpointSet> {
        self.endpoints.load_full()
    }

    /// Install a new endpoint list. Endpoints whose address stays keep their state (in-flight
    /// count, health, ejection, latency; a changed weight keeps all but the in-flight count);
    /// new ones start probing at once (and take no traffic until their first probe passes, when
    /// probes are configured); probes of removed ones stop.
    pub fn set_endpoints(&self, list: &[StaticEndpoint]) -> Result<(), String> {
        let initial = if self.config.health.is_some() { Health::Unknown } else { Health::Healthy };
        let added = {
            let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let old = self.endpoints.load();
            let by_addr: HashMap<&str, &Arc<Endpoint>> =
                old.endpoints.iter().map(|e| (e.address.as_str(), e)).collect();
            let mut next = Vec::with_capacity(list.len());
            let mut added = Vec::new();
            for se in list {
                match by_addr.get(se.address.as_str()) {
                    Some(e) if e.weight == se.weight.max(1) => next.push(Arc::clone(e)),
                    Some(e) => next.push(e.reweighted(se.weight)),
                    None => {
                        let e = Endpoint::new(&se.address, se.weight, initial)?;
                        added.push(Arc::clone(&e));
                        next.push(e);
                    }
                }
            }
            self.install(next);
            added
        };
        {
            let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
            let now = SystemTime::now();
            st.last_update = Some(now);
            st.last_error = None;
            st.first_result_at.get_or_insert(now);
        }
        self.sync_probes(list, &added);
        Ok(())
    }

    /// Record a discovery failure; the endpoint set is left as it is (docs/discovery.md: never empty
    /// an upstream because discovery failed).
    pub fn set_discovery_error(&self, error: String) {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.last_error = Some(error);
        st.first_result_at.get_or_insert_with(SystemTime::now);
    }

    /// What discovery last said.
    pub fn discovery_status(&self) -> DiscoveryStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Pick an endpoint for a request with no hash key, preferring one not in `tried` (the
    /// addresses of the `Endpoint`s already tried: retries go elsewhere whenever another
    /// endpoint exists). `None` when nothing may be picked.
    pub fn pick(&self, set: &EndpointSet, tried: &[usize]) -> Option<Arc<Endpoint>> {
        self.pick_keyed(set, None, tried)
    }

    /// [`Upstream::pick`] with the request's hash key (see [`Upstream::request_key`]).
    pub fn pick_keyed(&self, set: &EndpointSet, key: Option<u64>, tried: &[usize]) -> Option<Arc<Endpoint>> {
        let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
        set.pick(key, tried, &self.cursor, &mut rng).cloned()
    }

    /// The request's hash key, for `ring_hash` and `maglev` (`None` for other pickers, or when
    /// the request lacks the `hash_on` value).
    pub fn request_key(&self, headers: &HeaderMap, uri: &Uri, client: Option<IpAddr>) -> Option<u64> {
        match (self.config.balance, &self.config.hash_on) {
            (Balance::RingHash | Balance::Maglev, Some(on)) => hash::request_key(on, headers, uri, client),
            _ => None,
        }
    }

    /// Rebuild the set from the same endpoints after a health or ejection change.
    pub fn refresh(&self) {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.endpoints.load();
        self.install(cur.endpoints.clone());
    }

    /// Store a set over `endpoints` and update the endpoint-state gauge. Caller holds `writer`.
    fn install(&self, endpoints: Vec<Arc<Endpoint>>) {
        let set = EndpointSet::new(self.config.balance, endpoints, self.config.panic_threshold);
        if let Some(m) = &self.metrics {
            let (mut healthy, mut unhealthy, mut ejected) = (0, 0, 0);
            for e in &set.endpoints {
                if e.state.phase() == Phase::Ejected {
                    ejected += 1;
                } else if e.state.health() == Health::Healthy {
                    healthy += 1;
                } else {
                    unhealthy += 1;
                }
            }
            for (state, n) in [("healthy", healthy), ("unhealthy", unhealthy), ("ejected", ejected)] {
                m.upstream_endpoints
                    .get_or_create(&EndpointStateLabels { upstream: Arc::clone(&self.name), state })
                    .set(n);
            }
        }
        self.endpoints.store(Arc::new(set));
    }

    // --- passive outlier detection (the breaker is `resilience::outlier`) ---

    /// Report the outcome of a request to `ep` (`success`: a response that is not a 5xx).
    pub fn report(&self, ep: &Endpoint, success: bool) {
        let Some(cfg) = &self.config.outlier else { return };
        if let Verdict::Eject { retrial } = ep.state.breaker.on_outcome(cfg, success) {
            self.eject(&ep.state, retrial);
        }
    }

    /// A trial request was abandoned without an outcome (cancelled): offer the trial again.
    pub fn abandon(&self, ep: &Endpoint) {
        ep.state.breaker.abandon();
    }

    /// Eject `st` if the limit allows, take it out of the pick set and arm its expiry timer.
    fn eject(&self, st: &Arc<EndpointState>, retrial: bool) {
        let Some(cfg) = &self.config.outlier else { return };
        let (until, generation) = {
            let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let set = self.endpoints.load();
            let out = set.endpoints.iter().filter(|e| e.state.phase() != Phase::Closed).count();
            let Some(ejected) = st.breaker.eject(cfg, retrial, out, set.endpoints.len()) else { return };
            self.install(set.endpoints.clone());
            ejected
        };
        tracing::warn!(upstream = %self.name, ejection = ?until, "endpoint ejected");
        self.spawn_expiry(Arc::clone(st), until, generation);
    }

    fn spawn_expiry(&self, st: Arc<EndpointState>, after: Duration, generation: u64) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (this, stop) = (self.this.clone(), self.stop.clone());
        rt.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(after) => {}
            }
            if let Some(up) = this.upgrade() {
                if st.breaker.expire(generation) {
                    up.refresh();
                }
            }
        });
    }

    // --- active health ---

    /// Start probes for `added`, stop those of addresses not in `list`.
    fn sync_probes(&self, list: &[StaticEndpoint], added: &[Arc<Endpoint>]) {
        let Some(cfg) = &self.config.health else { return };
        let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        probes.retain(|addr, token| {
            let keep = list.iter().any(|se| &se.address == addr);
            if !keep {
                token.cancel();
            }
            keep
        });
        if added.is_empty() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!(upstream = %self.name, "no async runtime: health probes not started");
            return;
        }
        let cfg = Arc::new(cfg.clone());
        for ep in added {
            if let Some(old) = probes.remove(ep.address.as_str()) {
                old.cancel();
            }
            let token = self.stop.child_token();
            probes.insert(ep.address.to_string(), token.clone());
            let client = self.client.clone();
            let address = Arc::clone(&ep.address);
            let target = health::ProbeTarget {
                address: Arc::clone(&ep.address),
                version: client.version(),
                send: Arc::new(move |mut req| {
                    let (client, address) = (client.clone(), Arc::clone(&address));
                    Box::pin(async move {
                        let authority = req.uri().authority().cloned();
                        if let Some(a) = authority {
                            client.address(&mut req, &a);
                        }
                        client.send(&address, req).await
                    })
                }),
            };
            let (this, st) = (self.this.clone(), Arc::clone(&ep.state));
            let on_result: health::OnResult = Box::new(move |ok, change| {
                if let Some(up) = this.upgrade() {
                    up.on_probe(&st, ok, change);
                }
            });
            health::spawn(Arc::clone(&cfg), target, on_result, token);
        }
    }

    /// A probe result: publish a health change, and let the breaker see it (a pass un-ejects,
    /// Envoy's default; a failure of a half-open endpoint ejects it again).
    fn on_probe(&self, st: &Arc<EndpointState>, ok: bool, change: Option<Health>) {
        let mut rebuild = false;
        if let Some(h) = change {
            st.set_health(h);
            rebuild = true;
        }
        match st.breaker.on_probe(ok) {
            Verdict::Restore => rebuild = true,
            Verdict::Eject { retrial } => self.eject(st, retrial),
            Verdict::Keep => {}
        }
        if rebuild {
            self.refresh();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn upstream(eps: &[(&str, u32)]) -> Arc<Upstream> {
        let list = eps.iter().map(|(a, w)| StaticEndpoint { address: a.to_string(), weight: *w }).collect();
        Upstream::new(UpstreamConfig::new("u", crate::config::DiscoveryConfig::Static(list))).unwrap()
    }

    fn picks(u: &Upstream, n: usize) -> Vec<String> {
        let set = u.endpoints();
        (0..n).map(|_| u.pick(&set, &[]).unwrap().address.to_string()).collect()
    }

    #[tokio::test]
    async fn equal_weights_alternate_in_order() {
        let u = upstream(&[("a:1", 1), ("b:1", 1), ("c:1", 1)]);
        assert_eq!(picks(&u, 6), ["a:1", "b:1", "c:1", "a:1", "b:1", "c:1"]);
    }

    #[tokio::test]
    async fn smooth_weighted_sequence_is_nginx_s() {
        // NGINX's documented sequence for weights 5:1:1 is a a b a c a a.
        let u = upstream(&[("a:1", 5), ("b:1", 1), ("c:1", 1)]);
        assert_eq!(picks(&u, 7), ["a:1", "a:1", "b:1", "a:1", "c:1", "a:1", "a:1"]);
    }

    #[tokio::test]
    async fn retry_avoids_tried_endpoint() {
        let u = upstream(&[("a:1", 1), ("b:1", 1)]);
        let set = u.endpoints();
        let first = u.pick(&set, &[]).unwrap();
        for _ in 0..5 {
            let next = u.pick(&set, &[Arc::as_ptr(&first) as usize]).unwrap();
            assert_ne!(next.address, first.address);
        }
    }

    #[tokio::test]
    async fn endpoints_that_stay_keep_their_state() {
        let u = upstream(&[("a:1", 1), ("b:1", 1)]);
        let a = Arc::clone(&u.endpoints().endpoints[0]);
        a.in_flight.store(7, Ordering::Relaxed);
        u.set_endpoints(&[
            StaticEndpoint { address: "c:1".into(), weight: 1 },
            StaticEndpoint { address: "a:1".into(), weight: 1 },
        ])
        .unwrap();
        let set = u.endpoints();
        assert_eq!(set.endpoints.len(), 2);
        assert!(Arc::ptr_eq(&set.endpoints[1], &a));
    }

    #[tokio::test]
    async fn each_serving_thread_has_its_own_connection_pool() {
        crate::proxy::reserve_pools(2);
        let u = upstream(&[("a:1", 1)]);
        let here = u.client.pool_id();
        let u2 = Arc::clone(&u);
        let there = std::thread::spawn(move || {
            crate::proxy::set_worker(1);
            u2.client.pool_id()
        })
        .join()
        .unwrap();
        assert_ne!(here, there, "serving thread 1 has a pool of its own");
        assert_eq!(here, u.client.pool_id(), "a thread keeps its pool");
    }
}
