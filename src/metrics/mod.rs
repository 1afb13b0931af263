//! The metrics registry and every metric family, with the names of docs/metrics.md exactly.
//!
//! prometheus-client appends `_total` to counters itself, so counters are registered without
//! it. Label values that repeat per request (route, upstream, listener names) are `Arc<String>`
//! so building a label set clones pointers, not strings.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A shared label value.
pub(crate) type Name = Arc<String>;

/// `switchyard_requests_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Listener name.
    pub listener: Name,
    /// Route name, empty when none matched.
    pub route: Name,
    /// Upstream name, empty when none was used.
    pub upstream: Name,
    /// Numeric status.
    pub code: u16,
}

/// `{route}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// Route name.
    pub route: Name,
}

/// `{listener}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    /// Listener name.
    pub listener: Name,
}

/// `{upstream,endpoint,outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamRequestLabels {
    /// Upstream name.
    pub upstream: Name,
    /// Endpoint address.
    pub endpoint: Name,
    /// ok | 5xx | connect_failed | reset | timeout
    pub outcome: &'static str,
}

/// `{upstream,state}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointStateLabels {
    /// Upstream name.
    pub upstream: Name,
    /// healthy | unhealthy | ejected
    pub state: &'static str,
}

/// `{route,reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// Route name.
    pub route: Name,
    /// The `on` condition that fired.
    pub reason: String,
}

/// `{upstream,limit}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverloadLabels {
    /// Upstream name.
    pub upstream: Name,
    /// The `[upstream.limits]` key.
    pub limit: &'static str,
}

/// `{upstream,type}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiscoveryLabels {
    /// Upstream name.
    pub upstream: Name,
    /// static | dns | zookeeper | consul
    pub r#type: &'static str,
}

/// `{result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// success | failure
    pub result: &'static str,
}

/// `{listener,result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// Listener name.
    pub listener: Name,
    /// success | failure
    pub result: &'static str,
}

/// `{type}`: a fleet's routes source, `zookeeper` or `consul`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// zookeeper | consul
    pub r#type: &'static str,
}

/// `{cert}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabel {
    /// Certificate file stem.
    pub cert: String,
}

/// The `switchyard_requests_total` series one route (or the unrouted requests) has used, found
/// by comparing label pointers instead of hashing label strings on every request. Label values
/// are `Arc`s shared by everything that carries them, so a pointer names a value; a new `Arc`
/// for an equal string only costs one more entry resolving to the same series. At most
/// [`MAX_CACHED`] entries are kept; past that, lookups go to the family as usual.
///
/// A lookup takes no lock and writes nothing shared but the counter: every serving thread counts
/// here on every request, and a lock's state (or a label's reference count) that each of them
/// writes would move between their cores each time.
#[derive(Debug)]
pub struct RequestCounters {
    seen: Box<[OnceLock<Seen>]>,
}

/// A cached series: listener and upstream label pointers, status code, the counter.
type Seen = (usize, usize, u16, Counter);

/// Entries a [`RequestCounters`] keeps (listeners × upstreams × status codes of one route).
const MAX_CACHED: usize = 64;

impl Default for RequestCounters {
    fn default() -> Self {
        RequestCounters { seen: (0..MAX_CACHED).map(|_| OnceLock::new()).collect() }
    }
}

impl RequestCounters {
    /// Count one request with these labels.
    pub fn inc(
        &self,
        family: &Family<RequestLabels, Counter>,
        listener: &Name,
        route: &Name,
        upstream: &Name,
        code: u16,
    ) {
        let key = (Arc::as_ptr(listener) as usize, Arc::as_ptr(upstream) as usize, code);
        for slot in self.seen.iter() {
            match slot.get() {
                Some(e) if (e.0, e.1, e.2) == key => {
                    e.3.inc();
                    return;
                }
                Some(_) => {}
                None => {
                    let c = family.get_or_create_owned(&RequestLabels {
                        listener: Arc::clone(listener),
                        route: Arc::clone(route),
                        upstream: Arc::clone(upstream),
                        code,
                    });
                    c.inc();
                    // Another thread may have taken the slot meanwhile: then this key is
                    // cached on a later request, in a later slot.
                    let _ = slot.set((key.0, key.1, key.2, c));
                    return;
                }
            }
        }
        family
            .get_or_create(&RequestLabels {
                listener: Arc::clone(listener),
                route: Arc::clone(route),
                upstream: Arc::clone(upstream),
                code,
            })
            .inc();
    }
}

fn duration_histogram() -> Histogram {
    // 0.5 ms .. ~65 s in powers of two: proxy latencies span that range.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Every metric family of docs/metrics.md.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `switchyard_requests_total`
    pub requests: Family<RequestLabels, Counter>,
    /// `switchyard_request_duration_seconds`
    pub request_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// `switchyard_upstream_requests_total`
    pub upstream_requests: Family<UpstreamRequestLabels, Counter>,
    /// `switchyard_upstream_endpoints`
    pub upstream_endpoints: Family<EndpointStateLabels, Gauge>,
    /// `switchyard_retries_total`
    pub retries: Family<RetryLabels, Counter>,
    /// `switchyard_upstream_overloaded_total`
    pub upstream_overloaded: Family<OverloadLabels, Counter>,
    /// `switchyard_discovery_updates_total`
    pub discovery_updates: Family<DiscoveryLabels, Counter>,
    /// `switchyard_discovery_errors_total`
    pub discovery_errors: Family<DiscoveryLabels, Counter>,
    /// `switchyard_config_reloads_total`
    pub config_reloads: Family<ResultLabel, Counter>,
    /// `switchyard_routes_source_errors_total` (fleet mode)
    pub routes_source_errors: Family<SourceLabel, Counter>,
    /// `switchyard_connections_active`
    pub connections_active: Family<ListenerLabel, Gauge>,
    /// `switchyard_tls_handshakes_total`
    pub tls_handshakes: Family<HandshakeLabels, Counter>,
    /// `switchyard_tls_cert_expiry_timestamp_seconds`
    pub tls_cert_expiry: Family<CertLabel, Gauge>,
    /// `switchyard_rate_limited_total`
    pub rate_limited: Family<RouteLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram),
            upstream_requests: Family::default(),
            upstream_endpoints: Family::default(),
            retries: Family::default(),
            upstream_overloaded: Family::default(),
            discovery_updates: Family::default(),
            discovery_errors: Family::default(),
            config_reloads: Family::default(),
            routes_source_errors: Family::default(),
            connections_active: Family::default(),
            tls_handshakes: Family::default(),
            tls_cert_expiry: Family::default(),
            rate_limited: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("switchyard_requests", "Requests answered", m.requests.clone());
        r.register(
            "switchyard_request_duration_seconds",
            "Time from request head to response end",
            m.request_duration.clone(),
        );
        r.register(
            "switchyard_upstream_requests",
            "Requests sent to upstream endpoints, by outcome",
            m.upstream_requests.clone(),
        );
        r.register(
            "switchyard_upstream_endpoints",
            "Endpoints per upstream and state",
            m.upstream_endpoints.clone(),
        );
        r.register("switchyard_retries", "Retries, by the condition that fired", m.retries.clone());
        r.register(
            "switchyard_upstream_overloaded",
            "Requests shed by an upstream limit",
            m.upstream_overloaded.clone(),
        );
        r.register(
            "switchyard_discovery_updates",
            "Endpoint-set updates from discovery",
            m.discovery_updates.clone(),
        );
        r.register("switchyard_discovery_errors", "Discovery failures", m.discovery_errors.clone());
        r.register("switchyard_config_reloads", "Reload attempts", m.config_reloads.clone());
        r.register(
            "switchyard_routes_source_errors",
            "Failed reads and writes of the fleet's routes source",
            m.routes_source_errors.clone(),
        );
        r.register("switchyard_connections_active", "Open client connections", m.connections_active.clone());
        r.register("switchyard_tls_handshakes", "TLS handshakes", m.tls_handshakes.clone());
        r.register(
            "switchyard_tls_cert_expiry_timestamp_seconds",
            "notAfter of each loaded certificate, Unix seconds",
            m.tls_cert_expiry.clone(),
        );
        r.register("switchyard_rate_limited", "Requests rejected by a rate limit", m.rate_limited.clone());
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(listener: &Name, route: &Name, upstream: &Name, code: u16) -> RequestLabels {
        RequestLabels {
            listener: Arc::clone(listener),
            route: Arc::clone(route),
            upstream: Arc::clone(upstream),
            code,
        }
    }

    #[test]
    fn request_counters_count_each_series_past_the_cache_and_across_threads() {
        let m = Metrics::default();
        let c = Arc::new(RequestCounters::default());
        let (l, r) = (Arc::new("web".to_owned()), Arc::new("r".to_owned()));
        // More upstreams than the cache holds: every one still gets its own series.
        let ups: Vec<Name> = (0..MAX_CACHED + 6).map(|i| Arc::new(format!("u{i}"))).collect();
        for (i, u) in ups.iter().enumerate() {
            for _ in 0..=i % 3 {
                c.inc(&m.requests, &l, &r, u, 200);
            }
        }
        for (i, u) in ups.iter().enumerate() {
            assert_eq!(m.requests.get_or_create(&labels(&l, &r, u, 200)).get(), (i % 3 + 1) as u64, "{u}");
        }
        // An equal label in another `Arc` is the same series; another code is another one.
        let again = Arc::new("u0".to_owned());
        c.inc(&m.requests, &l, &r, &again, 200);
        c.inc(&m.requests, &l, &r, &ups[0], 503);
        assert_eq!(m.requests.get_or_create(&labels(&l, &r, &ups[0], 200)).get(), 2);
        assert_eq!(m.requests.get_or_create(&labels(&l, &r, &ups[0], 503)).get(), 1);
        // Two threads filling the cache at once lose no count.
        let (m, u) = (Arc::new(Metrics::default()), Arc::new("x".to_owned()));
        let c = Arc::new(RequestCounters::default());
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (m, c, l, r, u) =
                    (Arc::clone(&m), Arc::clone(&c), Arc::clone(&l), Arc::clone(&r), Arc::clone(&u));
                std::thread::spawn(move || {
                    for i in 0..10_000u16 {
                        c.inc(&m.requests, &l, &r, &u, 200 + (i + t) % 4);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total: u64 =
            (200..204).map(|code| m.requests.get_or_create(&labels(&l, &r, &u, code)).get()).sum();
        assert_eq!(total, 20_000);
    }
}
