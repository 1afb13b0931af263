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

pub(crate) mod consul;
pub(crate) mod dns;
pub(crate) mod fixed;
mod publisher;
mod registry;
pub(crate) mod zookeeper;

#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use crate::config::StaticEndpoint;

pub use publisher::Publisher;
pub(crate) use publisher::Resolution;
pub(crate) use registry::Attachment;
pub use registry::{Adapter, Registry};

/// `/ready` waits at most this long after start for every upstream's first discovery result
/// (docs/discovery.md): long enough for a healthy ZooKeeper or Consul to answer, short enough that a
/// dead one does not keep a gateway with static routes out of a load balancer forever.
pub(crate) const READY_BOUND: Duration = Duration::from_secs(10);

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

/// The reconnect backoff of every source: from 1 s to 30 s (docs/discovery.md), doubling per
/// consecutive failure, each sleep scaled by a random factor in [0.8, 1.2) so that many
/// gateways do not retry in lockstep (linkerd's `ExponentialBackoff`).
pub(crate) fn backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(30), Jitter::Spread(0.2))
}

/// `host:port` as an endpoint address; an IPv6 literal from a registry comes without brackets
/// and needs them so that the port stays separable.
fn endpoint_address(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
