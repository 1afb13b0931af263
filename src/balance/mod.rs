//! Upstreams at run time: the live endpoint set and the endpoint picker.
//!
//! An [`Upstream`] owns an immutable [`EndpointSet`] snapshot behind an `ArcSwap`; whatever
//! discovers endpoints (a static list today; DNS, ZooKeeper, Consul later) calls
//! [`Upstream::set_endpoints`], which builds a new set off the request path, keeps the
//! [`Endpoint`] objects (and so their counters and pools) of addresses that stay, and swaps it in.
//! Picking reads the snapshot without a lock and does not allocate.

mod round_robin;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::uri::Authority;

use crate::config::{StaticEndpoint, UpstreamConfig};
use crate::metrics::Name;
use crate::proxy::UpstreamClient;

pub use round_robin::SmoothSchedule;

/// One endpoint of an upstream. Shared by every endpoint set it stays in.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port`, as discovered.
    pub address: Name,
    /// The same, parsed for building request URIs.
    pub authority: Authority,
    /// Relative weight (at least 1).
    pub weight: u32,
    /// Requests in flight to it.
    pub in_flight: AtomicU32,
}

/// An immutable endpoint set with its precomputed pick schedule.
#[derive(Debug)]
pub struct EndpointSet {
    /// The endpoints, in discovery order.
    pub endpoints: Vec<Arc<Endpoint>>,
    schedule: SmoothSchedule,
}

impl EndpointSet {
    fn new(endpoints: Vec<Arc<Endpoint>>) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        EndpointSet { schedule: SmoothSchedule::new(&weights), endpoints }
    }
}

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
    status: Mutex<DiscoveryStatus>,
}

impl Upstream {
    /// Build an upstream; static endpoints are installed at once.
    pub fn new(config: UpstreamConfig) -> Result<Arc<Self>, String> {
        let client = UpstreamClient::new(&config)?;
        let up = Arc::new(Upstream {
            name: Arc::new(config.name.clone()),
            endpoints: ArcSwap::from_pointee(EndpointSet::new(Vec::new())),
            cursor: AtomicUsize::new(0),
            client,
            status: Mutex::new(DiscoveryStatus::default()),
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

    /// Install a new endpoint list. Endpoints whose address stays keep their state.
    pub fn set_endpoints(&self, list: &[StaticEndpoint]) -> Result<(), String> {
        let old = self.endpoints.load();
        let by_addr: HashMap<&str, &Arc<Endpoint>> =
            old.endpoints.iter().map(|e| (e.address.as_str(), e)).collect();
        let mut next = Vec::with_capacity(list.len());
        for se in list {
            match by_addr.get(se.address.as_str()) {
                Some(e) if e.weight == se.weight => next.push(Arc::clone(e)),
                _ => {
                    let authority: Authority = se
                        .address
                        .parse()
                        .map_err(|e| format!("endpoint {:?} is not host:port: {e}", se.address))?;
                    next.push(Arc::new(Endpoint {
                        address: Arc::new(se.address.clone()),
                        authority,
                        weight: se.weight.max(1),
                        in_flight: AtomicU32::new(0),
                    }));
                }
            }
        }
        self.endpoints.store(Arc::new(EndpointSet::new(next)));
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        st.last_update = Some(now);
        st.last_error = None;
        st.first_result_at.get_or_insert(now);
        Ok(())
    }

    /// Record a discovery failure; the endpoint set is left as it is (SPEC 2.2.1: never empty
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

    /// Pick an endpoint for a request, preferring one not in `tried` (the addresses of the
    /// `Endpoint`s already tried: retries go elsewhere whenever another endpoint exists).
    /// `None` when the set is empty.
    pub fn pick(&self, set: &EndpointSet, tried: &[usize]) -> Option<Arc<Endpoint>> {
        let n = set.schedule.len();
        if n == 0 {
            return None;
        }
        // At most one full cycle: after it every endpoint has been offered once.
        for _ in 0..n {
            let i = self.cursor.fetch_add(1, Ordering::Relaxed);
            let ep = &set.endpoints[set.schedule.at(i)];
            if !tried.contains(&(Arc::as_ptr(ep) as usize)) {
                return Some(Arc::clone(ep));
            }
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed);
        Some(Arc::clone(&set.endpoints[set.schedule.at(i)]))
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
