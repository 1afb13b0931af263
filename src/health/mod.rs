//! Active health checks: one probe task per (upstream, endpoint), and the explicit state
//! machine that turns probe results into health.
//!
//! The state machine follows pingora's `Health::observe_health` (consecutive successes or
//! failures against thresholds flip the state) with Envoy's start: a new endpoint is `Unknown`
//! and takes no traffic; it is probed at once, and its first success makes it `Healthy` (a first
//! failure makes it `Unhealthy`); after that, `healthy_threshold` successes or
//! `unhealthy_threshold` failures in a row govern every change. "Enabled" (whether the endpoint
//! is in the discovered set at all) is kept apart: removing an endpoint cancels its task.
//!
//! Probes run every `interval`, each delayed by a random jitter of up to 10 % so that many
//! gateways (or many endpoints) do not probe in lock-step, with `MissedTickBehavior::Skip` so a
//! slow probe never causes a burst. `http` sends `GET path` (with `host`) through the upstream's
//! own client (its protocol, connect timeout and TLS settings) and checks `expected_status`;
//! `tcp` only connects. A probe that takes longer than `timeout` fails.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::body::{self, Body};
use crate::config::{HealthCheck, HealthKind};
use crate::error::Error;
use crate::metrics::Name;

/// An endpoint's active health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet (takes no traffic).
    Unknown = 0,
    /// Passing (or not probed at all: without `[upstream.health]` every endpoint is healthy).
    Healthy = 1,
    /// Failing.
    Unhealthy = 2,
}

impl Health {
    /// From its `repr`.
    pub fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }

    /// The spelling in `GET /upstreams`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

// === impl HealthMachine ===

/// Consecutive-threshold health state machine for one endpoint.
#[derive(Clone, Debug)]
pub(crate) struct HealthMachine {
    state: Health,
    successes: u32,
    failures: u32,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

impl HealthMachine {
    /// A machine in `Unknown`, with the thresholds (each at least 1).
    pub(crate) fn new(healthy_threshold: u32, unhealthy_threshold: u32) -> Self {
        HealthMachine {
            state: Health::Unknown,
            successes: 0,
            failures: 0,
            healthy_threshold: healthy_threshold.max(1),
            unhealthy_threshold: unhealthy_threshold.max(1),
        }
    }

    /// Feed one probe result; returns the new state when it changed.
    pub(crate) fn observe(&mut self, ok: bool) -> Option<Health> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        let next = match (self.state, ok) {
            // The first result decides (Envoy: the first success makes a new host healthy).
            (Health::Unknown, true) => Health::Healthy,
            (Health::Unknown, false) => Health::Unhealthy,
            (Health::Healthy, false) if self.failures >= self.unhealthy_threshold => Health::Unhealthy,
            (Health::Unhealthy, true) if self.successes >= self.healthy_threshold => Health::Healthy,
            (s, _) => s,
        };
        if next == self.state {
            return None;
        }
        self.state = next;
        self.successes = 0;
        self.failures = 0;
        Some(next)
    }
}

// === probes ===

/// Sends one HTTP request on the upstream's client (it knows protocol, TLS, connect timeout).
pub(crate) type HttpSend = Arc<
    dyn Fn(Request<Body>) -> BoxFuture<'static, Result<Response<crate::proxy::UpstreamBody>, Error>>
        + Send
        + Sync,
>;

/// What a probe task reports after every probe: the result, and the new state if it changed.
pub(crate) type OnResult = Box<dyn Fn(bool, Option<Health>) + Send + Sync>;

/// What to probe.
#[derive(Clone)]
pub(crate) struct ProbeTarget {
    /// `host:port`.
    pub address: Name,
    /// The upstream's HTTP version.
    pub version: http::Version,
    /// Sender for `http` probes.
    pub send: HttpSend,
}

impl std::fmt::Debug for ProbeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeTarget").field("address", &self.address).finish_non_exhaustive()
    }
}

/// Start the probe task of one endpoint; it runs until `stop` is cancelled.
pub(crate) fn spawn(
    cfg: Arc<HealthCheck>,
    target: ProbeTarget,
    on_result: OnResult,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut machine = HealthMachine::new(cfg.healthy_threshold, cfg.unhealthy_threshold);
        let mut ticks = tokio::time::interval(cfg.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut first = true;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if !first {
                // Up to 10 % of the interval, so probes of many endpoints spread out.
                let jitter = cfg.interval.mul_f64(fastrand::f64() * 0.1);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(jitter) => {}
                }
            }
            first = false;
            let ok = tokio::select! {
                _ = stop.cancelled() => return,
                ok = probe_once(&cfg, &target) => ok,
            };
            let change = machine.observe(ok);
            if let Some(h) = change {
                tracing::info!(endpoint = %target.address, health = h.as_str(), "endpoint health changed");
            }
            on_result(ok, change);
        }
    });
}

/// One probe, bounded by `timeout`.
pub(crate) async fn probe_once(cfg: &HealthCheck, target: &ProbeTarget) -> bool {
    let probe = async {
        match cfg.kind {
            HealthKind::Tcp => tokio::net::TcpStream::connect(target.address.as_str()).await.is_ok(),
            HealthKind::Http => {
                let uri = format!("http://{}{}", target.address, cfg.path);
                let host = cfg.host.as_deref().unwrap_or(target.address.as_str());
                let Ok(req) = Request::get(uri)
                    .version(target.version)
                    .header(http::header::HOST, host)
                    .header(http::header::USER_AGENT, "switchyard-health")
                    .body(body::empty())
                else {
                    return false;
                };
                match (target.send)(req).await {
                    Ok(res) => {
                        let s = res.status().as_u16();
                        // Read the body so the connection can be reused.
                        let _ = res.into_body().collect().await;
                        (cfg.expected_status.0..=cfg.expected_status.1).contains(&s)
                    }
                    Err(e) => {
                        tracing::debug!(endpoint = %target.address, error = %e, "health probe failed");
                        false
                    }
                }
            }
        }
    };
    tokio::time::timeout(cfg.timeout, probe).await.unwrap_or(false)
}

#[cfg(test)]
impl HealthMachine {
    fn state(&self) -> Health {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_result_decides_then_thresholds_govern() {
        let mut m = HealthMachine::new(2, 3);
        assert_eq!(m.observe(true), Some(Health::Healthy));
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(true), None); // resets the failure run
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), Some(Health::Unhealthy));
        assert_eq!(m.observe(true), None);
        assert_eq!(m.observe(true), Some(Health::Healthy));
        let mut m = HealthMachine::new(2, 3);
        assert_eq!(m.observe(false), Some(Health::Unhealthy));
        assert_eq!(m.state(), Health::Unhealthy);
    }
}
