//! One endpoint and the state that follows its address across endpoint-set changes: active
//! health, the passive outlier breaker (`resilience::outlier`), and the peak-EWMA latency
//! estimate.
//!
//! Peak EWMA is Finagle's (`PeakEwma` in finagle-core) as Linkerd and tower use it: a sample
//! above the estimate replaces it at once (peak-sensitive), a lower one is blended in with a
//! weight that depends on the time since the last sample (`exp(-Δt/τ)`, τ = 10 s), and the
//! estimate decays towards zero while nothing is observed, so an endpoint that was slow once is
//! retried eventually. Everything is atomics: a pick reads two endpoints without a lock.
//! Concurrent samples may overwrite each other; losing one sample of many is harmless here.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::uri::Authority;

use crate::health::Health;
use crate::metrics::Name;
use crate::resilience::outlier::{Breaker, Phase};

/// The EWMA's time constant: Finagle's and Linkerd's default decay of 10 s.
const DECAY_NS: f64 = 10e9;

/// The estimate of an endpoint that has answered nothing yet: Linkerd's `DEFAULT_RTT` (30 ms),
/// high enough that a new endpoint is not flooded before it has shown its latency.
const DEFAULT_RTT_NS: f64 = 30e6;

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
    /// Health, outlier and latency state; kept when the address stays (even if its weight
    /// changes).
    pub state: Arc<EndpointState>,
}

impl Endpoint {
    /// A new endpoint at `address` (`host:port`) with `weight`, starting in `health`.
    pub fn new(address: &str, weight: u32, health: Health) -> Result<Arc<Endpoint>, String> {
        let authority: Authority =
            address.parse().map_err(|e| format!("endpoint {address:?} is not host:port: {e}"))?;
        Ok(Arc::new(Endpoint {
            address: Arc::new(address.to_owned()),
            authority,
            weight: weight.max(1),
            in_flight: AtomicU32::new(0),
            state: Arc::new(EndpointState::new(health)),
        }))
    }

    /// The same endpoint under a new weight: state shared, in-flight count starting afresh
    /// (requests in flight on the old object finish there).
    pub(crate) fn reweighted(&self, weight: u32) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            address: Arc::clone(&self.address),
            authority: self.authority.clone(),
            weight: weight.max(1),
            in_flight: AtomicU32::new(0),
            state: Arc::clone(&self.state),
        })
    }

    /// Whether it may be chosen at all: healthy (or unprobed) and not ejected.
    pub fn is_eligible(&self) -> bool {
        self.state.health() == Health::Healthy && self.state.phase() != Phase::Ejected
    }
}

/// The state of an endpoint that outlives endpoint-set changes.
#[derive(Debug)]
pub struct EndpointState {
    health: AtomicU8,
    /// The passive outlier breaker.
    pub breaker: Breaker,
    ewma_ns: AtomicU64,
    /// Nanoseconds since [`epoch`] of the last sample, plus one; 0 = no sample yet.
    ewma_at: AtomicU64,
    /// `switchyard_upstream_requests_total` series of this endpoint, one per outcome (in the
    /// order of [`OUTCOMES`]), resolved on first use instead of looked up per request.
    pub outcomes: std::sync::OnceLock<[prometheus_client::metrics::counter::Counter; 5]>,
}

/// The `outcome` label values of `switchyard_upstream_requests_total`.
pub(crate) const OUTCOMES: [&str; 5] = ["ok", "5xx", "connect_failed", "reset", "timeout"];

impl EndpointState {
    fn new(health: Health) -> Self {
        EndpointState {
            health: AtomicU8::new(health as u8),
            breaker: Breaker::default(),
            ewma_ns: AtomicU64::new(DEFAULT_RTT_NS.to_bits()),
            ewma_at: AtomicU64::new(0),
            outcomes: std::sync::OnceLock::new(),
        }
    }

    /// Active health.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    pub(crate) fn set_health(&self, h: Health) {
        self.health.store(h as u8, Ordering::Release);
    }

    /// The outlier breaker's phase.
    pub fn phase(&self) -> Phase {
        self.breaker.phase()
    }

    /// When the current ejection ends, if ejected.
    pub fn ejected_until(&self) -> Option<SystemTime> {
        self.breaker.ejected_until()
    }

    /// Record the time to a response head (peak EWMA).
    pub fn observe_rtt(&self, rtt: Duration) {
        let now = now_ns();
        let rtt = rtt.as_nanos() as f64;
        let at = self.ewma_at.load(Ordering::Relaxed);
        let prev = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let next = if at == 0 || rtt > prev {
            rtt
        } else {
            let w = (-(now.saturating_sub(at - 1) as f64) / DECAY_NS).exp();
            prev * w + rtt * (1.0 - w)
        };
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
        self.ewma_at.store(now + 1, Ordering::Relaxed);
    }

    /// The latency estimate at `now` (nanoseconds since [`epoch`]), decayed since the last sample.
    pub(crate) fn ewma_at(&self, now: u64) -> f64 {
        let at = self.ewma_at.load(Ordering::Relaxed);
        let est = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        if at == 0 {
            return est;
        }
        est * (-(now.saturating_sub(at - 1) as f64) / DECAY_NS).exp()
    }

    /// The current estimate in milliseconds, or `None` before the first response.
    pub fn ewma_ms(&self) -> Option<f64> {
        if self.ewma_at.load(Ordering::Relaxed) == 0 {
            return None;
        }
        Some(self.ewma_at(now_ns()) / 1e6)
    }
}

/// Nanoseconds since the process's base instant ([`crate::clock::nanos`]): EWMA timestamps.
pub(crate) use crate::clock::nanos as now_ns;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let s = EndpointState::new(Health::Healthy);
        s.observe_rtt(Duration::from_millis(1));
        s.observe_rtt(Duration::from_millis(100));
        assert!((s.ewma_ms().unwrap() - 100.0).abs() < 1.0);
        // A fast sample right after barely moves a peak (time-weighted).
        s.observe_rtt(Duration::from_millis(1));
        assert!(s.ewma_ms().unwrap() > 90.0);
        // Read 10 s later: decayed by e.
        let later = now_ns() + 10_000_000_000;
        assert!((s.ewma_at(later) / 1e6 - 100.0 / std::f64::consts::E).abs() < 3.0);
    }
}
