//! The [`Publisher`]: folds a source's [`Update`]s into the [`Resolution`] its consumers watch.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::StaticEndpoint;

use super::Update;

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
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(set.len());
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
