//! Upstreams at run time: the live endpoint set, the six endpoint pickers, and the wiring of
//! active health (`crate::health`) and passive outlier ejection into what may be picked.
//!
//! An [`Upstream`] owns an immutable [`EndpointSet`] snapshot behind an `ArcSwap`; whatever
//! discovers endpoints (a static list today; DNS, ZooKeeper, Consul later) calls
//! [`Upstream::set_endpoints`], which builds a new set off the request path, keeps the
//! [`Endpoint`] objects (and so their counters, health, ejection and latency state) of addresses
//! that stay, and swaps it in. A change of health or ejection rebuilds the set the same way, so
//! the set holds only the eligible endpoints (healthy and not ejected) and each picker's
//! precomputed structure over them: the smooth-WRR schedule (`round_robin`), an alias table
//! (`random`, and the candidate draw of `least_request` and `p2c_ewma`), a hash ring
//! (`ring_hash`) or a Maglev table (`maglev`). Picking reads the snapshot without a lock, does
//! not allocate, and costs the same for 3 or 10 000 endpoints.
//!
//! With no eligible endpoint a pick fails (503 `no_healthy_upstream`), unless fewer than
//! `panic_threshold` percent are eligible, in which case every endpoint is used (Envoy's panic
//! mode). Outlier ejection is Envoy's consecutive-failure detector with an explicit half-open
//! trial: see [`Upstream::report`].

mod endpoint;
pub mod hash;
mod maglev;
mod ring_hash;
mod round_robin;
mod weighted;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::{HeaderMap, Uri};
use tokio_util::sync::CancellationToken;

use crate::config::{Balance, StaticEndpoint, UpstreamConfig};
use crate::health::{self, Health};
use crate::metrics::{EndpointStateLabels, Metrics, Name};
use crate::proxy::limits::Limits;
use crate::proxy::UpstreamClient;

pub use endpoint::{Endpoint, EndpointState, Phase, OUTCOMES};
pub use round_robin::SmoothSchedule;

/// The longest ejection, whatever the multiplier (Envoy's `max_ejection_time` default).
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// An ejection count is forgotten after the endpoint has been back this long without being
/// ejected again, so that one bad hour does not lengthen ejections forever.
const EJECTION_MEMORY: Duration = MAX_EJECTION;

// === impl EndpointSet ===

/// How a set chooses among its active endpoints.
#[derive(Debug)]
enum Picker {
    RoundRobin(SmoothSchedule),
    Random(weighted::AliasTable),
    LeastRequest(weighted::AliasTable),
    P2cEwma(weighted::AliasTable),
    RingHash(ring_hash::Ring, weighted::AliasTable),
    Maglev(maglev::Table, weighted::AliasTable),
}

/// An immutable endpoint set with its precomputed pick structure.
#[derive(Debug)]
pub struct EndpointSet {
    /// Every endpoint, eligible or not, in discovery order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// What picks choose among: the eligible endpoints, or all of them in panic mode.
    active: Vec<Arc<Endpoint>>,
    picker: Picker,
    panic: bool,
}

fn ptr(ep: &Arc<Endpoint>) -> usize {
    Arc::as_ptr(ep) as usize
}

impl EndpointSet {
    /// A set over `endpoints` for `balance`: the eligible ones (healthy, not ejected) are
    /// active, or all when fewer than `panic_threshold` percent are eligible (0 = never).
    /// Builds the picker's table here, never per request.
    pub fn new(balance: Balance, endpoints: Vec<Arc<Endpoint>>, panic_threshold: u8) -> Self {
        let eligible: Vec<Arc<Endpoint>> = endpoints.iter().filter(|e| e.is_eligible()).cloned().collect();
        let panic =
            !endpoints.is_empty() && eligible.len() * 100 < usize::from(panic_threshold) * endpoints.len();
        let active = if panic { endpoints.clone() } else { eligible };
        let weights: Vec<u32> = active.iter().map(|e| e.weight).collect();
        let alias = || weighted::AliasTable::new(&weights);
        let addrs = || active.iter().map(|e| (e.address.as_str(), e.weight));
        let picker = match balance {
            Balance::RoundRobin => Picker::RoundRobin(SmoothSchedule::new(&weights)),
            Balance::Random => Picker::Random(alias()),
            Balance::LeastRequest => Picker::LeastRequest(alias()),
            Balance::P2cEwma => Picker::P2cEwma(alias()),
            Balance::RingHash => Picker::RingHash(ring_hash::Ring::new(addrs()), alias()),
            Balance::Maglev => Picker::Maglev(maglev::Table::new(addrs()), alias()),
        };
        EndpointSet { endpoints, active, picker, panic }
    }

    /// The endpoints picks choose among.
    pub fn active(&self) -> &[Arc<Endpoint>] {
        &self.active
    }

    /// Whether panic mode is on (too few eligible endpoints: all are used).
    pub fn is_panic(&self) -> bool {
        self.panic
    }

    /// Pick an endpoint. `key` is the request's hash (for `ring_hash`/`maglev`; `None` falls
    /// back to weighted random); `tried` holds the [`Endpoint`] addresses (`Arc::as_ptr`)
    /// already tried for this request, avoided whenever another endpoint is available;
    /// `cursor` is the round-robin position; `rng` drives the random choices (seed it for
    /// reproducible picks). `None` when nothing may be picked.
    pub fn pick(
        &self,
        key: Option<u64>,
        tried: &[usize],
        cursor: &AtomicUsize,
        rng: &mut fastrand::Rng,
    ) -> Option<&Arc<Endpoint>> {
        let n = self.active.len();
        if n == 0 {
            return None;
        }
        // In panic mode every endpoint takes traffic, trial or not.
        let admit = |ep: &Arc<Endpoint>| self.panic || ep.state.admit();
        let fresh = |ep: &Arc<Endpoint>| !tried.contains(&ptr(ep)) && admit(ep);
        let first = match &self.picker {
            Picker::RoundRobin(s) => {
                // At most one full cycle: after it every endpoint has been offered once.
                for _ in 0..s.len() {
                    let ep = &self.active[s.at(cursor.fetch_add(1, Ordering::Relaxed))];
                    if fresh(ep) {
                        return Some(ep);
                    }
                }
                None
            }
            Picker::Random(t) => Some(t.sample(rng)),
            Picker::LeastRequest(t) => Some(self.p2c(t, rng, |e| {
                // in_flight / weight, compared without division; ties keep the first draw.
                (u64::from(e.in_flight.load(Ordering::Relaxed)), u64::from(e.weight))
            })),
            Picker::P2cEwma(t) => {
                let now = endpoint::now_ns();
                Some(self.p2c_f64(t, rng, |e| {
                    e.state.ewma_at(now) * f64::from(e.in_flight.load(Ordering::Relaxed) + 1)
                }))
            }
            Picker::RingHash(r, t) => Some(match key {
                Some(k) if !r.is_empty() => r.lookup(k),
                _ => t.sample(rng),
            }),
            Picker::Maglev(m, t) => Some(match key {
                Some(k) if !m.is_empty() => m.lookup(k),
                _ => t.sample(rng),
            }),
        };
        if let Some(i) = first {
            if fresh(&self.active[i]) {
                return Some(&self.active[i]);
            }
        }
        // The choice was tried already (a retry) or is a half-open endpoint whose trial is
        // taken: the first acceptable endpoint from a random start, else any admissible one.
        let start = rng.usize(..n);
        let ring = || (0..n).map(|k| &self.active[(start + k) % n]);
        ring().find(|ep| fresh(ep)).or_else(|| ring().find(|ep| admit(ep)))
    }

    /// Power of two choices on a rational cost `num/den` (lower wins).
    fn p2c(
        &self,
        t: &weighted::AliasTable,
        rng: &mut fastrand::Rng,
        cost: impl Fn(&Endpoint) -> (u64, u64),
    ) -> usize {
        let (a, b) = two(t, rng);
        let ((an, ad), (bn, bd)) = (cost(&self.active[a]), cost(&self.active[b]));
        if bn * ad < an * bd {
            b
        } else {
            a
        }
    }

    /// Power of two choices on a float cost (lower wins).
    fn p2c_f64(
        &self,
        t: &weighted::AliasTable,
        rng: &mut fastrand::Rng,
        cost: impl Fn(&Endpoint) -> f64,
    ) -> usize {
        let (a, b) = two(t, rng);
        if cost(&self.active[b]) < cost(&self.active[a]) {
            b
        } else {
            a
        }
    }
}

/// Two weighted draws, distinct whenever there are two endpoints: a few weighted redraws, then
/// (rarely, with one dominant weight) a uniform pick among the others, so the cost is bounded.
fn two(t: &weighted::AliasTable, rng: &mut fastrand::Rng) -> (usize, usize) {
    let n = t.len();
    let a = t.sample(rng);
    if n < 2 {
        return (a, a);
    }
    for _ in 0..3 {
        let b = t.sample(rng);
        if b != a {
            return (a, b);
        }
    }
    (a, (a + 1 + rng.usize(..n - 1)) % n)
}

// === impl Upstream ===

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

    // --- passive outlier detection ---

    /// Report the outcome of a request to `ep` (`success`: a response that is not a 5xx).
    ///
    /// Closed: `consecutive_failures` failures in a row eject the endpoint for `ejection_time`
    /// × times ejected (capped at 300 s), unless `max_ejection_percent` of the endpoints are
    /// out already (one may always be). When the time is over it is half-open: the next request
    /// is a trial; its success closes the breaker, its failure ejects again, for longer.
    pub fn report(&self, ep: &Endpoint, success: bool) {
        let Some(cfg) = &self.config.outlier else { return };
        let st = &ep.state;
        match st.phase() {
            Phase::Closed if success => {
                if st.failures.load(Ordering::Relaxed) != 0 {
                    st.failures.store(0, Ordering::Relaxed);
                }
            }
            Phase::Closed => {
                let n = st.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if n >= cfg.consecutive_failures {
                    self.eject(st, false);
                }
            }
            Phase::Trial if success => {
                // Already in the pick set: closing needs no rebuild.
                if st.swap_phase(Phase::Trial, Phase::Closed) {
                    st.failures.store(0, Ordering::Relaxed);
                }
            }
            Phase::Trial => self.eject(st, true),
            // Late answers of requests sent before the ejection change nothing.
            Phase::Ejected | Phase::HalfOpen => {}
        }
    }

    /// A trial request was abandoned without an outcome (cancelled): offer the trial again.
    pub fn abandon(&self, ep: &Endpoint) {
        ep.state.swap_phase(Phase::Trial, Phase::HalfOpen);
    }

    /// Eject `st` if the limit allows (`retrial`: a failed trial, which is already out of
    /// traffic and so always re-ejected).
    fn eject(&self, st: &Arc<EndpointState>, retrial: bool) {
        let Some(cfg) = &self.config.outlier else { return };
        let (until, generation) = {
            let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            if !retrial && st.phase() != Phase::Closed {
                return;
            }
            let set = self.endpoints.load();
            if !retrial {
                let out = set.endpoints.iter().filter(|e| e.state.phase() != Phase::Closed).count();
                let total = set.endpoints.len();
                if out > 0 && (out + 1) * 100 > usize::from(cfg.max_ejection_percent) * total {
                    return;
                }
            }
            let mut book = st.ejections.lock().unwrap_or_else(|p| p.into_inner());
            if book.last_end.is_some_and(|t| t.elapsed() > EJECTION_MEMORY) && !retrial {
                book.times = 0;
            }
            book.times = book.times.saturating_add(1);
            let d = cfg.ejection_time.saturating_mul(book.times).min(MAX_EJECTION);
            book.until = Some(SystemTime::now() + d);
            book.generation += 1;
            st.failures.store(0, Ordering::Relaxed);
            st.set_phase(Phase::Ejected);
            let generation = book.generation;
            drop(book);
            self.install(set.endpoints.clone());
            (d, generation)
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
            let Some(up) = this.upgrade() else { return };
            {
                let mut book = st.ejections.lock().unwrap_or_else(|p| p.into_inner());
                if book.generation != generation || !st.swap_phase(Phase::Ejected, Phase::HalfOpen) {
                    return;
                }
                book.last_end = Some(Instant::now());
            }
            up.refresh();
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

    /// A probe result: publish a health change; a pass un-ejects (Envoy's default), a failure
    /// of a half-open endpoint ejects it again.
    fn on_probe(&self, st: &Arc<EndpointState>, ok: bool, change: Option<Health>) {
        let mut rebuild = false;
        if let Some(h) = change {
            st.set_health(h);
            rebuild = true;
        }
        if ok && st.phase() != Phase::Closed {
            let mut book = st.ejections.lock().unwrap_or_else(|p| p.into_inner());
            book.generation += 1; // disarm the expiry timer
            book.last_end = Some(Instant::now());
            st.set_phase(Phase::Closed);
            st.failures.store(0, Ordering::Relaxed);
            rebuild = true;
        } else if !ok && st.phase() == Phase::HalfOpen && st.swap_phase(Phase::HalfOpen, Phase::Trial) {
            self.eject(st, true);
        }
        if rebuild {
            self.refresh();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, DiscoveryConfig, UpstreamLimits, UpstreamProtocol};
    use std::time::Duration;

    fn upstream(eps: &[(&str, u32)]) -> Arc<Upstream> {
        let list = eps.iter().map(|(a, w)| StaticEndpoint { address: a.to_string(), weight: *w }).collect();
        Upstream::new(UpstreamConfig {
            name: "u".into(),
            discovery: DiscoveryConfig::Static(list),
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
}
